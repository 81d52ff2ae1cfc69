"""Tests of python/ferrocorn_worker.py, playing the master over real socketpairs.

Run from the repository root (stdlib only, no Flask needed):

    python3 -m unittest discover -s python/tests -v

Two harnesses: `LaneHarness` runs the worker's real LaneServer on a thread of
this process (so a test can look into its app), and `WorkerProcess` starts the
worker exactly as the master does (`python - ferrocorn-worker <id>`, program on
stdin, fds via pass_fds) for the handshake, boot failures, threads and stopping.
Every socket has a timeout, so a broken worker fails a test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import mmap
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings
import wsgiref.validate
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

WORKER_PATH = Path(__file__).resolve().parents[1] / "ferrocorn_worker.py"
TIMEOUT = 10.0


def load_worker():
    spec = importlib.util.spec_from_file_location("ferrocorn_worker", WORKER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ferrocorn_worker"] = module
    spec.loader.exec_module(module)
    return module


W = load_worker()
H = struct.Struct("<IBBH")
# In-process lanes log app errors on purpose; keep them off the test output
# (tests that care use assertLogs, which adds its own handler).
W.log.addHandler(logging.NullHandler())
W.log.propagate = False


# ------------------------------------------------------------------ master side


def send_frame(sock: socket.socket, kind: int, flags: int = 0, payload: bytes = b"") -> None:
    sock.sendall(H.pack(len(payload), kind, flags, 0) + payload)


def cancel_frame(number: int) -> bytes:
    """A CANCEL for the lane's request `number` (1 for its first REQUEST): ODD by its parity."""
    return H.pack(8, W.CANCEL, W.ODD if number & 1 else 0, 0) + W.CANCEL_NUMBER.pack(number)


def send_cancel(sock: socket.socket, number: int) -> None:
    sock.sendall(cancel_frame(number))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        data = sock.recv(n)
        if not data:
            raise EOFError("worker closed the socket")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def recv_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    length, kind, flags, reserved = H.unpack(recv_exact(sock, 8))
    assert reserved == 0, reserved
    assert length <= W.MAX_PAYLOAD, length
    return kind, flags, recv_exact(sock, length)


def request_head(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: tuple = (),
    content_length: Optional[int] = None,
    content_type: Optional[str] = None,
    protocol: str = "HTTP/1.1",
) -> bytes:
    pairs = [
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "8000"),
        ("SERVER_PROTOCOL", protocol),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("RAW_URI", path + ("?" + query if query else "")),
        ("wsgi.url_scheme", "http"),
    ]
    if content_type is not None:
        pairs.append(("CONTENT_TYPE", content_type))
    if content_length is not None:
        pairs.append(("CONTENT_LENGTH", str(content_length)))
    for name, value in headers:
        pairs.append(("HTTP_" + name.upper().replace("-", "_"), value))
    return "\0".join(x for pair in pairs for x in pair).encode("latin-1")


def send_request(sock: socket.socket, body: Optional[list] = None, **kw: Any) -> None:
    """REQUEST, then the body as the given list of BODY frames (the last gets END)."""
    if body is None:
        send_frame(sock, W.REQUEST, 0, request_head(**kw))
        return
    send_frame(sock, W.REQUEST, W.HAS_BODY, request_head(**kw))
    for i, chunk in enumerate(body):
        send_frame(sock, W.BODY, W.END if i == len(body) - 1 else 0, chunk)


class Response:
    def __init__(self, status: str, headers: list, body: bytes, frames: list, error: Optional[str]) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.frames = frames  # (kind, flags, len(payload)) as received
        self.error = error

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def read_response(sock: socket.socket) -> Response:
    """Frames up to BODY(END) or ERROR."""
    status, headers, body, frames = "", [], [], []
    while True:
        kind, flags, payload = recv_frame(sock)
        frames.append((kind, flags, len(payload)))
        if kind == W.ERROR:
            return Response(status, headers, b"".join(body), frames, payload.decode())
        if kind == W.RESPONSE:
            fields = payload.decode("latin-1").split("\0")
            status = fields[0]
            headers = list(zip(fields[1::2], fields[2::2]))
        elif kind == W.BODY:
            body.append(payload)
            if flags & W.END:
                return Response(status, headers, b"".join(body), frames, None)
        else:
            raise AssertionError(f"unexpected frame kind {kind}")


def get(sock: socket.socket, **kw: Any) -> Response:
    send_request(sock, **kw)
    return read_response(sock)


def wait_until(predicate: Callable[[], Any], what: str) -> None:
    """close() runs right after the last frame went out: wait for it, never sleep blindly."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def hello_app(environ: dict, start_response: Callable) -> list:
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def slow_hello_app(environ: dict, start_response: Callable) -> list:
    time.sleep(0.005)
    return hello_app(environ, start_response)


class LaneHarness:
    """One lane of the real LaneServer on a thread; the test is the master."""

    def __init__(self, app: Callable, lanes: int = 1, workers: int = 1) -> None:
        self.master, worker_end = socket.socketpair()
        self.master.settimeout(TIMEOUT)
        self._start(W.Lane(0, worker_end), app, lanes, workers)

    def _start(self, lane: Any, app: Callable, lanes: int, workers: int) -> None:
        """Record what the lane sends, then run the LaneServer on a thread."""
        self.lane = lane
        self.sends: list[bytes] = []
        real_sendall = lane.sendall

        def recording_sendall(data: Any) -> None:
            self.sends.append(bytes(data))
            real_sendall(data)

        lane.sendall = recording_sendall
        if isinstance(lane, W.Lane):  # a ring lane has no sendmsg
            real_sendmsg = lane.sendmsg

            def recording_sendmsg(parts: Any) -> int:
                self.sends.append(b"".join(parts))
                return real_sendmsg(parts)

            lane.sendmsg = recording_sendmsg
        self.stopping = [False]
        self.server = W.LaneServer(lane, app, W.base_environ(lanes, workers), self.stopping)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server.run()
        finally:
            self.lane.sock.close()  # as Worker._lane_main does

    def close(self) -> None:
        self.master.close()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "lane thread did not end at lane EOF"


class LaneTestCase(unittest.TestCase):
    def serve(self, app: Callable, **kw: Any) -> socket.socket:
        harness = LaneHarness(app, **kw)
        self.addCleanup(harness.close)
        self.harness = harness
        return harness.master


# ------------------------------------------------------------------ ring lanes: the master side

RING = 65536  # the smallest ring: frames wrap its end often
EFD_NONBLOCK = 0o4000
EFD_CLOEXEC = 0o2000000


def make_eventfd() -> int:
    """An EFD_NONBLOCK eventfd (os.eventfd is 3.10+: ctypes otherwise)."""
    if hasattr(os, "eventfd"):
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "eventfd")
    return fd


class MasterBell:
    """The master's eventfd, shared by every lane (and both directions) of a test master.

    Threads of the test master may sleep on it at once (a writer waiting for
    request-ring space, a reader waiting for a response): one polls it (with
    its lane socket), reads it and wakes the others through a condition."""

    def __init__(self) -> None:
        self.fd = make_eventfd()
        self.cond = threading.Condition()
        self.gen = 0
        self.leader = False

    def wait(self, timeout_ms: int, sock_fd: int) -> bool:
        """Sleep up to timeout_ms; True if anything happened (a doorbell, the socket, another's wake-up)."""
        with self.cond:
            if self.leader:
                gen = self.gen
                self.cond.wait(timeout_ms / 1000)
                return self.gen != gen
            self.leader = True
        happened = False
        try:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            poller.register(sock_fd, select.POLLIN)
            for fd, _ in poller.poll(timeout_ms):
                happened = True
                if fd == self.fd:
                    try:
                        os.read(fd, 8)
                    except BlockingIOError:
                        pass
        finally:
            with self.cond:
                self.leader = False
                self.gen += 1
                self.cond.notify_all()
        return happened

    def close(self) -> None:
        os.close(self.fd)


class RingMaster:
    """The master's side of one ring lane (RING-SPEC.md), playing a socket.

    sendall publishes into the request ring (waiting for space as it goes),
    recv copies out of the response ring (waiting for bytes), so the socket
    helpers above (get, send_frame, recv_frame...) drive a ring lane as they
    drive a lane socket. The lane socket (self.sock) carries no bytes: closing
    it is the master dropping the lane; its EOF is the worker's end.
    """

    def __init__(self, sock: socket.socket, hub: MasterBell, ring: int = RING, drop_bell: int = 0,
                 first_ms: int = 2) -> None:
        sock.settimeout(None)  # no bytes ever: only its EOF, peeked without blocking
        self.sock = sock
        self.ring = ring
        self.hub = hub
        self.master_bell = hub.fd
        self.memfd = os.memfd_create("ferrocorn-test-lane", 0)
        os.ftruncate(self.memfd, 4096 + 2 * ring)
        self.mm = mmap.mmap(self.memfd, 4096 + 2 * ring)
        self.q = memoryview(self.mm)[:4096].cast("Q")
        self.bell = make_eventfd()  # the lane's: we ring it, the worker polls it
        self.timeout = TIMEOUT
        self.fence = threading.Lock()
        self.fence.acquire()
        self.last_wdata = self.last_wspace = 0
        self.drop = drop_bell
        self.rung = 0
        self.bells = 0  # doorbells rung (not dropped)
        self.lost = 0  # our own wake-ups by timeout that found work
        self.nudges = 0  # doorbells rung again to a worker asleep with work
        self.first_ms = first_ms  # our first short sleep (the worker's is 2 ms)
        self.eof = False
        self.closed = False

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def _barrier(self) -> None:
        self.fence.release()
        self.fence.acquire()

    def _ring(self) -> None:
        if self.drop:
            self.rung += 1
            if self.rung % self.drop == 0:
                return
        self.bells += 1
        os.write(self.bell, (1).to_bytes(8, "little"))

    def _nudge(self) -> None:
        q = self.q
        unread = q[0] != q[8]
        room = q[16] - q[24] < self.ring
        if (q[32] & 1 and unread) or (q[40] & 1 and room):
            self.nudges += 1
            self._ring()

    def _sleep(self, word: int, ready: Callable[[], bool]) -> bool:
        """Our sleep procedure; False at the worker's EOF with nothing ready."""
        q = self.q
        seq = q[word] + 1
        q[word] = seq
        self._barrier()
        deadline = time.monotonic() + self.timeout
        try:
            timeout = self.first_ms
            while not ready():
                if self.eof:
                    return False
                if not self.hub.wait(timeout, self.sock.fileno()):
                    if ready():
                        self.lost += 1
                        return True
                    # As the Rust master's pump: nothing moved for the
                    # bound's length, so ring again a worker asleep with work
                    # (it may have lost our doorbell, whenever it fell asleep).
                    self._nudge()
                    timeout = 2
                    if time.monotonic() > deadline:
                        raise socket.timeout("ring lane: timed out")
                try:
                    if not self.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK):
                        self.eof = True
                except BlockingIOError:
                    pass
            return True
        finally:
            q[word] = seq + 1

    def sendall(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        q = self.q
        ring = self.ring
        done = 0
        while done < len(view):
            tail = q[0]
            used = tail - q[8]
            assert 0 <= used <= ring, used
            if used == ring:
                if not self._sleep(56, lambda: q[0] - q[8] < ring):
                    raise BrokenPipeError("worker closed the lane")
                continue
            off = tail % ring
            take = min(len(view) - done, ring - used, ring - off)
            self.mm[4096 + off : 4096 + off + take] = view[done : done + take]
            done += take
            q[0] = tail + take
            self._barrier()
            s = q[32]
            if s & 1 and s != self.last_wdata:
                self.last_wdata = s
                self._ring()

    def recv(self, n: int) -> bytes:
        q = self.q
        ring = self.ring
        while True:
            head = q[24]
            avail = q[16] - head
            assert 0 <= avail <= ring, avail
            if avail:
                break
            if not self._sleep(48, lambda: q[16] != q[24]):
                return b""
        take = min(n, avail)
        off = head % ring
        base = 4096 + ring
        if off + take <= ring:
            data = self.mm[base + off : base + off + take]
        else:
            data = self.mm[base + off : base + ring] + self.mm[base : base + take - (ring - off)]
        q[24] = head + take
        self._barrier()
        s = q[40]
        if s & 1 and s != self.last_wspace:
            self.last_wspace = s
            self._ring()
        return data

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        for fd in (self.bell, self.memfd):
            try:
                os.close(fd)
            except OSError:
                pass


class RingHarness(LaneHarness):
    """LaneHarness over a ring lane: the real LaneServer on a thread, the test is the master."""

    def __init__(self, app: Callable, lanes: int = 1, workers: int = 1, drop_bell: int = 0, ring: int = RING,
                 master_drop: int = 0, master_first_ms: int = 2) -> None:
        ours, worker_end = socket.socketpair()
        self.hub = MasterBell()
        self.master = RingMaster(ours, self.hub, ring, master_drop, master_first_ms)
        lane = RecordingRingLane(0, worker_end, os.dup(self.master.memfd), os.dup(self.master.bell),
                                 self.hub.fd, ring, drop_bell)
        self._start(lane, app, lanes, workers)

    def close(self) -> None:
        super().close()
        self.lane.close()
        self.hub.close()


class RecordingRingLane(W.RingLane):
    """A RingLane with a __dict__, so a test can wrap its sendall."""


# ------------------------------------------------------------------ in-process tests


class EnvironTest(LaneTestCase):
    def test_environ_passes_wsgiref_validator(self) -> None:
        seen = {}

        def app(environ: dict, start_response: Callable) -> list:
            seen.update(environ)
            seen["body"] = environ["wsgi.input"].read(100)  # the validator wants read(size)
            body = b"ok"
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [body]

        sock = self.serve(wsgiref.validate.validator(app), lanes=2, workers=3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # validator warnings count as failures
            r = get(
                sock,
                method="POST",
                path="/a b",
                query="x=1&y=%20",
                headers=(("X-Thing", "v1,v2"), ("Host", "example.com")),
                content_length=5,
                content_type="text/plain",
                body=[b"hello"],
            )
        self.assertIsNone(r.error)
        self.assertEqual((r.status, r.body), ("200 OK", b"ok"))
        for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
                    "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "RAW_URI", "CONTENT_TYPE", "CONTENT_LENGTH",
                    "HTTP_X_THING", "HTTP_HOST", "wsgi.url_scheme"):
            self.assertIsInstance(seen[key], str, key)
        self.assertEqual(seen["REQUEST_METHOD"], "POST")
        self.assertEqual(seen["PATH_INFO"], "/a b")
        self.assertEqual(seen["QUERY_STRING"], "x=1&y=%20")
        self.assertEqual(seen["CONTENT_LENGTH"], "5")
        self.assertEqual(seen["HTTP_X_THING"], "v1,v2")
        self.assertEqual(seen["wsgi.version"], (1, 0))
        self.assertEqual(seen["wsgi.url_scheme"], "http")
        self.assertIs(seen["wsgi.multithread"], True)
        self.assertIs(seen["wsgi.multiprocess"], True)
        self.assertIs(seen["wsgi.run_once"], False)
        self.assertIs(seen["wsgi.input_terminated"], True)
        self.assertIs(seen["wsgi.errors"].errors, sys.stderr)  # unwrapped from the validator
        self.assertIs(seen["wsgi.file_wrapper"], W.FileWrapper)
        self.assertEqual(seen["body"], b"hello")

    def test_empty_request_has_cheap_empty_input(self) -> None:
        seen = {}

        def app(environ: dict, start_response: Callable) -> list:
            inp = environ["wsgi.input"]
            seen["reads"] = (inp.read(1), inp.read(10), inp.readline(), list(inp))
            seen["flags"] = (environ["wsgi.multithread"], environ["wsgi.multiprocess"])
            return hello_app(environ, start_response)

        sock = self.serve(wsgiref.validate.validator(app))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = get(sock)
        self.assertEqual((r.status, r.body, r.error), ("200 OK", b"Hello, World!", None))
        self.assertEqual(seen["reads"], (b"", b"", b"", []))
        self.assertEqual(seen["flags"], (False, False))

    def test_latin1_path(self) -> None:
        seen = {}

        def app(environ: dict, start_response: Callable) -> list:
            seen["path"] = environ["PATH_INFO"]
            return hello_app(environ, start_response)

        sock = self.serve(app)
        get(sock, path="/caf\xc3\xa9")  # UTF-8 bytes of "café" as latin-1, as PEP 3333 wants
        self.assertEqual(seen["path"].encode("latin-1").decode("utf-8"), "/café")


class RequestBodyTest(LaneTestCase):
    def echo_with(self, reader: Callable) -> socket.socket:
        def app(environ: dict, start_response: Callable) -> list:
            data = reader(environ["wsgi.input"])
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [json.dumps([x.decode("latin-1") for x in data]).encode()]

        return self.serve(app)

    def test_read_n_across_frames(self) -> None:
        def reader(inp: Any) -> list:
            out = []
            while True:
                chunk = inp.read(3)
                if not chunk:
                    return out
                out.append(chunk)

        sock = self.echo_with(reader)
        r = get(sock, method="POST", body=[b"abcd", b"", b"efghi", b"j"])
        self.assertEqual(json.loads(r.body), ["abc", "def", "ghi", "j"])

    def test_read_all_and_partial(self) -> None:
        sock = self.echo_with(lambda inp: [inp.read(2), inp.read(), inp.read(), inp.read(5)])
        r = get(sock, method="POST", body=[b"ab", b"cd", b"ef"])
        self.assertEqual(json.loads(r.body), ["ab", "cdef", "", ""])

    def test_readline_and_iteration(self) -> None:
        sock = self.echo_with(lambda inp: [inp.readline(), inp.readline(2), inp.readline()] + list(inp))
        r = get(sock, method="POST", body=[b"one\ntw", b"o\nthr", b"ee\n", b"four\nfi", b"ve"])
        self.assertEqual(json.loads(r.body), ["one\n", "tw", "o\n", "three\n", "four\n", "five"])

    def test_readlines_hint(self) -> None:
        sock = self.echo_with(lambda inp: inp.readlines(5) + [b"|"] + inp.readlines())
        r = get(sock, method="POST", body=[b"a\nbb\nccc\n", b"d\n"])
        self.assertEqual(json.loads(r.body), ["a\n", "bb\n", "|", "ccc\n", "d\n"])

    def test_large_multi_frame_body_is_read_lazily(self) -> None:
        sizes = []

        def app(environ: dict, start_response: Callable) -> list:
            inp = environ["wsgi.input"]
            total = 0
            while True:
                chunk = inp.read(1 << 20)
                if not chunk:
                    break
                sizes.append(len(inp._buf))  # what the input holds: never the whole body
                total += len(chunk)
            start_response("200 OK", [])
            return [str(total).encode()]

        sock = self.serve(app)
        frames = 24
        chunk = b"x" * (1 << 20)

        def upload() -> None:
            send_frame(sock, W.REQUEST, W.HAS_BODY, request_head(method="POST"))
            for i in range(frames):
                send_frame(sock, W.BODY, W.END if i == frames - 1 else 0, chunk)

        t = threading.Thread(target=upload)
        t.start()
        r = read_response(sock)
        t.join(TIMEOUT)
        self.assertEqual(r.body, str(frames << 20).encode())
        self.assertLessEqual(max(sizes), 2 << 20)

    def test_unread_body_is_drained_before_next_request(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            first = environ["wsgi.input"].read(2)
            start_response("200 OK", [])
            return [first]

        sock = self.serve(app)
        self.assertEqual(get(sock, method="POST", body=[b"abcdef", b"ghi", b"jkl"]).body, b"ab")
        self.assertEqual(get(sock, method="POST", body=[b"zz"]).body, b"zz")
        self.assertEqual(get(sock, method="GET").body, b"")

    def test_cancel_while_reading_body_raises_oserror(self) -> None:
        seen = {}

        def app(environ: dict, start_response: Callable) -> list:
            try:
                environ["wsgi.input"].read()
            except OSError as exc:
                seen["exc"] = exc
                raise
            start_response("200 OK", [])
            return [b"unexpected"]

        sock = self.serve(app)
        send_frame(sock, W.REQUEST, W.HAS_BODY, request_head(method="POST"))
        send_frame(sock, W.BODY, 0, b"part")
        send_cancel(sock, 1)
        r = read_response(sock)
        self.assertIsNotNone(r.error)
        self.assertIn("client disconnected", str(seen["exc"]))
        self.assertEqual(get(sock).status, "200 OK")  # the lane is usable again


class ResponseTest(LaneTestCase):
    def test_single_chunk_goes_out_in_one_sendall(self) -> None:
        sock = self.serve(hello_app)
        r = get(sock)
        self.assertEqual((r.status, r.body), ("200 OK", b"Hello, World!"))
        self.assertEqual([f[:2] for f in r.frames], [(W.RESPONSE, 0), (W.BODY, W.END)])
        self.assertEqual(len(self.harness.sends), 1)

    def test_closing_iterator_stops_at_content_length(self) -> None:
        calls = []

        class OneChunk:
            def __iter__(self):
                yield b"0123456789"
                calls.append("iterated past content-length")
                yield b"never"

            def close(self) -> None:
                calls.append("close")

        def app(environ: dict, start_response: Callable) -> OneChunk:
            start_response("200 OK", [("Content-Length", "10")])
            return OneChunk()

        sock = self.serve(app)
        r = get(sock)
        self.assertEqual(r.body, b"0123456789")
        self.assertEqual(len(self.harness.sends), 1)
        wait_until(lambda: calls, "close()")
        self.assertEqual(calls, ["close"])

    def test_list_of_chunks_is_joined(self) -> None:
        def app(environ: dict, start_response: Callable) -> tuple:
            start_response("200 OK", [])
            return (b"a", b"", b"bc")

        sock = self.serve(app)
        r = get(sock)
        self.assertEqual(r.body, b"abc")
        self.assertEqual(len(self.harness.sends), 1)

    def test_streamed_first_chunk_arrives_before_generator_ends(self) -> None:
        release = threading.Event()

        def app(environ: dict, start_response: Callable):
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first"
            assert release.wait(TIMEOUT), "test never released the generator"
            yield b""
            yield b"second"

        sock = self.serve(app)
        send_request(sock)
        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
        self.assertEqual(recv_frame(sock), (W.BODY, 0, b"first"))
        release.set()
        self.assertEqual(recv_frame(sock), (W.BODY, 0, b"second"))
        self.assertEqual(recv_frame(sock), (W.BODY, W.END, b""))

    def test_write_callable_goes_first(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            write = start_response("200 OK", [])
            write(b"a")
            write(b"")
            write(b"b")
            return [b"c", b"d"]

        sock = self.serve(app)
        r = get(sock)
        self.assertEqual(r.body, b"abcd")
        self.assertEqual(r.frames[0][0], W.RESPONSE)

    def test_exc_info_before_head_replaces_status(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            start_response("200 OK", [("X-A", "1")])
            try:
                raise ValueError("boom")
            except ValueError:
                start_response("500 Internal Server Error", [("X-B", "2")], sys.exc_info())
            return [b"oops"]

        sock = self.serve(app)
        r = get(sock)
        self.assertEqual((r.status, r.headers, r.body), ("500 Internal Server Error", [("X-B", "2")], b"oops"))

    def test_exc_info_after_head_reraises(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            write = start_response("200 OK", [])
            write(b"partial")
            try:
                raise ValueError("late boom")
            except ValueError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            return [b"never"]

        sock = self.serve(app)
        r = get(sock)
        self.assertEqual(r.body, b"partial")
        self.assertIn("late boom", r.error)
        self.assertEqual(get(sock).status, "200 OK")

    def test_start_response_twice_without_exc_info_is_an_error(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            start_response("200 OK", [])
            start_response("201 Created", [])
            return [b""]

        sock = self.serve(app)
        self.assertIn("AssertionError", get(sock).error)

    def test_app_exception_gives_error_and_worker_keeps_serving(self) -> None:
        state = {"n": 0}

        def app(environ: dict, start_response: Callable) -> list:
            state["n"] += 1
            if environ["PATH_INFO"] == "/error":
                raise RuntimeError("kaboom")
            return hello_app(environ, start_response)

        sock = self.serve(app)
        with self.assertLogs("ferrocorn.worker", "ERROR") as logs:
            r = get(sock, path="/error")
        self.assertEqual([f[0] for f in r.frames], [W.ERROR])
        self.assertIn("RuntimeError: kaboom", r.error)
        self.assertIn("Traceback", "\n".join(logs.output))
        self.assertEqual(get(sock).body, b"Hello, World!")
        self.assertEqual(state["n"], 2)

    def test_exception_mid_stream_gives_error_after_head(self) -> None:
        closed = []

        class Body:
            def __iter__(self):
                yield b"one"
                raise RuntimeError("mid-stream")

            def close(self) -> None:
                closed.append(1)

        def app(environ: dict, start_response: Callable) -> Body:
            start_response("200 OK", [])
            return Body()

        sock = self.serve(app)
        with self.assertLogs("ferrocorn.worker", "ERROR"):
            r = get(sock)
        self.assertEqual(r.body, b"one")
        self.assertIn("mid-stream", r.error)
        self.assertEqual(closed, [1])  # close() runs before ERROR goes out
        self.assertEqual(get(sock).status, "200 OK")

    def test_invalid_status_or_headers_are_app_errors(self) -> None:
        cases = {
            "/nul": ("200 OK", [("X-A", "a\0b")]),
            "/crlf": ("200 OK", [("X-A", "a\r\nSet-Cookie: x")]),
            "/bytes": (b"200 OK", []),
            "/status": ("OK", []),
            "/name": ("200 OK", [("Bad Name", "v")]),
            "/type": ("200 OK", [("X-A", 1)]),
            "/none": None,
        }

        def app(environ: dict, start_response: Callable) -> list:
            case = cases[environ["PATH_INFO"]]
            if case is not None:
                start_response(*case)
            return [b"x"]

        sock = self.serve(app)
        with self.assertLogs("ferrocorn.worker", "ERROR"):
            for path in cases:
                r = get(sock, path=path)
                self.assertIsNotNone(r.error, path)
                self.assertEqual(r.frames[0][0], W.ERROR, path)
        self.assertEqual(get(sock, path="/type").frames[0][0], W.ERROR)

    def test_str_body_is_an_app_error(self) -> None:
        def app(environ: dict, start_response: Callable):
            start_response("200 OK", [])
            yield "text"

        sock = self.serve(app)
        with self.assertLogs("ferrocorn.worker", "ERROR"):
            self.assertIn("must be bytes", get(sock).error)

    def test_head_204_304_send_no_body(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            status = {"/204": "204 No Content", "/304": "304 Not Modified"}.get(environ["PATH_INFO"], "200 OK")
            start_response(status, [("Content-Length", "5")])
            return [b"hello"]

        sock = self.serve(app)
        for method, path in (("HEAD", "/"), ("GET", "/204"), ("GET", "/304")):
            r = get(sock, method=method, path=path)
            self.assertEqual(r.body, b"", path)
            self.assertEqual(r.header("content-length"), "5")
        self.assertEqual(get(sock).body, b"hello")

    def test_content_length_is_checked_and_never_exceeded_issue_10(self) -> None:
        # Issue 10, item 8: an invalid Content-Length is an app error (500
        # before anything is sent); a longer body is cut and the connection
        # closed; a shorter one goes out as it is (the master closes after it).
        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            path = environ["PATH_INFO"]
            value = environ["QUERY_STRING"].replace("_", " ").replace("~", "\t")
            start_response("200 OK", [("Content-Length", v) for v in value.split(",")])
            if path == "/gen":
                return iter([b"01234", b"56789"])
            return [b"0123456789"]

        sock = self.serve(app)
        with self.assertLogs("ferrocorn.worker", "ERROR"):
            for bad in ("abc", "-1", "+5", "5.0", "", "1+2", "5,6", "0x5"):
                r = get(sock, query=bad)
                self.assertEqual(r.frames[0][0], W.ERROR, bad)
                self.assertIn("invalid Content-Length", r.error, bad)
        ok = get(sock, query="_10~,10")  # blanks around digits, two that agree
        self.assertEqual((ok.body, ok.header("connection")), (b"0123456789", None))
        with self.assertLogs("ferrocorn.worker", "WARNING") as logs:
            longer = get(sock, query="4")
            longer_streamed = get(sock, path="/gen", query="7")
            shorter = get(sock, query="100")
            shorter_streamed = get(sock, path="/gen", query="100")
        self.assertEqual((longer.body, longer.header("connection")), (b"0123", "close"))
        self.assertEqual(longer_streamed.body, b"0123456")
        self.assertEqual((shorter.body, shorter.header("content-length")), (b"0123456789", "100"))
        self.assertEqual(shorter_streamed.body, b"0123456789")
        self.assertEqual(len(logs.records), 4, logs.output)
        self.assertIn("shorter than its Content-Length", logs.output[2])

    def test_http_1_0_without_content_length_is_framed_or_closed_issue_10(self) -> None:
        # Issue 10, item 11b: HTTP/1.0 has no chunked coding, so a body of
        # unknown length ends with the connection: say close. A whole body
        # gets its Content-Length, so the client may keep the connection.
        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            start_response("200 OK", [])
            if environ["PATH_INFO"] == "/gen":
                return iter([b"ab", b"c"])
            return [b"abc"]

        sock = self.serve(app)
        whole = get(sock, protocol="HTTP/1.0")
        self.assertEqual((whole.header("content-length"), whole.header("connection")), ("3", None))
        streamed = get(sock, path="/gen", protocol="HTTP/1.0")
        self.assertEqual((streamed.body, streamed.header("connection")), (b"abc", "close"))
        for path in ("/", "/gen"):
            r = get(sock, path=path)
            self.assertEqual((r.header("content-length"), r.header("connection")), (None, None), path)

    def test_huge_chunk_is_split(self) -> None:
        big = b"y" * (W.MAX_PAYLOAD + 10)

        def app(environ: dict, start_response: Callable) -> list:
            start_response("200 OK", [])
            return [big]

        sock = self.serve(app)
        r = get(sock)
        self.assertEqual(len(r.body), len(big))
        bodies = [f for f in r.frames if f[0] == W.BODY]
        self.assertEqual([f[1] for f in bodies], [0] * (len(bodies) - 1) + [W.END])
        self.assertTrue(all(f[2] <= W.BODY_FRAME for f in bodies), bodies)

    def test_big_body_goes_out_in_bounded_frames(self) -> None:
        """Issue 10, item 12: the master holds a few frames per response, so a
        big chunk (whole, written or streamed) goes out as BODY frames of at
        most BODY_FRAME bytes, one write each (the RESPONSE joins the first)."""
        n = 5 * W.BODY_FRAME + 123
        big = bytes(range(256)) * (n // 256) + b"t" * (n % 256)

        def app(environ: dict, start_response: Callable) -> Any:
            path = environ["PATH_INFO"]
            write = start_response("200 OK", [("Content-Length", str(n))] if path == "/cl" else [])
            if path == "/write":
                write(big)
                return []
            if path == "/gen":
                return iter([b"a" * 10, big])
            return [big]

        sock = self.serve(app)
        for path in ("/", "/cl", "/write", "/gen"):
            self.harness.sends.clear()
            r = get(sock, path=path)
            want = b"a" * 10 + big if path == "/gen" else big
            self.assertTrue(r.body == want, f"{path}: body differs ({len(r.body)} bytes)")
            bodies = [f for f in r.frames if f[0] == W.BODY]
            self.assertTrue(all(f[2] <= W.BODY_FRAME for f in bodies), (path, bodies))
            self.assertEqual(sum(f[2] for f in bodies), len(want), path)
            self.assertEqual(bodies[-1][1], W.END, path)
            big_frames = [f for f in bodies if f[2] > W.JOIN_LIMIT]
            self.assertEqual(len(big_frames), 5, (path, bodies))
            # At most one write per frame; the RESPONSE rides with the first.
            self.assertLessEqual(len(self.harness.sends), len(bodies), path)
            self.assertTrue(all(len(x) <= W.BODY_FRAME + 4096 for x in self.harness.sends), path)

    def test_short_gather_write_is_finished(self) -> None:
        """A sendmsg cut short (a signal mid-write) is finished with sendall, byte-exact."""
        data = bytes(range(256)) * (3 * W.BODY_FRAME // 256)
        for cut in (0, 3, W.HEADER_SIZE, W.HEADER_SIZE + 1000):
            master, worker_end = socket.socketpair()
            self.addCleanup(master.close)
            master.settimeout(TIMEOUT)
            lane = W.Lane(0, worker_end)
            self.addCleanup(worker_end.close)
            lane.sendmsg = lambda parts, cut=cut: worker_end.send(b"".join(parts)[:cut]) if cut else 0
            writer = threading.Thread(target=lane.send_body, args=(data, W.END, W.frame(W.RESPONSE, 0, b"200 OK")))
            writer.start()
            r = read_response(master)
            writer.join(TIMEOUT)
            self.assertEqual((r.status, r.body == data), ("200 OK", True), cut)
            self.assertEqual([f[2] for f in r.frames[1:]], [W.BODY_FRAME] * 3, cut)

    def test_file_wrapper(self) -> None:
        with tempfile.TemporaryFile() as f:
            f.write(b"z" * 600_000)
            f.seek(0)

            def app(environ: dict, start_response: Callable) -> Any:
                start_response("200 OK", [])
                return environ["wsgi.file_wrapper"](f, 100_000)

            sock = self.serve(app)
            r = get(sock)
            self.assertEqual(r.body, b"z" * 600_000)
            wait_until(lambda: f.closed, "the file wrapper to close the file")

    def test_cancel_during_stream_calls_close_once(self) -> None:
        gate = threading.Event()
        closed = []
        produced = []

        class Stream:
            def __iter__(self):
                for i in range(1000):
                    produced.append(i)
                    yield b"chunk%d" % i
                    if i == 0:
                        assert gate.wait(TIMEOUT)

            def close(self) -> None:
                closed.append(len(produced))

        def app(environ: dict, start_response: Callable) -> Any:
            if environ["PATH_INFO"] == "/ok":
                return hello_app(environ, start_response)
            start_response("200 OK", [])
            return Stream()

        sock = self.serve(app)
        send_request(sock)
        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
        self.assertEqual(recv_frame(sock)[2], b"chunk0")
        send_cancel(sock, 1)  # on a socketpair it is queued at the worker once sendall returns
        gate.set()
        while True:  # the master discards until END
            kind, flags, _ = recv_frame(sock)
            if kind == W.BODY and flags & W.END:
                break
        self.assertEqual(len(closed), 1)
        self.assertLess(closed[0], 1000)
        self.assertEqual(get(sock, path="/ok").status, "200 OK")
        self.assertEqual(len(closed), 1)

    def test_cancel_crossing_end_is_ignored(self) -> None:
        sock = self.serve(hello_app)
        self.assertEqual(get(sock).status, "200 OK")
        send_cancel(sock, 1)  # stale: request 1 is over
        self.assertEqual(get(sock).body, b"Hello, World!")

    def streaming_app(self, chunks: int, gate: threading.Event, closed: list) -> Callable:
        """/ok says hello; anything else streams `chunks` chunks, pausing after the first until `gate`."""

        class Stream:
            def __init__(self) -> None:
                self.sent = 0

            def __iter__(self):
                for i in range(chunks):
                    self.sent += 1
                    yield b"c%d," % i
                    if i == 0:
                        assert gate.wait(TIMEOUT)

            def close(self) -> None:
                closed.append(self.sent)

        def app(environ: dict, start_response: Callable) -> Any:
            if environ["PATH_INFO"] == "/ok":
                return hello_app(environ, start_response)
            start_response("200 OK", [])
            return Stream()

        return app

    def test_cancel_behind_a_waiting_request_stops_the_running_one(self) -> None:
        gate, closed = threading.Event(), []
        sock = self.serve(self.streaming_app(1000, gate, closed))
        send_request(sock)  # request 1, streams
        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
        self.assertEqual(recv_frame(sock)[2], b"c0,")
        # The next request already waits in the lane; the CANCEL for the
        # running one comes after it and must still be found.
        send_frame(sock, W.REQUEST, 0, request_head(path="/ok"))
        send_cancel(sock, 1)
        gate.set()
        while True:
            kind, flags, _ = recv_frame(sock)
            if kind == W.BODY and flags & W.END:
                break
        self.assertLess(closed[0], 1000)
        self.assertEqual(read_response(sock).body, b"Hello, World!")  # the waiting request, served whole

    def test_a_cancel_for_the_previous_request_leaves_the_next_one_alone(self) -> None:
        gate, closed = threading.Event(), []
        sock = self.serve(self.streaming_app(50, gate, closed))
        # Request 1 ends; the master, not yet aware, cancels it just as
        # request 2 (waiting behind it) starts streaming.
        send_request(sock, path="/ok")
        send_frame(sock, W.REQUEST, 0, request_head(path="/stream"))
        self.assertEqual(read_response(sock).body, b"Hello, World!")
        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
        send_cancel(sock, 1)
        gate.set()
        r = read_response(sock)
        self.assertEqual(r.body, b"".join(b"c%d," % i for i in range(50)))
        wait_until(lambda: closed, "close()")
        self.assertEqual(closed, [50])

    def test_a_stale_cancel_inside_the_next_body_is_skipped(self) -> None:
        def app(environ: dict, start_response: Callable) -> list:
            body = environ["wsgi.input"].read()
            start_response("200 OK", [])
            return [body]

        sock = self.serve(app)
        self.assertEqual(get(sock).body, b"")  # request 1
        self.assertEqual(get(sock).body, b"")  # request 2
        send_frame(sock, W.REQUEST, W.HAS_BODY | W.ODD, request_head(method="POST"))  # request 3
        send_frame(sock, W.BODY, 0, b"one,")
        send_cancel(sock, 2)  # for the request before this one
        send_cancel(sock, 1)  # the same parity as this one: still stale
        send_frame(sock, W.BODY, W.END, b"two")
        self.assertEqual(read_response(sock).body, b"one,two")
        send_frame(sock, W.REQUEST, W.HAS_BODY, request_head(method="POST"))  # request 4
        send_frame(sock, W.BODY, 0, b"x")
        send_cancel(sock, 3)  # stale
        send_cancel(sock, 4)  # for this one: the client left
        self.assertIsNotNone(read_response(sock).error)
        self.assertEqual(get(sock).status, "200 OK")  # the lane is usable again

    def test_a_cancel_behind_three_waiting_requests_is_for_the_running_one_only(self) -> None:
        """Deeper pipelining: requests 2, 3 and 4 wait behind request 1 when
        its CANCEL comes. It cancels 1; each later request scans past it
        while it streams (3 has 1's parity) and none of them is cancelled."""
        gate, closed = threading.Event(), []
        sock = self.serve(self.streaming_app(1000, gate, closed))
        send_request(sock)  # request 1, streams
        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
        self.assertEqual(recv_frame(sock)[2], b"c0,")
        for number in (2, 3, 4):
            send_frame(sock, W.REQUEST, W.ODD if number & 1 else 0, request_head(path="/stream%d" % number))
        send_cancel(sock, 1)
        gate.set()
        while True:
            kind, flags, _ = recv_frame(sock)
            if kind == W.BODY and flags & W.END:
                break
        whole = b"".join(b"c%d," % i for i in range(1000))
        for number in (2, 3, 4):
            r = read_response(sock)
            self.assertEqual((r.status, r.error, r.body), ("200 OK", None, whole), number)
        wait_until(lambda: len(closed) == 4, "close() of every stream")
        self.assertLess(closed[0], 1000)
        self.assertEqual(closed[1:], [1000, 1000, 1000])
        self.assertEqual(get(sock, path="/ok").body, b"Hello, World!")  # and between requests it was skipped

    def test_a_cancel_for_a_waiting_request_cancels_that_one_only(self) -> None:
        """Requests 2 and 3 wait behind 1; the client of 2 leaves once 2
        runs: its CANCEL (behind 3) stops 2, and 1 and 3 are served whole."""
        gate, closed = threading.Event(), []
        sock = self.serve(self.streaming_app(1000, gate, closed))
        send_request(sock, path="/ok")  # request 1
        send_frame(sock, W.REQUEST, 0, request_head(path="/stream"))  # request 2: pauses after c0
        send_frame(sock, W.REQUEST, W.ODD, request_head(path="/stream"))  # request 3
        self.assertEqual(read_response(sock).body, b"Hello, World!")
        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
        self.assertEqual(recv_frame(sock)[2], b"c0,")
        send_cancel(sock, 2)
        gate.set()
        while True:
            kind, flags, _ = recv_frame(sock)
            if kind == W.BODY and flags & W.END:
                break
        r = read_response(sock)
        self.assertEqual((r.error, r.body), (None, b"".join(b"c%d," % i for i in range(1000))))
        wait_until(lambda: len(closed) == 2, "close() of both streams")
        self.assertLess(closed[0], 1000)
        self.assertEqual(closed[1], 1000)
        self.assertEqual(get(sock, path="/ok").body, b"Hello, World!")

    def test_a_malformed_cancel_is_a_protocol_error(self) -> None:
        """A CANCEL payload that is not 8 bytes, or a number beyond the
        REQUESTs read, drops the lane: between requests, in wsgi.input, and
        in cancelled()'s scan mid-response."""

        def app(environ: dict, start_response: Callable) -> Any:
            if environ["REQUEST_METHOD"] == "POST":
                body = environ["wsgi.input"].read()
                start_response("200 OK", [])
                return [body]
            return streaming(environ, start_response)

        short = H.pack(4, W.CANCEL, W.ODD, 0) + b"\1\0\0\0"
        long_ = H.pack(9, W.CANCEL, W.ODD, 0) + W.CANCEL_NUMBER.pack(1) + b"\0"
        empty = H.pack(0, W.CANCEL, W.ODD, 0)
        cases = {
            "short, between requests": ("idle", short),
            "ahead, between requests": ("idle", cancel_frame(2)),
            "empty, in wsgi.input": ("body", empty),
            "ahead, in wsgi.input": ("body", cancel_frame(2)),
            "long, in a scan": ("stream", long_),
            "ahead, in a scan": ("stream", cancel_frame(3)),
        }
        for what, (where, frame) in cases.items():
            with self.subTest(what):
                gate, closed = threading.Event(), []
                streaming = self.streaming_app(1000, gate, closed)
                sock = self.serve(app)
                with self.assertLogs("ferrocorn.worker", "ERROR") as logs:
                    if where == "idle":
                        self.assertEqual(get(sock, path="/ok").body, b"Hello, World!")  # request 1
                        sock.sendall(frame)
                    elif where == "body":
                        send_frame(sock, W.REQUEST, W.HAS_BODY | W.ODD, request_head(method="POST"))
                        send_frame(sock, W.BODY, 0, b"part")
                        sock.sendall(frame)
                    else:
                        send_request(sock)  # request 1, streams
                        self.assertEqual(recv_frame(sock)[0], W.RESPONSE)
                        self.assertEqual(recv_frame(sock)[2], b"c0,")
                        sock.sendall(frame)
                        gate.set()
                    while sock.recv(65536):  # until the worker closes its end
                        pass
                self.assertIn("CANCEL", logs.output[0])
                self.assertIn("dropping the lane", logs.output[0])
                if where == "stream":
                    self.assertLess(closed[0], 1000)  # close() ran

    def test_bad_frame_drops_the_lane(self) -> None:
        sock = self.serve(hello_app)
        with self.assertLogs("ferrocorn.worker", "ERROR"):
            sock.sendall(H.pack(0, 99, 0, 0))
            self.assertEqual(sock.recv(1), b"")  # the worker closed its end


# ------------------------------------------------------------------ ring lanes, in process


class RingServe:
    """Mixin: serve() over a ring lane (RingHarness) instead of a socket lane."""

    def serve(self, app: Callable, **kw: Any) -> RingMaster:
        harness = RingHarness(app, **kw)
        self.addCleanup(harness.close)
        self.harness = harness
        return harness.master


class RingEnvironTest(RingServe, EnvironTest):
    pass


class RingRequestBodyTest(RingServe, RequestBodyTest):
    pass


class RingResponseTest(RingServe, ResponseTest):
    """Every response test over a ring lane, but those about socket writes."""

    @unittest.skip("socket writes: RingTest.test_response_larger_than_the_ring checks the frames")
    def test_big_body_goes_out_in_bounded_frames(self) -> None:
        pass

    @unittest.skip("sendmsg is a socket lane's")
    def test_short_gather_write_is_finished(self) -> None:
        pass


def pattern(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


class RingTest(RingServe, unittest.TestCase):
    def test_headers_and_payloads_wrap_the_ring_end(self) -> None:
        """Every header offset across the end of both rings (0 to 8 bytes
        before it), reached by a padding request whose body and response
        are sized for it; the padding itself crosses the end too, often as
        a frame larger than what fits."""
        headers = [("Content-Type", "text/plain")]

        def app(environ: dict, start_response: Callable) -> list:
            body = environ["wsgi.input"].read()
            start_response("200 OK", headers)
            if environ["PATH_INFO"] == "/pad":
                assert body == b"b" * len(body)
                return [b"p" * int(environ["QUERY_STRING"])]
            return [b"s"]

        m = self.serve(app)
        q = m.q
        first = get(m, path="/small")
        self.assertEqual(first.body, b"s")
        rh = first.frames[0][2]  # RESPONSE payload: the same for both paths
        small = request_head(path="/small")
        for k in range(9):
            for where in ("RESPONSE", "BODY"):
                want_resp = (RING - k - (0 if where == "RESPONSE" else 8 + rh)) % RING
                n = (want_resp - q[16] - 16 - rh) % RING
                phead = request_head(method="POST", path="/pad", query=str(n))
                mb = (RING - k - q[0] - 16 - len(phead)) % RING
                send_frame(m, W.REQUEST, W.HAS_BODY, phead)
                send_frame(m, W.BODY, W.END, b"b" * mb)
                self.assertEqual(read_response(m).body, b"p" * n)
                self.assertEqual((q[0] % RING, q[16] % RING), ((RING - k) % RING, want_resp))
                send_frame(m, W.REQUEST, 0, small)
                r = read_response(m)
                self.assertEqual((r.status, r.body, r.error), ("200 OK", b"s", None), (k, where))

    def test_response_larger_than_the_ring(self) -> None:
        n = 4 * W.BODY_FRAME + 777
        big = pattern(n)

        def app(environ: dict, start_response: Callable) -> Any:
            path = environ["PATH_INFO"]
            write = start_response("200 OK", [])
            if path == "/write":
                write(big[:1000])
                write(big[1000:])
                return []
            if path == "/gen":
                return iter([big[:100_000], big[100_000:300_000], big[300_000:]])
            return [big]

        m = self.serve(app)
        self.check_large_responses(m, big)
        # The default ring (256 KiB) is smaller than a whole BODY frame
        # (BODY_FRAME + its header): frames are published in pieces.
        self.check_large_responses(self.serve(app, ring=W.RING_DEFAULT), big)

    def check_large_responses(self, m: RingMaster, big: bytes) -> None:
        for path in ("/", "/write", "/gen"):
            slept = m.q[40]
            send_request(m, path=path)
            time.sleep(0.05)  # the worker fills the ring and waits for space
            r = read_response(m)
            self.assertTrue(r.body == big, f"{path}: {len(r.body)} bytes, not the body")
            bodies = [f for f in r.frames if f[0] == W.BODY]
            self.assertTrue(all(f[2] <= W.BODY_FRAME for f in bodies), bodies)
            self.assertEqual(bodies[-1][1], W.END)
            self.assertGreater(m.q[40], slept, "the worker never waited for space")
        self.assertEqual(get(m, path="/").body, big)
        self.assertEqual(m.q[16], m.q[24])

    def test_send_parts_and_send_body_in_pieces(self) -> None:
        """send_parts writes its parts one after the other as space allows."""
        # A lane of our own (a RingLane is its lane thread's: here the writer's).
        ours, worker_end = socket.socketpair()
        hub = MasterBell()
        m = RingMaster(ours, hub)
        lane = W.RingLane(0, worker_end, os.dup(m.memfd), os.dup(m.bell), hub.fd, RING)
        self.addCleanup(hub.close)
        self.addCleanup(lane.close)
        self.addCleanup(m.close)
        parts = (W.frame(W.RESPONSE, 0, b"200 OK"), W.HEADER.pack(100_000, W.BODY, 0, 0), pattern(100_000))
        writer = threading.Thread(target=lane.send_parts, args=(parts,))
        writer.start()
        self.assertEqual(recv_frame(m), (W.RESPONSE, 0, b"200 OK"))
        self.assertEqual(recv_frame(m), (W.BODY, 0, pattern(100_000)))
        writer.join(TIMEOUT)
        writer = threading.Thread(target=lane.send_body, args=(pattern(700_000), W.END, W.frame(W.RESPONSE, 0, b"200 OK")))
        writer.start()
        r = read_response(m)
        writer.join(TIMEOUT)
        self.assertEqual((r.status, r.body == pattern(700_000)), ("200 OK", True))
        self.assertEqual([f[2] for f in r.frames[1:]], [W.BODY_FRAME, W.BODY_FRAME, 700_000 - 2 * W.BODY_FRAME])

    def test_request_body_larger_than_the_ring_streams_to_wsgi_input(self) -> None:
        seen = []

        def app(environ: dict, start_response: Callable) -> list:
            inp = environ["wsgi.input"]
            parts = []
            while True:
                chunk = inp.read(50_000)
                if not chunk:
                    break
                seen.append(len(inp._buf))
                parts.append(chunk)
            start_response("200 OK", [])
            return [b"%d" % len(b"".join(parts)), b" ok" if b"".join(parts) == body else b" differs"]

        body = pattern(1_500_000)
        m = self.serve(app)
        slept = m.q[56]

        def upload() -> None:
            send_frame(m, W.REQUEST, W.HAS_BODY, request_head(method="POST"))
            send_frame(m, W.BODY, 0, body[:300_000])  # one frame larger than the ring
            for off in range(300_000, len(body), 7000):
                send_frame(m, W.BODY, 0, body[off : off + 7000])
            send_frame(m, W.BODY, W.END)

        t = threading.Thread(target=upload)
        t.start()
        r = read_response(m)
        t.join(TIMEOUT)
        self.assertEqual(r.body, b"%d ok" % len(body))
        self.assertGreater(m.q[56], slept, "the master never waited for request-ring space")

    def test_cancel_found_mid_response_behind_a_wrapped_header(self) -> None:
        """cancelled() scans the ring from its head: past a waiting request
        that reaches the ring end, it finds a CANCEL whose header or number
        wraps it (or whose number starts the ring)."""
        for at, what in ((RING - 3, "header wraps"), (RING - 12, "number wraps"), (RING - 8, "number at 0")):
            with self.subTest(what):
                gate, closed = threading.Event(), []
                m = self.serve(ResponseTest.streaming_app(None, 1000, gate, closed))
                q = m.q
                send_request(m)  # request 1, streams
                self.assertEqual(recv_frame(m)[0], W.RESPONSE)
                self.assertEqual(recv_frame(m)[2], b"c0,")
                base = len(request_head(path="/ok", headers=(("X-Pad", ""),)))
                pad = (at - q[0] - 8 - base) % RING
                send_frame(m, W.REQUEST, 0, request_head(path="/ok", headers=(("X-Pad", "x" * pad),)))
                self.assertEqual(q[0] % RING, at)
                send_cancel(m, 1)
                gate.set()
                while True:
                    kind, flags, _ = recv_frame(m)
                    if kind == W.BODY and flags & W.END:
                        break
                self.assertLess(closed[0], 1000)
                r = read_response(m)
                self.assertEqual((r.status, r.body), ("200 OK", b"Hello, World!"))  # the waiting request, served whole
                self.assertEqual(get(m).status, "200 OK")  # the CANCEL behind it skipped as stale

    def test_master_closing_the_lane_ends_the_lane_thread(self) -> None:
        m = self.serve(hello_app)
        self.assertEqual(get(m).body, b"Hello, World!")
        time.sleep(0.01)  # asleep in read_frame, the lane socket in its poll set
        m.close()
        self.harness.thread.join(TIMEOUT)
        self.assertFalse(self.harness.thread.is_alive())

    def test_shutdown_read_wakes_a_sleeping_read_after_the_ring_is_drained(self) -> None:
        m = self.serve(hello_app)
        self.assertEqual(get(m).body, b"Hello, World!")
        send_request(m)
        send_request(m)
        self.harness.lane.shutdown_read()
        self.assertEqual(read_response(m).body, b"Hello, World!")
        self.assertEqual(read_response(m).body, b"Hello, World!")
        self.harness.thread.join(TIMEOUT)
        self.assertFalse(self.harness.thread.is_alive())
        self.assertTrue(self.harness.lane.eof and self.harness.lane.hup)

    def test_the_common_case_rings_no_bell(self) -> None:
        """Requests already in the ring and the master awake: the worker
        neither sleeps nor writes the master's bell."""
        m = self.serve(hello_app)
        q = m.q
        size = sum(8 + f[2] for f in get(m).frames)
        wait_until(lambda: q[32] & 1, "the worker to sleep")
        asleep = q[32]
        try:
            while True:
                os.read(m.master_bell, 8)
        except BlockingIOError:
            pass
        one = H.pack(len(request_head()), W.REQUEST, 0, 0) + request_head()
        m.sendall(one * 10)  # one doorbell: the worker sleeps
        wait_until(lambda: q[16] - q[24] == 10 * size, "ten responses")
        wait_until(lambda: q[32] & 1, "the worker to sleep again")
        self.assertEqual(q[32], asleep + 2, "the worker slept between requests")
        with self.assertRaises(BlockingIOError):
            os.read(m.master_bell, 8)  # the master never slept, so no bell
        for _ in range(10):
            self.assertEqual(read_response(m).body, b"Hello, World!")

    def test_a_doorbell_for_nothing_starts_a_new_sleep(self) -> None:
        """The master rings once per sleep word. A worker woken with nothing
        to do must sleep anew under a new word, or the next doorbell, for
        the old word, would never come."""
        m = self.serve(hello_app)
        self.assertEqual(get(m).body, b"Hello, World!")

        def wait_word(ok: Callable[[int], bool]) -> int:
            deadline = time.monotonic() + TIMEOUT
            while not ok(m.q[32]):
                self.assertLess(time.monotonic(), deadline, "worker sleep word")
                time.sleep(0.001)
            return m.q[32]

        first = wait_word(lambda w: w & 1 == 1)  # asleep
        m.last_wdata = first  # as if we rang for that sleep already
        os.write(m.bell, (1).to_bytes(8, "little"))  # ... for bytes it had taken
        again = wait_word(lambda w: w & 1 == 1 and w != first)
        self.assertGreater(again, first)
        lost = m.q[64]
        self.assertEqual(get(m).body, b"Hello, World!")  # we ring for the new word at once
        self.assertEqual(m.q[64], lost, "served without waiting for a timeout")

    def test_lost_doorbells_cost_the_short_sleep(self) -> None:
        """Every 2nd doorbell lost: to the worker (it wakes after 2 ms and
        counts W_LOST), or from it (it drops them; our short sleep covers it)."""
        for kw in ({"master_drop": 2}, {"drop_bell": 2}):
            # The app takes 5 ms, so we are surely asleep when its response comes.
            m = self.serve(slow_hello_app, **kw)
            started = time.monotonic()
            for _ in range(50):
                self.assertEqual(get(m).body, b"Hello, World!")
            self.assertLess(time.monotonic() - started, 5, kw)
            if "master_drop" in kw:
                # Each doorbell we dropped went to a sleeping worker, which
                # found the request by its 2 ms bound (W_LOST) or our nudge.
                self.assertGreater(m.rung - m.bells, 0)  # we dropped some
                self.assertGreater(m.q[64] + m.nudges, 0)
            else:
                self.assertGreater(self.harness.lane.rung, 1)  # it counted (and dropped) its doorbells
                self.assertGreater(m.lost, 0)  # we woke by timeout for those

    def test_a_bad_frame_or_bad_indices_drop_the_lane(self) -> None:
        for bad in ("kind", "reserved", "length", "indices"):
            m = self.serve(hello_app)
            self.assertEqual(get(m).body, b"Hello, World!")
            with self.assertLogs("ferrocorn.worker", "ERROR") as logs:
                if bad == "kind":
                    m.sendall(H.pack(0, 99, 0, 0))
                elif bad == "reserved":
                    m.sendall(H.pack(0, W.REQUEST, 0, 1))
                elif bad == "length":
                    m.sendall(H.pack(W.MAX_PAYLOAD + 1, W.BODY, 0, 0))
                else:
                    m.q[0] = m.q[8] + RING + 8  # a tail beyond what the ring can hold
                    os.write(m.bell, (1).to_bytes(8, "little"))
                self.assertEqual(m.recv(1), b"")  # the worker closed its end
            self.assertIn("dropping the lane", logs.output[0])

    def test_a_frame_torn_by_the_master_closing_is_lane_closed(self) -> None:
        m = self.serve(hello_app)
        head = request_head()
        m.sendall(H.pack(len(head), W.REQUEST, 0, 0) + head[:10])  # half a frame, then the master goes
        time.sleep(0.01)
        m.close()
        self.harness.thread.join(TIMEOUT)
        self.assertFalse(self.harness.thread.is_alive())


# ------------------------------------------------------------------ real worker process


APP_SOURCE = '''
import os, threading

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hold":
        # The first chunk tells the test the app is running; then it sleeps.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started ")
        import time
        time.sleep(float(environ["QUERY_STRING"]))
        return [b"done"]
    if path == "/barrier":
        BARRIER.wait(5)  # passes only if two lanes are in the app at once
    body = ("%s %d" % (path, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

BARRIER = threading.Barrier(2)

def create_app(greeting="hi", *, loud=False):
    def factory_app(environ, start_response):
        start_response("200 OK", [])
        return [(greeting.upper() if loud else greeting).encode()]
    return factory_app

def broken_factory():
    raise ValueError("no database")

not_callable = 42
'''


def hold(lane: socket.socket, seconds: float) -> None:
    """Start /hold and return once the app is inside it (its first chunk arrived)."""
    send_request(lane, path="/hold", query=str(seconds))
    assert recv_frame(lane)[0] == W.RESPONSE
    assert recv_frame(lane) == (W.BODY, 0, b"started ")


class WorkerProcess:
    """The worker started the way the master starts it."""

    def __init__(self, app: str, lanes: int = 1, app_dir: Optional[str] = None, pythonpath: str = "",
                 extra_env: Optional[dict] = None, rings: bool = False, ring_size: int = RING,
                 drop_bell: int = 0, master_drop: int = 0, master_first_ms: int = 2) -> None:
        self.control, control_child = socket.socketpair()
        self.control.settimeout(TIMEOUT)
        pairs = [socket.socketpair() for _ in range(lanes)]
        self.lanes = [ours for ours, _ in pairs]
        for s in self.lanes:
            s.settimeout(TIMEOUT)
        child_fds = [control_child.fileno()] + [theirs.fileno() for _, theirs in pairs]
        ring_env = {}
        self.hub: Optional[MasterBell] = None
        if rings:  # RING-SPEC.md: the lanes' bytes go through rings; the test plays the master's side
            self.hub = MasterBell()
            self.lanes = [RingMaster(ours, self.hub, ring_size, master_drop, master_first_ms) for ours in self.lanes]
            child_fds.append(self.hub.fd)
            for m in self.lanes:
                child_fds += [m.memfd, m.bell]
            ring_env = {
                "FERROCORN_WORKER_RING_SIZE": str(ring_size),
                "FERROCORN_WORKER_MASTER_BELL_FD": str(self.hub.fd),
                "FERROCORN_WORKER_RING_FDS": ",".join(f"{m.memfd}:{m.bell}" for m in self.lanes),
            }
            if drop_bell:
                ring_env["FERROCORN_DROP_BELL"] = str(drop_bell)
        env = dict(os.environ)
        env.update(ring_env)
        env.update({
            "FERROCORN_WORKER_CONTROL_FD": str(control_child.fileno()),
            "FERROCORN_WORKER_LANE_FDS": ",".join(str(theirs.fileno()) for _, theirs in pairs),
            "FERROCORN_WORKER_APP": app,
            "FERROCORN_WORKER_ID": "7",
            "FERROCORN_WORKER_MASTER_PID": str(os.getpid()),
            "FERROCORN_WORKER_PYTHONPATH": pythonpath,
            "FERROCORN_WORKER_LOG_LEVEL": "info",
            "FERROCORN_WORKER_COUNT": "2",
        })
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-", "ferrocorn-worker", "7"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=child_fds,
            env=env,
            cwd=app_dir,
        )
        self.proc.stdin.write(WORKER_PATH.read_bytes())
        self.proc.stdin.close()
        control_child.close()
        for _, theirs in pairs:
            theirs.close()
        self._stderr = b""

    def stderr(self) -> str:
        if self.proc.poll() is not None and not self.proc.stderr.closed:
            self._stderr += self.proc.stderr.read()
            self.proc.stderr.close()
        return self._stderr.decode(errors="replace")

    def wait(self) -> int:
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("worker did not exit in time:\n" + self.stderr())
        self.stderr()
        return code

    def handshake(self) -> dict:
        kind, flags, payload = recv_frame(self.control)
        assert kind == W.HELLO, (kind, payload)
        hello = json.loads(payload)
        kind, flags, payload = recv_frame(self.control)
        if kind != W.READY:
            raise AssertionError(f"expected READY, got {kind}: {payload.decode()}\n{self.stderr()}")
        return hello

    def close(self) -> None:
        for s in [self.control] + self.lanes:
            s.close()
        if self.hub is not None:
            self.hub.close()
            self.hub = None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


def ring_rss_kb(pid: int) -> list:
    """The Rss (kB) of each test ring mapping of a process, from /proc/PID/smaps."""
    sizes, inside = [], False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = "ferrocorn-test-lane" in line
            elif inside and line.startswith("Rss:"):
                sizes.append(int(line.split()[1]))
    return sizes


class WorkerProcessTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.app_dir = tmp.name
        Path(self.app_dir, "wapp.py").write_text(APP_SOURCE)

    def start(self, app: str = "wapp:app", **kw: Any) -> WorkerProcess:
        kw.setdefault("app_dir", self.app_dir)
        worker = WorkerProcess(app, **kw)
        self.addCleanup(worker.close)
        return worker

    def test_hello_ready_and_serving(self) -> None:
        w = self.start(extra_env={"FERROCORN_WORKER_LOG_LEVEL": "debug"})
        hello = w.handshake()
        self.assertEqual(hello["pid"], w.proc.pid)
        self.assertEqual(hello["protocol"], 3)
        self.assertEqual(hello["max_payload"], 16 * 1024 * 1024)
        self.assertEqual(hello["python"], "%d.%d.%d" % sys.version_info[:3])
        self.assertEqual((hello["worker_class"], hello["lanes"]), ("sync", 1))
        self.assertEqual(hello["transport"], "socket")
        r = get(w.lanes[0], path="/x")
        self.assertEqual(r.body, b"/x %d" % w.proc.pid)
        w.control.close()  # graceful stop
        self.assertEqual(w.wait(), 0)
        err = w.stderr()
        self.assertIn("booting worker 7 with pid %d" % w.proc.pid, err)
        self.assertIn("app loaded", err)
        # gunicorn's error-log line, as the master writes it.
        line = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[%d\] \[DEBUG\] booting worker 7 " % w.proc.pid)
        self.assertTrue(any(line.match(l) for l in err.splitlines()), err)

    def boot_failure(self, app: str, **kw: Any) -> tuple[str, WorkerProcess]:
        w = self.start(app, **kw)
        kind, _, _ = recv_frame(w.control)
        self.assertEqual(kind, W.HELLO)
        kind, flags, payload = recv_frame(w.control)
        self.assertEqual((kind, flags), (W.BOOT_FAILED, W.APP_LOAD))
        self.assertEqual(w.wait(), 4)
        return payload.decode(), w

    def test_missing_module(self) -> None:
        text, w = self.boot_failure("nosuchmod:app")
        self.assertIn('app "nosuchmod:app" not found: no module named nosuchmod', text)
        self.assertIn("Traceback", text)
        self.assertIn("no module named nosuchmod", w.stderr())

    def test_module_given_as_file_name(self) -> None:
        text, _ = self.boot_failure("wapp.py:app")
        self.assertIn("did you mean wapp:app?", text)

    def test_missing_attribute_suggests_a_close_name(self) -> None:
        text, w = self.boot_failure("wapp:ap")
        self.assertIn('app "wapp:ap" not found: module wapp has no attribute ap (did you mean app?)', text)
        self.assertIn("did you mean app?", w.stderr())

    def test_factory_failure(self) -> None:
        text, _ = self.boot_failure("wapp:broken_factory()")
        self.assertIn("factory broken_factory() raised ValueError: no database", text)
        self.assertIn("Traceback", text)

    def test_factory_bad_arguments_and_not_callable(self) -> None:
        text, _ = self.boot_failure("wapp:create_app(1, 2)")
        self.assertIn("TypeError", text)
        text, _ = self.boot_failure("wapp:not_callable")
        self.assertIn("is not callable", text)
        text, _ = self.boot_failure("wapp:create_app(os.sep)")
        self.assertIn("must be literal values", text)

    def test_factory_with_literal_args_and_pythonpath(self) -> None:
        w = self.start("wapp:create_app('hey', loud=True)", app_dir=None, pythonpath=self.app_dir)
        w.handshake()
        self.assertEqual(get(w.lanes[0]).body, b"HEY")

    def test_broken_environment_is_a_boot_failure(self) -> None:
        w = self.start(extra_env={"FERROCORN_WORKER_LOG_LEVEL": "loud"})
        kind, flags, payload = recv_frame(w.control)
        self.assertEqual((kind, flags), (W.BOOT_FAILED, 0))
        self.assertIn("FERROCORN_WORKER_LOG_LEVEL", payload.decode())
        self.assertEqual(w.wait(), 3)

    def test_threads_serve_concurrently(self) -> None:
        w = self.start(lanes=2)
        hello = w.handshake()
        self.assertEqual((hello["worker_class"], hello["lanes"]), ("gthread", 2))
        for lane in w.lanes:
            send_request(lane, path="/barrier")
        bodies = [read_response(lane) for lane in w.lanes]
        self.assertEqual([(r.error, r.body) for r in bodies], [(None, b"/barrier %d" % w.proc.pid)] * 2)
        w.control.close()
        self.assertEqual(w.wait(), 0)

    def test_control_eof_finishes_the_request_in_flight(self) -> None:
        w = self.start(lanes=2, extra_env={"FERROCORN_WORKER_LOG_LEVEL": "debug"})
        w.handshake()
        hold(w.lanes[0], 0.5)
        w.control.close()
        self.assertEqual(read_response(w.lanes[0]).body, b"done")
        self.assertEqual(w.wait(), 0)
        self.assertIn("stopping gracefully", w.stderr())

    def test_sigterm_is_graceful(self) -> None:
        w = self.start()
        w.handshake()
        hold(w.lanes[0], 0.5)
        w.proc.send_signal(signal.SIGTERM)
        self.assertEqual(read_response(w.lanes[0]).body, b"done")
        self.assertEqual(w.wait(), 0)

    def test_sigquit_exits_at_once(self) -> None:
        w = self.start()
        w.handshake()
        hold(w.lanes[0], 5)
        started = time.monotonic()
        w.proc.send_signal(signal.SIGQUIT)
        self.assertEqual(w.wait(), 0)
        self.assertLess(time.monotonic() - started, 3)

    def test_all_lanes_closed_exits(self) -> None:
        w = self.start(lanes=2)
        w.handshake()
        for lane in w.lanes:
            lane.close()
        self.assertEqual(w.wait(), 0)

    def test_sigabrt_dumps_stacks(self) -> None:
        w = self.start()
        w.handshake()
        hold(w.lanes[0], 5)
        w.proc.send_signal(signal.SIGABRT)
        self.assertEqual(w.wait(), -signal.SIGABRT)
        err = w.stderr()
        self.assertIn("Fatal Python error: Aborted", err)
        self.assertIn("wapp.py", err)  # the lane thread's stack, inside the app

    def test_ring_lanes_hello_serve_and_stop(self) -> None:
        w = self.start(lanes=2, rings=True)
        hello = w.handshake()
        self.assertEqual((hello["transport"], hello["lanes"]), ("ring", 2))
        for _ in range(3):
            for lane in w.lanes:
                self.assertEqual(get(lane, path="/r").body, b"/r %d" % w.proc.pid)
        for lane in w.lanes:
            send_request(lane, path="/barrier")
        self.assertEqual([read_response(lane).body for lane in w.lanes], [b"/barrier %d" % w.proc.pid] * 2)
        # MAP_POPULATE: each lane's whole mapping is in the worker's RSS from the start.
        self.assertEqual(ring_rss_kb(w.proc.pid), [(4096 + 2 * RING) // 1024] * 2)
        hold(w.lanes[0], 0.3)
        w.control.close()  # graceful: the request in flight ends, the sleeping lane wakes at SHUT_RD
        self.assertEqual(read_response(w.lanes[0]).body, b"done")
        self.assertEqual(w.wait(), 0)
        self.assertNotIn("Traceback", w.stderr())

    def test_ring_lanes_closed_by_the_master_end_the_worker(self) -> None:
        w = self.start(lanes=2, rings=True)
        w.handshake()
        self.assertEqual(get(w.lanes[1]).body, b"/ %d" % w.proc.pid)
        for lane in w.lanes:
            lane.close()
        self.assertEqual(w.wait(), 0)

    def test_ring_lost_doorbells(self) -> None:
        """FERROCORN_DROP_BELL=2: every 2nd doorbell is lost, and the 2 ms
        first sleep covers it: the worker's lost bells cost our short sleep,
        ours cost the worker's (W_LOST counts them in the control page)."""
        for worker_drop, master_drop in ((2, 0), (0, 2), (2, 2)):
            w = self.start(rings=True, drop_bell=worker_drop, master_drop=master_drop)
            w.handshake()
            lane = w.lanes[0]
            started = time.monotonic()
            for i in range(20 if worker_drop and master_drop else 50):
                self.assertEqual(get(lane, path="/%d" % i).body, b"/%d %d" % (i, w.proc.pid))
            took = time.monotonic() - started
            # A lost bell costs a bounded sleep, whenever the sleeper fell
            # asleep: ours is bounded while we wait, and we ring a worker
            # asleep with work again (the nudge).
            self.assertLess(took, 5, (worker_drop, master_drop))
            # Only the bound is asserted: a lost bell leaves no trace when its
            # sleeper found the work on its re-check before sleeping, and a
            # loaded machine may keep the worker awake so that none is rung.
            # test_lost_doorbells_cost_the_short_sleep makes sure one mattered.
            w.control.close()
            self.assertEqual(w.wait(), 0)

    def test_ring_environment_errors_are_boot_failures(self) -> None:
        cases = [
            ({"FERROCORN_WORKER_RING_SIZE": "100000"}, "FERROCORN_WORKER_RING_SIZE='100000' is not a power of two"),
            ({"FERROCORN_WORKER_RING_SIZE": "32768"}, "FERROCORN_WORKER_RING_SIZE='32768' is not a power of two >= 65536"),
            ({"FERROCORN_WORKER_RING_SIZE": "65536", "FERROCORN_WORKER_MASTER_BELL_FD": ""},
             "FERROCORN_WORKER_MASTER_BELL_FD is not set"),
            ({"FERROCORN_WORKER_RING_FDS": "1:2,3:4"}, "FERROCORN_WORKER_RING_FDS has 2 memfd:bell pairs for 1 lanes"),
            ({"FERROCORN_WORKER_RING_FDS": "12"}, "'12' is not memfd:bell"),
            ({"FERROCORN_DROP_BELL": "-2"}, "FERROCORN_DROP_BELL='-2' is negative"),
            # The memfds hold 64 KiB rings: a mapping of 128 KiB ones cannot be made.
            ({"FERROCORN_WORKER_RING_SIZE": "131072"}, "FERROCORN_WORKER_RING_FDS: cannot map lane 0's ring"),
        ]
        for env, text in cases:
            w = self.start(rings=True, extra_env=env)
            kind, flags, payload = recv_frame(w.control)
            self.assertEqual((kind, flags), (W.BOOT_FAILED, 0), payload)
            self.assertIn(text, payload.decode())
            self.assertEqual(w.wait(), 3)


@unittest.skipUnless(hasattr(os, "SCHED_BATCH"), "no SCHED_BATCH here")
class SchedPolicyTest(unittest.TestCase):
    def policy_after(self, env: dict) -> int:
        """The policy a forked child has after set_sched_policy(env), and of a
        thread it starts after that (the lane threads start later)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                W.set_sched_policy(env)
                seen = []
                thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
                thread.start()
                thread.join()
                os.write(write_end, bytes([os.sched_getscheduler(0), seen[0]]))
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            data = os.read(read_end, 2)
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)
        self.assertEqual(len(data), 2)
        self.assertEqual(data[0], data[1], "a later thread inherits the policy")
        return data[0]

    def test_batch_by_default_and_by_name(self) -> None:
        self.assertEqual(self.policy_after({}), os.SCHED_BATCH)
        self.assertEqual(self.policy_after({"FERROCORN_WORKER_SCHED": "batch"}), os.SCHED_BATCH)

    def test_normal_keeps_the_policy_started_with(self) -> None:
        self.assertEqual(self.policy_after({"FERROCORN_WORKER_SCHED": "normal"}), os.sched_getscheduler(0))


@unittest.skipUnless(hasattr(os, "sched_setaffinity"), "no sched_setaffinity here")
class PinToCpuTest(unittest.TestCase):
    def affinity_after(self, env: dict) -> tuple:
        """The CPUs a forked child may run on after pin_to_cpu(env), and
        those of a thread it starts after that (the lane threads start later)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with self.assertLogs(W.log, "WARNING") if env.get("expect_warning") else contextlib.nullcontext():
                    W.pin_to_cpu(env)
                seen = []
                thread = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
                thread.start()
                thread.join()
                os.write(write_end, json.dumps([sorted(os.sched_getaffinity(0)), seen[0]]).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            data = b""
            while chunk := os.read(read_end, 4096):
                data += chunk
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)
        main, thread = json.loads(data)
        self.assertEqual(main, thread, "a later thread inherits the pin")
        return tuple(main)

    def test_the_cpu_named_is_the_only_one(self) -> None:
        last = max(os.sched_getaffinity(0))
        self.assertEqual(self.affinity_after({"FERROCORN_WORKER_CPU": str(last)}), (last,))

    def test_no_cpu_named_leaves_the_affinity_as_it_was(self) -> None:
        ours = tuple(sorted(os.sched_getaffinity(0)))
        self.assertEqual(self.affinity_after({}), ours)
        self.assertEqual(self.affinity_after({"FERROCORN_WORKER_CPU": ""}), ours)

    def test_a_cpu_that_cannot_be_used_warns_and_leaves_the_affinity_as_it_was(self) -> None:
        ours = tuple(sorted(os.sched_getaffinity(0)))
        for bad in ("100000", "seven"):
            env = {"FERROCORN_WORKER_CPU": bad, "expect_warning": "1"}
            self.assertEqual(self.affinity_after(env), ours, bad)


if __name__ == "__main__":
    unittest.main()
