#!/usr/bin/env bash
# The load benchmark of the whole stack: Turnstile with every layer on, side
# by side in one run with axum + tower-http (comparable layers), Gunicorn
# with the Python stack a Django team runs, and, for the engine alone,
# Turnstile's bare engine beside hyper. Each server is pinned to one core
# with taskset; wrk (16 keep-alive connections) and the loopback stand-ins
# for Sentry and the OpenTelemetry collector share the other.
#
# - turnstile, full stack: --app hello --threads 8 --middleware all, a JSON
#   access log to a file, request ids and security headers, metrics
#   (--metrics-bind), SENTRY_DSN and OTEL_EXPORTER_OTLP_ENDPOINT at the
#   stand-ins (every request is a span, exported: the span queue is sized
#   for this rate, and the spans that arrive are counted);
# - turnstile, bare: --app hello --threads 8 --middleware none;
# - axum + tower-http (bench/peers/src/bin/axum-stack.rs): TraceLayer to a
#   file, request ids, the same security headers, CatchPanicLayer, a
#   metrics-exporter-prometheus histogram;
# - Gunicorn (bench/python: installed into bench/python/.venv with pip on
#   first run), 2 gthread workers of 8 threads: access log, prometheus_client
#   in multiprocess mode, sentry_sdk's and OpenTelemetry's WSGI middleware
#   (batch OTLP exporter), a request-id and headers middleware;
# - hyper 1 on a current-thread tokio runtime (as in bench/load.sh).
#
# Prints requests/s, p50 and p99 latency, the workers' resident memory and
# how busy the server core was (below ~98%, something other than the server
# set the pace) for each (medians over the rounds), the ratios, and how many
# of the full stack's requests arrived at the collector stand-in as spans.
#
# Run: bench/stack.sh   (needs wrk, taskset and python3 with venv)
# Knobs: ROUNDS (3), DURATION (seconds per run, 10), CONNECTIONS (16),
#        SERVER_CORE (1), CLIENT_CORE (0), PYTHON_WORKERS (2), SETTLE
#        (seconds between runs, 6: what a server does after its load, such
#        as a batch exporter's last flush, must not land on the next one's).
# Never run it beside a build: a concurrent cargo build halves every figure.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
SERVER_CORE=${SERVER_CORE:-1}
SETTLE=${SETTLE:-6}
CLIENT_CORE=${CLIENT_CORE:-0}
PYTHON_WORKERS=${PYTHON_WORKERS:-2}

for tool in wrk taskset python3; do
    command -v "$tool" >/dev/null || { echo "stack.sh: $tool is not installed" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release --quiet --bin turnstile --example sentry_receiver --example otlp_receiver
cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
TURNSTILE=target/release/turnstile
EXAMPLES=target/release/examples
PEERS=bench/peers/target/release
VENV=bench/python/.venv
if [[ ! -x $VENV/bin/gunicorn ]]; then
    echo "== installing the Python stack into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r bench/python/requirements.txt
fi

make_work_dir

# start_server NAME COMMAND...: starts it pinned to the server core and
# prints the address it says it listens on.
start_server() {
    local name=$1
    shift
    taskset -c "$SERVER_CORE" "$@" >"$WORK/$name.log" 2>&1 &
    echo $! >"$WORK/$name.pid"
    for _ in $(seq 200); do
        local addr
        addr=$(sed -n -E 's#.*[Ll]istening (on|at):? http://([^ ]*).*#\2#p' "$WORK/$name.log" | head -1)
        if [[ -n $addr ]]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
    done
    echo "stack.sh: $name did not start:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

# rss_mib PID: the resident memory of PID's children (the workers), or of
# PID itself when it has none, in MiB.
rss_mib() {
    local pid=$1 total=0 kib children
    children=$(cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true)
    for p in ${children:-$pid}; do
        kib=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
        total=$((total + ${kib:-0}))
    done
    awk -v k="$total" 'BEGIN { printf "%.1f", k / 1024 }'
}

# to_ms TEXT: wrk's latency ("812.00us", "1.20ms", "1.01s") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

# core_ticks CORE: the core's busy and total clock ticks so far (/proc/stat;
# guest time is already counted in user time, so it is left out).
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu {
        total = 0
        for (i = 2; i <= NF && i <= 9; i++) total += $i
        print total - $5 - $6, total
    }' /proc/stat
}

# load NAME ADDR: one wrk run; appends "req/s p50 p99 rss busy%" to
# $WORK/NAME.runs.
load() {
    local name=$1 addr=$2 busy0 total0 busy1 total1
    read -r busy0 total0 < <(core_ticks "$SERVER_CORE")
    taskset -c "$CLIENT_CORE" wrk --latency -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://$addr/" >"$WORK/$name.wrk"
    read -r busy1 total1 < <(core_ticks "$SERVER_CORE")
    local busy
    busy=$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) 'BEGIN { printf "%.0f", t ? 100 * b / t : 0 }')
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")")
    errors=$(grep -E 'Socket errors|Non-2xx' "$WORK/$name.wrk" || true)
    awk '/requests in/ {print $1}' "$WORK/$name.wrk" >>"$WORK/$name.served"
    local rss
    rss=$(rss_mib "$(cat "$WORK/$name.pid")")
    printf '  %-28s %10s req/s  p50 %8s ms  p99 %8s ms  %7s MiB  core %3s%% busy %s\n' \
        "$name" "$rps" "$p50" "$p99" "$rss" "$busy" "$errors" >&2
    echo "$rps $p50 $p99 $rss $busy" >>"$WORK/$name.runs"
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

