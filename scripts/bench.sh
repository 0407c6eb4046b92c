#!/usr/bin/env bash
# `make bench`: the whole stack measured with `openkcm loadtest` on this machine, release
# build; results and the targets table are written into docs/benchmarks.md (between the
# "make bench" markers) and docs/img/bench-open-loop-get.svg. See docs/loadtest.md.
#
#   BENCH_QUICK=1    ~3 min: one run per row, short runs, fewer points
#   BENCH_RUNS=N     runs per row (median shown; default 3, quick 1)
#   BENCH_MAX_KEYS=N stored-keys scaling goes up to N (default 1000000, quick 10000)
#   BENCH_OUT=DIR    raw JSON reports and logs (default target/bench/<time>)
#   BENCH_NO_DOCS=1  do not touch docs/ (results stay in BENCH_OUT)
#   BENCH_SECTIONS   which parts to run (default all): stack asym keysvc open noisy sidecar
#                    keys postgres pykmip memory
#   PYKMIP_PYTHON    Python with PyKMIP 0.11 (default .venv/bin/python)
#   BENCH_PG_URL     PostgreSQL superuser URL (default postgres://postgres@127.0.0.1:5432/postgres)
#
# Every row is bounded in time; the whole run takes ~35 min (quick ~3 min) after the build,
# most of it filling the store towards 1,000,000 keys (a 600 s budget).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/openkcm"
CHART="$TARGET_DIR/release/loadtest-chart"
PYKMIP_PYTHON="${PYKMIP_PYTHON:-$ROOT/.venv/bin/python}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

QUICK="${BENCH_QUICK:-0}"
if [ "$QUICK" = 1 ]; then
    RUNS="${BENCH_RUNS:-1}"; DUR=2s; WARM=500ms; CONNS="1 8 32 128"; PG_CONNS="32"
    SCALE_CONNS="512"; MAX_KEYS="${BENCH_MAX_KEYS:-10000}"; IDLE_COUNTS="1000 10000"
    OPEN_RATES="5000 10000 20000 30000"; OPEN_LONG=15s; PYKMIP_CONNS="1 8"
    POPULATE_BUDGET=60; ASYM_CONNS="8"; RSA_GEN_CONNS="1"
else
    RUNS="${BENCH_RUNS:-3}"; DUR=5s; WARM=1s; CONNS="1 8 32 128"; PG_CONNS="8 128"
    SCALE_CONNS="256 512 1000"; MAX_KEYS="${BENCH_MAX_KEYS:-1000000}"; IDLE_COUNTS="1000 10000"
    OPEN_RATES="2000 5000 10000 15000 20000 25000 30000 40000"; OPEN_LONG=60s
    PYKMIP_CONNS="1 8"; POPULATE_BUDGET=600; ASYM_CONNS="8 64"; RSA_GEN_CONNS="1 8"
fi
SECTIONS=" ${BENCH_SECTIONS:-stack asym keysvc open noisy sidecar keys postgres pykmip memory} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
OUT="${BENCH_OUT:-$ROOT/target/bench/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT/runs"
WORK="$(mktemp -d /tmp/openkcm-bench.XXXXXX)"
ROWS="$OUT/rows.tsv"      # id, group, label, command
FACTS="$OUT/facts.tsv"    # key, value (memory, start-up, populated counts, notes)
: >"$ROWS"; : >"$FACTS"
START_TS=$(date +%s)

say() { printf '[bench %4ss] %s\n' "$(( $(date +%s) - START_TS ))" "$*" >&2; }
fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }

# --- clean-up: every process this script started, the throwaway database ---------------
PIDS=()
PG_DB=""
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ -n "$PG_DB" ]; then
        psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Idle-connection memory needs 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Waits (bounded) until "$@" succeeds; prints the milliseconds it took from $1 (start ms).
wait_for() {
    local started=$1 budget_ms=$2; shift 2
    while ! "$@" >/dev/null 2>&1; do
        if [ $(( $(now_ms) - started )) -gt "$budget_ms" ]; then return 1; fi
        sleep 0.005
    done
    echo $(( $(now_ms) - started ))
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- build ---------------------------------------------------------------------------------
say "building (release)"
"$CARGO" build --release --bin openkcm >&2
"$CARGO" build --release -p loadtest --bin loadtest-chart >&2
fact machine "$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
fact load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
fact commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo +dirty)"

