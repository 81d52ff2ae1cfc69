#!/usr/bin/env python3
"""Worker boot cost: how long a new worker takes to be ready, and the CPU it costs, per start mode.

ferrocorn starts workers three ways, each a row here, all serving examples/flask_app.py:

- fresh: each worker a new interpreter (`python - ferrocorn-worker ID`). Forced with a --python
  wrapper that fails the fork server, so the master falls back to fresh interpreters.
- forked: the default; workers forked from the fork server (no interpreter start), then each
  imports the app.
- preload: `--preload`; the fork server imports the app once, the workers are forked with it.

Each server runs with -w 1. Two phases, --boots boots each:

1. scale (ferrocorn only): TTIN, wait for the master's `Worker (pid:N) is ready` line of the new worker, read
   its CPU, TTOU, wait until it has gone. Time to ready from the master's own log: its TTIN line
   (`Handling signal: ttin`) to `Worker (pid:N) is ready`, and `Booting worker with pid: N` (logged once the process exists) to
   `Worker (pid:N) is ready`. CPU per boot: the new worker's run time at ready + the fork server's over the
   boot (+ its reaped middle processes, see README).
2. replace (ferrocorn and gunicorn sync, with and without --preload): kill -9 the only worker,
   wait until it is dead, then GET /hello until 200: that time is measured the same way for both
   servers (only the new worker can answer). CPU: everything the server's process tree ran from
   the kill to the 200, the killed worker excluded (one request's work included).

A benchmark, not a test: it prints figures and asserts nothing. Every wait has a deadline, traffic
goes only to 127.0.0.1, and only processes of the process groups started here are signalled (the
master gets TTIN/TTOU, a worker of its group gets KILL). Stdlib only; shared parts in harness/.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import shlex
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

from harness.masterlog import LogEvent, LogTail, is_booting, is_crash, is_ready, is_ttin
from harness.measure import (ProcessCpu, children_of, is_alive, process_comm, process_stats, process_tree,
                             read_process_cpu, runtime_delta_ns, ticks_ms)
from harness.paced import percentile
from harness.process import (free_port, gunicorn_flags, log_excerpt, start_server, stop_on_term, stop_server,
                             wait_ready)
from harness.report import load_average, machine_facts, source_revision

REPO_ROOT = Path(__file__).resolve().parent.parent
MODES = ("fresh", "forked", "preload", "gunicorn", "gunicorn-preload")
LABELS = {
    "fresh": "ferrocorn, fresh interpreter",
    "forked": "ferrocorn, forked",
    "preload": "ferrocorn, forked `--preload`",
    "gunicorn": "gunicorn sync",
    "gunicorn-preload": "gunicorn sync `--preload`",
}
APP, READY_PATH = "flask_app:app", "/hello"
FORK_SERVER_COMM, WORKER_COMM = "fc-forkserver", "fc-worker"
TARGET_READY_MS, TARGET_CPU_MS = 20.0, 10.0
# Fails the fork server (the argument ferrocorn-forkserver), so the master starts every worker as a fresh interpreter.
NO_FORK_SERVER_WRAPPER = """#!/bin/sh
# Written by benches/boot.py: no fork server, so ferrocorn starts workers as fresh interpreters.
for arg in "$@"; do [ "$arg" = ferrocorn-forkserver ] && exit 1; done
exec {python} "$@"
"""


class BootFailed(Exception):
    """A boot that did not complete in time; the mode stops there."""


@dataclass(frozen=True)
class Options:
    boots: int
    modes: tuple[str, ...]
    out: Path
    ferrocorn: Path
    venv: Path
    apps_dir: Path
    ready_timeout: float
    boot_timeout: float
    settle: float

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@dataclass
class Boot:
    """One worker boot, one CSV row. Times in ms; None where the figure does not apply."""

    mode: str
    phase: str  # scale | replace
    n: int
    worker: Optional[int] = None
    pid: int = 0
    # scale: TTIN line -> ready; replace: `Worker (pid:N) was sent SIGKILL!` line -> ready (master's clock)
    decided_to_ready_ms: Optional[float] = None
    booting_to_ready_ms: Optional[float] = None
    kill_to_200_ms: Optional[float] = None  # replace only, this script's clock
    kill_to_crash_logged_ms: Optional[float] = None  # replace, ferrocorn: kill (wall clock) -> `Worker (pid:N) was sent SIGKILL!`
    non_200_before: str = ""  # replace: the answers before the 200 (status, 0 = transport error)
    worker_cpu_ms: float = 0.0  # exact run time of the new worker (at ready / at the 200)
    worker_ticks_ms: float = 0.0  # the same from utime+stime, truncated to ticks
    forkserver_own_ms: Optional[float] = None  # exact, over the boot
    forkserver_children_ticks_ms: Optional[float] = None  # cutime+cstime delta: its middle processes
    forkserver_ticks_ms: Optional[float] = None  # utime+stime+cutime+cstime delta
    master_cpu_ms: Optional[float] = None  # exact, over the boot; not part of the boot's CPU
    tree_cpu_ms: Optional[float] = None  # replace: whole tree (exact), killed worker excluded, middles not


@dataclass
class ModeResult:
    mode: str
    command: str
    status: str = "ok"
    detail: str = ""
    boots: list[Boot] = field(default_factory=list)
    # The fork server's middle processes (one per fork) land in its cutime/cstime, known in ticks
    # only: their total at the end over the forks it made, accurate to 10 ms / forks.
    middle_ms: Optional[float] = None
    forks: int = 0

    def phase(self, name: str) -> list[Boot]:
        return [b for b in self.boots if b.phase == name]


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="boot.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Worker boot cost of ferrocorn (fresh interpreter, forked, forked --preload) and gunicorn "
        "(kill -9 replacement only): time to ready and CPU per boot, on examples/flask_app.py with -w 1. "
        "Traffic only to 127.0.0.1.")
    p.add_argument("--boots", type=int, default=10, help="boots measured per phase and mode")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--out", type=Path, help="results folder [default: bench-results/<timestamp>-boot/]")
    p.add_argument("--ferrocorn", type=Path, default=REPO_ROOT / "target/release/ferrocorn", help="ferrocorn binary")
    p.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-bench", help="venv with flask and gunicorn")
    p.add_argument("--apps-dir", type=Path, default=REPO_ROOT / "examples", help="folder holding flask_app.py")
    p.add_argument("--ready-timeout", type=float, default=30.0, help=f"seconds to answer 200 on {READY_PATH}")
    p.add_argument("--boot-timeout", type=float, default=30.0, help="seconds one boot may take")
    p.add_argument("--settle", type=float, default=0.2,
                   help="seconds of rest before each boot (gunicorn's arbiter sleeps up to 0.1 s after each "
                   "spawn and would only then see the next kill)")
    a = p.parse_args(argv)
    modes = tuple(dict.fromkeys(m.strip() for m in a.modes.split(",") if m.strip()))
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes: {a.modes!r}; choose from {','.join(MODES)}")
    if a.boots < 1 or a.ready_timeout <= 0 or a.boot_timeout <= 0 or a.settle < 0:
        p.error("--boots, --ready-timeout and --boot-timeout must be positive, --settle 0 or more")
    out = a.out or REPO_ROOT / "bench-results" / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-boot")
    return Options(boots=a.boots, modes=modes, out=out.resolve(), ferrocorn=a.ferrocorn.resolve(),
                   venv=a.venv.absolute(), apps_dir=a.apps_dir.resolve(), ready_timeout=a.ready_timeout,
                   boot_timeout=a.boot_timeout, settle=a.settle)


def check_setup(o: Options) -> list[str]:
    problems = []
    if any(m.startswith("gunicorn") for m in o.modes) and not (o.venv / "bin" / "gunicorn").exists():
        problems.append(f"no gunicorn in {o.venv}: run benches/run.sh --boot, or "
                        f"python3 -m venv {o.venv} && {o.venv}/bin/pip install flask gunicorn")
    if not o.python.exists():
        problems.append(f"no python in {o.venv}: run benches/run.sh --boot")
    if any(not m.startswith("gunicorn") for m in o.modes) and not o.ferrocorn.is_file():
        problems.append(f"no ferrocorn binary at {o.ferrocorn}: cargo build --release")
    if not (o.apps_dir / "flask_app.py").is_file():
        problems.append(f"no flask_app.py in {o.apps_dir}: pass --apps-dir")
    return problems


def command(o: Options, mode: str, port: int, gunicorn_flags: Sequence[str]) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if mode.startswith("gunicorn"):
        preload = ["--preload"] if mode == "gunicorn-preload" else []
        return [str(o.venv / "bin" / "gunicorn"), "-w", "1", "-k", "sync", *preload, *gunicorn_flags,
                "--chdir", str(o.apps_dir), "-b", bind, APP]
    python = o.python
    if mode == "fresh":
        python = o.out / "python-without-forkserver.sh"
        python.write_text(NO_FORK_SERVER_WRAPPER.format(python=shlex.quote(str(o.python))))
        python.chmod(0o755)
    preload = ["--preload"] if mode == "preload" else []
    return [str(o.ferrocorn), "-w", "1", "-b", bind, "--python", str(python), *preload,
            "--chdir", str(o.apps_dir), APP]


# --- the processes of one server ---


def workers(master: int, mode: str) -> list[int]:
    """Live workers, oldest first: ferrocorn's children but the fork server; all of gunicorn's."""
    kids = children_of(master)
    if mode.startswith("gunicorn"):
        return kids
    return [p for p in kids if process_comm(p) != FORK_SERVER_COMM]


def fork_server(master: int) -> Optional[int]:
    return next((p for p in children_of(master) if process_comm(p) == FORK_SERVER_COMM), None)


def tree_cpu(master: int) -> dict[int, ProcessCpu]:
    readings = {}
    for pid in process_tree(master, process_stats()):
        cpu = read_process_cpu(pid)
        if cpu is not None:
            readings[pid] = cpu
    return readings


def wait_until(check, timeout_s: float, what: str, interval_s: float = 0.001):
    """check()'s first truthy value within timeout_s; raises BootFailed naming what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BootFailed(f"no {what} within {timeout_s:g}s")
        time.sleep(interval_s)


