#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the measure
# that does not move when the machine is busy, for telling a change of a
# few percent from noise before the load benchmarks are run.
#
# Serves N requests (one keep-alive connection, wrk's request: GET / with
# a Host field) to the binary run under callgrind with one request thread,
# bare (--middleware none) and with every layer on as bench/stack.sh runs
# it (a JSON access log, metrics, Sentry and OTLP exporters pointed at the
# quiet loopback stand-ins, every span exported), and prints the user-space
# instructions per request of the request thread and, for the full stack,
# of the thread that encodes and sends the spans. The kernel's share
# (sockets, the loopback) is not counted: the load benchmarks measure it.
#
# Run: bench/instructions.sh   (needs valgrind and python3)
# Knobs: REQUESTS (6000), KEEP (a directory to keep the callgrind files in,
#        for callgrind_annotate).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
REQUESTS=${REQUESTS:-6000}

for tool in valgrind python3; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is not installed" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release --quiet --bin turnstile --example sentry_receiver --example otlp_receiver
EXAMPLES=target/release/examples

make_work_dir

SENTRY_DSN=$(stand_in sentry_receiver)
OTLP_ENDPOINT=$(stand_in otlp_receiver)

# count MODE MIDDLEWARE: serves $REQUESTS requests under callgrind and prints
# the instructions per request of the request thread and the span thread.
count() {
    local mode=$1 middleware=$2
    mkdir -p "$WORK/$mode"
    SENTRY_DSN=$SENTRY_DSN OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP_ENDPOINT \
        OTEL_BSP_MAX_QUEUE_SIZE=65536 OTEL_BSP_MAX_EXPORT_BATCH_SIZE=8192 \
        valgrind --tool=callgrind --separate-threads=yes --trace-children=yes \
        --callgrind-out-file="$WORK/$mode/callgrind.%p" \
        target/release/turnstile --bind 127.0.0.1:0 --app hello --threads 1 \
        --middleware "$middleware" --keepalive 300 --timeout 600 \
        --access-log "$WORK/$mode/access.log" --access-log-format json \
        --metrics-bind 127.0.0.1:0 >"$WORK/$mode.log" 2>&1 &
    local server=$!
    echo "$server" >"$WORK/$mode.pid"
    local addr=
    for _ in $(seq 600); do
        addr=$(sed -n -E 's#.*[Ll]istening (on|at):? http://([^ ]*).*#\2#p' "$WORK/$mode.log" | head -1)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "instructions.sh: the server did not start" >&2; cat "$WORK/$mode.log" >&2; exit 1; }
    python3 - "$addr" "$REQUESTS" <<'PY'
import socket, sys
addr, count = sys.argv[1], int(sys.argv[2])
host, port = addr.rsplit(":", 1)
request = f"GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode()
with socket.create_connection((host, int(port)), timeout=60) as connection:
    for _ in range(count):
        connection.sendall(request)
        reply = b""
        while not reply.endswith(b"Hello, world!\n"):
            chunk = connection.recv(65536)
            if not chunk:
                sys.exit("the connection closed early")
            reply += chunk
PY
    # TERM: the worker sends the spans it still holds as it stops.
    kill -TERM "$server"
    wait "$server" || true
    rm -f "$WORK/$mode.pid"
    [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$WORK/$mode"/callgrind.* "$KEEP/"
    python3 - "$mode" "$REQUESTS" "$WORK/$mode"/callgrind.* <<'PY'
import sys
mode, requests, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def per_request(marker):
    for name in sorted(files):
        text = open(name, errors="replace").read()
        if marker in text:
            totals = [line for line in text.splitlines() if line.startswith(("summary:", "totals:"))]
            return int(totals[0].split()[1]) / requests
    return None
# Only the request threads wait in epoll (the worker's main thread polls).
request = per_request("epoll_wait")
spans = per_request("OtlpExporter::encode")
if request is None:
    sys.exit(f"instructions.sh: no request thread found in the {mode} profiles")
line = f"{mode:<6} request thread {request:8.0f} instructions a request"
if spans is not None:
    line += f", span thread {spans:6.0f} a span"
print(line)
PY
}

echo "== $REQUESTS requests on one keep-alive connection, one request thread, under callgrind"
count bare none
count full all
