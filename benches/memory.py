#!/usr/bin/env python3
"""Memory per worker and of the whole server: ferrocorn and gunicorn, each with and without --preload.

For -w 4 and -w 8 (--workers), serve examples/flask_app.py with each of
  ferrocorn --preload, ferrocorn (workers forked from the fork server, then each imports the app),
  gunicorn -k sync --preload, gunicorn -k sync,
wait until every worker is up and the server is quiet, send --requests (1,000) GET /hello over
--connections (8) keep-alive client connections (closed loop: each sends its next request when
the last one is answered), let the server settle again, then read /proc/PID/smaps_rollup of
every process of the server's tree: PSS (shared pages split between the processes that map
them) and USS (Private_Clean + Private_Dirty: what the process alone holds, freed if it exits) per
worker, the master and the fork server as their own columns, and the tree's total PSS and RSS.

Requests per worker (to show every worker served some): ferrocorn's /metrics
(`ferrocorn_worker_requests_served`, --metrics-bind on a free port), gunicorn's access log
(`--access-logformat '%(p)s %(s)s'`, pid and status, into the server log).

A benchmark, not a test: it prints figures and asserts nothing. Every wait has a deadline, traffic
goes only to 127.0.0.1, only the process groups started here are signalled. Stdlib only.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import re
import shlex
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

from harness.masterlog import LogTail, is_ready
from harness.measure import (ProcessMemory, process_comm, process_stats, process_tree, read_process_cpu,
                             read_process_memory)
from harness.process import (free_port, gunicorn_flags, log_excerpt, start_server, stop_on_term, stop_server,
                             wait_ready)
from harness.report import load_average, machine_facts, source_revision

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("ferrocorn-preload", "ferrocorn", "gunicorn-preload", "gunicorn")
LABELS = {
    "ferrocorn-preload": "ferrocorn `--preload`",
    "ferrocorn": "ferrocorn",
    "gunicorn-preload": "gunicorn sync `--preload`",
    "gunicorn": "gunicorn sync",
}
APP, PATH = "flask_app:app", "/hello"
FORK_SERVER_COMM = "fc-forkserver"
QUIET_WINDOW_S, QUIET_CPU_MS = 0.5, 5.0
_SERVED = re.compile(r'^ferrocorn_worker_requests_served\{([^}]*)\}\s+(\S+)', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_GUNICORN_ACCESS = re.compile(r"^<(\d+)> (\d{3})$", re.MULTILINE)


class RunFailed(Exception):
    """A step of one row that did not complete in time."""


@dataclass(frozen=True)
class Options:
    workers: tuple[int, ...]
    servers: tuple[str, ...]
    requests: int
    connections: int
    out: Path
    ferrocorn: Path
    venv: Path
    apps_dir: Path
    ready_timeout: float
    request_timeout: float


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    role: str  # master | fork server | worker | other
    comm: str
    memory: ProcessMemory


@dataclass
class RowResult:
    server: str
    workers: int
    command: str
    status: str = "ok"
    detail: str = ""
    ok: int = 0
    failed: int = 0
    load_s: float = 0.0
    served: dict[int, int] = field(default_factory=dict)  # worker pid -> requests
    processes: list[ProcessRow] = field(default_factory=list)
    # Processes outside the server mapping its big shared files when it was measured (this script
    # maps libpython too): they take a share of those pages, lowering the server's PSS a little.
    outside: dict[str, int] = field(default_factory=dict)

    def role(self, name: str) -> list[ProcessRow]:
        return [p for p in self.processes if p.role == name]


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="memory.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Per-worker PSS and USS and the server's total PSS and RSS after a fixed number of requests, "
        "for ferrocorn and gunicorn sync, each with and without --preload. Traffic only to 127.0.0.1.")
    p.add_argument("--workers", default="4,8", help="comma-separated worker counts, each a run of every server")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    p.add_argument("--requests", type=int, default=1000, help=f"GET {PATH} sent to each server before measuring")
    p.add_argument("--connections", type=int, default=8, help="client connections sending them (closed loop)")
    p.add_argument("--out", type=Path, help="results folder [default: bench-results/<timestamp>-memory/]")
    p.add_argument("--ferrocorn", type=Path, default=REPO_ROOT / "target/release/ferrocorn", help="ferrocorn binary")
    p.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-bench", help="venv with flask and gunicorn")
    p.add_argument("--apps-dir", type=Path, default=REPO_ROOT / "examples", help="folder holding flask_app.py")
    p.add_argument("--ready-timeout", type=float, default=30.0, help="seconds for every worker to be up")
    p.add_argument("--request-timeout", type=float, default=10.0, help="client timeout of one request, seconds")
    a = p.parse_args(argv)
    try:
        workers = tuple(dict.fromkeys(int(w) for w in a.workers.split(",") if w.strip()))
    except ValueError:
        p.error(f"--workers: {a.workers!r} is not a comma-separated list of numbers")
    servers = tuple(dict.fromkeys(s.strip() for s in a.servers.split(",") if s.strip()))
    if not servers or any(s not in SERVERS for s in servers):
        p.error(f"--servers: {a.servers!r}; choose from {','.join(SERVERS)}")
    if not workers or min(workers) < 1 or a.requests < 1 or a.connections < 1:
        p.error("--workers, --requests and --connections must be positive")
    out = a.out or REPO_ROOT / "bench-results" / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-memory")
    return Options(workers=workers, servers=servers, requests=a.requests, connections=a.connections,
                   out=out.resolve(), ferrocorn=a.ferrocorn.resolve(), venv=a.venv.absolute(),
                   apps_dir=a.apps_dir.resolve(), ready_timeout=a.ready_timeout, request_timeout=a.request_timeout)


def check_setup(o: Options) -> list[str]:
    problems = []
    if any(s.startswith("gunicorn") for s in o.servers) and not (o.venv / "bin" / "gunicorn").exists():
        problems.append(f"no gunicorn in {o.venv}: run benches/run.sh --memory, or "
                        f"python3 -m venv {o.venv} && {o.venv}/bin/pip install flask gunicorn")
    if any(s.startswith("ferrocorn") for s in o.servers) and not o.ferrocorn.is_file():
        problems.append(f"no ferrocorn binary at {o.ferrocorn}: cargo build --release")
    if not (o.apps_dir / "flask_app.py").is_file():
        problems.append(f"no flask_app.py in {o.apps_dir}: pass --apps-dir")
    return problems


def command(o: Options, server: str, workers: int, port: int, metrics_port: int,
            gunicorn_flags: Sequence[str]) -> list[str]:
    bind, preload = f"127.0.0.1:{port}", ["--preload"] if server.endswith("-preload") else []
    if server.startswith("ferrocorn"):
        return [str(o.ferrocorn), "-w", str(workers), "-b", bind, "--python", str(o.venv / "bin" / "python"),
                *preload, "--metrics-bind", f"127.0.0.1:{metrics_port}", "--chdir", str(o.apps_dir), APP]
    return [str(o.venv / "bin" / "gunicorn"), "-w", str(workers), "-k", "sync", *preload, *gunicorn_flags,
            "--access-logfile", "-", "--access-logformat", "%(p)s %(s)s", "--chdir", str(o.apps_dir), "-b", bind, APP]


# --- pure parsers (unit-tested) ---


def parse_requests_served(metrics_text: str) -> dict[int, int]:
    """worker pid -> requests served, from ferrocorn's `ferrocorn_worker_requests_served{worker,pid}` gauges."""
    served = {}
    for labels, value in _SERVED.findall(metrics_text):
        pid = dict(_LABEL.findall(labels)).get("pid", "")
        if pid.isdigit():
            served[int(pid)] = served.get(int(pid), 0) + int(float(value))
    return served


