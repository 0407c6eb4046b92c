#!/usr/bin/env bash
# Run a cargo-fuzz (libFuzzer) target from fuzz/ for a bounded time.
#
#   scripts/fuzz.sh [TARGET] [extra libFuzzer args...]
#   FUZZ_TIME=60        seconds to fuzz (libFuzzer -max_total_time)
#   FUZZ_TOOLCHAIN=auto auto | nightly | stable
#
# Toolchain: with a nightly toolchain installed (the machine image ships one)
# the target runs under AddressSanitizer (`cargo +nightly fuzz run`). Without
# nightly, cargo-fuzz >= 0.12 works on stable with `--sanitizer none`: the
# coverage instrumentation it uses (-Cpasses=sancov-module, -Cllvm-args=...)
# is stable rustc; only the sanitizers need -Z flags. So fuzzing still finds
# panics, overflows (debug assertions are on) and hangs, just not ASan reports
# (and this crate forbids unsafe code anyway). No toolchain is downloaded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET="${1:-decode}"
[ "$#" -gt 0 ] && shift
FUZZ_TIME="${FUZZ_TIME:-60}"
FUZZ_TOOLCHAIN="${FUZZ_TOOLCHAIN:-auto}"

say() { printf 'fuzz: %s\n' "$*"; }
die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 1; }

# Some minimal environments have no HOME; rustup and ~/.cargo/env need it.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found"

[ -f fuzz/Cargo.toml ] || die "fuzz/Cargo.toml not found: no fuzz targets in this checkout yet"

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz from crates.io (one-off, ~1 min)"
    cargo install cargo-fuzz --locked
fi

have_nightly() { rustup run nightly rustc --version >/dev/null 2>&1; }

case "$FUZZ_TOOLCHAIN" in
auto) if have_nightly; then FUZZ_TOOLCHAIN=nightly; else FUZZ_TOOLCHAIN=stable; fi ;;
nightly) have_nightly || die "FUZZ_TOOLCHAIN=nightly but no nightly toolchain is installed" ;;
stable) ;;
*) die "FUZZ_TOOLCHAIN must be auto, nightly or stable" ;;
esac

if [ "$FUZZ_TOOLCHAIN" = nightly ]; then
    say "target $TARGET for ${FUZZ_TIME}s on $(rustup run nightly rustc --version) with AddressSanitizer"
    exec cargo +nightly fuzz run "$TARGET" -- -max_total_time="$FUZZ_TIME" "$@"
else
    say "target $TARGET for ${FUZZ_TIME}s on $(rustc --version) (stable: --sanitizer none)"
    exec cargo fuzz run --sanitizer none "$TARGET" -- -max_total_time="$FUZZ_TIME" "$@"
fi
