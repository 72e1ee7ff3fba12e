#!/usr/bin/env bash
# The slow-clients benchmark: does a server keep serving while thousands of
# clients send and read slowly beside the load? Turnstile (2 workers of 8
# threads, every layer on, the demo application) and Gunicorn (2 gthread
# workers of 8 threads, a plain WSGI application with the same paths,
# bench/python/slow_app.py), side by side in one run, each pinned to core 1;
# wrk and the slow clients (bench/peers: slow-clients) on core 0.
#
# For each server, ROUNDS rounds (Gunicorn one), alone and beside taking
# turns, since these machines drift by tens of percent in minutes:
# 1. wrk alone (16 keep-alive connections on `/`) for DURATION seconds;
# 2. wrk in the last DURATION seconds of HOLD, beside HEADS clients sending
#    request heads, BODIES sending request bodies and READERS reading a
#    large streamed response (/stream?chunks=200&size=65536, 12.8 MB), all
#    at RATE bytes a second, just above the minimum rate (240);
# then the median beside against the median alone, the workers' memory at
# its highest, what became of the slow clients, and, for Turnstile,
# whether a worker was aborted; and once:
# 3. wrk in the first seconds of BELOW clients sending heads and as many
#    sending bodies at 1 byte a second, before their grace period (5 s)
#    ends; then what became of them (Turnstile answers 408).
#
# Run: bench/slow.sh   (needs wrk, taskset and python3 with venv)
# Knobs: ROUNDS (3), DURATION (wrk's seconds in each run, 15), HOLD (60,
#        more than DURATION), RATE (300), HEADS (2000), BODIES
#        (1000), READERS (1000), BELOW (1000), SERVER_CORE (1), CLIENT_CORE (0).
# Never run it beside a build: a concurrent cargo build halves every figure.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
HOLD=${HOLD:-60}
RATE=${RATE:-300}
HEADS=${HEADS:-2000}
BODIES=${BODIES:-1000}
READERS=${READERS:-1000}
BELOW=${BELOW:-1000}
SERVER_CORE=${SERVER_CORE:-1}
CLIENT_CORE=${CLIENT_CORE:-0}
STREAM='/stream?chunks=200&size=65536'

for tool in wrk taskset python3; do
    command -v "$tool" >/dev/null || { echo "slow.sh: $tool is not installed" >&2; exit 1; }
done
# Thousands of sockets on each side.
ulimit -n "$(ulimit -Hn)"

echo "== building (release)"
cargo build --release --quiet --bin turnstile
cargo build --release --quiet --manifest-path bench/peers/Cargo.toml --bin slow-clients
TURNSTILE=target/release/turnstile
SLOW=bench/peers/target/release/slow-clients
VENV=bench/python/.venv
if [[ ! -x $VENV/bin/gunicorn ]]; then
    echo "== installing Gunicorn into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r bench/python/requirements.txt
fi

make_work_dir

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for ADDR: until the server answers `/`.
wait_for() {
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://$1/" && return 0
        sleep 0.1
    done
    echo "slow.sh: nothing answers on $1" >&2
    exit 1
}

# workers_rss_mib PID: the largest resident memory of PID's children, in MiB.
workers_rss_mib() {
    local max=0 kib
    for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        kib=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
        ((kib > max)) && max=$kib
    done
    awk -v k="$max" 'BEGIN { printf "%.1f", k / 1024 }'
}

