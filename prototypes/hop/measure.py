#!/usr/bin/env python3
"""One measured run of one server (throwaway, for docs/design/hop.md). Stdlib only.

    measure.py LABEL PORT PATH -- COMMAND...

Starts COMMAND in its own session (cwd: the repository root), waits until
GET http://127.0.0.1:PORT/PATH answers, warms up (wrk 2 s), then measures
`wrk -t1 -c50 -d10s --latency` while reading /proc for the process tree:
CPU (utime+stime) and context switches (voluntary + involuntary) of the
first process (the master) and of the rest (workers). Stops the server
(TERM, then KILL, to its own process group only) and appends one CSV row to
prototypes/hop/results.csv. Load goes only to 127.0.0.1, bounded in time.
"""

from __future__ import annotations

import csv
import resource
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
DURATION = os.environ.get("HOP_DURATION", "10s")
CONNS = os.environ.get("HOP_CONNS", "50")


def children_of() -> dict:
    kids: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root: int) -> list:
    kids = children_of()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def sample(pid: int) -> tuple:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = int(f[11]) + int(f[12])
        vol = inv = 0
        # /proc/PID/status counts the leader thread only: sum over all threads
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                st = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            vol += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", st, re.M).group(1))
            inv += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", st, re.M).group(1))
        return cpu, vol, inv
    except (OSError, AttributeError):
        return 0, 0, 0


def snapshot(root: int) -> dict:
    return {p: sample(p) for p in tree(root)}


def delta(a: dict, b: dict, pids) -> tuple:
    s = [0, 0, 0]
    for p in pids:
        x, y = a.get(p, (0, 0, 0)), b.get(p)
        if y is None:
            continue
        for i in range(3):
            s[i] += y[i] - x[i]
    return tuple(s)


def parse_wrk(text: str) -> dict:
    def lat(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", text, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    req = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"requests": req, "rps": rps, "p50_ms": lat("50"), "p99_ms": lat("99"), "non2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    label, port, path = sys.argv[1], sys.argv[2], sys.argv[3]
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    url = f"http://127.0.0.1:{port}/{path.lstrip('/')}"
    log = open(HERE / "logs" / f"{label}.log", "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                print(f"{label}: server did not come up", file=sys.stderr)
                return 1
            time.sleep(0.2)
        subprocess.run(["wrk", "-t1", f"-c{CONNS}", "-d2s", url], capture_output=True, timeout=30)
        load_before = Path("/proc/loadavg").read_text().split()[0]
        a = snapshot(proc.pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{DURATION}", "--latency", url], capture_output=True, text=True, timeout=60).stdout
        b = snapshot(proc.pid)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        load_after = Path("/proc/loadavg").read_text().split()[0]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    (HERE / "logs" / f"{label}.wrk").write_text(out)
    w = parse_wrk(out)
    n = w["requests"]
    workers = [p for p in b if p != proc.pid]
    mc, mv, mi = delta(a, b, [proc.pid])
    wc, wv, wi = delta(a, b, workers)
    row = {
        "label": label,
        "rps": round(w["rps"]),
        "p50_ms": w["p50_ms"],
        "p99_ms": w["p99_ms"],
        "cpu_us_master": round(mc * TICK_US / n, 1),
        "cpu_us_workers": round(wc * TICK_US / n, 1),
        "cpu_us_wrk": round(wrk_cpu * 1e6 / n, 1),
        "cs_master": round((mv + mi) / n, 2),
        "cs_workers": round((wv + wi) / n, 2),
        "cs_vol_inv_total": f"{(mv + wv) / n:.2f}+{(mi + wi) / n:.2f}",
        "non2xx": w["non2xx"],
        "load_before": load_before,
        "load_after": load_after,
        "time": time.strftime("%H:%M:%S"),
        "command": " ".join(cmd),
    }
    new = not (HERE / "results.csv").exists()
    with open(HERE / "results.csv", "a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(row))
        if new:
            wr.writeheader()
        wr.writerow(row)
    print(" ".join(f"{k}={v}" for k, v in row.items() if k != "command"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