def ms_between(a: Optional[LogEvent], b: Optional[LogEvent]) -> Optional[float]:
    return None if a is None or b is None else (b.ts - a.ts) * 1000


def ready_line(tail: LogTail, pid: int, start: int, timeout_s: float) -> LogEvent:
    event = tail.wait_for(lambda e: is_ready(e) and e.int_field("pid") == pid, timeout_s, start)
    if event is None:
        raise BootFailed(f"no `Worker (pid:{pid}) is ready` line in the master's log within {timeout_s:g}s")
    return event


def booting_line(tail: LogTail, worker: Optional[int], start: int) -> Optional[LogEvent]:
    return next((e for e in tail.events[start:] if is_booting(e)
                 and e.int_field("worker") == worker), None)


# --- phase 1: TTIN, ready, TTOU (ferrocorn) ---


def scale_boot(o: Options, mode: str, master: int, tail: LogTail, n: int) -> Boot:
    tail.poll()
    start = len(tail.events)
    before = set(workers(master, mode))
    fs = fork_server(master)
    fs0 = read_process_cpu(fs) if fs else None
    m0 = read_process_cpu(master)
    os.kill(master, signal.SIGTTIN)
    ready = tail.wait_for(lambda e: is_ready(e) and e.int_field("pid") not in before,
                          o.boot_timeout, start)
    if ready is None:
        raise BootFailed(f"TTIN: no new `Worker (pid:N) is ready` line within {o.boot_timeout:g}s")
    pid = ready.int_field("pid") or 0
    w = read_process_cpu(pid)
    fs1 = read_process_cpu(fs) if fs else None
    m1 = read_process_cpu(master)
    decided = next((e for e in tail.events[start:] if is_ttin(e)), None)
    worker = ready.int_field("worker")
    boot = Boot(mode=mode, phase="scale", n=n, worker=worker, pid=pid,
                decided_to_ready_ms=ms_between(decided, ready),
                booting_to_ready_ms=ms_between(booting_line(tail, worker, start), ready),
                worker_cpu_ms=w.runtime_ns / 1e6 if w else 0.0, worker_ticks_ms=ticks_ms(w.own_ticks) if w else 0.0,
                master_cpu_ms=runtime_delta_ns(m0, m1) / 1e6 if m0 and m1 else None)
    if fs0 and fs1:
        boot.forkserver_own_ms = runtime_delta_ns(fs0, fs1) / 1e6
        boot.forkserver_children_ticks_ms = ticks_ms(fs1.children_ticks - fs0.children_ticks)
        boot.forkserver_ticks_ms = ticks_ms(fs1.own_ticks + fs1.children_ticks - fs0.own_ticks - fs0.children_ticks)
    os.kill(master, signal.SIGTTOU)
    wait_until(lambda: len(workers(master, mode)) == len(before), o.boot_timeout, "worker gone after TTOU")
    return boot


