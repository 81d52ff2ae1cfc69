"""System calls per request of a server's processes, counted by `perf stat` on the
raw_syscalls:sys_enter tracepoint during a short load run of their own.

Not during the measured run: while the tracepoint is on, every system call on the machine takes
the kernel's slow path, so counting would lower the measured figures of every server (wrk's too).
The count covers the probe's wrk run and the moments around it (counting starts just before wrk and
stops just after it), when an idle server makes few calls: a small overcount, the same for every
server.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Optional, Sequence

PERF_EVENT = "raw_syscalls:sys_enter"
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SyscallRate:
    """System calls per request: in the server's first process, and in the rest of its tree."""

    first: float
    rest: float


def perf_stat_command(perf: str, pids: Sequence[int], ctl_fd: int, ack_fd: int) -> list[str]:
    """Counts the tracepoint over every thread of `pids`, from an `enable` on ctl_fd (acknowledged
    on ack_fd) until SIGINT; CSV on stderr."""
    return [perf, "stat", "-x", ",", "-e", PERF_EVENT, "-D", "-1", "--control", f"fd:{ctl_fd},{ack_fd}",
            "-p", ",".join(str(p) for p in pids)]


def parse_perf_count(stderr: str) -> Optional[int]:
    """The count from `perf stat -x ,` output ("12345,,raw_syscalls:sys_enter,..."). "<not
    counted>" is 0: the counter never ran because no counted thread ran (Granian's main process
    while its workers serve). None when perf could not count ("<not supported>", or no such line:
    no permission, no tracefs)."""
    for line in stderr.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2].startswith(PERF_EVENT):
            if fields[0] == "<not counted>":
                return 0
            return int(fields[0]) if fields[0].isdigit() else None
    return None


def parse_request_count(wrk_output: str) -> Optional[int]:
    """Requests served, from wrk's "N requests in 3.00s" line."""
    found = re.search(r"^\s*(\d+) requests in ", wrk_output, re.MULTILINE)
    return int(found.group(1)) if found else None


class SyscallCounter:
    """One `perf stat` per group of pids. `start` returns once every one of them counts (perf
    acknowledges its `enable`), so no call between `start` and `stop` is missed; `stop` returns the
    counts."""

    def __init__(self, perf: str, groups: Sequence[Sequence[int]]) -> None:
        self.perf = perf
        self.groups = [list(g) for g in groups]
        self.running: list[Optional[tuple[subprocess.Popen, int, int]]] = []

    def start(self) -> None:
        for pids in self.groups:
            if not pids:
                self.running.append(None)
                continue
            ctl_r, ctl_w = os.pipe()
            ack_r, ack_w = os.pipe()
            try:
                proc = subprocess.Popen(perf_stat_command(self.perf, pids, ctl_r, ack_w), pass_fds=(ctl_r, ack_w),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
            finally:
                os.close(ctl_r)
                os.close(ack_w)
            self.running.append((proc, ctl_w, ack_r))
        for entry in self.running:
            if entry is not None:
                _, ctl_w, ack_r = entry
                try:
                    os.write(ctl_w, b"enable\n")
                except OSError:
                    continue  # perf is gone already: stop() finds no count
                # "ack\n", or EOF if perf exits (a pid gone, no permission).
                ready, _, _ = select.select([ack_r], [], [], STOP_TIMEOUT_S)
                if ready:
                    os.read(ack_r, 64)

    def stop(self) -> list[Optional[int]]:
        """One count per group: 0 for an empty group, None where perf could not count."""
        counts: list[Optional[int]] = []
        for entry in self.running:
            if entry is None:
                counts.append(0)
                continue
            proc, ctl_w, ack_r = entry
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            os.close(ctl_w)
            os.close(ack_r)
            counts.append(parse_perf_count(err or ""))
        self.running = []
        return counts


def perf_available() -> Optional[str]:
    """The perf executable, if there is one."""
    return shutil.which("perf")


def rate(counts: Sequence[Optional[int]], requests: Optional[int]) -> Optional[SyscallRate]:
    """Per request, or None if a count or the request count is missing."""
    if requests is None or requests <= 0 or any(c is None for c in counts) or len(counts) != 2:
        return None
    first, rest = counts
    return SyscallRate(first=first / requests, rest=rest / requests)  # type: ignore[operator]
