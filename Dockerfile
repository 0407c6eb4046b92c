# syntax=docker/dockerfile:1
# One image for every component: `openkcm gateway | keysvc | injector | sidecar | ...`
# (the manifests pass the subcommand as args). Build: docker build -t ghcr.io/openkcm/openkcm:0.1.0 .

# --- build ------------------------------------------------------------------------------
# The Rust toolchain the project is built and tested with (rust-version in Cargo.toml is
# the minimum). cmake builds zlib-ng for Pingora (pingora-core -> flate2); the C compiler
# also builds AWS-LC for keysvc's asymmetric keys (aws-lc-rs, statically linked); TLS is
# rustls with ring, so no OpenSSL (only the tests link it, for Krill's client).
FROM docker.io/library/rust:1.95-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin openkcm \
 && install -D -m 0755 target/release/openkcm /out/openkcm

# --- runtime ----------------------------------------------------------------------------
# distroless cc: glibc and libgcc only (the binary links them), no shell, no package
# manager; user nonroot (65532). The manifests run it with a read-only root filesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/openkcm /usr/local/bin/openkcm
USER 65532:65532
# KMIP, gateway management/HTTPS, keysvc API, keysvc management, injector management.
EXPOSE 5696 8443 9443 9090 8081
ENTRYPOINT ["/usr/local/bin/openkcm"]
CMD ["--help"]