# --- openkcm dev ---------------------------------------------------------------------------
DEV_PID=""; KMIP=""; KEYSVC_API=""
start_dev() { # NAME [DIR] [dev flags...]
    local name=$1; shift
    local dir="$WORK/$name" kport hport
    if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then dir=$1; shift; fi
    kport=$(free_port); hport=$(free_port)
    mkdir -p "$dir"
    "$BIN" dev --dir "$dir" --kmip-addr "127.0.0.1:$kport" --https-addr "127.0.0.1:$hport" "$@" \
        >"$OUT/dev-$name.out" 2>"$OUT/dev-$name.err" &
    DEV_PID=$!; PIDS+=("$DEV_PID")
    if ! wait_for "$(now_ms)" 30000 grep -q "openkcm dev ready" "$OUT/dev-$name.out" >/dev/null; then
        say "openkcm dev ($name) not ready; see $OUT/dev-$name.err"; return 1
    fi
    KMIP="127.0.0.1:$kport"
    KEYSVC_API=$(awk '/^keysvc API/ {print $3}' "$OUT/dev-$name.out")
    DEV_DIR="$dir"
    fact "dev_ready_ms_$name" "$(sed -n 's/^openkcm dev ready in \([0-9]*\) ms/\1/p' "$OUT/dev-$name.out")"
}
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- one row: RUNS runs of one loadtest command ---------------------------------------------
# row ID GROUP LABEL loadtest-flags...
row() {
    local id=$1 group=$2 label=$3; shift 3
    local shown
    shown="openkcm loadtest $(printf '%q ' "$@" | sed "s#$WORK#\$WORK#g")"
    printf '%s\t%s\t%s\t%s\n' "$id" "$group" "$label" "${shown% }" >>"$ROWS"
    for i in $(seq 1 "$RUNS"); do
        if ! "$BIN" loadtest --quiet --json "$OUT/runs/$id.$i.json" "$@" \
            >>"$OUT/loadtest.log" 2>&1; then
            say "  $id run $i failed (see $OUT/loadtest.log)"
            tail -3 "$OUT/loadtest.log" >&2
            return 0
        fi
    done
    say "  $label: $(jq -r '"\(.ops_per_sec|floor) ops/s  p99 \(.p99_ms) ms  errors \(.errors)"' "$OUT/runs/$id.$RUNS.json")"
}

tenant_flags() { # DIR [TENANT]
    local t="${2:-tenant-a}"
    echo --ca "$1/pki/ca.pem" --cert "$1/pki/$t.pem" --key "$1/pki/$t-key.pem"
}

# === 1. the full stack on SQLite ============================================================
say "openkcm dev on SQLite"
start_dev sqlite
SQLITE_DIR="$DEV_DIR"
read -r -a TA <<<"$(tenant_flags "$SQLITE_DIR")"
want stack && for op in get encrypt create; do
    for c in $CONNS; do
        row "gw-$op-$c" stack "$op, gateway, SQLite, $c conn" \
            --addr "$KMIP" "${TA[@]}" --op "$op" --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 64
    done
done
# Asymmetric operations: Sign (32 bytes) with the set-up's 16 key pairs, and Create Key Pair.
# A generation holds one of keysvc's slots (half the cores) for well under 1 ms (P-256) or ~50-200 ms
# (RSA-2048), so further requests queue behind it: RSA-2048 generation runs on few
# connections (at 64, closed loop, each request would wait seconds and few would finish
# inside the measured time), and every Create Key Pair row is bounded by --requests too.
want asym && say "asymmetric: Sign and Create Key Pair (RSA-2048, ECDSA P-256)"
want asym && for op in sign-rsa2048 sign-p256; do
    for c in $ASYM_CONNS; do
        row "asym-$op-$c" asym "$op, gateway, SQLite, $c conn" \
            --addr "$KMIP" "${TA[@]}" --op "$op" --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 16
    done
done
want asym && for c in $ASYM_CONNS; do
    row "asym-create-key-pair-p256-$c" asym "create-key-pair-p256, gateway, SQLite, $c conn" \
        --addr "$KMIP" "${TA[@]}" --op create-key-pair-p256 --connections "$c" --duration "$DUR" --warmup "$WARM" \
        --requests 50000
