"""Server processes: start one in a process group of its own, wait until it answers 200, stop
its group.

Only processes started here are ever signalled: each server leads a new process group (and, by
default, a new session), so its group id is its own pid, and stop_server signals that group and
nothing else.

The session matters to the scheduler: with the kernel's autogroup each session is a scheduling
group of its own. A server in a session of its own (the default, as when it is started from one
terminal and wrk from another) is fair-shared against wrk as another group, and wrk's wake-ups
preempt the server's threads: on 2026-12-01, 0.17 of ferrocorn's switches per request on Flask,
and Granian's plain-WSGI cost went from 26 to 37 µs per request. In the harness's session
(`own_session=False`, compare.py's `--server-session wrk`) they share one group, as one task set.
A client on another machine competes in neither way; both are printed, neither is the truth.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

# subprocess's process_group= is Python 3.11's; setpgid(0, 0) in the child is the same before it.
NEW_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}

STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.1
LOG_HEAD_LINES = 12
LOG_TAIL_LINES = 6


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(argv: Sequence[str], cwd: Path, log_path: Path, own_session: bool = True) -> subprocess.Popen:
    """Start argv in a new process group (in a new session unless own_session is false), stdout
    and stderr into log_path. Raises OSError if it can't exec."""
    # ferrocorn's master then logs microsecond times and every field (masterlog.py reads them);
    # other servers ignore the variable.
    env = {**os.environ, "FERROCORN_LOG_FORMAT": "tracing"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env,
                                **({"start_new_session": True} if own_session else NEW_GROUP))


def stop_server(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """TERM the server's process group, give the leader grace_s to exit, then KILL the group.

    The group id can't be reused while the unreaped leader or any member lives, so the KILL
    reaches only what is left of this server (workers that outlived their master included).
    """
    signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_ready(proc: subprocess.Popen, port: int, path: str, timeout: float) -> Optional[str]:
    """Poll GET path until 200. None when ready, else what was observed, for the report."""
    deadline = time.monotonic() + timeout
    observed = "no answer"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return f"exited with code {code} before answering 200 on {path}"
        observed = probe(port, path)
        if observed == "200":
            return None
        time.sleep(POLL_INTERVAL_S)
    return f"no 200 on {path} within {timeout:g}s (last: {observed})"


def probe(port: int, path: str) -> str:
    """The status code of one GET, or the name of the error that prevented it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return str(conn.getresponse().status)
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


def log_excerpt(path: Path) -> str:
    """The first lines of a server log, and the last few (where a Python traceback ends)."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    if not lines:
        return "(the server wrote nothing)"
    if len(lines) <= LOG_HEAD_LINES + LOG_TAIL_LINES:
        return "\n".join(lines)
    return "\n".join(lines[:LOG_HEAD_LINES] + ["..."] + lines[-LOG_TAIL_LINES:])


def command_output(argv: Sequence[str], first_line: bool = True, timeout: float = 10.0) -> str:
    """Output of a short command (a --version), or why there is none. Its whole group dies on timeout."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as e:
        return f"unavailable ({type(e).__name__})"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"unavailable (no exit within {timeout:g}s)"
    finally:
        signal_group(proc.pid, signal.SIGKILL)  # whatever it left running in its group
    text = (out or err).strip()
    if not text:
        return f"unavailable (exit code {proc.returncode}, no output)"
    return text.splitlines()[0] if first_line else text


def gunicorn_flags(venv: Path) -> tuple[str, ...]:
    """Recent gunicorn opens a control socket at a fixed path in ~/.gunicorn; keep ours off it."""
    help_text = command_output([str(venv / "bin" / "gunicorn"), "--help"], first_line=False)
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


def stop_on_term() -> None:
    """Make TERM raise SystemExit, so a `finally` that stops the running server runs."""

    def raise_on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_on_term)
