#!/usr/bin/env python3
"""Supervision's two timings, measured on the release binary.

1. Start-up: from starting `turnstile` to its first answered request
   (RUNS times; the demo application with every layer, and `--app hello`),
   polling the port every millisecond with a fresh connection.
2. The keep-alive race (RFC 9112, section 9.3.1): a request sent on a
   connection that has been idle for about the keep-alive time may meet the
   server closing it. For each idle gap around `--keepalive` (2 s), PER_GAP
   connections each send one request, wait the gap, and then, as a client
   pool does before it reuses a connection, look whether the server has
   closed it (a peek that reads the end of the stream): if it has, the
   request goes on a new connection and is not lost; if not, the second
   request is sent and counted lost when no whole response comes back, the
   race proper. Then the same for gaps drawn evenly from 0 to twice the
   keep-alive time.

Run: bench/supervision.py   (after `cargo build --release`)
Knobs (environment): RUNS (20), PER_GAP (100), SPREAD (400).
Never run it beside a build.
"""

import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "turnstile")
RUNS = int(os.environ.get("RUNS", "20"))
PER_GAP = int(os.environ.get("PER_GAP", "100"))
SPREAD = int(os.environ.get("SPREAD", "400"))
KEEPALIVE = 2.0
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, port):
    return subprocess.Popen(
        [BINARY, "--bind", f"127.0.0.1:{port}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def answered(port):
    """One GET on a fresh connection: whether a 200 came back."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def first_answer(args):
    port = free_port()
    began = time.monotonic()
    process = start(args, port)
    try:
        deadline = began + 10
        while time.monotonic() < deadline:
            if answered(port):
                return (time.monotonic() - began) * 1000
            time.sleep(0.001)
        raise SystemExit(f"no answer within 10 s from {args}")
    finally:
        stop(process)


def read_response(s):
    """Reads one response with a Content-Length body; False if cut short."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def second_request_lost(port, gap, results, index):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(REQUEST)
            if not read_response(s):
                results[index] = None  # the first failed: not counted
                return
            time.sleep(gap)
            s.setblocking(False)
            try:
                closed = s.recv(1, socket.MSG_PEEK) == b""
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            s.setblocking(True)
            if closed:
                results[index] = "noticed"
                return
            try:
                s.sendall(REQUEST)
                results[index] = not read_response(s)
            except OSError:
                results[index] = True
    except OSError:
        results[index] = None


def lost_share(port, gaps):
    results = [None] * len(gaps)
    threads = [
        threading.Thread(target=second_request_lost, args=(port, gap, results, i))
        for i, gap in enumerate(gaps)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counted = [r for r in results if r is not None]
    lost = sum(1 for r in counted if r is True)
    noticed = sum(1 for r in counted if r == "noticed")
    return lost, noticed, len(counted)


def main():
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} is missing: run cargo build --release first")
    print(f"== start-up: {RUNS} runs each, from exec to the first 200")
    for label, args in [
        ("demo, every layer, 2 workers", ["--workers", "2"]),
        ("hello, 2 workers", ["--workers", "2", "--app", "hello"]),
    ]:
        times = [first_answer(args) for _ in range(RUNS)]
        print(
            f"{label}: median {statistics.median(times):.1f} ms, "
            f"min {min(times):.1f} ms, max {max(times):.1f} ms"
        )
    print(f"== the keep-alive race: --keepalive {KEEPALIVE:g} s, {PER_GAP} connections a gap")
    port = free_port()
    process = start(["--workers", "2", "--app", "hello", "--backlog", "4096"], port)
    try:
        while not answered(port):
            time.sleep(0.01)
        for offset_ms in [-200, -50, -10, 0, 2, 4, 6, 8, 10, 20, 50, 100, 300]:
            gap = KEEPALIVE + offset_ms / 1000
            lost, noticed, counted = lost_share(port, [gap] * PER_GAP)
            print(
                f"idle {gap * 1000:6.0f} ms: {lost}/{counted} second requests lost, "
                f"{noticed} found the connection closed before sending"
            )
        rng = random.Random(1)
        gaps = [rng.uniform(0, 2 * KEEPALIVE) for _ in range(SPREAD)]
        lost, noticed, counted = lost_share(port, gaps)
        print(
            f"idle drawn from 0-{2 * KEEPALIVE:g} s: {lost}/{counted} lost "
            f"({100 * lost / max(counted, 1):.2f}%), {noticed} found it closed before sending"
        )
    finally:
        stop(process)


if __name__ == "__main__":
    sys.exit(main())
