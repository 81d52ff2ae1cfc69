"""Memory and CPU of a server's process tree (master + workers), read from /proc.

The tree is the server's pid and all its descendants, found through the parent pid in
/proc/*/stat, so workers count whatever their process group. Linux only.
"""

from __future__ import annotations

import os
import re
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SAMPLE_INTERVAL_S = 0.25


@dataclass(frozen=True)
class MemorySample:
    """Sum over the server's process tree at one instant."""

    rss_kib: int
    pss_kib: Optional[int]
    processes: int


@dataclass(frozen=True)
class MemoryUsage:
    """Idle footprint after readiness and the peak during the measured run."""

    idle_rss_kib: int
    peak_rss_kib: int
    peak_pss_kib: Optional[int]
    processes: int
    samples: int


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds consumed so far, machine-wide and by the parties of one run."""

    wall_s: float
    machine_busy_s: float
    server_s: float
    top_s: float
    children_s: float
    self_s: float
    # Context switches (voluntary + involuntary) of every thread of the tree, and of the first process's threads.
    server_switches: int = 0
    top_switches: int = 0
    # The machine's steal time: its vCPUs wanted to run and the hypervisor ran another guest.
    steal_s: float = 0.0


@dataclass(frozen=True)
class CpuUsage:
    """Average cores busy during the measured run; "other" is everything but server, wrk and this script."""

    server_cores: float
    wrk_cores: float
    other_cores: float
    # The server's first process alone: ferrocorn's master, gunicorn's arbiter, Granian's main process.
    top_cores: float = 0.0
    # Context switches per second of the whole tree and of the first process (all their threads).
    server_switches_per_s: float = 0.0
    top_switches_per_s: float = 0.0
    # Cores' worth of time the hypervisor took away (steal), kept out of other_cores: a run
    # with a high figure was slowed from outside this machine.
    steal_cores: float = 0.0

    def per_request_us(self, requests_per_s: float) -> tuple[float, float]:
        """CPU microseconds per request: (whole server tree, its first process)."""
        if requests_per_s <= 0:
            return 0.0, 0.0
        return self.server_cores / requests_per_s * 1e6, self.top_cores / requests_per_s * 1e6

    def switches_per_request(self, requests_per_s: float) -> tuple[float, float]:
        """Context switches per request: (the first process, the rest of the tree)."""
        if requests_per_s <= 0:
            return 0.0, 0.0
        top = self.top_switches_per_s / requests_per_s
        return top, self.server_switches_per_s / requests_per_s - top


def process_stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/pid/stat after the command name (index 0 is field 3, state)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    return stats


def process_tree(root: int, stats: dict[int, list[str]]) -> list[int]:
    """root and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def process_memory(pid: int) -> tuple[int, Optional[int]]:
    """(RSS, PSS) in KiB; PSS is None without smaps_rollup. (0, None) for a process that is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        text = ""
    fields = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.MULTILINE))
    if "Rss" in fields:
        return int(fields["Rss"]), int(fields["Pss"]) if "Pss" in fields else None
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0, None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024, None


def sample_memory(root: int) -> MemorySample:
    """RSS (and PSS when every process has it) summed over the tree; processes gone meanwhile count 0."""
    rss, pss, pss_known, count = 0, 0, True, 0
    for pid in process_tree(root, process_stats()):
        r, p = process_memory(pid)
        if r == 0:
            continue
        count += 1
        rss += r
        pss_known = pss_known and p is not None
        pss += p or 0
    return MemorySample(rss_kib=rss, pss_kib=pss if pss_known else None, processes=count)


class MemorySampler:
    """Samples a process tree on a background thread until stopped."""

    def __init__(self, root: int) -> None:
        self._root = root
        self._samples: list[MemorySample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._samples.append(sample_memory(self._root))
            self._stop.wait(SAMPLE_INTERVAL_S)

    def usage(self, idle: MemorySample) -> MemoryUsage:
        samples = self._samples or [idle]
        pss = [s.pss_kib for s in samples]
        return MemoryUsage(
            idle_rss_kib=idle.rss_kib,
            peak_rss_kib=max(s.rss_kib for s in samples),
            peak_pss_kib=None if None in pss else max(p for p in pss if p is not None),
            processes=max(s.processes for s in samples),
            samples=len(samples),
        )


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of `pid` (/proc/PID/status alone
    counts only the main thread, which would hide Granian's and ferrocorn's other threads)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def cpu_snapshot(root: int) -> CpuSnapshot:
    """Read before and after the measured run; this machine is shared, so say how busy it was."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    stats = process_stats()
    tree = [pid for pid in process_tree(root, stats) if pid in stats]
    server = sum(int(stats[pid][11]) + int(stats[pid][12]) for pid in tree)  # utime + stime, all threads
    top = int(stats[root][11]) + int(stats[root][12]) if root in stats else 0
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        wall_s=time.monotonic(),
        machine_busy_s=(sum(jiffies) - jiffies[3] - jiffies[4]) / ticks,
        server_s=server / ticks,
        top_s=top / ticks,
        children_s=children.ru_utime + children.ru_stime,
        self_s=own.ru_utime + own.ru_stime,
        server_switches=sum(context_switches(pid) for pid in tree),
        top_switches=context_switches(root),
        steal_s=jiffies[7] / ticks,
    )


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    """wrk is the only child reaped between the two snapshots, so the children delta is wrk's."""
    wall = max(after.wall_s - before.wall_s, 1e-9)
    server = after.server_s - before.server_s
    wrk = after.children_s - before.children_s
    own = after.self_s - before.self_s
    steal = max(after.steal_s - before.steal_s, 0.0)
    other = after.machine_busy_s - before.machine_busy_s - steal - server - wrk - own
    return CpuUsage(server_cores=server / wall, wrk_cores=wrk / wall, other_cores=max(other, 0.0) / wall,
                    steal_cores=steal / wall,
                    top_cores=(after.top_s - before.top_s) / wall,
                    server_switches_per_s=max(after.server_switches - before.server_switches, 0) / wall,
                    top_switches_per_s=max(after.top_switches - before.top_switches, 0) / wall)