done
want asym && for c in $RSA_GEN_CONNS; do
    row "asym-create-key-pair-rsa2048-$c" asym "create-key-pair-rsa2048, gateway, SQLite, $c conn" \
        --addr "$KMIP" "${TA[@]}" --op create-key-pair-rsa2048 --connections "$c" --duration "$DUR" --warmup "$WARM" \
        --requests 2000
done

want keysvc && say "keysvc directly (HTTP/2, no gateway)"
want keysvc && for c in $CONNS; do
    row "ks-get-$c" keysvc "get, keysvc HTTP/2 (no gateway), $c conn" \
        --http2-keysvc "https://$KEYSVC_API" --server-name keysvc --ca "$SQLITE_DIR/pki/internal/ca.pem" \
        --cert "$SQLITE_DIR/pki/gateway-upstream.pem" --key "$SQLITE_DIR/pki/gateway-upstream-key.pem" \
        --op get --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 64
done

want stack && for c in $SCALE_CONNS; do
    row "gw-get-$c" stack "get, gateway, SQLite, $c conn" \
        --addr "$KMIP" "${TA[@]}" --op get --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 64
done

want open && say "open loop: latency against offered load (one run per rate: the chart's points)"
RUNS_SAVED=$RUNS; RUNS=1
want open && for r in $OPEN_RATES; do
    row "open-$r" open "get, open loop $r/s, 64 conn" \
        --addr "$KMIP" "${TA[@]}" --op get --connections 64 --rate "$r" --duration "$DUR" --warmup "$WARM" --keys 64
done
want open && row "open-long" openlong "get, open loop 10000/s for $OPEN_LONG, 64 conn" \
    --addr "$KMIP" "${TA[@]}" --op get --connections 64 --rate 10000 --duration "$OPEN_LONG" --warmup "$WARM" --keys 64
RUNS=$RUNS_SAVED

# --- noisy neighbour: a quiet tenant's latency beside a flooding one (issue 17) -------------
if want noisy; then
    say "noisy neighbour: tenant-b at 200 Get/s, alone and beside tenant-a at max rate on 256 conn"
    read -r -a TB <<<"$(tenant_flags "$SQLITE_DIR" tenant-b)"
    NOISY_DUR=$([ "$QUICK" = 1 ] && echo 5s || echo 15s)
    RUNS_SAVED=$RUNS; RUNS=1
    row "quiet-alone" noisy "tenant-b get, open loop 200/s, 4 conn, alone" \
        --addr "$KMIP" "${TB[@]}" --op get --connections 4 --rate 200 --duration "$NOISY_DUR" --warmup "$WARM" --keys 16
    # The flood runs 2 s longer than the quiet row on each side (warm-up included).
    "$BIN" loadtest --addr "$KMIP" "${TA[@]}" --op get --connections 256 --rate max \
        --duration "$(( ${NOISY_DUR%s} + 4 ))s" --warmup 1s --keys 64 --quiet \
        --json "$OUT/runs/noisy-flood.json" >>"$OUT/loadtest.log" 2>&1 &
    FLOOD_PID=$!; PIDS+=("$FLOOD_PID")
    sleep 3
    row "quiet-noisy" noisy "tenant-b get, open loop 200/s, 4 conn, beside tenant-a at max rate on 256 conn" \
        --addr "$KMIP" "${TB[@]}" --op get --connections 4 --rate 200 --duration "$NOISY_DUR" --warmup "$WARM" --keys 16
    wait "$FLOOD_PID" || say "  the flood's loadtest failed (see $OUT/loadtest.log)"
    [ -f "$OUT/runs/noisy-flood.json" ] && fact noisy_flood "$(jq -r '"\(.ops_per_sec|floor) Get/s, p99 \(.p99_ms) ms, errors \(.errors)"' "$OUT/runs/noisy-flood.json")"
    RUNS=$RUNS_SAVED
fi

# === 2. the sidecar, when this build has it ==================================================
if ! want sidecar; then
    :