SENTRY_DSN=$(stand_in sentry_receiver taskset -c "$CLIENT_CORE")
OTLP_ENDPOINT=$(stand_in otlp_receiver taskset -c "$CLIENT_CORE")

# ANCHOR: servers
FULL_ADDR=$(SENTRY_DSN=$SENTRY_DSN OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP_ENDPOINT \
    OTEL_BSP_MAX_QUEUE_SIZE=65536 OTEL_BSP_MAX_EXPORT_BATCH_SIZE=8192 \
    start_server turnstile-full "$TURNSTILE" --bind 127.0.0.1:0 --app hello --threads 8 \
    --middleware all --keepalive 300 --access-log "$WORK/turnstile-access.log" \
    --access-log-format json --metrics-bind 127.0.0.1:0)
BARE_ADDR=$(start_server turnstile-bare "$TURNSTILE" --bind 127.0.0.1:0 --app hello --threads 8 \
    --middleware none --keepalive 300)
AXUM_ADDR=$(start_server axum "$PEERS/axum-stack" 127.0.0.1:0 "$WORK/axum-access.log")
HYPER_ADDR=$(start_server hyper "$PEERS/hyper-hello" 127.0.0.1:0)
GUNICORN_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/prometheus"
GUNICORN_ADDR=$(BIND=127.0.0.1:$GUNICORN_PORT ACCESS_LOG=$WORK/gunicorn-access.log \
    WORKERS=$PYTHON_WORKERS SENTRY_DSN=$SENTRY_DSN OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP_ENDPOINT \
    PROMETHEUS_MULTIPROC_DIR=$WORK/prometheus \
    start_server gunicorn "$VENV/bin/gunicorn" -c bench/python/gunicorn.conf.py \
    --chdir bench/python app:application)
# ANCHOR_END: servers
sleep 1

SERVERS=(turnstile-full axum gunicorn turnstile-bare hyper)
declare -A ADDR=([turnstile-full]=$FULL_ADDR [axum]=$AXUM_ADDR [gunicorn]=$GUNICORN_ADDR
    [turnstile-bare]=$BARE_ADDR [hyper]=$HYPER_ADDR)
echo "== $ROUNDS rounds, $CONNECTIONS connections, ${DURATION}s per run; servers on core $SERVER_CORE, wrk and the stand-ins on core $CLIENT_CORE"
for round in $(seq "$ROUNDS"); do
    echo "round $round" >&2
    for name in "${SERVERS[@]}"; do
        load "$name" "${ADDR[$name]}"
        sleep "$SETTLE"
    done
done

echo "== medians of $ROUNDS rounds"
declare -A RPS
for name in "${SERVERS[@]}"; do
    rps=$(awk '{print $1}' "$WORK/$name.runs" | median)
    p50=$(awk '{print $2}' "$WORK/$name.runs" | median)
    p99=$(awk '{print $3}' "$WORK/$name.runs" | median)
    rss=$(awk '{print $4}' "$WORK/$name.runs" | median)
    busy=$(awk '{print $5}' "$WORK/$name.runs" | median)
    RPS[$name]=$rps
    printf '%-28s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  workers %6.1f MiB  core %3.0f%% busy\n' \
        "$name" "$rps" "$p50" "$p99" "$rss" "$busy"
done
awk -v f="${RPS[turnstile-full]}" -v a="${RPS[axum]}" -v g="${RPS[gunicorn]}" \
    -v b="${RPS[turnstile-bare]}" -v h="${RPS[hyper]}" 'BEGIN {
    printf "turnstile full stack / axum + tower-http     %6.2f\n", f / a
    printf "turnstile full stack / gunicorn + Python     %6.2f\n", f / g
    printf "turnstile bare / hyper                       %6.2f\n", b / h
}'

# Every span the full stack's worker still holds is sent as it stops.
kill -TERM "$(cat "$WORK/turnstile-full.pid")"
for _ in $(seq 50); do
    kill -0 "$(cat "$WORK/turnstile-full.pid")" 2>/dev/null || break
    sleep 0.1
done
served=$(awk '{ n += $1 } END { print n }' "$WORK/turnstile-full.served")
spans=$(sed -n 's/^otlp receiver: \([0-9]*\) spans received from turnstile$/\1/p' "$WORK/otlp_receiver.err" | tail -1)
awk -v s="${spans:-0}" -v n="$served" 'BEGIN {
    printf "turnstile full stack: %d of %d requests arrived as spans (%.1f%%)\n", s, n, n ? 100 * s / n : 0
}'
