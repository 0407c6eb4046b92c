# OpenKCM crypto layer: developer and CI entry points.
# `make test` is what CI runs (.ci/run); it bootstraps the machine first.

SHELL := /bin/bash
.DEFAULT_GOAL := test

# rustup installs cargo into ~/.cargo/bin, which a fresh shell may not have on PATH.
CARGO_HOME ?= $(or $(HOME),/root)/.cargo
export PATH := $(CARGO_HOME)/bin:$(PATH)

CARGO ?= cargo
# Python with PyKMIP 0.11, made by scripts/bootstrap.sh; the kmip interop tests
# use it to re-run kmip/tests/pykmip/gen_requests.py.
PYKMIP_PYTHON := $(CURDIR)/.venv/bin/python

.PHONY: bootstrap test fmt lint bench chaos fuzz dev pykmip-fixtures clean

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	PYKMIP_PYTHON=$(PYKMIP_PYTHON) bash scripts/test-summary.sh $(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole stack under `openkcm loadtest` (scripts/bench.sh, docs/loadtest.md): ~35 min,
# BENCH_QUICK=1 ~3 min; writes its section of docs/benchmarks.md and docs/img/*.svg itself.
# The criterion benchmarks stay separate: cargo bench -p kmip --bench codec, -p keysvc --bench engine.
bench: bootstrap
	PYKMIP_PYTHON=$(PYKMIP_PYTHON) CARGO=$(CARGO) bash scripts/bench.sh

# The fault suite (tests/chaos.rs, docs/reliability.md): rolling restarts and SIGKILLs of
# keysvc and gateway processes, PostgreSQL restarts and outages, one keysvc cut off from it,
# under load; zero acknowledged writes lost. Its short form
# (~65 s) runs in `make test`; this is the long form (CHAOS_LONG=1: higher rate, longer
# phases), with its figures printed.
chaos: bootstrap
	CHAOS_LONG=1 $(CARGO) test --release --test chaos -- --nocapture

# 60 s of libFuzzer on the TTLV decoder; FUZZ_TIME=600 make fuzz for longer.
fuzz:
	@bash scripts/fuzz.sh decode

# Whole stack locally (docs/dev.md): dev PKI + routing rules + root key in ./openkcm-dev,
# keysvc and the gateway on loopback (KMIP 127.0.0.1:5696); Ctrl-C stops it.
# Flags: make dev DEV_FLAGS="--kmip-addr 127.0.0.1:15696".
# Bootstraps first: a fresh machine needs cmake to build Pingora.
dev: bootstrap
	$(CARGO) run --release -- dev $(DEV_FLAGS)

# Regenerate the PyKMIP wire fixtures in kmip/tests/pykmip/.
pykmip-fixtures: bootstrap
	$(PYKMIP_PYTHON) kmip/tests/pykmip/gen_requests.py

clean:
	$(CARGO) clean
	rm -rf fuzz/target fuzz/artifacts