elif "$BIN" sidecar --help >/dev/null 2>&1; then
    say "sidecar"
    SC="$WORK/sidecar"; mkdir -p "$SC/local"
    sport=$(free_port); mport=$(free_port)
    "$BIN" sidecar --gateway "$KMIP" --gateway-ca "$SQLITE_DIR/pki/ca.pem" \
        --cert "$SQLITE_DIR/pki/tenant-a.pem" --key "$SQLITE_DIR/pki/tenant-a-key.pem" \
        --socket "$SC/kmip.sock" --listen "127.0.0.1:$sport" --local-dir "$SC/local" \
        --management "127.0.0.1:$mport" >"$OUT/sidecar.out" 2>"$OUT/sidecar.err" &
    SC_PID=$!; PIDS+=("$SC_PID")
    if ms=$(wait_for "$(now_ms)" 10000 bash -c "test -s '$SC/local/client-key.pem' && exec 3<>/dev/tcp/127.0.0.1/$sport"); then
        fact sidecar_ready_ms "$ms"
        for c in 1 32; do
            row "sc-get-$c" sidecar "get, sidecar → gateway, SQLite, $c conn" \
                --addr "127.0.0.1:$sport" --ca "$SC/local/ca.pem" --cert "$SC/local/client.pem" \
                --key "$SC/local/client-key.pem" --op get --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 64
        done
    else
        say "sidecar not ready; see $OUT/sidecar.err"; fact sidecar "not ready (see sidecar.err)"
    fi
    stop_pid "$SC_PID"
else
    fact sidecar "not in this build (openkcm sidecar --help failed)"
fi
stop_pid "$DEV_PID"

# === 3. stored keys: Get and Create as the store grows =======================================
if want keys; then
say "scaling: stored keys (up to $MAX_KEYS, populate budget ${POPULATE_BUDGET}s)"
start_dev keys
read -r -a TK <<<"$(tenant_flags "$DEV_DIR")"
stored=0
populate_left=$POPULATE_BUDGET
for level in 10 1000 10000 100000 1000000; do
    [ "$level" -le "$MAX_KEYS" ] || break
    need=$(( level - stored - (level >= 1000 ? 1000 : 10) ))
    if [ "$need" -gt 0 ]; then
        t0=$(date +%s)
        "$BIN" loadtest --quiet --json "$OUT/runs/populate-$level.json" --addr "$KMIP" "${TK[@]}" \
            --op create --connections 64 --requests "$need" --duration "${populate_left}s" \
            >>"$OUT/loadtest.log" 2>&1 || true
        made=$(jq -r '.ok // 0' "$OUT/runs/populate-$level.json" 2>/dev/null || echo 0)
        stored=$(( stored + made ))
        populate_left=$(( populate_left - ($(date +%s) - t0) ))
        fact "populate_$level" "$made creates in $(( $(date +%s) - t0 )) s"
        if [ "$made" -lt "$need" ]; then
            say "  populate budget spent at $stored keys (wanted $level)"
            fact keys_budget_stop "$stored stored keys when the populate budget ran out (wanted $level)"
        fi
    fi
    k=$(( level >= 1000 ? 1000 : 10 ))
    row "keys-get-$level" keys "get, $((stored + k)) stored keys ($k read)" \
        --addr "$KMIP" "${TK[@]}" --op get --connections 32 --duration "$DUR" --warmup "$WARM" --keys "$k"
    stored=$(( stored + k ))
    fact "keys_stored_at_$level" "$stored"
    [ "$populate_left" -gt 0 ] || break
done
stop_pid "$DEV_PID"
fi

# === 4. PostgreSQL ===========================================================================
if ! want postgres; then
    :
elif psql "$PG_URL" -qAtc "select 1" >/dev/null 2>&1; then
    PG_DB="openkcm_bench_$$"
    psql "$PG_URL" -qAtc "CREATE DATABASE $PG_DB" >/dev/null
    say "openkcm dev on PostgreSQL ($PG_DB)"
    if start_dev pg --database "${PG_URL%/*}/$PG_DB"; then
        read -r -a TP <<<"$(tenant_flags "$DEV_DIR")"
        for op in get create; do
            for c in $PG_CONNS; do
                row "pg-$op-$c" postgres "$op, gateway, PostgreSQL, $c conn" \
                    --addr "$KMIP" "${TP[@]}" --op "$op" --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 64
            done
        done
        stop_pid "$DEV_PID"
    fi
    psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    PG_DB=""
else
    fact postgres "not reachable at $PG_URL: rows skipped"
fi

