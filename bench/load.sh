#!/usr/bin/env bash
# The load benchmark: Turnstile's bare engine (`--app hello --middleware
# none`) against hyper 1 on a single-threaded tokio runtime serving the same
# hello world, side by side in one run. Each server is pinned to one core
# with taskset, wrk (16 keep-alive connections) to the other. Then
# Turnstile again with 1,000 idle keep-alive connections held open beside
# the load. Prints requests/s and the ratios.
#
# Run: bench/load.sh            (needs wrk: apt-get install -y wrk)
# Knobs: DURATION (seconds per run, default 10), CONNECTIONS (16),
#        IDLE (1000), SERVER_CORE (1), CLIENT_CORE (0), THREADS (Turnstile's
#        --threads, default the binary's).
# Never run it beside a build: a concurrent cargo build halves every figure.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
IDLE=${IDLE:-1000}
SERVER_CORE=${SERVER_CORE:-1}
CLIENT_CORE=${CLIENT_CORE:-0}
THREADS=${THREADS:-}

command -v wrk >/dev/null || { echo "load.sh: wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "load.sh: taskset is not installed (util-linux)" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet --bin turnstile
cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
TURNSTILE=target/release/turnstile
PEERS=bench/peers/target/release

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_server NAME COMMAND...: starts it pinned, sets ADDR from the line it
# prints ("... listening on http://ADDR").
start_server() {
    local name=$1
    shift
    taskset -c "$SERVER_CORE" "$@" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    ADDR=
    for _ in $(seq 100); do
        ADDR=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$WORK/$name.log" | head -1)
        [[ -n $ADDR ]] && return 0
        sleep 0.1
    done
    echo "load.sh: $name did not start:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# load NAME: runs wrk against $ADDR, prints its summary, sets RPS.
load() {
    local name=$1
    taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://$ADDR/" >"$WORK/$name.wrk"
    RPS=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
    local errors
    errors=$(grep -E 'Socket errors|Non-2xx' "$WORK/$name.wrk" || true)
    printf '%-28s %12s req/s %s\n' "$name" "$RPS" "$errors"
}

turnstile_flags=(--bind 127.0.0.1:0 --app hello --middleware none --keepalive 300)
[[ -n $THREADS ]] && turnstile_flags+=(--threads "$THREADS")

echo "== $CONNECTIONS connections, ${DURATION}s each, servers on core $SERVER_CORE, wrk on core $CLIENT_CORE"
start_server hyper "$PEERS/hyper-hello" 127.0.0.1:0
load "hyper (current-thread tokio)"
HYPER=$RPS
stop_server

start_server turnstile "$TURNSTILE" "${turnstile_flags[@]}"
load "turnstile"
TURNSTILE_RPS=$RPS

taskset -c "$CLIENT_CORE" "$PEERS/hold-idle" "$ADDR" "$IDLE" $((DURATION + 5)) >"$WORK/idle.log" &
IDLE_PID=$!
for _ in $(seq 300); do
    grep -q 'open and idle' "$WORK/idle.log" && break
    sleep 0.1
done
grep -q 'open and idle' "$WORK/idle.log" || { echo "load.sh: the idle connections did not open" >&2; cat "$WORK/idle.log" >&2; exit 1; }
load "turnstile + $IDLE idle"
TURNSTILE_IDLE=$RPS
wait "$IDLE_PID"
tail -1 "$WORK/idle.log"
stop_server

awk -v t="$TURNSTILE_RPS" -v h="$HYPER" -v i="$TURNSTILE_IDLE" -v n="$IDLE" 'BEGIN {
    printf "turnstile / hyper:                      %.2f\n", t / h
    printf "turnstile with %d idle / without:     %.2f\n", n, i / t
}'