# --- phase 2: kill -9, first 200 (ferrocorn and gunicorn) ---


def get_status(port: int, timeout_s: float) -> int:
    """Status of one GET /hello; 0 for a transport error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", READY_PATH)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def replace_boot(o: Options, mode: str, master: int, port: int, tail: Optional[LogTail], n: int) -> Boot:
    old_workers = workers(master, mode)
    if len(old_workers) != 1:
        raise BootFailed(f"expected 1 worker, found {len(old_workers)}: {old_workers}")
    old = old_workers[0]
    if os.getpgid(old) != master:
        raise BootFailed(f"worker {old} is not in the server's process group {master}; not signalling it")
    if tail is not None:
        tail.poll()
    start = len(tail.events) if tail else 0
    before = {pid: cpu for pid, cpu in tree_cpu(master).items() if pid != old}
    wall_kill, t_kill = time.time(), time.monotonic()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not is_alive(old), o.boot_timeout, f"death of worker {old}")
    boot = Boot(mode=mode, phase="replace", n=n)
    deadline = t_kill + o.boot_timeout
    answers = []
    while (status := get_status(port, max(deadline - time.monotonic(), 0.1))) != 200:
        answers.append(str(status))
        if time.monotonic() >= deadline:
            raise BootFailed(f"no 200 on {READY_PATH} within {o.boot_timeout:g}s of the kill")
        time.sleep(0.001)
    boot.kill_to_200_ms = (time.monotonic() - t_kill) * 1000
    boot.non_200_before = " ".join(answers)
    after = tree_cpu(master)
    new = [p for p in workers(master, mode) if p != old]
    boot.pid = new[0] if len(new) == 1 else 0
    # Own run time only: gunicorn's arbiter reaps the killed worker into its cutime; ferrocorn's
    # fork server reaps its middle process there (added in the report, from ModeResult.middle_ms).
    tree_ns = sum(runtime_delta_ns(before[pid], cpu) if pid in before else cpu.runtime_ns
                  for pid, cpu in after.items())
    boot.tree_cpu_ms = tree_ns / 1e6
    fs = fork_server(master) if tail is not None else None
    w = after.get(boot.pid)
    boot.worker_cpu_ms = w.runtime_ns / 1e6 if w else 0.0
    boot.worker_ticks_ms = ticks_ms(w.own_ticks) if w else 0.0
    if fs in after and fs in before:
        boot.forkserver_own_ms = runtime_delta_ns(before[fs], after[fs]) / 1e6
        boot.forkserver_children_ticks_ms = ticks_ms(after[fs].children_ticks - before[fs].children_ticks)
        boot.forkserver_ticks_ms = ticks_ms(after[fs].own_ticks + after[fs].children_ticks
                                            - before[fs].own_ticks - before[fs].children_ticks)
    if master in after and master in before:
        boot.master_cpu_ms = runtime_delta_ns(before[master], after[master]) / 1e6
    if tail is not None:
        ready = ready_line(tail, boot.pid, start, o.boot_timeout)
        boot.worker = ready.int_field("worker")
        crashed = next((e for e in tail.events[start:] if is_crash(e)), None)
        boot.decided_to_ready_ms = ms_between(crashed, ready)
        boot.kill_to_crash_logged_ms = (crashed.ts - wall_kill) * 1000 if crashed else None
        boot.booting_to_ready_ms = ms_between(booting_line(tail, boot.worker, start), ready)
    return boot


def run_mode(o: Options, mode: str, gunicorn_flags: Sequence[str]) -> ModeResult:
    """Start with -w 1, run the phases, stop. Never raises for a misbehaving server."""
    port = free_port()
    argv = command(o, mode, port, gunicorn_flags)
    result = ModeResult(mode=mode, command=shlex.join(argv))
    log_path = o.out / "logs" / f"boot-{mode}.log"
    try:
        proc = start_server(argv, o.apps_dir, log_path)
    except OSError as e:
        result.status, result.detail = "failed to start", f"{type(e).__name__}: {e}"
        return result
    try:
        not_ready = wait_ready(proc, port, READY_PATH, o.ready_timeout)
        if not_ready is not None:
            result.status, result.detail = "failed to start", f"{not_ready}\n{log_excerpt(log_path)}"
            return result
        tail = None if mode.startswith("gunicorn") else LogTail(log_path)
        if tail is not None:
            if tail.wait_for(is_ready, o.boot_timeout) is None:
                raise BootFailed("answered 200 but no `Worker (pid:N) is ready` line in the master's log")
            if mode != "fresh" and fork_server(proc.pid) is None:
                raise BootFailed(f"no {FORK_SERVER_COMM} child of the master (is this a build with the fork server?)")
            for n in range(1, o.boots + 1):
                time.sleep(o.settle)
                result.boots.append(scale_boot(o, mode, proc.pid, tail, n))
        for n in range(1, o.boots + 1):
            time.sleep(o.settle)
            result.boots.append(replace_boot(o, mode, proc.pid, port, tail, n))
        fs = fork_server(proc.pid) if tail is not None else None
        cpu = read_process_cpu(fs) if fs else None
        if tail is not None and cpu is not None:
            tail.poll()
            result.forks = sum(1 for e in tail.events if is_booting(e))
            result.middle_ms = ticks_ms(cpu.children_ticks) / max(result.forks, 1)
        if proc.poll() is not None:
            result.status = "crashed"
            result.detail = f"server exited with code {proc.returncode} during the run\n{log_excerpt(log_path)}"
    except (BootFailed, OSError) as e:
        result.status = "boot failed"
        result.detail = f"after {len(result.boots)} boots: {type(e).__name__}: {e}\n{log_excerpt(log_path)}"
    finally:
        stop_server(proc)
    return result


# --- report ---


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def spread(values: Sequence[Optional[float]]) -> str:
    """`median / p90 / max` of the values that apply; – when none does."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return "–"
    return f"{fmt(statistics.median(xs))} / {fmt(percentile(xs, 90))} / {fmt(xs[-1])}"


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def mean(values: Sequence[Optional[float]]) -> Optional[float]:
    xs = [v for v in values if v is not None]
    return statistics.fmean(xs) if xs else None