# === 5. PyKMIP 0.11 server, same generator ===================================================
if ! want pykmip; then
    :
elif [ -x "$PYKMIP_PYTHON" ] && "$PYKMIP_PYTHON" -c 'import kmip' 2>/dev/null; then
    say "PyKMIP 0.11 server"
    PK="$WORK/pykmip"; mkdir -p "$PK/policies"
    pport=$(free_port)
    # The dev PKI's gateway certificate (ECDSA P-256, localhost): PyKMIP with an RSA one
    # offers only CBC suites, which rustls refuses (docs: KMIP-CLIENTS.md).
    cat >"$PK/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$pport
certificate_path=$SQLITE_DIR/pki/gateway.pem
key_path=$SQLITE_DIR/pki/gateway-key.pem
ca_path=$SQLITE_DIR/pki/ca.pem
auth_suite=TLS1.2
policy_path=$PK/policies
enable_tls_client_auth=True
tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
logging_level=WARNING
database_path=$PK/pykmip.db
EOF
    # The launcher kills the server's process group when its stdin closes: hold a FIFO open
    # for as long as this script runs.
    mkfifo "$PK/stdin"
    "$PYKMIP_PYTHON" kmip/tests/pykmip/run_server.py "$PK/server.conf" "$OUT/pykmip.log" \
        <"$PK/stdin" >"$OUT/pykmip.out" 2>&1 &
    PY_PID=$!; PIDS+=("$PY_PID")
    exec 7>"$PK/stdin"
    if ms=$(wait_for "$(now_ms)" 30000 bash -c "exec 3<>/dev/tcp/127.0.0.1/$pport"); then
        fact pykmip_ready_ms "$ms"
        for c in $PYKMIP_CONNS; do
            row "py-get-$c" pykmip "get, PyKMIP 0.11 server, $c conn" \
                --addr "127.0.0.1:$pport" "${TA[@]}" --op get --connections "$c" --duration "$DUR" --warmup "$WARM" --keys 8
        done
    else
        say "PyKMIP server not listening; see $OUT/pykmip.out"; fact pykmip "did not start"
    fi
    exec 7>&-
    wait "$PY_PID" 2>/dev/null || true
else
    fact pykmip "no PyKMIP venv at $PYKMIP_PYTHON (scripts/bootstrap.sh): rows skipped"
fi

# === 6. separate processes: start-up time and memory per idle connection =====================
if want memory; then
say "keysvc and gateway as separate processes: start-up, memory"
D="$SQLITE_DIR"
kapi=$(free_port); kmgmt=$(free_port); gk=$(free_port); gh=$(free_port)
t0=$(now_ms)
"$BIN" keysvc --listen-api "127.0.0.1:$kapi" --listen-management "127.0.0.1:$kmgmt" \
    --tls-cert "$D/pki/keysvc.pem" --tls-key "$D/pki/keysvc-key.pem" --tls-client-ca "$D/pki/internal/ca.pem" \
    --allow-gateway spiffe://openkcm.dev/gateway --database "sqlite://$D/keys.db" \
    --root-key-id dev-root-1 --root-key-file "$D/root-key.b64" >"$OUT/keysvc.out" 2>"$OUT/keysvc.err" &
KS_PID=$!; PIDS+=("$KS_PID")
if ms=$(wait_for "$t0" 10000 curl -sf "http://127.0.0.1:$kmgmt/ready"); then
    fact keysvc_ready_ms "$ms"
else
    fact keysvc_ready_ms "not ready in 10 s (see keysvc.err)"
fi
t0=$(now_ms)
"$BIN" gateway --kmip-addr "127.0.0.1:$gk" --https-addr "127.0.0.1:$gh" \
    --tls-cert "$D/pki/gateway.pem" --tls-key "$D/pki/gateway-key.pem" --client-ca "$D/pki/ca.pem" \
    --policies "$D/policies" --upstream "127.0.0.1:$kapi" --upstream-ca "$D/pki/internal/ca.pem" \
    --upstream-cert "$D/pki/gateway-upstream.pem" --upstream-key "$D/pki/gateway-upstream-key.pem" \
    --upstream-server-name keysvc >"$OUT/gateway.out" 2>"$OUT/gateway.err" &