# wrk_rps ADDR SECONDS: requests a second, wrk pinned to the client core;
# errors go to stderr.
wrk_rps() {
    local out
    out=$(taskset -c "$CLIENT_CORE" wrk -t1 -c16 -d"$2s" --timeout 10s "http://$1/")
    grep -E 'Socket errors|Non-2xx' <<<"$out" >&2 || true
    awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

# slow_clients NAME ARGS...: starts them on the client core, in the
# background, and waits until they are connected.
slow_clients() {
    local name=$1
    shift
    taskset -c "$CLIENT_CORE" "$SLOW" "$@" >"$WORK/$name.slow" 2>&1 &
    echo $! >"$WORK/$name.slowpid"
    for _ in $(seq 300); do
        grep -q 'connected' "$WORK/$name.slow" && return 0
        sleep 0.1
    done
    echo "slow.sh: the slow clients did not connect" >&2
    exit 1
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# run NAME PID ADDR ROUNDS: the runs against one server.
run() {
    local name=$1 pid=$2 addr=$3 rounds=$4
    echo "== $name"
    : >"$WORK/$name.alone"
    : >"$WORK/$name.beside"
    : >"$WORK/$name.rss"
    for round in $(seq "$rounds"); do
        wrk_rps "$addr" "$DURATION" >>"$WORK/$name.alone"
        slow_clients "$name-above-$round" "$addr" "$HEADS" "$BODIES" "$READERS" "$RATE" "$HOLD" "$STREAM"
        local slow
        slow=$(cat "$WORK/$name-above-$round.slowpid")
        (while kill -0 "$slow" 2>/dev/null; do
            workers_rss_mib "$pid"
            echo
            sleep 1
        done) >>"$WORK/$name.rss" &
        # The last DURATION seconds of the hold, when the slow clients have
        # sent or read the most.
        sleep $((HOLD - DURATION - 2))
        wrk_rps "$addr" "$DURATION" >>"$WORK/$name.beside"
        wait "$slow" || true
        sleep 1
    done
    local alone beside peak
    alone=$(median <"$WORK/$name.alone")
    beside=$(median <"$WORK/$name.beside")
    peak=$(sort -g "$WORK/$name.rss" | tail -1)
    echo "  alone                         $alone req/s ($(paste -sd' ' "$WORK/$name.alone"))"
    echo "  beside $HEADS+$BODIES+$READERS slow clients at $RATE B/s  $beside req/s" \
        "($(paste -sd' ' "$WORK/$name.beside")): $(awk -v a="$beside" -v b="$alone" 'BEGIN { printf "%.2f", a / b }')x alone," \
        "workers at most ${peak} MiB"
    cat "$WORK/$name"-above-*.slow | sed -n 's/^slow-clients: \(.*: \)/\1/p' | sort | uniq -c |
        awk -v r="$rounds" '{ n = $1; $1 = ""; printf "   %s (in %d of %d rounds)\n", $0, n, r }'

    slow_clients "$name-below" "$addr" "$BELOW" "$BELOW" 0 1 12 /
    local early
    early=$(wrk_rps "$addr" 4)
    wait "$(cat "$WORK/$name-below.slowpid")" || true
    echo "  first 4 s beside $BELOW+$BELOW clients at 1 B/s  $early req/s" \
        "($(awk -v a="$early" -v b="$alone" 'BEGIN { printf "%.2f", a / b }')x alone)"
    sed -n 's/^slow-clients: /    /p' "$WORK/$name-below.slow"
    RATIOS[$name]=$(awk -v a="$beside" -v b="$alone" 'BEGIN { printf "%.2f", a / b }')
    BESIDE[$name]=$beside
}

declare -A RATIOS BESIDE

# ANCHOR: servers
taskset -c "$SERVER_CORE" "$TURNSTILE" --bind 127.0.0.1:0 --workers 2 --threads 8 \
    --access-log "$WORK/turnstile-access.log" --error-log "$WORK/turnstile-error.log" \
    >"$WORK/turnstile.out" 2>&1 &
echo $! >"$WORK/turnstile.pid"
for _ in $(seq 100); do
    TURNSTILE_ADDR=$(sed -n 's|^turnstile: listening on http://||p' "$WORK/turnstile.out" | head -1)
    [[ -n $TURNSTILE_ADDR ]] && break
    sleep 0.1
done
GUNICORN_ADDR=127.0.0.1:$(free_port)
taskset -c "$SERVER_CORE" "$VENV/bin/gunicorn" --chdir bench/python --bind "$GUNICORN_ADDR" \
    --workers 2 --worker-class gthread --threads 8 --keep-alive 300 slow_app:application \
    >"$WORK/gunicorn.log" 2>&1 &
echo $! >"$WORK/gunicorn.pid"
# ANCHOR_END: servers
wait_for "$TURNSTILE_ADDR"
wait_for "$GUNICORN_ADDR"

run turnstile "$(cat "$WORK/turnstile.pid")" "$TURNSTILE_ADDR" "$ROUNDS"
aborted=$(grep -c "aborted by the arbiter's timeout" "$WORK/turnstile-error.log" || true)
echo "  workers aborted by --timeout: $aborted"
# One round: beside the slow clients, Gunicorn's threads are all theirs.
run gunicorn "$(cat "$WORK/gunicorn.pid")" "$GUNICORN_ADDR" 1

echo "== beside the slow clients, against each alone"
for name in turnstile gunicorn; do
    printf '%-10s %6sx  (%s req/s)\n' "$name" "${RATIOS[$name]}" "${BESIDE[$name]}"
done
awk -v t="${BESIDE[turnstile]}" -v g="${BESIDE[gunicorn]}" 'BEGIN {
    if (g > 0) printf "turnstile / gunicorn beside the slow clients  %.1f\n", t / g
    else printf "turnstile / gunicorn beside the slow clients  (gunicorn served none)\n"
}'