def boot_cpu_ms(b: Boot, middle_ms: float) -> float:
    """The issue's CPU per boot: the new worker + the fork server (own, exact; middles, mean)."""
    if b.forkserver_own_ms is None:
        return b.worker_cpu_ms
    return b.worker_cpu_ms + b.forkserver_own_ms + middle_ms


def ticks_cpu_ms(b: Boot) -> float:
    return b.worker_ticks_ms + (b.forkserver_ticks_ms or 0.0)


def scale_table(results: Sequence[ModeResult]) -> list[str]:
    lines = ["| mode | boots | TTIN → ready ms | booting → ready ms | CPU ms per boot | of it worker | "
             "of it fork server (own + middles) | ticks-only CPU ms, median / mean | master CPU ms (not in CPU) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        boots = r.phase("scale")
        if not boots:
            if not r.mode.startswith("gunicorn"):
                lines.append(f"| {LABELS[r.mode]} | 0 ({r.status}) | | | | | | | |")
            continue
        middle = r.middle_ms or 0.0
        fs = "–" if boots[0].forkserver_own_ms is None else \
            f"{fmt(median([b.forkserver_own_ms for b in boots]))} + {middle:.1f}"
        ticks = [ticks_cpu_ms(b) for b in boots]
        lines.append(f"| {LABELS[r.mode]} | {len(boots)} | {spread([b.decided_to_ready_ms for b in boots])} | "
                     f"{spread([b.booting_to_ready_ms for b in boots])} | "
                     f"{spread([boot_cpu_ms(b, middle) for b in boots])} | "
                     f"{fmt(median([b.worker_cpu_ms for b in boots]))} | {fs} | "
                     f"{fmt(median(ticks))} / {fmt(mean(ticks))} | {fmt(median([b.master_cpu_ms for b in boots]))} |")
    return lines


def replace_table(results: Sequence[ModeResult]) -> list[str]:
    lines = ["| server | boots | kill → first 200 ms | kill → crash logged ms | crash logged → ready ms | "
             "tree CPU ms per replacement | of it new worker | answers before the 200 (all boots) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        boots = r.phase("replace")
        if not boots:
            lines.append(f"| {LABELS[r.mode]} | 0 ({r.status}) | | | | | | |")
            continue
        middle = r.middle_ms or 0.0
        failed = [s for b in boots for s in b.non_200_before.split()]
        answers = ", ".join(f"{n} x {'no answer' if s == '0' else s}" for s, n in Counter(failed).items()) or "0"
        lines.append(f"| {LABELS[r.mode]} | {len(boots)} | {spread([b.kill_to_200_ms for b in boots])} | "
                     f"{spread([b.kill_to_crash_logged_ms for b in boots])} | "
                     f"{spread([b.decided_to_ready_ms for b in boots])} | "
                     f"{spread([b.tree_cpu_ms + middle for b in boots if b.tree_cpu_ms is not None])} | "
                     f"{fmt(median([b.worker_cpu_ms for b in boots]))} | {answers} |")
    return lines


def target_line(results: Sequence[ModeResult]) -> list[str]:
    r = next((r for r in results if r.mode == "preload" and r.phase("scale")), None)
    if r is None:
        return []
    boots = r.phase("scale")
    middle = r.middle_ms or 0.0
    ready = sorted(b.decided_to_ready_ms for b in boots if b.decided_to_ready_ms is not None)
    cpu = sorted(boot_cpu_ms(b, middle) for b in boots)
    if not ready:
        return []
    return [f"Target (the issue): with `--preload` at most {TARGET_READY_MS:g} ms spawn-to-ready and "
            f"{TARGET_CPU_MS:g} ms CPU per boot. Measured (scale phase): TTIN → ready median "
            f"{fmt(statistics.median(ready))} ms, max {fmt(ready[-1])} ms; CPU per boot median "
            f"{fmt(statistics.median(cpu))} ms, max {fmt(cpu[-1])} ms.", ""]


SCALE_NOTES = (
    "*TTIN → ready*: the master's `Handling signal: ttin` line to its `Worker (pid:N) is ready` line (the handshake "
    "done, the worker admitted); *booting → ready*: from `Booting worker with pid: N`, logged once the process exists "
    "(after the fork, or the exec). *CPU per boot*: the new worker's run time at ready (exact, from schedstat) "
    "+ the fork server's over the boot (exact) + its middle process (known in clock ticks only: the fork "
    "server's cutime+cstime when the mode ends, divided by the forks it made, both phases and the first "
    "worker; *middles* per mode below the next table). *ticks-only*: the same from /proc/PID/stat clock ticks "
    "alone (10 ms resolution, a young process's figure truncated). *master CPU*: the Rust master's run time "
    "over the boot, shown apart.")
REPLACE_NOTES = (
    "*kill → first 200*: this script's clock, from the SIGKILL to the first 200 on /hello (sent once the old "
    "worker is dead, so only the new one can answer; ferrocorn's master and gunicorn's listen backlog hold it "
    "meanwhile). *kill → crash logged*: to ferrocorn's `Worker (pid:N) was sent SIGKILL! ...` line (the system clock "
    "on both sides); *crash logged → ready*: from that line to `Worker (pid:N) is ready`. *tree CPU*: the run time of "
    "every process of the server from the kill to the 200, the killed worker excluded, one request served "
    "included (ferrocorn: + the middle process, as above). *answers before the 200*: what the requests sent "
    "after the old worker died and before the replacement answered got (status, or no answer), over all boots.")


def summary_markdown(o: Options, argv: Sequence[str], machine: dict[str, str], results: Sequence[ModeResult]) -> str:
    lines = ["# Worker boot cost", "", f"Command: `{shlex.join(argv)}`", "",
             f"App: `{APP}` from `{o.apps_dir.name}/`, one worker (`-w 1`), {o.boots} boots per phase and mode, "
             f"{o.settle:g} s of rest before each. "
             "Cells are `median / p90 / max` (nearest rank) unless named otherwise; ms. How each figure is "
             "taken: benches/README.md, *Boot*.", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## Scale up: TTIN, wait for ready, TTOU (ferrocorn)", ""]
    lines += target_line(results) + scale_table(results)
    lines += ["", SCALE_NOTES, "", "## Replace: kill -9 the only worker, GET until 200 (ferrocorn and gunicorn)", ""]
    lines += replace_table(results)
    middles = [f"{LABELS[r.mode]} {r.middle_ms:.2f} ms over {r.forks} forks"
               for r in results if r.middle_ms is not None]
    if middles:
        lines += ["", "Middle processes (CPU per fork, from the fork server's cutime+cstime): "
                  + "; ".join(middles) + "."]
    lines += ["", REPLACE_NOTES, "", "## Server commands", ""]
    lines += [f"- {r.mode}: `{r.command}`" for r in results]
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"### {r.mode}: {r.status}", "", "```", r.detail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_csv(results: Sequence[ModeResult], path: Path) -> None:
    fields = list(Boot.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in results:
            for b in r.boots:
                writer.writerow({k: ("" if v is None else f"{v:.3f}" if isinstance(v, float) else v)
                                 for k, v in asdict(b).items()})


def progress_line(r: ModeResult) -> str:
    parts = [f"{r.mode:17} {r.status}"]
    for phase, key in (("scale", "decided_to_ready_ms"), ("replace", "kill_to_200_ms")):
        boots = r.phase(phase)
        if boots:
            parts.append(f"{phase}: {spread([getattr(b, key) for b in boots])} ms")
    return "  ".join(parts)


def main(argv: Sequence[str]) -> int:
    o = parse_args(argv[1:])
    problems = check_setup(o)
    if problems:
        for problem in problems:
            print(f"boot.py: {problem}", file=sys.stderr)
        return 2
    stop_on_term()  # so run_mode's `finally` stops the running server
    (o.out / "logs").mkdir(parents=True, exist_ok=True)
    machine = machine_facts(o.venv, o.ferrocorn)
    machine["ferrocorn source"] = source_revision(REPO_ROOT, o.ferrocorn)
    gunicorn_extra = gunicorn_flags(o.venv)
    results: list[ModeResult] = []
    print(f"results -> {o.out}", flush=True)
    try:
        for i, mode in enumerate(o.modes, 1):
            print(f"[{i}/{len(o.modes)}] {mode}", flush=True)
            results.append(run_mode(o, mode, gunicorn_extra))
            print("    " + progress_line(results[-1]), flush=True)
    finally:
        write_csv(results, o.out / "boot.csv")
        machine["load average (1, 5, 15 min) at end"] = load_average()
        summary = summary_markdown(o, [sys.executable, *argv], machine, results)
        (o.out / "boot.md").write_text(summary)
    print()
    print(summary)
    print(f"raw results: {o.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