GW_PID=$!; PIDS+=("$GW_PID")
# Ready, or gone (then there is nothing to wait for).
gateway_settled() {
    ! kill -0 "$GW_PID" 2>/dev/null ||
        curl -sf --cacert "$D/pki/ca.pem" --cert "$D/pki/tenant-a.pem" --key "$D/pki/tenant-a-key.pem" \
            --resolve "localhost:$gh:127.0.0.1" "https://localhost:$gh/ready"
}
if ms=$(wait_for "$t0" 10000 gateway_settled) && kill -0 "$GW_PID" 2>/dev/null; then
    fact gateway_ready_ms "$ms"
    MEM_MODE=separate; MEM_ADDR="127.0.0.1:$gk"; GW_MEM_PID=$GW_PID; KS_MEM_PID=$KS_PID
else
    # Memory per connection is then measured on `openkcm dev` (both in one process).
    fact gateway_ready_ms "did not start (see gateway.err: $(grep -m1 -o "panicked at [^ ]*" "$OUT/gateway.err" || echo "no answer on /ready"))"
    stop_pid "$GW_PID"; stop_pid "$KS_PID"
    start_dev mem "$SQLITE_DIR"
    MEM_MODE=dev; MEM_ADDR="$KMIP"; GW_MEM_PID=$DEV_PID; KS_MEM_PID=""
fi
fact memory_mode "$MEM_MODE"
sleep 1
fact rss_idle_gateway_kib "$(rss_kib "$GW_MEM_PID")"
[ -n "$KS_MEM_PID" ] && fact rss_idle_keysvc_kib "$(rss_kib "$KS_MEM_PID")"
idle_settled() { grep -q holding "$1" || ! kill -0 "$2" 2>/dev/null; }
for n in $IDLE_COUNTS; do
    "$BIN" loadtest --addr "$MEM_ADDR" "${TA[@]}" --op idle --connections "$n" --duration 8s \
        --quiet >"$OUT/idle-$n.out" 2>&1 &
    IDLE_PID=$!; PIDS+=("$IDLE_PID")
    # Until every connection is open, or the client gave up.
    wait_for "$(now_ms)" 120000 idle_settled "$OUT/idle-$n.out" "$IDLE_PID" >/dev/null || true
    if grep -q holding "$OUT/idle-$n.out"; then
        sleep 2
        fact "rss_${n}_gateway_kib" "$(rss_kib "$GW_MEM_PID")"
        [ -n "$KS_MEM_PID" ] && fact "rss_${n}_keysvc_kib" "$(rss_kib "$KS_MEM_PID")"
        fact "idle_${n}_held" "$(sed -n 's/.*holding \([0-9]*\) connections/\1/p' "$OUT/idle-$n.out")"
    else
        fact "idle_${n}" "failed: $(tail -1 "$OUT/idle-$n.out")"
    fi
    wait "$IDLE_PID" 2>/dev/null || true
    sleep 1
done
if [ "$MEM_MODE" = separate ]; then stop_pid "$GW_PID"; stop_pid "$KS_PID"; else stop_pid "$DEV_PID"; fi
fi
fact load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
fact elapsed_s "$(( $(date +%s) - START_TS ))"

# === report ==================================================================================
say "report"
mkdir -p docs/img
CHART_ARGS=()
for r in $OPEN_RATES; do
    [ -f "$OUT/runs/open-$r.1.json" ] && CHART_ARGS+=("$OUT/runs/open-$r.1.json")
done
if [ "${#CHART_ARGS[@]}" -gt 0 ]; then
    "$CHART" "$OUT/bench-open-loop-get.svg" "Get through the gateway (SQLite), open loop, 64 connections" "${CHART_ARGS[@]}"
fi
python3 scripts/bench/report.py "$OUT" "$QUICK" >"$OUT/section.md"
cat "$OUT/section.md"
if [ "${BENCH_NO_DOCS:-0}" != 1 ]; then
    [ -f "$OUT/bench-open-loop-get.svg" ] && cp "$OUT/bench-open-loop-get.svg" docs/img/bench-open-loop-get.svg
    python3 scripts/bench/report.py --splice docs/benchmarks.md "$OUT/section.md"
    say "docs/benchmarks.md and docs/img/bench-open-loop-get.svg updated; raw results in $OUT"
else
    say "raw results in $OUT (docs untouched)"
fi
