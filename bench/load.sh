#!/usr/bin/env bash
# The load benchmark: Turnstile's bare engine (`--app hello --middleware
# none`) against hyper 1 on a single-threaded tokio runtime serving the same
# hello world, side by side in one run. Each server is pinned to one core
# with taskset, wrk (16 keep-alive connections) to the other. Then
# Turnstile again with 1,000 idle keep-alive connections held open beside
# the load. Prints requests/s and the ratios.
#
# Run: bench/load.sh            (needs wrk: apt-get install -y wrk)
# Each round runs all three, one after the other; the medians are compared.
# Knobs: ROUNDS (3), DURATION (seconds per run, default 10), CONNECTIONS (16),
#        IDLE (1000), SERVER_CORE (1), CLIENT_CORE (0), THREADS (Turnstile's
#        --threads, default the binary's).
# Never run it beside a build: a concurrent cargo build halves every figure.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
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
cleanup() {
    stop_all
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_server NAME COMMAND...: starts it pinned, in the background, and
# prints the address from the line it prints ("... listening on http://ADDR").
start_server() {
    local name=$1
    shift
    taskset -c "$SERVER_CORE" "$@" >"$WORK/$name.log" 2>&1 &
    echo $! >"$WORK/$name.pid"
    for _ in $(seq 100); do
        local addr
        addr=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$WORK/$name.log" | head -1)
        if [[ -n $addr ]]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
    done
    echo "load.sh: $name did not start:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

# load NAME ADDR: runs wrk against ADDR and prints requests/s; the summary
# and any errors go to stderr.
load() {
    local name=$1 addr=$2
    taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://$addr/" >"$WORK/$name.wrk"
    local rps errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
    errors=$(grep -E 'Socket errors|Non-2xx' "$WORK/$name.wrk" || true)
    printf '  %-26s %12s req/s %s\n' "$name" "$rps" "$errors" >&2
    echo "$rps"
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

turnstile_flags=(--bind 127.0.0.1:0 --app hello --middleware none --keepalive 300)
[[ -n $THREADS ]] && turnstile_flags+=(--threads "$THREADS")

HYPER_ADDR=$(start_server hyper "$PEERS/hyper-hello" 127.0.0.1:0)
TURNSTILE_ADDR=$(start_server turnstile "$TURNSTILE" "${turnstile_flags[@]}")

echo "== $ROUNDS rounds, $CONNECTIONS connections, ${DURATION}s per run; servers on core $SERVER_CORE, wrk on core $CLIENT_CORE"
: >"$WORK/hyper" ; : >"$WORK/turnstile" ; : >"$WORK/idle"
for round in $(seq "$ROUNDS"); do
    echo "round $round" >&2
    load "hyper (current-thread tokio)" "$HYPER_ADDR" >>"$WORK/hyper"
    load "turnstile" "$TURNSTILE_ADDR" >>"$WORK/turnstile"
    taskset -c "$CLIENT_CORE" "$PEERS/hold-idle" "$TURNSTILE_ADDR" "$IDLE" $((DURATION + 5)) >"$WORK/idle.log" &
    holder=$!
    for _ in $(seq 300); do
        grep -q 'open and idle' "$WORK/idle.log" && break
        sleep 0.1
    done
    grep -q 'open and idle' "$WORK/idle.log" || { echo "load.sh: the idle connections did not open" >&2; cat "$WORK/idle.log" >&2; exit 1; }
    load "turnstile + $IDLE idle" "$TURNSTILE_ADDR" >>"$WORK/idle"
    wait "$holder"
    sed 's/^/  /' "$WORK/idle.log" | tail -1 >&2
done

HYPER=$(median <"$WORK/hyper")
TURNSTILE_RPS=$(median <"$WORK/turnstile")
TURNSTILE_IDLE=$(median <"$WORK/idle")
echo "== medians of $ROUNDS rounds"
awk -v t="$TURNSTILE_RPS" -v h="$HYPER" -v i="$TURNSTILE_IDLE" -v n="$IDLE" 'BEGIN {
    printf "hyper (current-thread tokio)  %10.0f req/s\n", h
    printf "turnstile (bare engine)       %10.0f req/s\n", t
    printf "turnstile + %d idle         %10.0f req/s\n", n, i
    printf "turnstile / hyper                       %.2f\n", t / h
    printf "turnstile with %d idle / without      %.2f\n", n, i / t
}'
