"""The command line of compare.py: parsed and validated into a Config.

Defaults are relative to the repository root, so the script runs from any folder.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("ferrocorn", "ferrocorn-socket", "ferrocorn-normal-sched", "ferrocorn-mt1", "ferrocorn-mt2", "ferrocorn-mt4", "gunicorn-sync", "gunicorn-gthread", "granian", "granian-default")
APPS = {"flask": "flask_app:app", "wsgi": "wsgi_hello:app"}
URL_PATH = "/hello"


@dataclass(frozen=True)
class Config:
    """Resolved command-line options."""

    duration: int
    warmup: int
    rounds: int
    connections: int
    wrk_threads: int
    workers: int
    gthread_threads: int
    ferrocorn_threads: int
    servers: tuple[str, ...]
    apps: tuple[str, ...]
    out: Path
    ferrocorn: Path
    venv: Path
    apps_dir: Path
    ready_timeout: float
    wrk: str
    server_session: str = "own"
    syscall_probe: int = 3

    def venv_bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def parse_args(argv: Sequence[str]) -> Config:
    p = argparse.ArgumentParser(
        prog="compare.py",
        description="Benchmark ferrocorn against gunicorn (sync, gthread) and Granian with wrk on "
        "127.0.0.1: req/s, p50/p99 latency, errors, memory of the whole server process tree. "
        "Prints figures and writes them to a results folder; asserts nothing about speed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=int, default=15, help="seconds of each measured wrk run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of the warm-up wrk run before it (0: none)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of every server x app, interleaved (round 1 runs every server, then round 2...); "
                   "the summary reports each one's median run, so a noisy moment hits one run, not one server")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (-c)")
    p.add_argument("--threads", dest="wrk_threads", type=int, default=1, help="wrk threads (-t)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, the same for every server")
    p.add_argument("--gthread-threads", type=int, default=4, help="threads per gunicorn gthread worker")
    p.add_argument("--ferrocorn-threads", type=int, default=1, help="ferrocorn --threads")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    p.add_argument("--apps", default=",".join(APPS), help="comma-separated subset of " + ",".join(APPS))
    p.add_argument("--out", type=Path, help="results folder [default: bench-results/<timestamp>/]")
    p.add_argument("--ferrocorn", type=Path, default=REPO_ROOT / "target/release/ferrocorn", help="ferrocorn binary")
    p.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-bench",
                   help="venv holding flask, gunicorn and granian; its python runs ferrocorn's workers")
    p.add_argument("--apps-dir", type=Path, default=REPO_ROOT / "examples",
                   help="folder holding flask_app.py and wsgi_hello.py")
    p.add_argument("--ready-timeout", type=float, default=30.0,
                   help=f"seconds a server gets to answer 200 on {URL_PATH}")
    p.add_argument("--wrk", default="wrk", help="wrk executable")
    p.add_argument("--server-session", choices=("own", "wrk"), default="own",
                   help="each server in a session of its own (as started from another terminal), or in "
                   "this script's, with wrk (one autogroup: wrk does not preempt the server as another "
                   "scheduling group); see harness/process.py")
    p.add_argument("--syscall-probe", type=int, default=3,
                   help="seconds of an extra wrk run after the measured one, in which `perf stat` counts the "
                   "server's system calls per request (0: none; skipped without perf); its own run, since "
                   "the counting slows every system call on the machine")
    a = p.parse_args(argv)
    servers = split_choices(p, "--servers", a.servers, SERVERS)
    apps = split_choices(p, "--apps", a.apps, tuple(APPS))
    for name in ("duration", "rounds", "connections", "wrk_threads", "workers", "gthread_threads", "ferrocorn_threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0 or a.ready_timeout <= 0 or a.syscall_probe < 0:
        p.error("--warmup and --syscall-probe must be 0 or more and --ready-timeout more than 0")
    out = a.out or REPO_ROOT / "bench-results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    return Config(
        duration=a.duration, warmup=a.warmup, rounds=a.rounds, connections=a.connections, wrk_threads=a.wrk_threads,
        workers=a.workers, gthread_threads=a.gthread_threads, ferrocorn_threads=a.ferrocorn_threads,
        servers=servers, apps=apps, out=out.resolve(), ferrocorn=a.ferrocorn.resolve(),
        venv=a.venv.absolute(), apps_dir=a.apps_dir.resolve(), ready_timeout=a.ready_timeout, wrk=a.wrk,
        server_session=a.server_session, syscall_probe=a.syscall_probe,
    )


def split_choices(p: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        p.error(f"{flag}: unknown or empty {unknown or value!r}; choose from {','.join(allowed)}")
    return chosen


def check_setup(config: Config) -> list[str]:
    """Problems that make the whole run pointless, each naming its fix."""
    problems = []
    if shutil.which(config.wrk) is None:
        problems.append(f"wrk not found ({config.wrk!r}): apt-get install -y wrk, or run benches/run.sh")
    for app in config.apps:
        module = APPS[app].split(":")[0]
        if not (config.apps_dir / f"{module}.py").is_file():
            problems.append(f"{config.apps_dir / module}.py missing: pass --apps-dir DIR holding {module}.py")
    if not config.venv_bin("python").exists():
        problems.append(f"no venv at {config.venv}: run benches/run.sh, or python3 -m venv {config.venv} && "
                        f"{config.venv_bin('pip')} install flask gunicorn granian")
    return problems
