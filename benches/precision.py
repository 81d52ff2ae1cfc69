#!/usr/bin/env python3
"""max-requests precision: how many requests each retired worker served, ferrocorn next to gunicorn.

Every row serves examples/flask_app.py with `-w 2 --max-requests 20 --max-requests-jitter 10`
(by default) and gets the same closed-loop load: C clients, each on its own keep-alive
connection, send GET /pid back to back until N requests are done. /pid answers with the pid
of the worker that served it, so the requests each worker served are counted from the
answers, the same way for every server. Workers still alive at the end (they have not
reached their limit yet) are left out: the table is about retired workers. A retired worker
should have served within [max_requests, max_requests + jitter]; the table says how many did
not, and how many requests failed.

Rows: ferrocorn, ferrocorn --preload, gunicorn (sync), gunicorn --preload; each with 1 and
with 8 clients. A benchmark, not a test: it asserts nothing. Bounded in time, traffic only to
127.0.0.1, only process groups started here are signalled. Setup: benches/run.sh --precision.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

from harness.process import free_port, gunicorn_flags, log_excerpt, start_server, stop_on_term, stop_server, wait_ready
from harness.report import machine_facts

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    name: str
    clients: int
    served: list[int]  # requests per retired worker
    failed: int
    done: int
    seconds: float
    error: Optional[str] = None

    def outside(self, low: int, high: int) -> int:
        return sum(1 for n in self.served if not low <= n <= high)


def argv_for(server: str, port: int, args: argparse.Namespace) -> list[str]:
    limits = ["--max-requests", str(args.max_requests), "--max-requests-jitter", str(args.jitter)]
    preload = ["--preload"] if server.endswith("--preload") else []
    venv = Path(args.venv)
    if server.startswith("ferrocorn"):
        return [str(args.ferrocorn), "-w", "2", "-b", f"127.0.0.1:{port}", "--python",
                str(venv / "bin" / "python"), "--chdir", "examples", *limits, *preload, "flask_app:app"]
    return [str(venv / "bin" / "gunicorn"), "-w", "2", "-k", "sync", *gunicorn_flags(venv), "--chdir", "examples", "-b",
            f"127.0.0.1:{port}", *limits, *preload, "flask_app:app"]


def load(port: int, total: int, clients: int, deadline_s: float) -> tuple[Counter, int, int]:
    """total GET /pid from clients keep-alive connections; (answers per pid, failed, done)."""
    per_pid: Counter = Counter()
    failed = 0
    done = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client() -> None:
        nonlocal failed, done
        conn: Optional[http.client.HTTPConnection] = None
        while time.monotonic() < stop_at:
            with lock:
                if done + failed >= total:
                    return
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/pid")
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                ok, body = False, b""
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                if ok:
                    per_pid[int(body)] += 1
                    done += 1
                else:
                    failed += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_pid, failed, done


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return ") Z " not in f.read()
    except OSError:
        return False


def run_row(server: str, clients: int, args: argparse.Namespace, out: Path) -> Row:
    port = free_port()
    log = out / f"{server.replace(' ', '')}-c{clients}.log"
    try:
        proc = start_server(argv_for(server, port, args), ROOT, log)
    except OSError as e:
        return Row(server, clients, [], 0, 0, 0.0, error=f"cannot start: {e}")
    try:
        problem = wait_ready(proc, port, "/hello", args.ready_timeout)
        if problem:
            return Row(server, clients, [], 0, 0, 0.0, error=f"{problem}\n{log_excerpt(log)}")
        start = time.monotonic()
        per_pid, failed, done = load(port, args.requests, clients, args.deadline)
        seconds = time.monotonic() - start
        # The readiness probes were served too but are not counted: one of the first
        # workers may show one or two fewer requests than it served.
        retired = [n for pid, n in per_pid.items() if not alive(pid)]
        return Row(server, clients, sorted(retired), failed, done, seconds)
    finally:
        stop_server(proc)


def table(rows: Sequence[Row], low: int, high: int) -> list[str]:
    lines = [
        "| server | clients | retired workers | served min / median / max | outside [%d, %d] | failed | req/s |"
        % (low, high),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.clients} | failed: {r.error.splitlines()[0]} | | | | |")
            continue
        spread = (f"{r.served[0]} / {statistics.median(r.served):g} / {r.served[-1]}"
                  if r.served else "-")
        rate = r.done / r.seconds if r.seconds else 0
        lines.append(f"| {r.name} | {r.clients} | {len(r.served)} | {spread} | {r.outside(low, high)} "
                     f"| {r.failed} | {rate:,.0f} |")
    return lines


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per row [2000]")
    p.add_argument("--max-requests", type=int, default=20)
    p.add_argument("--jitter", type=int, default=10)
    p.add_argument("--clients", default="1,8", help="client counts [1,8]")
    p.add_argument("--servers", default="ferrocorn,ferrocorn --preload,gunicorn,gunicorn --preload")
    p.add_argument("--ferrocorn", type=Path, default=ROOT / "target" / "release" / "ferrocorn")
    p.add_argument("--venv", default=str(ROOT / ".venv-bench"))
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--deadline", type=float, default=120.0, help="seconds a row's load may take [120]")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    stop_on_term()
    out = args.out or ROOT / "bench-results" / datetime.now().strftime("precision-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for clients in [int(c) for c in args.clients.split(",")]:
        for server in [s.strip() for s in args.servers.split(",")]:
            row = run_row(server, clients, args, out)
            print(f"  {server}, {clients} clients: {len(row.served)} retired, "
                  f"served {row.served[:1]}..{row.served[-1:]}, {row.failed} failed", file=sys.stderr)
            rows.append(row)
    low, high = args.max_requests, args.max_requests + args.jitter
    facts = machine_facts(Path(args.venv), args.ferrocorn)
    text = "\n".join(
        [f"# max-requests precision ({datetime.now():%Y-%m-%d %H:%M})", "",
         f"`-w 2 --max-requests {args.max_requests} --max-requests-jitter {args.jitter}`, "
         f"{args.requests} GET /pid per row, closed loop; requests per retired worker.", "",
         *table(rows, low, high), "",
         "Machine: " + ", ".join(f"{k}: {v}" for k, v in facts.items()), "",
         f"Command: `{' '.join([os.path.basename(sys.executable), 'benches/precision.py', *argv])}`", ""])
    (out / "precision.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
