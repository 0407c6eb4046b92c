#!/usr/bin/env bash
# Server CPU per Get (or per OP): one `openkcm dev` (gateway + keysvc, SQLite, fresh directory) under
# `openkcm loadtest --op "${OP:-get}"` for DURATION after a 1 s warm-up run; prints ops/s, p50/p95/p99,
# the dev process's CPU per Get (utime + stime from /proc) and the generator's.
# Used for before/after comparisons of two builds (docs/benchmarks.md):
#
#   scripts/bench/cpu-per-get.sh BIN CONNECTIONS [DURATION]
#   KEYSVC=1 ...   Get straight to keysvc's HTTP/2 API (no gateway), same process
#   DEV_FLAGS="--gateway-threads 2" ...   extra `openkcm dev` flags
#   OP=encrypt ...   another `--op` than get (create, encrypt, decrypt, mix); the figures
#                    are then per request of that operation
#   RATE=6000 ...    open loop at that rate instead of closed loop (below saturation CPU per
#                    request varies less than at the maximum)
#
# Run each side several times, alternating: on a shared VM one run varies by ±15%.
set -euo pipefail
BIN=$1; CONNS=$2; DUR=${3:-6s}
D=$(mktemp -d /tmp/cpu-per-get.XXXXXX)
trap 'kill "$P" 2>/dev/null || true; wait "$P" 2>/dev/null || true; rm -rf "$D"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
K=$(port); H=$(port)
# shellcheck disable=SC2086
"$BIN" dev --dir "$D" --kmip-addr "127.0.0.1:$K" --https-addr "127.0.0.1:$H" ${DEV_FLAGS:-} >"$D/out" 2>"$D/err" &
P=$!
for _ in $(seq 1 600); do grep -q "openkcm dev ready" "$D/out" 2>/dev/null && break; sleep 0.05; done
grep -q "openkcm dev ready" "$D/out" || { echo "openkcm dev not ready: $(tail -1 "$D/err")" >&2; exit 1; }
if [ "${KEYSVC:-0}" = 1 ]; then
    T=(--http2-keysvc "https://$(awk '/^keysvc API/ {print $3}' "$D/out")" --server-name keysvc
       --ca "$D/pki/internal/ca.pem" --cert "$D/pki/gateway-upstream.pem" --key "$D/pki/gateway-upstream-key.pem")
else
    T=(--addr "127.0.0.1:$K" --ca "$D/pki/ca.pem" --cert "$D/pki/tenant-a.pem" --key "$D/pki/tenant-a-key.pem")
fi
"$BIN" loadtest --quiet "${T[@]}" --op "${OP:-get}" --connections "$CONNS" --duration 1s --keys 16 >/dev/null 2>&1
cpu() { awk '{print $14 + $15}' "/proc/$P/stat"; }
c0=$(cpu)
/usr/bin/time -f "%U %S" -o "$D/gen" "$BIN" loadtest --quiet --json "$D/r.json" "${T[@]}" \
    --op "${OP:-get}" --connections "$CONNS" ${RATE:+--rate $RATE} --duration "$DUR" --keys 16 >/dev/null 2>"$D/loadtest.err"
c1=$(cpu)
python3 - "$D/r.json" "$c0" "$c1" "$D/gen" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ticks = int(sys.argv[3]) - int(sys.argv[2])
hz = int(sys.argv[5])
ops = r["ops_per_sec"] * r["duration_s"]
user, system = map(float, open(sys.argv[4]).read().split()[-2:])
op = r["op"].capitalize()
print(f'{r["connections"]} conn: {r["ops_per_sec"]:,.0f} {op}/s  p50 {r["p50_ms"]} ms  p95 {r["p95_ms"]} ms  p99 {r["p99_ms"]} ms  '
      f'errors {r["errors"]}  server CPU {ticks / hz * 1e6 / ops:.0f} µs/{op}  '
      f'generator CPU {(user + system) * 1e6 / ops:.0f} µs/{op}')
PY
