"""A Flask app with one route per experiment: hello, cpu, io, leak, echo, stream.

    ferrocorn examples.flask_app:app        (or examples.flask_app:create_app())

Used by the integration tests and the tuning sweeps; keep every route cheap to
read and predictable. /crash and /error exist to test failure handling.
"""

from __future__ import annotations

import json
import os
import time

from flask import Flask, Response, request

app = Flask(__name__)

# /leak keeps what it allocates here, so the memory policy has something to find.
_leaked: list[bytes] = []


def _int_arg(name: str, default: int) -> int:
    return request.args.get(name, default, type=int)


@app.route("/")
@app.route("/hello")
def hello() -> Response:
    return Response("Hello, World!", mimetype="text/plain")


@app.route("/cpu")
def cpu() -> Response:
    """level x 100,000 iterations of pure-Python work (holds the GIL)."""
    total = 0
    for i in range(_int_arg("level", 1) * 100_000):
        total += i % 7
    return Response(f"cpu result {total}\n", mimetype="text/plain")


@app.route("/io")
def io() -> Response:
    """Sleep ms milliseconds, as a database or an upstream call would (releases the GIL)."""
    ms = _int_arg("ms", 100)
    time.sleep(ms / 1000)
    return Response(f"slept {ms} ms\n", mimetype="text/plain")


@app.route("/leak")
def leak() -> Response:
    """Keep kb KiB more per request, forever, resident: bytes(n) would be
    calloc'd pages the kernel never maps, which no RSS limit could see."""
    _leaked.append(b"\x01" * (_int_arg("kb", 1024) * 1024))
    kept = sum(len(b) for b in _leaked)
    return Response(f"kept {kept} bytes\n", mimetype="text/plain")


@app.route("/echo", methods=["POST"])
def echo() -> Response:
    return Response(request.get_data(), content_type=request.content_type or "application/octet-stream")


@app.route("/stream")
def stream() -> Response:
    """chunks chunks, ms milliseconds apart; the first is sent before the second is made."""
    chunks, ms = _int_arg("chunks", 5), _int_arg("ms", 100)

    def generate():
        for i in range(chunks):
            if i:
                time.sleep(ms / 1000)
            yield f"chunk {i}\n"

    return Response(generate(), mimetype="text/plain")


@app.route("/crash")
def crash() -> Response:
    os._exit(1)  # the worker dies mid-request: the master answers 502 and replaces it


@app.route("/error")
def error() -> Response:
    raise RuntimeError("boom (requested by /error)")


@app.route("/pid")
def pid() -> Response:
    """The worker's pid, after an optional ms-millisecond sleep."""
    time.sleep(_int_arg("ms", 0) / 1000)
    return Response(str(os.getpid()), mimetype="text/plain")


@app.route("/environ")
def environ() -> Response:
    data = {k: v for k, v in request.environ.items() if isinstance(v, (str, bool))}
    return Response(json.dumps(data, sort_keys=True), mimetype="application/json")


@app.route("/headers")
def headers() -> Response:
    return Response(json.dumps(dict(request.headers)), mimetype="application/json")


def create_app() -> Flask:
    """Factory form: `examples.flask_app:create_app()`."""
    return app
