"""How many workers a server replaced: ferrocorn's /metrics, gunicorn's error log.

ferrocorn counts restarts by reason in `ferrocorn_worker_restarts_total{reason="..."}`. gunicorn
has no such counter, but every worker it forks logs "Booting worker with pid: N", so the restarts
are the distinct worker pids seen minus the workers it started with.
"""

from __future__ import annotations

import http.client
import re
from collections import Counter
from pathlib import Path

RESTARTS_METRIC = "ferrocorn_worker_restarts_total"

_SERIES = re.compile(r"^" + RESTARTS_METRIC + r"\{([^}]*)\}\s+(\S+)", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_GUNICORN_BOOT = re.compile(r"Booting worker with pid: (\d+)")


def parse_restarts(metrics_text: str) -> Counter:
    """reason -> restarts, from Prometheus or OpenMetrics text; reasons at 0 are left out."""
    counts: Counter = Counter()
    for labels, value in _SERIES.findall(metrics_text):
        reason = dict(_LABEL.findall(labels)).get("reason", "")
        n = int(float(value))
        if n:
            counts[reason] += n
    return counts


def scrape_restarts(port: int, timeout_s: float = 2.0) -> Counter:
    """GET /metrics on 127.0.0.1:port and parse it. Raises OSError or ValueError when it can't."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
    except http.client.HTTPException as e:
        raise ValueError(f"/metrics on port {port}: {type(e).__name__}: {e}") from e
    finally:
        conn.close()
    if response.status != 200:
        raise ValueError(f"/metrics on port {port} answered {response.status}")
    return parse_restarts(body)


def gunicorn_worker_pids(log_text: str) -> list[int]:
    """The pids of every worker gunicorn booted, in order, each once."""
    return list(dict.fromkeys(int(pid) for pid in _GUNICORN_BOOT.findall(log_text)))


def gunicorn_restarts(log_path: Path, workers: int) -> int:
    """Workers booted beyond the initial `workers`, from gunicorn's log so far."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return max(len(gunicorn_worker_pids(text)) - workers, 0)
