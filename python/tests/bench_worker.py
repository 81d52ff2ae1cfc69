"""Per-request overhead of the worker's lane loop (not a test; prints figures only).

Each figure is given for a socket lane and for a ring lane (RING-SPEC.md; the
master side is test_worker.RingMaster, in Python: its ping-pong round trip is
not the Rust master's). --no-ring: socket lanes only.

    python3 python/tests/bench_worker.py [-n 200000] [--profile] [--worker OLD/ferrocorn_worker.py]
    .venv/bin/python python/tests/bench_worker.py -n 20000 --app examples.flask_app:app   # a real app's GET /hello

"python only" feeds the loop ready-made requests and drops its output: the
pure Python cost, steady even on a busy machine. Then a forked "master" pipelines N GET requests into one lane (a writer thread) and
reads the responses (its main thread), so the worker never waits for it. The
worker runs the real LaneServer loop on this process's main thread around a
trivial app; wall and CPU time per request are the worker's whole cost: frame
decode, environ, app call, start_response, head encoding, one sendall.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import os
import pstats
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_worker  # noqa: E402
from test_worker import H, recv_frame, request_head  # noqa: E402

W = test_worker.W

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def list_app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


class OneChunk:
    """What Flask returns: a ClosingIterator-like object over one bytes chunk."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk

    def __iter__(self):
        return iter((self.chunk,))

    def close(self) -> None:
        pass


def closing_app(environ, start_response):
    start_response("200 OK", HEADERS)
    return OneChunk(BODY)


def ping_pong_master(sock: socket.socket, n: int) -> None:
    """One request at a time, as the real master drives a lane."""
    req = request_frame()
    buf = memoryview(bytearray(1 << 16))
    sock.sendall(req)
    size = 0
    while True:
        kind, flags, payload = recv_frame(sock)
        size += 8 + len(payload)
        if kind == W.BODY and flags & W.END:
            break
    for _ in range(n - 1):
        sock.sendall(req)
        left = size
        while left:
            got = sock.recv_into(buf, left)
            if not got:
                os._exit(3)
            left -= got
    sock.close()
    os._exit(0)