def parse_gunicorn_access(log_text: str) -> dict[int, int]:
    """worker pid -> requests, from access lines written with --access-logformat '%(p)s %(s)s'."""
    return dict(Counter(int(pid) for pid, _ in _GUNICORN_ACCESS.findall(log_text)))


def role_of(pid: int, root: int, parent: int, comm: str, server: str) -> str:
    if pid == root:
        return "master"
    if parent != root:
        return "other"
    if server.startswith("ferrocorn") and comm == FORK_SERVER_COMM:
        return "fork server"
    return "worker"


# --- one row ---


def closed_loop(port: int, total: int, connections: int, timeout_s: float) -> tuple[int, int, float]:
    """Send `total` GET PATH from `connections` keep-alive threads; (ok, failed, seconds). Bounded:
    each request has timeout_s, so the whole takes at most about total / connections * timeout_s."""
    lock = threading.Lock()
    counts = {"next": 0, "ok": 0, "failed": 0}

    def run() -> None:
        conn: Optional[http.client.HTTPConnection] = None
        while True:
            with lock:
                if counts["next"] >= total:
                    break
                counts["next"] += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
            try:
                conn.request("GET", PATH)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = None
            with lock:
                counts["ok" if ok else "failed"] += 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(connections)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts["ok"], counts["failed"], time.monotonic() - start


