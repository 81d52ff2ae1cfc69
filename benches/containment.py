#!/usr/bin/env python3
"""Containment of a leaking app: memory over time, restarts and failed requests, per recycling policy.

Each row serves examples/flask_app.py with 2 workers on 127.0.0.1 and gets the same paced load,
GET /leak?kb=K at R requests a second for D seconds; every request keeps K KiB resident in the
worker that served it, forever. Rows: ferrocorn with no limit, with --max-requests + jitter, with
--max-memory; gunicorn (sync) with the same --max-requests + jitter, and with no limit. For each
row it prints requests done, failed requests, peak and final memory of the server's whole process
tree, and worker restarts (ferrocorn: its /metrics counters by reason; gunicorn: worker pids
booted beyond the first ones), and writes the memory timeline at 1 s resolution.

Why paced and not wrk: wrk keeps its connections busy, so the fastest server would get (and
leak) the most, and at wrk's thousands of requests a second the unlimited rows would leak
gigabytes a second. The same requests at the same times make the rows comparable.

A benchmark, not a test: it asserts nothing. Every step is bounded in time, traffic goes only to
127.0.0.1, only the process groups started here are signalled. Setup on a fresh machine:
benches/run.sh --containment. Stdlib only; shared parts in benches/harness/.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence

from harness.measure import CpuUsage, MemorySample, MemorySampler, cpu_snapshot, cpu_usage, sample_memory
from harness.paced import LoadResult, PacedLoad, percentile
from harness.process import (free_port, gunicorn_flags, log_excerpt, start_server, stop_on_term, stop_server,
                             wait_ready)
from harness.report import load_average, machine_facts, mib
from harness.restarts import gunicorn_restarts, scrape_restarts

REPO_ROOT = Path(__file__).resolve().parent.parent
ROWS = ("ferrocorn", "ferrocorn-max-requests", "ferrocorn-max-memory", "gunicorn-max-requests", "gunicorn")
APP, READY_PATH = "flask_app:app", "/hello"
TICK_S = 1.0
STUCK_SLACK_S = 10.0


@dataclass(frozen=True)
class Options:
    duration: int
    rate: float
    connections: int
    kb: int
    workers: int
    max_requests: int
    jitter: int
    max_memory: str
    rows: tuple[str, ...]
    out: Path
    ferrocorn: Path
    venv: Path
    apps_dir: Path
    ready_timeout: float
    request_timeout: float

    @property
    def path(self) -> str:
        return f"/leak?kb={self.kb}"


@dataclass(frozen=True)
class Row:
    """One server with one recycling policy, and how to start it."""

    name: str
    limit: str
    argv: tuple[str, ...]
    port: int
    metrics_port: Optional[int]


@dataclass(frozen=True)
class Tick:
    """The state of a row at t_s seconds after the load started."""

    t_s: float
    memory: MemorySample
    done: int
    failed: int
    restarts: int


@dataclass
class RowResult:
    row: Row
    status: str = "ok"
    load: Optional[LoadResult] = None
    timeline: list[Tick] = field(default_factory=list)
    peak_rss_kib: int = 0
    peak_pss_kib: Optional[int] = None
    restarts: Counter = field(default_factory=Counter)
    cpu: Optional[CpuUsage] = None
    loadavg: str = ""
    detail: str = ""


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="containment.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="A leaking Flask app under the same paced load with no limit, max-requests + jitter "
        "and max-memory (ferrocorn) and with gunicorn's max-requests + jitter: requests done, failures, "
        "peak and final memory of the process tree, worker restarts. Traffic only to 127.0.0.1.")
    p.add_argument("--duration", type=int, default=60, help="seconds of load per row")
    p.add_argument("--rate", type=float, default=50, help="requests a second, the same for every row")
    p.add_argument("--connections", type=int, default=8, help="client threads, one keep-alive connection each")
    p.add_argument("--kb", type=int, default=256, help="KiB each request leaks (GET /leak?kb=K)")
    p.add_argument("--workers", type=int, default=2, help="worker processes for every server")
    p.add_argument("--max-requests", type=int, default=100, help="max-requests rows: --max-requests")
    p.add_argument("--max-requests-jitter", dest="jitter", type=int, default=50,
                   help="max-requests rows: --max-requests-jitter")
    p.add_argument("--max-memory", default="150MB", help="ferrocorn-max-memory row: --max-memory, per worker")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    p.add_argument("--out", type=Path, help="results folder [default: bench-results/<timestamp>-containment/]")
    p.add_argument("--ferrocorn", type=Path, default=REPO_ROOT / "target/release/ferrocorn", help="ferrocorn binary")
    p.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-bench", help="venv with flask and gunicorn")
    p.add_argument("--apps-dir", type=Path, default=REPO_ROOT / "examples", help="folder holding flask_app.py")
    p.add_argument("--ready-timeout", type=float, default=30.0, help=f"seconds to answer 200 on {READY_PATH}")
    p.add_argument("--request-timeout", type=float, default=10.0, help="client timeout of one request, seconds")
    a = p.parse_args(argv)
    rows = tuple(dict.fromkeys(r.strip() for r in a.rows.split(",") if r.strip()))
    if not rows or any(r not in ROWS for r in rows):
        p.error(f"--rows: {a.rows!r}; choose from {','.join(ROWS)}")
    if min(a.duration, a.connections, a.kb, a.workers, a.max_requests) < 1 or a.rate <= 0 or a.jitter < 0:
        p.error("--duration, --connections, --kb, --workers, --max-requests and --rate must be positive")
    out = a.out or REPO_ROOT / "bench-results" / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-containment")
    return Options(duration=a.duration, rate=a.rate, connections=a.connections, kb=a.kb, workers=a.workers,
                   max_requests=a.max_requests, jitter=a.jitter, max_memory=a.max_memory, rows=rows,
                   out=out.resolve(), ferrocorn=a.ferrocorn.resolve(), venv=a.venv.absolute(),
                   apps_dir=a.apps_dir.resolve(), ready_timeout=a.ready_timeout, request_timeout=a.request_timeout)


def check_setup(o: Options) -> list[str]:
    problems = []
    if not (o.venv / "bin" / "gunicorn").exists():
        problems.append(f"no gunicorn in {o.venv}: run benches/run.sh --containment, or "
                        f"python3 -m venv {o.venv} && {o.venv}/bin/pip install flask gunicorn")
    if any(r.startswith("ferrocorn") for r in o.rows) and not o.ferrocorn.is_file():
        problems.append(f"no ferrocorn binary at {o.ferrocorn}: cargo build --release")
    if not (o.apps_dir / "flask_app.py").is_file():
        problems.append(f"no flask_app.py in {o.apps_dir}: pass --apps-dir")
    return problems


def make_row(o: Options, name: str, gunicorn_flags: Sequence[str]) -> Row:
    """The command lines compared: same workers, app and bind; the same max-requests for both servers."""
    port = free_port()
    bind = f"127.0.0.1:{port}"
    limit: list[str] = []
    if name.endswith("max-requests"):
        limit = ["--max-requests", str(o.max_requests), "--max-requests-jitter", str(o.jitter)]
    elif name.endswith("max-memory"):
        limit = ["--max-memory", o.max_memory]
    if name.startswith("ferrocorn"):
        metrics_port = free_port()
        argv = [str(o.ferrocorn), "-w", str(o.workers), "-b", bind, "--python", str(o.venv / "bin" / "python"),
                "--chdir", str(o.apps_dir), "--metrics-bind", f"127.0.0.1:{metrics_port}", *limit, APP]
        return Row(name, shlex.join(limit) or "none", tuple(argv), port, metrics_port)
    argv = [str(o.venv / "bin" / "gunicorn"), "-w", str(o.workers), "-k", "sync", *gunicorn_flags, *limit,
            "--chdir", str(o.apps_dir), "-b", bind, APP]
    return Row(name, shlex.join(limit) or "none", tuple(argv), port, None)


def restart_counter(o: Options, row: Row, log_path: Path) -> Callable[[], Counter]:
    """ferrocorn: /metrics by reason; gunicorn: worker pids booted beyond the first (no reason known)."""
    if row.metrics_port is not None:
        port = row.metrics_port
        return lambda: scrape_restarts(port)
    return lambda: Counter({"new worker pids": gunicorn_restarts(log_path, o.workers)})


def run_row(o: Options, row: Row) -> RowResult:
    """Start, wait for 200, load while sampling every second, stop. Never raises for a bad server."""
    log_path = o.out / "logs" / f"{row.name}.log"
    result = RowResult(row=row)
    try:
        proc = start_server(row.argv, o.apps_dir, log_path)
    except OSError as e:
        result.status, result.detail = "failed to start", f"{type(e).__name__}: {e}"
        return result
    try:
        not_ready = wait_ready(proc, row.port, READY_PATH, o.ready_timeout)
        if not_ready is not None:
            result.status, result.detail = "failed to start", f"{not_ready}\n{log_excerpt(log_path)}"
            return result
        count_restarts = restart_counter(o, row, log_path)
        measure(o, proc.pid, row, count_restarts, result)
        if proc.poll() is not None:
            result.status = "crashed"
            result.detail = f"server exited with code {proc.returncode} during the run\n{log_excerpt(log_path)}"
    except (OSError, ValueError) as e:
        result.status, result.detail = "measure failed", f"{type(e).__name__}: {e}\n{log_excerpt(log_path)}"
    finally:
        stop_server(proc)
    return result


def measure(o: Options, pid: int, row: Row, count_restarts: Callable[[], Counter], result: RowResult) -> None:
    load = PacedLoad(row.port, o.path, o.rate, o.duration, o.connections, o.request_timeout)
    restarts = count_restarts()

    def tick(t0: float) -> Tick:
        nonlocal restarts
        try:
            restarts = count_restarts()
        except (OSError, ValueError):
            pass  # keep the last count; the final scrape below reports a lasting problem
        s = load.snapshot()
        return Tick(round(time.monotonic() - t0, 2), sample_memory(pid), s.done, s.failed, sum(restarts.values()))

    before = cpu_snapshot(pid)
    t0 = time.monotonic()
    result.timeline.append(tick(t0))
    with MemorySampler(pid) as sampler:  # 0.25 s samples, for the peak
        load.start()
        deadline = t0 + o.duration + o.request_timeout + STUCK_SLACK_S
        k = 0
        while True:
            k += 1
            finished = load.join(max(t0 + k * TICK_S - time.monotonic(), 0))
            result.timeline.append(tick(t0))
            if finished:
                break
            if time.monotonic() > deadline:
                result.status, result.detail = "load stuck", "client threads still running after the deadline"
                break
    result.cpu = cpu_usage(before, cpu_snapshot(pid))
    usage = sampler.usage(result.timeline[0].memory)
    result.peak_rss_kib = max(usage.peak_rss_kib, max(t.memory.rss_kib for t in result.timeline))
    pss = [t.memory.pss_kib for t in result.timeline]
    if usage.peak_pss_kib is not None and None not in pss:
        result.peak_pss_kib = max(usage.peak_pss_kib, *(p for p in pss if p is not None))
    result.restarts = count_restarts()
    result.load = load.snapshot()
    result.loadavg = load_average()


def latency_ms(load: LoadResult) -> tuple[Optional[float], Optional[float], Optional[float]]:
    lat = sorted(load.latencies_ms)
    return percentile(lat, 50), percentile(lat, 99), (lat[-1] if lat else None)


def ms(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def restarts_text(c: Counter) -> str:
    total = sum(c.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{reason} {n}" for reason, n in sorted(c.items())) + ")"


def final(r: RowResult) -> Optional[MemorySample]:
    return r.timeline[-1].memory if r.timeline else None


CSV_FIELDS = ("row", "limit", "status", "duration_s", "rate", "kb", "connections", "workers", "scheduled", "sent",
              "not_sent", "done", "ok", "non_2xx", "transport_errors", "failed", "p50_ms", "p99_ms", "max_ms",
              "max_lag_ms", "idle_rss_kib", "peak_rss_kib", "final_rss_kib", "peak_pss_kib", "final_pss_kib",
              "restarts", "restarts_by_reason", "server_cpu_cores", "other_cpu_cores", "loadavg_end",
              "command", "detail")


def csv_row(o: Options, r: RowResult) -> dict[str, object]:
    load, end = r.load, final(r)
    p50, p99, top = latency_ms(load) if load else (None, None, None)
    return {
        "row": r.row.name, "limit": r.row.limit, "status": r.status, "duration_s": o.duration, "rate": o.rate,
        "kb": o.kb, "connections": o.connections, "workers": o.workers,
        "scheduled": load.scheduled if load else "", "sent": load.sent if load else "",
        "not_sent": load.not_sent if load else "", "done": load.done if load else "", "ok": load.ok if load else "",
        "non_2xx": load.non_2xx if load else "",
        "transport_errors": " ".join(f"{k}={v}" for k, v in sorted(load.transport_errors.items())) if load else "",
        "failed": load.failed if load else "", "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(top),
        "max_lag_ms": f"{load.max_lag_ms:.0f}" if load else "",
        "idle_rss_kib": r.timeline[0].memory.rss_kib if r.timeline else "",
        "peak_rss_kib": r.peak_rss_kib if r.timeline else "", "final_rss_kib": end.rss_kib if end else "",
        "peak_pss_kib": "" if r.peak_pss_kib is None else r.peak_pss_kib,
        "final_pss_kib": "" if end is None or end.pss_kib is None else end.pss_kib,
        "restarts": sum(r.restarts.values()), "restarts_by_reason": restarts_text(r.restarts),
        "server_cpu_cores": f"{r.cpu.server_cores:.2f}" if r.cpu else "",
        "other_cpu_cores": f"{r.cpu.other_cores:.2f}" if r.cpu else "", "loadavg_end": r.loadavg,
        "command": shlex.join(r.row.argv), "detail": r.detail,
    }


def write_csvs(o: Options, results: Sequence[RowResult]) -> None:
    with open(o.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_row(o, r) for r in results)
    with open(o.out / "timeline.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("row", "t_s", "rss_kib", "pss_kib", "processes", "done", "failed", "restarts"))
        for r in results:
            for t in r.timeline:
                writer.writerow((r.row.name, t.t_s, t.memory.rss_kib, "" if t.memory.pss_kib is None
                                 else t.memory.pss_kib, t.memory.processes, t.done, t.failed, t.restarts))


def figures_table(results: Sequence[RowResult]) -> list[str]:
    lines = ["| row | limit | requests done | failed | peak RSS MiB | final RSS MiB | peak PSS MiB | "
             "final PSS MiB | restarts (by reason) | p99 ms | max ms |",
             "|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|"]
    for r in results:
        if r.load is None:
            lines.append(f"| {r.row.name} | `{r.row.limit}` | {r.status} | | | | | | | | |")
            continue
        end = final(r)
        _, p99, top = latency_ms(r.load)
        lines.append(f"| {r.row.name} | `{r.row.limit}` | {r.load.done:,} | {r.load.failed} | "
                     f"{mib(r.peak_rss_kib)} | {mib(end.rss_kib if end else None)} | {mib(r.peak_pss_kib)} | "
                     f"{mib(end.pss_kib if end else None)} | {restarts_text(r.restarts)} | {ms(p99)} | {ms(top)} |")
    return lines


def timeline_table(o: Options, results: Sequence[RowResult]) -> list[str]:
    """RSS at seven points in time, from the 1 s timeline."""
    points = sorted({round(o.duration * i / 6) for i in range(7)})
    lines = ["| row | " + " | ".join(f"{p} s" for p in points) + " |", "|---|" + "--:|" * len(points)]
    for r in results:
        if r.timeline:
            cells = [mib(min(r.timeline, key=lambda t: abs(t.t_s - p)).memory.rss_kib) for p in points]
            lines.append(f"| {r.row.name} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(o: Options, argv: Sequence[str], machine: dict[str, str],
                     results: Sequence[RowResult]) -> str:
    lines = ["# ferrocorn containment benchmark", "", f"Command: `{shlex.join(argv)}`", "",
             f"Load: GET `{o.path}` at {o.rate:g} requests/s for {o.duration} s per row "
             f"({int(o.rate * o.duration):,} requests scheduled), paced, from {o.connections} keep-alive "
             f"connections on 127.0.0.1; each request keeps {o.kb} KiB resident in its worker, forever. "
             f"{o.workers} workers per server (ferrocorn 1 thread each, gunicorn `-k sync`). *failed*: non-2xx "
             "answers + transport errors. Memory: sum over the server's process tree (master + workers); peak from "
             f"samples every 0.25 s and every {TICK_S:g} s, final when the load ended; the {TICK_S:g} s timeline "
             "is in timeline.csv. Restarts: ferrocorn's `ferrocorn_worker_restarts_total` by reason; gunicorn: "
             "worker pids booted beyond the first ones (`Booting worker with pid` in its log).", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## Figures", ""] + figures_table(results)
    lines += ["", "## Memory over time (RSS of the process tree, MiB)", ""] + timeline_table(o, results)
    lines += ["", "## Load and CPU per row", "", "| row | not sent | max lag ms | server CPU | other CPU | "
              "load average at end |", "|---|--:|--:|--:|--:|---|"]
    for r in results:
        if r.load and r.cpu:
            lines.append(f"| {r.row.name} | {r.load.not_sent} | {r.load.max_lag_ms:.0f} | "
                         f"{r.cpu.server_cores:.2f} | {r.cpu.other_cores:.2f} | {r.loadavg} |")
    lines += ["", "*not sent*: requests whose turn came after the end because every client thread was waiting; "
              "*other CPU*: cores busy with anything but the server and this script (other work on the machine).",
              "", "## Server commands", ""] + [f"- {r.row.name}: `{shlex.join(r.row.argv)}`" for r in results]
    failed = [r for r in results if r.status != "ok" or (r.load and r.load.transport_errors)]
    if failed:
        lines += ["", "## Failures and transport errors", ""]
        for r in failed:
            errors = ", ".join(f"{k} {v}" for k, v in sorted(r.load.transport_errors.items())) if r.load else ""
            lines += [f"### {r.row.name}: {r.status}", "", errors, "", "```", r.detail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def progress_line(r: RowResult) -> str:
    if r.load is None:
        return f"{r.row.name:22} {r.status}: {r.detail.splitlines()[0] if r.detail else ''}"
    end = final(r)
    return (f"{r.row.name:22} done {r.load.done:,}  failed {r.load.failed}  peak RSS {mib(r.peak_rss_kib)} MiB  "
            f"final {mib(end.rss_kib if end else None)} MiB  restarts {restarts_text(r.restarts)}"
            + ("" if r.status == "ok" else f"  [{r.status}]"))


def main(argv: Sequence[str]) -> int:
    o = parse_args(argv[1:])
    problems = check_setup(o)
    if problems:
        for problem in problems:
            print(f"containment.py: {problem}", file=sys.stderr)
        return 2
    stop_on_term()  # so run_row's `finally` stops the running server
    (o.out / "logs").mkdir(parents=True, exist_ok=True)
    machine = machine_facts(o.venv, o.ferrocorn)
    gunicorn_extra = gunicorn_flags(o.venv)
    results: list[RowResult] = []
    print(f"results -> {o.out}", flush=True)
    try:
        for i, name in enumerate(o.rows, 1):
            row = make_row(o, name, gunicorn_extra)
            print(f"[{i}/{len(o.rows)}] {name}: {shlex.join(row.argv)}", flush=True)
            results.append(run_row(o, row))
            print("    " + progress_line(results[-1]), flush=True)
    finally:
        write_csvs(o, results)
        machine["load average (1, 5, 15 min) at end"] = load_average()
        summary = summary_markdown(o, [sys.executable, *argv], machine, results)
        (o.out / "summary.md").write_text(summary)
    print()
    print(summary)
    print(f"raw results: {o.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
