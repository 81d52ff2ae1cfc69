"""The results of a benchmark: one RunResult per server x app, ratios, CSV and Markdown.

Pure formatting over data, except machine_info, which asks the tools for their versions.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from .measure import SAMPLE_INTERVAL_S, CpuUsage, MemoryUsage
from .options import APPS, URL_PATH, Config
from .process import command_output
from .syscalls import SyscallRate
from .wrk import WrkResult, wrk_command


@dataclass
class RunResult:
    """One server x app row: status "ok", "failed to start", "load failed" or "crashed"."""

    server: str
    app: str
    status: str
    command: str
    wrk_command: str = ""
    wrk: Optional[WrkResult] = None
    memory: Optional[MemoryUsage] = None
    cpu: Optional[CpuUsage] = None
    detail: str = ""
    round: int = 1
    syscalls: Optional[SyscallRate] = None


@dataclass(frozen=True)
class Summary:
    """All runs of one server x app, represented by its median run (by req/s)."""

    median: RunResult
    runs: tuple[RunResult, ...]

    @property
    def ok_rates(self) -> list[float]:
        return sorted(r.wrk.requests_per_s for r in self.runs if r.status == "ok" and r.wrk)


def summarize(results: Sequence[RunResult]) -> list[Summary]:
    """One Summary per server x app, in first-seen order. The median is taken over the successful
    runs (the lower one of the middle two for an even count); a server x app with none is
    represented by its first failure."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.app, r.server), []).append(r)
    out = []
    for runs in groups.values():
        ok = sorted((r for r in runs if r.status == "ok" and r.wrk), key=lambda r: r.wrk.requests_per_s)
        median = ok[(len(ok) - 1) // 2] if ok else next((r for r in runs if r.status != "ok"), runs[0])
        out.append(Summary(median=median, runs=tuple(runs)))
    return out


@dataclass(frozen=True)
class Ratio:
    """ferrocorn divided by a reference row, for one app."""

    app: str
    reference: str
    requests_per_s: float
    p99: float


def ratios(results: Sequence[RunResult]) -> list[Ratio]:
    """ferrocorn / gunicorn-best (the gunicorn row with the most req/s) and ferrocorn / granian, per app."""
    out = []
    for app in dict.fromkeys(r.app for r in results):
        ok = {r.server: r.wrk for r in results if r.app == app and r.status == "ok" and r.wrk}
        ferro = ok.get("ferrocorn")
        if ferro is None:
            continue
        gunicorns = [(name, w) for name, w in ok.items() if name.startswith("gunicorn")]
        references = []
        if gunicorns:
            name, best = max(gunicorns, key=lambda nw: nw[1].requests_per_s)
            references.append((f"gunicorn-best ({name})", best))
        for other in ("granian", "granian-default", "ferrocorn-socket", "ferrocorn-normal-sched", "ferrocorn-mt1", "ferrocorn-mt2"):
            if other in ok:
                references.append((other, ok[other]))
        for label, ref in references:
            out.append(Ratio(app=app, reference=label,
                             requests_per_s=ferro.requests_per_s / ref.requests_per_s if ref.requests_per_s else 0.0,
                             p99=ferro.p99_ms / ref.p99_ms if ref.p99_ms else 0.0))
    return out


CSV_FIELDS = ("app", "server", "round", "status", "requests_per_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors",
              "errors", "idle_rss_kib", "peak_rss_kib", "peak_pss_kib", "processes", "memory_samples",
              "server_cpu_cores", "top_process_cpu_cores", "wrk_cpu_cores", "other_cpu_cores",
              "stolen_cpu_cores",
              "server_cpu_us_per_request", "top_process_cpu_us_per_request",
              "top_process_switches_per_request", "rest_switches_per_request",
              "top_process_syscalls_per_request", "rest_syscalls_per_request",
              "workers", "duration_s", "connections", "wrk_threads", "server_command", "wrk_command", "detail")


def csv_row(config: Config, r: RunResult) -> dict[str, object]:
    w, m, c = r.wrk, r.memory, r.cpu
    per_request = c.per_request_us(w.requests_per_s) if c and w else None
    switches = c.switches_per_request(w.requests_per_s) if c and w else None
    return {
        "app": r.app, "server": r.server, "round": r.round, "status": r.status,
        "requests_per_s": f"{w.requests_per_s:.2f}" if w else "", "p50_ms": f"{w.p50_ms:.3f}" if w else "",
        "p99_ms": f"{w.p99_ms:.3f}" if w else "", "non_2xx": w.non_2xx if w else "",
        "socket_errors": w.socket_errors if w else "", "errors": w.errors if w else "",
        "idle_rss_kib": m.idle_rss_kib if m else "", "peak_rss_kib": m.peak_rss_kib if m else "",
        "peak_pss_kib": m.peak_pss_kib if m and m.peak_pss_kib is not None else "",
        "processes": m.processes if m else "", "memory_samples": m.samples if m else "",
        "server_cpu_cores": f"{c.server_cores:.2f}" if c else "",
        "top_process_cpu_cores": f"{c.top_cores:.2f}" if c else "", "wrk_cpu_cores": f"{c.wrk_cores:.2f}" if c else "",
        "server_cpu_us_per_request": f"{per_request[0]:.1f}" if per_request else "",
        "top_process_cpu_us_per_request": f"{per_request[1]:.1f}" if per_request else "",
        "top_process_switches_per_request": f"{switches[0]:.2f}" if switches else "",
        "rest_switches_per_request": f"{switches[1]:.2f}" if switches else "",
        "top_process_syscalls_per_request": f"{r.syscalls.first:.2f}" if r.syscalls else "",
        "rest_syscalls_per_request": f"{r.syscalls.rest:.2f}" if r.syscalls else "",
        "other_cpu_cores": f"{c.other_cores:.2f}" if c else "",
        "stolen_cpu_cores": f"{c.steal_cores:.2f}" if c else "",
        "workers": config.workers, "duration_s": config.duration, "connections": config.connections,
        "wrk_threads": config.wrk_threads, "server_command": r.command, "wrk_command": r.wrk_command,
        "detail": r.detail,
    }


def write_csv(config: Config, results: Sequence[RunResult], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_row(config, r) for r in results)


def machine_info(config: Config) -> dict[str, str]:
    facts = machine_facts(config.venv, config.ferrocorn)
    facts["granian"] = command_output([str(config.venv_bin("granian")), "--version"])
    facts["wrk"] = command_output([config.wrk, "-v"])
    return facts


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as the reports print them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(venv: Path, ferrocorn: Path) -> dict[str, str]:
    """The machine, its load right now, and the versions of ferrocorn, gunicorn, Flask and Python."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    py = str(venv / "bin" / "python")
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model.group(1).strip() if model else "unknown",
        "load average (1, 5, 15 min) at start": load_average(),
        "kernel": f"{os.uname().sysname} {os.uname().release} {os.uname().machine}",
        "python (servers)": command_output([py, "-c", "import sys; print(sys.version.split()[0])"]),
        "ferrocorn": command_output([str(ferrocorn), "--version"]),
        "gunicorn": command_output([str(venv / "bin" / "gunicorn"), "--version"]),
        "flask": command_output([py, "-c", "import importlib.metadata as m; print(m.version('flask'))"]),
    }


def load_command(config: Config) -> list[str]:
    url = f"http://127.0.0.1:PORT{URL_PATH}"
    return wrk_command(config.wrk, config.wrk_threads, config.connections, config.duration, url)


def mib(kib: Optional[int]) -> str:
    return "" if kib is None else f"{kib / 1024:.0f}"


def results_table(rows: Sequence[Summary]) -> list[str]:
    lines = ["| server | status | req/s | req/s over the rounds | p50 ms | p99 ms | errors (non-2xx + socket) | "
             "peak RSS MiB | peak PSS MiB | idle RSS MiB | processes | server CPU | CPU µs/request | "
             "of it, first process | switches/request (first process + rest) | "
             "syscalls/request (first process + rest) | wrk CPU | other CPU | stolen CPU |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for summary in rows:
        r = summary.median
        w, m, c = r.wrk, r.memory, r.cpu
        rates = summary.ok_rates
        spread = f"{rates[0]:,.0f}–{rates[-1]:,.0f} ({len(rates)}/{len(summary.runs)} ok)" if rates else \
            f"0/{len(summary.runs)} ok"
        cells = [r.server, r.status]
        cells += [f"{w.requests_per_s:,.0f}", spread, f"{w.p50_ms:.2f}", f"{w.p99_ms:.2f}",
                  f"{w.errors} ({w.non_2xx} + {w.socket_errors})"] if w else ["", spread, "", "", ""]
        cells += [mib(m.peak_rss_kib), mib(m.peak_pss_kib), mib(m.idle_rss_kib), str(m.processes)] if m else [""] * 4
        if c and w:
            total_us, top_us = c.per_request_us(w.requests_per_s)
            top_sw, rest_sw = c.switches_per_request(w.requests_per_s)
            calls = r.syscalls
            cells += [f"{c.server_cores:.2f}", f"{total_us:.0f}", f"{top_us:.0f}",
                      f"{top_sw:.2f} + {rest_sw:.2f}", f"{calls.first:.2f} + {calls.rest:.2f}" if calls else "",
                      f"{c.wrk_cores:.2f}", f"{c.other_cores:.2f}", f"{c.steal_cores:.2f}"]
        else:
            cells += [""] * 8
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_markdown(config: Config, argv: Sequence[str], machine: dict[str, str],
                     results: Sequence[RunResult]) -> str:
    lines = ["# ferrocorn benchmark", "", f"Command: `{shlex.join(argv)}`", "",
             f"Load: `{shlex.join(load_command(config))}` "
             f"after a {config.warmup}s warm-up; {config.workers} workers per server, "
             f"gthread {config.gthread_threads} threads, ferrocorn {config.ferrocorn_threads} thread(s), "
             "Granian --blocking-threads 1 (`granian`) and with its default (`granian-default`). "
             + ("Each server in a session of its own (a scheduling group apart from wrk's). "
                if config.server_session == "own" else
                "Each server in wrk's session (one scheduling group with wrk). ")
             + "Memory: sum over the server's process tree (master + workers), "
             f"sampled every {SAMPLE_INTERVAL_S}s from /proc during the measured run. CPU columns: "
             "average cores busy during the measured run (server tree, wrk, everything else on the machine); "
             "a high *other CPU* means the figures were disturbed; *stolen CPU* is the steal time of "
             "/proc/stat, cores' worth of time the hypervisor gave to other guests while this one had work to "
             "run (a run with a high figure was slowed from outside the machine). *CPU µs/request*: the server tree's CPU "
             "time divided by the requests served; *of it, first process*: the part spent in the process "
             "the benchmark started (ferrocorn's master, gunicorn's arbiter, Granian's main process). "
             "*switches/request*: voluntary + involuntary context switches of every thread, per request "
             "served, in that first process and in the rest of the tree. "
             + (f"*syscalls/request*: system calls per request in the same two parts, counted by `perf stat` "
                f"(raw_syscalls:sys_enter) in a {config.syscall_probe}s wrk run of their own after the measured one "
                "(the counting slows every system call, so it stays out of the other figures); empty without perf. "
                if config.syscall_probe else "")
             +
             f"Each server x app ran {config.rounds} time(s), interleaved; every row is its median run "
             "by req/s, ratios included.", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    summaries = summarize(results)
    for app in config.apps:
        rows = [s for s in summaries if s.median.app == app]
        if rows:
            lines += ["", f"## {app} (`{APPS[app]}`, GET {URL_PATH})", ""] + results_table(rows)
    rs = ratios([s.median for s in summaries])
    lines += ["", "## Ratios (ferrocorn / reference)", ""]
    if rs:
        lines += ["req/s above 1 and p99 below 1 favour ferrocorn.", "",
                  "| app | reference | req/s ratio | p99 ratio |", "|---|---|--:|--:|"]
        lines += [f"| {x.app} | {x.reference} | {x.requests_per_s:.2f} | {x.p99:.2f} |" for x in rs]
    else:
        lines.append("None: ferrocorn has no successful row.")
    lines += ["", "## Server commands (first round)", ""]
    lines += [f"- {r.app} {r.server}: `{r.command}`" for r in results if r.round == 1]
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"### {r.app} {r.server} (round {r.round}): {r.status}", "", "```", r.detail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def progress_line(r: RunResult) -> str:
    if r.wrk is None:
        first = r.detail.splitlines()[0] if r.detail else ""
        return f"{r.app:6} {r.server:17} {r.status}: {first}"
    w, m, c = r.wrk, r.memory, r.cpu
    memory = f" peak RSS {mib(m.peak_rss_kib)} MiB" if m else ""
    cpu = f"  CPU {c.per_request_us(w.requests_per_s)[0]:.0f} µs/req" if c else ""
    calls = f"  syscalls {r.syscalls.first:.2f} + {r.syscalls.rest:.2f}/req" if r.syscalls else ""
    status = "" if r.status == "ok" else f" [{r.status}]"
    return (f"{r.app:6} {r.server:17} {w.requests_per_s:9,.0f} req/s  p50 {w.p50_ms:6.2f} ms  "
            f"p99 {w.p99_ms:6.2f} ms  errors {w.errors}{cpu}{memory}{calls}{status}")


def source_revision(repo: Path, binary: Path) -> str:
    """The commit the ferrocorn binary should come from, whether src/ or python/ differ from it, and
    the binary's build time: so a published run names what it measured."""
    rev = command_output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    changed = command_output(["git", "-C", str(repo), "status", "--porcelain", "--", "src", "python",
                              "Cargo.toml", "Cargo.lock"], first_line=False)
    dirty = "" if changed.startswith("unavailable") else " with uncommitted changes in src/ or python/"
    try:
        built = datetime.fromtimestamp(binary.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        built = "no binary"
    return f"{rev}{dirty}; {binary.name} built {built}"
