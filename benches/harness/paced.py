"""A paced HTTP load: GET one path at a fixed rate, from a few keep-alive connections, for a while.

wrk keeps its connections busy (closed loop), so a faster server gets more requests. When the
question is memory over time rather than speed, every server must get the same requests at the
same times: here request i is due at start + i / rate, whichever thread is free takes it, and a
request whose turn comes after the end is not sent (counted as *not sent*, so a server that
falls behind shows it). Each thread keeps one http.client connection alive and reconnects after
a close (gunicorn's sync worker closes after every response); nothing is retried, so a failed
request counts once. Bounded: threads stop taking requests at the end, and a request in flight
then has at most timeout_s to finish.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence


@dataclass
class LoadResult:
    """What the load saw so far; failed = non-2xx answers + transport errors (by exception name)."""

    scheduled: int
    sent: int = 0
    ok: int = 0
    non_2xx: int = 0
    transport_errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    max_lag_ms: float = 0.0

    @property
    def done(self) -> int:
        """Requests that got an answer, whatever its status."""
        return self.ok + self.non_2xx

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.transport_errors.values())

    @property
    def not_sent(self) -> int:
        return self.scheduled - self.sent


def percentile(sorted_values: Sequence[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100), at least the first
    return sorted_values[min(int(rank), len(sorted_values)) - 1]


class PacedLoad:
    """GET http://127.0.0.1:port{path} rate times a second for duration_s, on `connections` threads."""

    def __init__(self, port: int, path: str, rate: float, duration_s: float, connections: int,
                 timeout_s: float) -> None:
        self._port, self._path, self._rate, self._timeout_s = port, path, rate, timeout_s
        self._duration_s = duration_s
        self._result = LoadResult(scheduled=int(duration_s * rate))
        self._lock = threading.Lock()
        self._next = 0
        self._t0 = 0.0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(connections)]

    def start(self) -> None:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for every thread, at most timeout_s in all; True when all finished."""
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in self._threads)

    def snapshot(self) -> LoadResult:
        """A copy of the figures so far (safe while the load runs)."""
        with self._lock:
            r = self._result
            return LoadResult(scheduled=r.scheduled, sent=r.sent, ok=r.ok, non_2xx=r.non_2xx,
                              transport_errors=Counter(r.transport_errors), latencies_ms=list(r.latencies_ms),
                              max_lag_ms=r.max_lag_ms)

    def _run(self) -> None:
        end = self._t0 + self._duration_s
        conn: Optional[http.client.HTTPConnection] = None
        while True:
            with self._lock:
                i, self._next = self._next, self._next + 1
            due = self._t0 + i / self._rate
            if i >= self._result.scheduled or time.monotonic() >= end:
                break
            time.sleep(max(due - time.monotonic(), 0))
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout_s)
            sent = time.monotonic()
            status, error = 0, ""
            try:
                conn.request("GET", self._path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as e:
                error = type(e).__name__
                conn.close()
                conn = None
            self._record(sent, due, status, error)
        if conn is not None:
            conn.close()

    def _record(self, sent: float, due: float, status: int, error: str) -> None:
        latency_ms = (time.monotonic() - sent) * 1000
        with self._lock:
            r = self._result
            r.sent += 1
            r.max_lag_ms = max(r.max_lag_ms, (sent - due) * 1000)
            if error:
                r.transport_errors[error] += 1
                return
            r.latencies_ms.append(latency_ms)
            if 200 <= status < 300:
                r.ok += 1
            else:
                r.non_2xx += 1
