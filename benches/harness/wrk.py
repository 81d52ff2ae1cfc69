"""wrk: the command line, running it with a time bound, and parsing `--latency` output."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

TIMEOUT_SLACK_S = 30.0


@dataclass(frozen=True)
class WrkResult:
    """The figures parsed from one wrk run."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def wrk_command(wrk: str, threads: int, connections: int, seconds: int, url: str) -> list[str]:
    return [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]


def run_wrk(argv: Sequence[str], seconds: int, raw_path: Path) -> str:
    """Run wrk, keep its raw output next to its command line, return stdout."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + TIMEOUT_SLACK_S,
                          stdin=subprocess.DEVNULL)
    raw_path.write_text(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output. wrk's "Non-2xx or 3xx responses" is counted as non-2xx."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if rps is None:
        raise ValueError("no 'Requests/sec' line in wrk output")
    percentiles = {
        pct: float(value) * _UNIT_MS[unit]
        for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    }
    if "50" not in percentiles or "99" not in percentiles:
        raise ValueError("no latency distribution in wrk output (was --latency passed?)")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )
