"""A plain-WSGI app for the integration tests: PEP 3333 corners that Flask hides.

Everything is wrapped in wsgiref.validate.validator, so a server that breaks
the spec makes the app raise (and the test see a 500).
"""

from __future__ import annotations

import io
import json
import threading
import time
from wsgiref.validate import validator

_closed = 0
_closed_lock = threading.Lock()


class Counted:
    """A streamed body that records its close() calls."""

    def __init__(self, chunks: int, ms: int) -> None:
        self.chunks, self.ms = chunks, ms

    def __iter__(self):
        for i in range(self.chunks):
            if i:
                time.sleep(self.ms / 1000)
            yield b"chunk %d\n" % i

    def close(self) -> None:
        global _closed
        with _closed_lock:
            _closed += 1


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/environ":
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, (str, bool))}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/read-styles":
        # read(n), readline(), iteration: the three ways an app reads a body
        stream = environ["wsgi.input"]
        first = stream.read(5)
        line = stream.readline()
        rest = b"".join(stream)
        start_response("200 OK", text)
        return [b"|".join([first, line, rest])]
    if path == "/upload":
        # Read a large body in pieces; report its size and how much RSS grew.
        stream, total, before, peak = environ["wsgi.input"], 0, _rss_kib(), 0
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            total += len(piece)
            peak = max(peak, _rss_kib())
        start_response("200 OK", text)
        return [b"%d %d" % (total, peak - before)]
    if path == "/stream":
        start_response("200 OK", text)
        return Counted(50, 100)
    if path == "/closed":
        start_response("200 OK", text)
        return [str(_closed).encode()]
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written ")
        return [b"returned"]
    if path == "/file":
        start_response("200 OK", text)
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 1_000_000), 65536)
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    start_response("200 OK", text)
    return [b"ok"]


app = validator(_app)