# --- one process at a time: smaps_rollup breakdown and precise CPU (boot.py, memory.py) ---


@dataclass(frozen=True)
class ProcessMemory:
    """One process's /proc/PID/smaps_rollup, KiB. USS: pages only this process maps."""

    rss_kib: int
    pss_kib: int
    uss_kib: int
    shared_kib: int
    swap_kib: int


def parse_smaps_rollup(text: str) -> Optional[ProcessMemory]:
    """The figures of a smaps_rollup file; None when it has no Rss line (an unreadable or gone process)."""
    kib = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)}
    if "Rss" not in kib:
        return None
    return ProcessMemory(
        rss_kib=kib["Rss"], pss_kib=kib.get("Pss", 0),
        uss_kib=kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0),
        shared_kib=kib.get("Shared_Clean", 0) + kib.get("Shared_Dirty", 0), swap_kib=kib.get("Swap", 0))


def read_process_memory(pid: int) -> Optional[ProcessMemory]:
    try:
        return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except OSError:
        return None


@dataclass(frozen=True)
class ProcessCpu:
    """CPU a process used so far.

    ticks: utime, stime, cutime, cstime from /proc/PID/stat, in clock ticks (1/SC_CLK_TCK s, 10 ms
    here), whole process, exited threads included; cutime/cstime hold the reaped children.
    runtime_ns: the scheduler's exact run time (/proc/PID/task/*/schedstat), summed over the threads
    alive now (a thread that exited is missing), children never included.
    """

    utime: int
    stime: int
    cutime: int
    cstime: int
    runtime_ns: int
    threads: dict[int, int]

    @property
    def own_ticks(self) -> int:
        return self.utime + self.stime

    @property
    def children_ticks(self) -> int:
        return self.cutime + self.cstime


def parse_stat_cpu(text: str) -> tuple[int, int, int, int]:
    """(utime, stime, cutime, cstime) in ticks from a /proc/PID/stat line (the name may hold spaces)."""
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


def parse_schedstat_ns(text: str) -> int:
    """Run time in ns, the first of /proc/PID/schedstat's three numbers."""
    return int(text.split()[0])


def read_process_cpu(pid: int) -> Optional[ProcessCpu]:
    """None for a process that is gone."""
    try:
        utime, stime, cutime, cstime = parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None
    threads = {}
    try:
        entries = list(os.scandir(f"/proc/{pid}/task"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            threads[int(entry.name)] = parse_schedstat_ns(Path(entry.path, "schedstat").read_text())
        except (OSError, IndexError, ValueError):
            continue
    return ProcessCpu(utime, stime, cutime, cstime, sum(threads.values()), threads)


def runtime_delta_ns(before: ProcessCpu, after: ProcessCpu) -> int:
    """Run time between two readings of one process, thread by thread: a thread that exited in
    between adds nothing (its last part is lost, never counted twice), a new one adds all of it."""
    return sum(ns - before.threads.get(tid, 0) for tid, ns in after.threads.items())


def ticks_ms(ticks: int) -> float:
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def process_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    """False once the process is gone or a zombie (dead, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """Live direct children of pid, oldest first (by pid order is not enough: pids wrap)."""
    stats = process_stats()
    kids = [p for p, f in stats.items() if int(f[1]) == pid and f[0] not in ("Z", "X")]
    return sorted(kids, key=lambda p: int(stats[p][19]))  # field 22, starttime