def tree_runtime_ns(root: int) -> int:
    total = 0
    for pid in process_tree(root, process_stats()):
        cpu = read_process_cpu(pid)
        total += cpu.runtime_ns if cpu else 0
    return total


def wait_quiet(root: int, timeout_s: float) -> None:
    """Until the whole tree used under QUIET_CPU_MS of CPU over QUIET_WINDOW_S (workers done importing)."""
    deadline = time.monotonic() + timeout_s
    last = tree_runtime_ns(root)
    while time.monotonic() < deadline:
        time.sleep(QUIET_WINDOW_S)
        now = tree_runtime_ns(root)
        if now - last < QUIET_CPU_MS * 1e6:
            return
        last = now
    raise RunFailed(f"the server did not go quiet (under {QUIET_CPU_MS:g} ms CPU in {QUIET_WINDOW_S:g} s) "
                    f"within {timeout_s:g}s")


def wait_workers(o: Options, server: str, root: int, workers: int, log_path: Path) -> None:
    """Every worker up: ferrocorn's `Worker (pid:N) is ready` lines, gunicorn's children (their import then
    shows as CPU, which wait_quiet waits out)."""
    deadline = time.monotonic() + o.ready_timeout
    if server.startswith("ferrocorn"):
        tail = LogTail(log_path)
        while len({e.fields.get("worker") for e in tail.events if is_ready(e)}) < workers:
            if time.monotonic() > deadline:
                raise RunFailed(f"fewer than {workers} `Worker (pid:N) is ready` lines within {o.ready_timeout:g}s")
            time.sleep(0.01)
            tail.poll()
    else:
        stats = process_stats()
        while sum(1 for f in stats.values() if int(f[1]) == root) < workers:
            if time.monotonic() > deadline:
                raise RunFailed(f"fewer than {workers} gunicorn workers within {o.ready_timeout:g}s")
            time.sleep(0.01)
            stats = process_stats()
    wait_quiet(root, max(deadline - time.monotonic(), QUIET_WINDOW_S * 2))


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode("utf-8", "replace")
    finally:
        conn.close()


def snapshot(root: int, server: str) -> list[ProcessRow]:
    stats = process_stats()
    rows = []
    for pid in process_tree(root, stats):
        memory = read_process_memory(pid)
        if memory is None or pid not in stats:
            continue
        comm = process_comm(pid)
        rows.append(ProcessRow(pid, role_of(pid, root, int(stats[pid][1]), comm, server), comm, memory))
    return rows


def mapped_files(pid: int) -> set[str]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return set()


def outside_sharers(root: int) -> dict[str, int]:
    """How many processes outside the server's tree map its executable (ferrocorn's master, or
    python) or libpython, by file name."""
    stats = process_stats()
    tree = set(process_tree(root, stats))
    try:
        exe = os.readlink(f"/proc/{root}/exe")
    except OSError:
        exe = ""
    watched = {path for pid in tree for path in mapped_files(pid) if "libpython" in path} | ({exe} - {""})
    counts = {Path(path).name: 0 for path in watched}
    for pid in stats:
        if pid not in tree:
            for path in watched & mapped_files(pid):
                counts[Path(path).name] += 1
    return counts


def run_row(o: Options, server: str, workers: int, gunicorn_flags: Sequence[str]) -> RowResult:
    port, metrics_port = free_port(), free_port()
    argv = command(o, server, workers, port, metrics_port, gunicorn_flags)
    result = RowResult(server=server, workers=workers, command=shlex.join(argv))
    log_path = o.out / "logs" / f"memory-{server}-w{workers}.log"
    try:
        proc = start_server(argv, o.apps_dir, log_path)
    except OSError as e:
        result.status, result.detail = "failed to start", f"{type(e).__name__}: {e}"
        return result
    try:
        not_ready = wait_ready(proc, port, PATH, o.ready_timeout)
        if not_ready is not None:
            result.status, result.detail = "failed to start", f"{not_ready}\n{log_excerpt(log_path)}"
            return result
        wait_workers(o, server, proc.pid, workers, log_path)
        result.ok, result.failed, result.load_s = closed_loop(port, o.requests, o.connections, o.request_timeout)
        wait_quiet(proc.pid, o.ready_timeout)
        result.processes = snapshot(proc.pid, server)
        result.outside = outside_sharers(proc.pid)
        if server.startswith("ferrocorn"):
            result.served = parse_requests_served(scrape(metrics_port))
        else:
            result.served = parse_gunicorn_access(log_path.read_text(errors="replace"))
        if proc.poll() is not None:
            result.status = "crashed"
            result.detail = f"server exited with code {proc.returncode} during the run\n{log_excerpt(log_path)}"
    except (RunFailed, OSError, http.client.HTTPException) as e:
        result.status, result.detail = "measure failed", f"{type(e).__name__}: {e}\n{log_excerpt(log_path)}"
    finally:
        stop_server(proc)
    return result