def master(sock, n: int) -> None:
    """The forked master: pipeline n requests, read n responses, then close the
    lane (a socket, or a test_worker.RingMaster, which behaves as one)."""
    req = request_frame()

    def writer() -> None:
        batch = req * 64
        for _ in range(n // 64):
            sock.sendall(batch)
        sock.sendall(req * (n % 64))

    threading.Thread(target=writer, daemon=True).start()
    # Every response is identical: parse the first, then just count bytes, so
    # the master costs far less per request than the worker it measures.
    size = 0
    while True:
        kind, flags, payload = recv_frame(sock)
        size += 8 + len(payload)
        if kind == W.ERROR:
            os._exit(2)
        if kind == W.BODY and flags & W.END:
            break
    left = (n - 1) * size
    recv_into = getattr(sock, "recv_into", None)  # a socket; a RingMaster has recv only
    buf = memoryview(bytearray(1 << 20))
    while left:
        got = recv_into(buf, min(left, len(buf))) if recv_into else len(sock.recv(min(left, len(buf))))
        if not got:
            os._exit(3)
        left -= got
    sock.close()
    os._exit(0)


def request_frame() -> bytes:
    head = request_head(path="/hello", headers=(("Host", "localhost:8000"), ("User-Agent", "bench"),
                                                 ("Accept", "*/*")))
    return H.pack(len(head), W.REQUEST, 0, 0) + head


def run_no_io(app, n: int, profile: bool) -> float:
    """The worker's Python cost alone: recv hands out ready-made requests, sendall drops."""
    ours, theirs = socket.socketpair()
    lane = W.Lane(0, ours)
    batch = request_frame() * 64
    batches = iter(range(n // 64))

    def recv(size: int) -> bytes:
        return batch if next(batches, None) is not None else b""

    lane._recv = recv
    lane._poll = tuple  # a C call: the fake recv never blocks
    lane.sendall = len  # a C call that accepts the bytes, like sendall
    server = W.LaneServer(lane, app, W.base_environ(1, 1), [False])
    n = n // 64 * 64
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.runcall(server.run)
    else:
        server.run()
    elapsed = time.process_time() - started
    ours.close()
    theirs.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    return elapsed / n * 1e6


def run_no_io_ring(app, n: int, profile: bool, ring: int = 262144) -> float:
    """run_no_io over a ring lane: where it would sleep, the lane's own thread
    refills the request ring with 64 requests or frees the response ring, so
    the figure is the pure Python cost of a request through the rings."""
    ours, theirs = socket.socketpair()
    hub = test_worker.MasterBell()
    m = test_worker.RingMaster(theirs, hub, ring)
    batch = request_frame() * 64
    batches = iter(range(n // 64))
    mm, q = m.mm, m.q

    class NoIO(W.RingLane):
        def _sleep(self, word, ready):
            if ready():
                return
            if word == W.R_W_SPACE_SLEEP:
                q[24] = q[16]  # the master read every response
                return
            if next(batches, None) is None:
                self.eof = True
                raise W.LaneClosed("done")
            tail = q[0]
            off = tail % ring
            first = min(len(batch), ring - off)
            mm[4096 + off : 4096 + off + first] = batch[:first]
            mm[4096 : 4096 + len(batch) - first] = batch[first:]
            q[0] = tail + len(batch)

    lane = NoIO(0, ours, os.dup(m.memfd), os.dup(m.bell), hub.fd, ring)
    server = W.LaneServer(lane, app, W.base_environ(1, 1), [False])
    n = n // 64 * 64
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.runcall(server.run)
    else:
        server.run()
    elapsed = time.process_time() - started
    lane.close()
    m.close()
    hub.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    return elapsed / n * 1e6


def run(app, n: int, profile: bool, ping_pong: bool = False) -> tuple[float, float]:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        (ping_pong_master if ping_pong else master)(theirs, n)
    theirs.close()
    lane = W.Lane(0, ours)
    server = W.LaneServer(lane, app, W.base_environ(1, 1), [False])
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.runcall(server.run)
    else:
        server.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"master exited with {status}"
    ours.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return wall / n * 1e6, cpu / n * 1e6


def ring_master(m, n: int, ping_pong: bool) -> None:
    """The forked master over a ring lane (test_worker.RingMaster): pipelined or one at a time."""
    req = request_frame()
    if ping_pong:
        m.sendall(req)
        size = 0
        while True:
            kind, flags, payload = recv_frame(m)
            size += 8 + len(payload)
            if kind == W.BODY and flags & W.END:
                break
        for _ in range(n - 1):
            m.sendall(req)
            left = size
            while left:
                got = m.recv(left)
                if not got:
                    os._exit(3)
                left -= len(got)
        m.close()
        os._exit(0)

    master(m, n)  # pipelined: as over a socket


def run_ring(app, n: int, profile: bool, ping_pong: bool = False, ring: int = 262144) -> tuple[float, float]:
    """As run(), over a ring lane (RING-SPEC.md): the master (forked) publishes into the rings."""
    ours, theirs = socket.socketpair()
    hub = test_worker.MasterBell()
    m = test_worker.RingMaster(theirs, hub, ring)
    pid = os.fork()
    if pid == 0:
        ours.close()
        ring_master(m, n, ping_pong)
    lane = W.RingLane(0, ours, os.dup(m.memfd), os.dup(m.bell), hub.fd, ring)
    m.close()
    server = W.LaneServer(lane, app, W.base_environ(1, 1), [False])
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.runcall(server.run)
    else:
        server.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"master exited with {status}"
    lane.close()
    hub.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return wall / n * 1e6, cpu / n * 1e6


def load_app(spec: str):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def app_alone_us(app, n: int) -> float:
    """The app's own cost for GET /hello: the environ the worker would build, no worker loop."""
    fields = request_frame()[H.size:].decode("latin-1").split("\0")
    base = W.base_environ(1, 1)
    base.update(zip(fields[::2], fields[1::2]))
    base["wsgi.input"] = None

    def start_response(status, headers, exc_info=None):
        return None

    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(n):
            environ = base.copy()
            result = app(environ, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--worker", help="another ferrocorn_worker.py to measure (e.g. an older version)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-ring", action="store_true", help="socket lanes only (RING-SPEC.md's ring lanes are measured too)")
    parser.add_argument("--app", help="also measure a real app, MODULE:ATTR importable from the repository root "
                        "(e.g. examples.flask_app:app), and the app alone called in a loop with no worker around it")
    args = parser.parse_args()
    global W
    if args.worker:
        spec = importlib.util.spec_from_file_location("ferrocorn_worker_under_test", args.worker)
        W = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(W)
    print(f"python {sys.version.split()[0]}, {args.n} requests per run, best of {args.repeat}; load {os.getloadavg()[0]:.1f}")
    apps = [("list app", list_app), ("flask-like closing iterator", closing_app)]
    if args.app:
        apps.append((args.app, load_app(args.app)))
        print(f"{args.app} called alone in a loop: {app_alone_us(apps[-1][1], args.n):5.2f} us per call")
    for name, app in apps:
        python_only = min(run_no_io(app, args.n, False) for _ in range(args.repeat))
        wall, cpu = min((run(app, args.n, False) for _ in range(args.repeat)), key=lambda x: x[1])
        rtt, rcpu = min((run(app, args.n // 4, False, True) for _ in range(args.repeat)), key=lambda x: x[0])
        print(f"{name:28s} python only {python_only:5.2f} us | pipelined over a socketpair: "
              f"{cpu:5.2f} us cpu, {wall:5.2f} us wall | ping-pong round trip {rtt:5.2f} us ({rcpu:5.2f} us worker cpu)")
        if not args.no_ring:
            python_only = min(run_no_io_ring(app, args.n, False) for _ in range(args.repeat))
            wall, cpu = min((run_ring(app, args.n, False) for _ in range(args.repeat)), key=lambda x: x[1])
            rtt, rcpu = min((run_ring(app, args.n // 4, False, True) for _ in range(args.repeat)), key=lambda x: x[0])
            print(f"{'  over ring lanes':28s} python only {python_only:5.2f} us | pipelined over a ring lane:  "
                  f"{cpu:5.2f} us cpu, {wall:5.2f} us wall | ping-pong round trip {rtt:5.2f} us ({rcpu:5.2f} us worker cpu)")
    if args.profile:
        run_no_io(closing_app, args.n, True)
        if not args.no_ring:
            run_no_io_ring(closing_app, args.n, True)

if __name__ == "__main__":
    main()
