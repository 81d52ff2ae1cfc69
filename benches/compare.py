#!/usr/bin/env python3
"""Throughput, latency and memory of ferrocorn next to gunicorn and Granian.

Runs each server x app on 127.0.0.1 with the same worker count and the same load generator
(wrk), one at a time and --rounds times over (interleaved; the summary shows each one's median
run and the spread, since this machine varies by +-15% from minute to minute): start the server in its own session, poll GET until 200, warm up, measure
while sampling the memory of its process tree, stop it (TERM, then KILL its process group).
Writes raw results (CSV, wrk output, server logs) and a Markdown summary into a results folder.
A benchmark, not a test: it prints figures and asserts nothing about speed. A server that fails
to start is reported as such and the run goes on.

Every step is bounded in time, traffic goes only to 127.0.0.1, and only processes started here
are signalled. Setup on a fresh machine and a full run: benches/run.sh. Stdlib only; the parts
live in benches/harness/ (module map in its __init__.py).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.measure import MemorySampler, cpu_snapshot, cpu_usage, process_stats, process_tree, sample_memory
from harness.options import APPS, URL_PATH, Config, check_setup, parse_args
from harness.process import (free_port, gunicorn_flags, log_excerpt, start_server, stop_on_term, stop_server,
                             wait_ready)
from harness.report import RunResult, machine_info, progress_line, summary_markdown, write_csv
from harness.syscalls import SyscallCounter, SyscallRate, parse_request_count, perf_available, rate
from harness.wrk import parse_wrk, run_wrk, wrk_command


@dataclass(frozen=True)
class ServerCommand:
    """How one server is started for one app."""

    server: str
    app: str
    port: int
    argv: tuple[str, ...]
    cwd: Path

    def shell(self) -> str:
        return shlex.join(self.argv)


def server_command(config: Config, server: str, app: str, port: int, gunicorn_flags: Sequence[str]) -> ServerCommand:
    """The command lines compared: same workers, same app, same bind address."""
    target, bind, workers = APPS[app], f"127.0.0.1:{port}", str(config.workers)
    gunicorn, chdir = str(config.venv_bin("gunicorn")), str(config.apps_dir)
    if server.startswith("ferrocorn"):
        # `ferrocorn-socket`: the lanes' bytes on their sockets, not through the rings (issue 14);
        # `ferrocorn-mtN`: a master of N threads, whatever the default on this machine;
        # `ferrocorn-normal-sched`: workers under SCHED_OTHER instead of the default SCHED_BATCH.
        transport = {
            "ferrocorn-socket": ["env", "FERROCORN_LANE_TRANSPORT=socket"],
            "ferrocorn-normal-sched": ["env", "FERROCORN_WORKER_SCHED=normal"],
        }.get(server, [])
        master = ["--master-threads", server.removeprefix("ferrocorn-mt")] if server.startswith("ferrocorn-mt") else []
        argv = [*transport, str(config.ferrocorn), "-w", workers, "--threads", str(config.ferrocorn_threads),
                *master, "-b", bind, "--python", str(config.venv_bin("python")), "--chdir", chdir, target]
    elif server == "gunicorn-sync":
        argv = [gunicorn, "-w", workers, "-k", "sync", *gunicorn_flags, "--chdir", chdir, "-b", bind, target]
    elif server == "gunicorn-gthread":
        argv = [gunicorn, "-w", workers, "-k", "gthread", "--threads", str(config.gthread_threads),
                *gunicorn_flags, "--chdir", chdir, "-b", bind, target]
    elif server in ("granian", "granian-default"):
        # `granian`: one blocking thread per worker, as ferrocorn's one lane; `granian-default`: its own default.
        threads = ["--blocking-threads", "1"] if server == "granian" else []
        argv = [str(config.venv_bin("granian")), "--interface", "wsgi", "--workers", workers, *threads,
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", chdir, target]
    else:
        raise ValueError(f"unknown server {server!r}")
    return ServerCommand(server=server, app=app, port=port, argv=tuple(argv), cwd=config.apps_dir)


def load(config: Config, port: int, seconds: int) -> list[str]:
    url = f"http://127.0.0.1:{port}{URL_PATH}"
    return wrk_command(config.wrk, config.wrk_threads, config.connections, seconds, url)


def run_one(config: Config, command: ServerCommand, round_no: int) -> RunResult:
    """Start, wait for 200, warm up, measure, stop. Never raises for a misbehaving server."""
    stem = f"{command.app}-{command.server}-r{round_no}"
    log_path = config.out / "logs" / f"{stem}.log"
    result = RunResult(server=command.server, app=command.app, status="ok", command=command.shell(),
                       round=round_no)
    try:
        proc = start_server(command.argv, command.cwd, log_path, own_session=config.server_session == "own")
    except OSError as e:
        result.status, result.detail = "failed to start", f"{type(e).__name__}: {e}"
        return result
    try:
        not_ready = wait_ready(proc, command.port, URL_PATH, config.ready_timeout)
        if not_ready is not None:
            result.status, result.detail = "failed to start", f"{not_ready}\n{log_excerpt(log_path)}"
            return result
        idle = sample_memory(proc.pid)
        if config.warmup:
            warmup = load(config, command.port, config.warmup)
            run_wrk(warmup, config.warmup, config.out / "wrk" / f"{stem}.warmup.txt")
        measured = load(config, command.port, config.duration)
        result.wrk_command = shlex.join(measured)
        before = cpu_snapshot(proc.pid)
        with MemorySampler(proc.pid) as sampler:
            output = run_wrk(measured, config.duration, config.out / "wrk" / f"{stem}.txt")
        result.cpu = cpu_usage(before, cpu_snapshot(proc.pid))
        result.memory = sampler.usage(idle)
        result.wrk = parse_wrk(output)
        if proc.poll() is not None:
            result.status = "crashed"
            result.detail = f"server exited with code {proc.returncode} during the run\n{log_excerpt(log_path)}"
        elif config.syscall_probe:
            result.syscalls = probe_syscalls(config, command.port, proc.pid, stem)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        result.status, result.detail = "load failed", f"{e}\n{log_excerpt(log_path)}"
    finally:
        stop_server(proc)
    return result


def probe_syscalls(config: Config, port: int, root: int, stem: str) -> SyscallRate | None:
    """System calls per request in a short load run of its own (harness/syscalls.py); None without perf."""
    perf = perf_available()
    if perf is None:
        return None
    tree = process_tree(root, process_stats())
    counter = SyscallCounter(perf, [[root], [pid for pid in tree if pid != root]])
    counter.start()
    try:
        probe = load(config, port, config.syscall_probe)
        output = run_wrk(probe, config.syscall_probe, config.out / "wrk" / f"{stem}.syscalls.txt")
    finally:
        counts = counter.stop()
    return rate(counts, parse_request_count(output))


def main(argv: Sequence[str]) -> int:
    config = parse_args(argv[1:])
    problems = check_setup(config)
    if problems:
        for problem in problems:
            print(f"compare.py: {problem}", file=sys.stderr)
        return 2
    stop_on_term()  # so the `finally` in run_one stops the running server
    for sub in ("logs", "wrk"):
        (config.out / sub).mkdir(parents=True, exist_ok=True)
    machine = machine_info(config)
    flags = gunicorn_flags(config.venv)
    command_line = [sys.executable, *argv]
    results: list[RunResult] = []
    total = config.rounds * len(config.apps) * len(config.servers)
    print(f"results -> {config.out}", flush=True)
    try:
        # Rounds outermost: a slow minute on a shared machine then lowers one run of
        # every server instead of every run of one server.
        for round_no in range(1, config.rounds + 1):
            for app in config.apps:
                for server in config.servers:
                    command = server_command(config, server, app, free_port(), flags)
                    print(f"[{len(results) + 1}/{total}] round {round_no} {app} {server}: {command.shell()}",
                          flush=True)
                    results.append(run_one(config, command, round_no))
                    print("    " + progress_line(results[-1]), flush=True)
    finally:
        write_csv(config, results, config.out / "results.csv")
        summary = summary_markdown(config, command_line, machine, results)
        (config.out / "summary.md").write_text(summary)
    print()
    print(summary)
    print(f"raw results: {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