# --- report ---


def mib(kib: Optional[float]) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def mean_range(values: Sequence[int]) -> str:
    if not values:
        return "–"
    return f"{mib(statistics.fmean(values))} ({mib(min(values))}–{mib(max(values))})"


def pss_uss(rows: Sequence[ProcessRow]) -> str:
    if not rows:
        return "–"
    return f"{mib(sum(r.memory.pss_kib for r in rows))} / {mib(sum(r.memory.uss_kib for r in rows))}"


def total(r: RowResult, attr: str) -> int:
    return sum(getattr(p.memory, attr) for p in r.processes)


def figures_table(results: Sequence[RowResult]) -> list[str]:
    lines = ["| server | -w | requests ok (failed) | requests per worker, min–max | master PSS / USS | "
             "fork server PSS / USS | worker PSS, mean (min–max) | worker USS, mean (min–max) | "
             "total PSS | total RSS | processes | outside processes mapping its files |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in results:
        if not r.processes:
            lines.append(f"| {LABELS[r.server]} | {r.workers} | {r.status} | | | | | | | | | |")
            continue
        ws = r.role("worker")
        counts = [r.served.get(w.pid, 0) for w in ws]
        fork_server = pss_uss(r.role("fork server")) if r.server.startswith("ferrocorn") else "(none)"
        extra = f" ({len(r.role('other'))} other)" if r.role("other") else ""
        lines.append(f"| {LABELS[r.server]} | {r.workers} | {r.ok:,} ({r.failed}) | "
                     f"{min(counts)}–{max(counts)} | {pss_uss(r.role('master'))} | {fork_server} | "
                     f"{mean_range([w.memory.pss_kib for w in ws])} | {mean_range([w.memory.uss_kib for w in ws])} | "
                     f"{mib(total(r, 'pss_kib'))} | {mib(total(r, 'rss_kib'))} | {len(r.processes)}{extra} | "
                     f"{outside_text(r.outside)} |")
    return lines


def outside_text(outside: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(outside.items())) or "–"


def ratio_lines(results: Sequence[RowResult]) -> list[str]:
    lines = []
    for w in dict.fromkeys(r.workers for r in results):
        by = {r.server: r for r in results if r.workers == w and r.processes}
        for ours, theirs in (("ferrocorn-preload", "gunicorn-preload"), ("ferrocorn", "gunicorn")):
            if ours in by and theirs in by:
                a, b = total(by[ours], "pss_kib"), total(by[theirs], "pss_kib")
                lines.append(f"- -w {w}: total PSS {LABELS[ours]} / {LABELS[theirs]} = {mib(a)} / {mib(b)} MiB "
                             f"= {a / b:.2f}")
    return lines


def summary_markdown(o: Options, argv: Sequence[str], machine: dict[str, str], results: Sequence[RowResult]) -> str:
    lines = ["# Memory per worker: ferrocorn and gunicorn, with and without --preload", "",
             f"Command: `{shlex.join(argv)}`", "",
             f"App: `{APP}` from `{o.apps_dir.name}/`. Each row: start, wait until every worker is up and the "
             f"server is quiet (under {QUIET_CPU_MS:g} ms CPU in {QUIET_WINDOW_S:g} s), send {o.requests:,} GET "
             f"`{PATH}` over {o.connections} keep-alive connections (closed loop), wait until quiet again, then "
             "read /proc/PID/smaps_rollup of every process of the server. MiB (1 MiB = 1,024 KiB). "
             "What the columns mean: benches/README.md, *Memory*.", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## Figures", ""] + figures_table(results)
    ratios = ratio_lines(results)
    if ratios:
        lines += ["", "Target (the issue): ferrocorn `--preload` at most gunicorn `--preload` (total PSS).", ""]
        lines += ratios
    lines += ["", "*PSS*: each page's size divided by the number of processes mapping it, so the processes' PSS add "
              "up to the memory the server really holds (*total PSS*, master and fork server included). *USS*: "
              "Private_Clean + Private_Dirty, the pages only that process maps (what its exit would free). "
              "*total RSS* counts every shared page once per process that maps it. ferrocorn's master is the Rust "
              "process; its fork server (`fc-forkserver`) holds the app with `--preload`, a bare interpreter "
              "without; gunicorn's master is its arbiter (holding the app with `--preload`). *requests per worker*: "
              "ferrocorn's /metrics, gunicorn's access log (pid per line). *outside processes mapping its files*: "
              "processes not of the server that map its executable or libpython when it was measured (this script "
              "is one of libpython's); each takes its share of those pages, so the server's PSS is a little lower "
              "than on a machine running nothing else. Compare rows with the same counts.",
              "", "## Server commands", ""]
    lines += [f"- {r.server} -w {r.workers}: `{r.command}`" for r in results]
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"### {r.server} -w {r.workers}: {r.status}", "", "```", r.detail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_csvs(results: Sequence[RowResult], out: Path) -> None:
    with open(out / "memory.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("server", "workers", "status", "ok", "failed", "load_s", "total_pss_kib", "total_rss_kib",
                         "total_uss_kib", "master_pss_kib", "forkserver_pss_kib", "worker_pss_kib_mean",
                         "worker_uss_kib_mean", "requests_per_worker", "command"))
        for r in results:
            ws = r.role("worker")
            writer.writerow((r.server, r.workers, r.status, r.ok, r.failed, f"{r.load_s:.2f}", total(r, "pss_kib"),
                             total(r, "rss_kib"), total(r, "uss_kib"),
                             sum(p.memory.pss_kib for p in r.role("master")),
                             sum(p.memory.pss_kib for p in r.role("fork server")),
                             f"{statistics.fmean(w.memory.pss_kib for w in ws):.0f}" if ws else "",
                             f"{statistics.fmean(w.memory.uss_kib for w in ws):.0f}" if ws else "",
                             " ".join(str(r.served.get(w.pid, 0)) for w in ws), r.command))
    with open(out / "memory-processes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("server", "workers", "pid", "role", "comm", "rss_kib", "pss_kib", "uss_kib", "shared_kib",
                         "swap_kib", "requests_served"))
        for r in results:
            for p in r.processes:
                m = p.memory
                writer.writerow((r.server, r.workers, p.pid, p.role, p.comm, m.rss_kib, m.pss_kib, m.uss_kib,
                                 m.shared_kib, m.swap_kib, r.served.get(p.pid, "") if p.role == "worker" else ""))


