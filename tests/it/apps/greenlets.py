"""A plain-WSGI app for the gevent worker's integration tests (-k gevent).

/io?ms=N sleeps cooperatively (time.sleep is gevent's once the worker has
monkey-patched) and counts how many requests sleep at once; /peak says the
most so far. With ?until=K it sleeps in short naps until K requests have
slept at once, at most N ms: a test of concurrency that does not depend on
how fast a loaded machine starts its clients. With MARK_DIR set, every /io
appends its ?id= to MARK_DIR/<pid>, so a test can tell which worker had
which request. /cpu?ms=N holds the CPU
(and so every other greenlet of its worker) for N ms; with ?mark=NAME it
writes "started" to MARK_DIR/NAME first and "ended" once the CPU is free. /echo reads wsgi.input in pieces and sends it
back; /stream?chunks=N&ms=M streams N chunks M ms apart; /pid is the pid.
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs

_running = 0
_peak = 0


def _arg(environ: dict, name: str, default: str = "") -> str:
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _mark(name: str, line: str) -> None:
    folder = os.environ.get("MARK_DIR")
    if folder:
        with open(os.path.join(folder, name), "a") as f:
            f.write(line + "\n")


def app(environ: dict, start_response):
    global _running, _peak
    path = environ["PATH_INFO"]
    text = "text/plain"
    if path == "/io":
        _mark(str(os.getpid()), _arg(environ, "id", "-"))
        _running += 1
        _peak = max(_peak, _running)
        try:
            seconds = int(_arg(environ, "ms", "100")) / 1000
            until = int(_arg(environ, "until", "0"))
            if until:
                deadline = time.monotonic() + seconds
                while _peak < until and time.monotonic() < deadline:
                    time.sleep(0.01)
            else:
                time.sleep(seconds)
        finally:
            _running -= 1
        body = [b"%d" % os.getpid()]
    elif path == "/peak":
        body = [b"%d" % _peak]
    elif path == "/cpu":
        mark = _arg(environ, "mark")
        if mark:
            _mark(mark, "started")
        end = time.perf_counter() + int(_arg(environ, "ms", "100")) / 1000
        while time.perf_counter() < end:
            pass
        if mark:
            _mark(mark, "ended")
        body = [b"cpu done"]
    elif path == "/echo":
        stream = environ["wsgi.input"]
        parts = []
        while True:
            part = stream.read(65536)
            if not part:
                break
            parts.append(part)
        body = [b"".join(parts)]
        text = "application/octet-stream"
    elif path == "/stream":
        chunks, ms = int(_arg(environ, "chunks", "5")), int(_arg(environ, "ms", "50"))

        def generate():
            for i in range(chunks):
                if i:
                    time.sleep(ms / 1000)
                yield b"chunk %d\n" % i

        start_response("200 OK", [("Content-Type", text)])
        return generate()
    elif path in ("/", "/pid"):
        body = [b"%d" % os.getpid()]
    else:
        start_response("404 Not Found", [("Content-Type", text)])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", text), ("Content-Length", str(sum(map(len, body))))])
    return body
