"""ferrocorn's master error log, read as events: `Booting worker with pid: N`, `Worker (pid:N) is
ready`, ... with timestamps.

By default the master writes gunicorn's line (`[2026-12-01 08:14:40 +0000] [PID] [INFO] ...`),
which has second resolution. The benchmarks start it with FERROCORN_LOG_FORMAT=tracing
(`process.start_server` does), and it writes tracing's line instead, one event a line:

    2026-12-01T08:14:40.342648Z  INFO ferrocorn::master::shell: Booting worker with pid: 10754 worker=1 pid=10754

(RFC 3339 time in UTC, level, target, message, then every key=value field). The Python worker and
the fork server write gunicorn lines into the same stream; those are not parsed here. Benchmarks use
the master's microsecond timestamps to time a worker boot on the master's own clock. The is_*
functions below are the one place that knows the wording of the lines they look for.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))\s+"
    r"(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\s+(?P<target>[\w:]+):\s(?P<rest>.*)$")
_FIELD = re.compile(r'(?:^|\s)(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class LogEvent:
    """One master log line: when (Unix seconds), level, target, message and its fields (strings)."""

    ts: float
    level: str
    target: str
    message: str
    fields: dict[str, str]

    def int_field(self, name: str) -> Optional[int]:
        value = self.fields.get(name, "")
        return int(value) if value.isdigit() else None


def is_booting(e: LogEvent) -> bool:
    """The master launched a worker process (gunicorn's `Booting worker with pid: N`)."""
    return e.message.startswith("Booting worker with pid: ")


def is_ready(e: LogEvent) -> bool:
    """A worker (not a spare) finished booting and was admitted: `Worker (pid:N) is ready`."""
    return e.message.startswith("Worker (pid:") and e.message.endswith(") is ready")


def is_ttin(e: LogEvent) -> bool:
    """The master took a TTIN (one worker more): gunicorn's `Handling signal: ttin`."""
    return e.message == "Handling signal: ttin"


def is_crash(e: LogEvent) -> bool:
    """A serving worker died unasked: killed by a signal or a non-zero exit (reason=crash)."""
    return e.fields.get("reason") == "crash" and e.message.startswith("Worker (pid:")


def parse_timestamp(text: str) -> float:
    """RFC 3339 (`2026-12-01T08:14:40.342648Z`, any number of fraction digits) -> Unix seconds."""
    text = text.replace("Z", "+00:00")
    fraction = 0.0
    m = re.match(r"^([^.]+)\.(\d+)(.*)$", text)
    if m:
        text, fraction = m.group(1) + m.group(3), float("0." + m.group(2))
    return datetime.fromisoformat(text).timestamp() + fraction


def parse_line(line: str) -> Optional[LogEvent]:
    """A master line as a LogEvent; None for anything else (worker lines, tracebacks, blanks)."""
    m = _LINE.match(_ANSI.sub("", line.rstrip("\r\n")))
    if not m:
        return None
    rest = m.group("rest")
    fields = {}
    message_end = len(rest)
    for f in _FIELD.finditer(rest):
        message_end = min(message_end, f.start())
        value = f.group(2)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[f.group(1)] = value
    return LogEvent(ts=parse_timestamp(m.group("ts")), level=m.group("level"), target=m.group("target"),
                    message=rest[:message_end].strip(), fields=fields)


def parse_log(text: str) -> list[LogEvent]:
    return [e for e in map(parse_line, text.splitlines()) if e is not None]


class LogTail:
    """Follows a growing log file and keeps the master events seen so far, in order."""

    POLL_S = 0.001

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = ""
        self.events: list[LogEvent] = []

    def poll(self) -> None:
        """Read what was appended since the last call; a line without its newline yet waits."""
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        self.events.extend(e for e in map(parse_line, lines) if e is not None)

    def wait_for(self, match: Callable[[LogEvent], bool], timeout_s: float, start: int = 0) -> Optional[LogEvent]:
        """The first event at index >= start that matches, waiting up to timeout_s; None on timeout."""
        deadline = time.monotonic() + timeout_s
        checked = start
        while True:
            self.poll()
            for e in self.events[checked:]:
                if match(e):
                    return e
            checked = max(checked, len(self.events))
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.POLL_S)