def progress_line(r: RowResult) -> str:
    if not r.processes:
        return f"{r.server:18} -w {r.workers}: {r.status}: {r.detail.splitlines()[0] if r.detail else ''}"
    ws = r.role("worker")
    return (f"{r.server:18} -w {r.workers}: total PSS {mib(total(r, 'pss_kib'))} MiB, RSS {mib(total(r, 'rss_kib'))} "
            f"MiB, worker USS {mean_range([w.memory.uss_kib for w in ws])} MiB, {r.ok} ok / {r.failed} failed "
            f"in {r.load_s:.1f}s")


def main(argv: Sequence[str]) -> int:
    o = parse_args(argv[1:])
    problems = check_setup(o)
    if problems:
        for problem in problems:
            print(f"memory.py: {problem}", file=sys.stderr)
        return 2
    stop_on_term()  # so run_row's `finally` stops the running server
    (o.out / "logs").mkdir(parents=True, exist_ok=True)
    machine = machine_facts(o.venv, o.ferrocorn)
    machine["ferrocorn source"] = source_revision(REPO_ROOT, o.ferrocorn)
    gunicorn_extra = gunicorn_flags(o.venv)
    results: list[RowResult] = []
    total_rows = len(o.workers) * len(o.servers)
    print(f"results -> {o.out}", flush=True)
    try:
        for w in o.workers:
            for server in o.servers:
                print(f"[{len(results) + 1}/{total_rows}] {server} -w {w}", flush=True)
                results.append(run_row(o, server, w, gunicorn_extra))
                print("    " + progress_line(results[-1]), flush=True)
    finally:
        write_csvs(results, o.out)
        machine["load average (1, 5, 15 min) at end"] = load_average()
        summary = summary_markdown(o, [sys.executable, *argv], machine, results)
        (o.out / "memory.md").write_text(summary)
    print()
    print(summary)
    print(f"raw results: {o.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
