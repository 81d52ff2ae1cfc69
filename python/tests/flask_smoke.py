"""Every route of examples/flask_app.py through a real worker process (needs Flask).

Not part of the stdlib-only unittest run; run it with the venv's Python:

    .venv/bin/python python/tests/flask_smoke.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_worker import W, WorkerProcess, get, read_response, recv_frame, send_request  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    try:
        import flask  # noqa: F401
    except ImportError:
        sys.exit("flask is missing: python3 -m venv .venv && .venv/bin/pip install flask, "
                 "then run this with .venv/bin/python")
    for spec, rings in (("examples.flask_app:app", False), ("examples.flask_app:create_app()", False),
                        ("examples.flask_app:app", True)):
        w = WorkerProcess(spec, lanes=2, app_dir=str(ROOT), rings=rings)
        try:
            assert w.handshake()["transport"] == ("ring" if rings else "socket")
            lane = w.lanes[0]
            assert get(lane, path="/").body == b"Hello, World!"
            assert get(lane, path="/hello").body == b"Hello, World!"
            assert get(lane, path="/cpu", query="level=2").body.startswith(b"cpu result")
            assert get(lane, path="/io", query="ms=10").body == b"slept 10 ms\n"
            assert get(lane, path="/leak", query="kb=4").body == b"kept 4096 bytes\n"
            assert get(lane, path="/leak", query="kb=4").body == b"kept 8192 bytes\n"
            r = get(lane, method="POST", path="/echo", content_type="text/x-thing", content_length=5,
                    body=[b"he", b"llo"])
            assert (r.body, r.header("content-type")) == (b"hello", "text/x-thing"), (r.body, r.headers)
            assert get(lane, path="/pid").body == str(w.proc.pid).encode()
            env = json.loads(get(lane, path="/environ", query="a=1").body)
            assert env["QUERY_STRING"] == "a=1" and env["wsgi.url_scheme"] == "http", env
            hdrs = json.loads(get(lane, path="/headers", headers=(("X-Probe", "yes"),)).body)
            assert hdrs["X-Probe"] == "yes", hdrs
            r = get(lane, path="/error")
            assert r.status.startswith("500"), (r.status, r.error)  # Flask turns it into a 500 itself

            started = time.monotonic()
            send_request(lane, path="/stream", query="chunks=3&ms=200")
            assert recv_frame(lane)[0] == W.RESPONSE
            assert recv_frame(lane)[2] == b"chunk 0\n"
            first = time.monotonic() - started
            rest = read_response(lane)
            assert rest.body == b"chunk 1\nchunk 2\n", rest.body
            assert first < 0.2, f"first chunk took {first:.3f}s: it waited for the generator"

            send_request(lane, path="/crash")
            try:
                read_response(lane)
                raise AssertionError("/crash answered")
            except EOFError:
                pass
            assert w.wait() == 1
        finally:
            w.close()
        print(f"ok: {spec}" + (" over ring lanes" if rings else ""))


if __name__ == "__main__":
    main()
