"""Unit tests of the parsers behind boot.py and memory.py: the master's log lines, smaps_rollup,
/proc/PID/stat and schedstat, /metrics and gunicorn's access lines. No servers, no load.

Run: python3 -m unittest discover -s benches -p 'test_*.py'
"""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boot import Boot, boot_cpu_ms, spread  # noqa: E402
from harness.masterlog import (LogTail, is_booting, is_crash, is_ready, is_ttin, parse_line,  # noqa: E402
                               parse_log, parse_timestamp)
from harness.measure import (ProcessCpu, parse_schedstat_ns, parse_smaps_rollup, parse_stat_cpu,  # noqa: E402
                             read_process_cpu, runtime_delta_ns)
from memory import parse_gunicorn_access, parse_requests_served, role_of  # noqa: E402

MASTER_LOG = """\
2026-12-01T08:37:00.351305Z  INFO ferrocorn::master::arbiter: Handling signal: ttin
2026-12-01T08:37:00.356788Z  INFO ferrocorn::master::shell: Booting worker with pid: 19297 worker=2 pid=19297
[2026-12-01 08:37:00 +0000] [19297] [INFO] Worker exiting (pid: 19297)
2026-12-01T08:37:00.357513Z DEBUG ferrocorn::master::shell: worker said hello worker=2 pid=19297 python=3.11.7 class=sync
2026-12-01T08:37:00.357525Z  INFO ferrocorn::master::arbiter::worker_events: Worker (pid:19297) is ready worker=2 pid=19297
Traceback (most recent call last):
2026-12-01T08:37:01.374407Z ERROR ferrocorn::master::arbiter::lines: Worker (pid:19141) was sent SIGKILL! Perhaps out \
of memory? worker=1 pid=19141 reason="crash" requests=0 age_s=3
"""

SMAPS_ROLLUP = """\
56534e9e1000-7ffdf761b000 ---p 00000000 00:00 0                          [rollup]
Rss:               29800 kB
Pss:                9830 kB
Pss_Dirty:          5200 kB
Shared_Clean:      21000 kB
Shared_Dirty:       3300 kB
Private_Clean:        40 kB
Private_Dirty:      5460 kB
Swap:                  12 kB
"""


class MasterLogTest(unittest.TestCase):
    def test_timestamp_is_unix_seconds_with_microseconds(self) -> None:
        expected = datetime(2026, 12, 1, 8, 37, 0, tzinfo=timezone.utc).timestamp() + 0.351305
        self.assertAlmostEqual(parse_timestamp("2026-12-01T08:37:00.351305Z"), expected, places=6)
        self.assertAlmostEqual(parse_timestamp("2026-12-01T08:37:00.351305123Z"), expected, places=6)
        self.assertAlmostEqual(parse_timestamp("2026-12-01T09:37:00+01:00"), expected - 0.351305, places=6)

    def test_message_and_fields(self) -> None:
        e = parse_line("2026-12-01T08:37:00.356788Z  INFO ferrocorn::master::shell: Booting worker with pid: 19297 "
                       "worker=2 pid=19297")
        self.assertEqual((e.level, e.target, e.message),
                         ("INFO", "ferrocorn::master::shell", "Booting worker with pid: 19297"))
        self.assertTrue(is_booting(e))
        self.assertEqual((e.int_field("worker"), e.int_field("pid"), e.int_field("nope")), (2, 19297, None))

    def test_quoted_values_and_a_message_with_punctuation(self) -> None:
        e = parse_log(MASTER_LOG)[-1]
        self.assertEqual(e.message, "Worker (pid:19141) was sent SIGKILL! Perhaps out of memory?")
        self.assertTrue(is_crash(e))
        self.assertEqual((e.fields["reason"], e.int_field("pid"), e.int_field("age_s")), ("crash", 19141, 3))

    def test_worker_lines_tracebacks_and_colours(self) -> None:
        events = parse_log(MASTER_LOG)
        self.assertEqual([e.message for e in events], [
            "Handling signal: ttin", "Booting worker with pid: 19297", "worker said hello",
            "Worker (pid:19297) is ready", "Worker (pid:19141) was sent SIGKILL! Perhaps out of memory?"])
        self.assertEqual([is_ttin(e) for e in events], [True, False, False, False, False])
        self.assertEqual([is_ready(e) for e in events], [False, False, False, True, False])
        self.assertIsNone(parse_line("[2026-12-01 08:37:00 +0000] [19297] [INFO] Worker exiting (pid: 19297)"))
        coloured = "\x1b[2m2026-12-01T08:37:00.357525Z\x1b[0m \x1b[32m INFO\x1b[0m ferrocorn::x: worker ready pid=7"
        self.assertEqual(parse_line(coloured).int_field("pid"), 7)
        ready, booting = events[3], events[1]
        self.assertAlmostEqual((ready.ts - booting.ts) * 1000, 0.737, places=3)

    def test_tail_waits_for_whole_lines(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "server.log")
            tail = LogTail(path)
            tail.poll()  # no file yet: nothing
            lines = MASTER_LOG.splitlines(keepends=True)
            with open(path, "w") as f:
                f.write(lines[0] + lines[1][:30])
                f.flush()
                tail.poll()
                self.assertEqual(len(tail.events), 1)
                f.write(lines[1][30:] + lines[2] + lines[3] + lines[4])
            found = tail.wait_for(is_ready, timeout_s=1.0)
            self.assertEqual(found.int_field("pid"), 19297)
            self.assertEqual(len(tail.events), 4)
            self.assertIsNone(tail.wait_for(is_ready, timeout_s=0.01, start=4))


class ProcReadingsTest(unittest.TestCase):
    def test_smaps_rollup(self) -> None:
        m = parse_smaps_rollup(SMAPS_ROLLUP)
        self.assertEqual((m.rss_kib, m.pss_kib, m.uss_kib, m.shared_kib, m.swap_kib), (29800, 9830, 5500, 24300, 12))
        self.assertIsNone(parse_smaps_rollup(""))

    def test_stat_with_spaces_and_parens_in_the_name(self) -> None:
        line = "4242 (fc worker) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 7 3 11 5 20 0 2 0 123 1000 200"
        self.assertEqual(parse_stat_cpu(line), (7, 3, 11, 5))
        self.assertEqual(parse_schedstat_ns("2390849 883354 5\n"), 2390849)

    def test_run_time_delta_by_thread(self) -> None:
        before = ProcessCpu(0, 0, 0, 0, 300, {1: 100, 2: 200})
        after = ProcessCpu(0, 0, 0, 0, 450, {1: 150, 3: 300})  # thread 2 exited, 3 is new
        self.assertEqual(runtime_delta_ns(before, after), 50 + 300)

    def test_reads_this_process(self) -> None:
        cpu = read_process_cpu(os.getpid())
        self.assertIsNotNone(cpu)
        self.assertGreater(cpu.runtime_ns, 0)
        self.assertIn(os.getpid(), cpu.threads)


METRICS = """\
# TYPE ferrocorn_worker_requests_served gauge
ferrocorn_worker_requests_served{worker="1",pid="1001"} 240
ferrocorn_worker_requests_served{worker="2",pid="1002"} 260.0
ferrocorn_worker_memory_bytes{worker="1",pid="1001"} 30000000
"""


class MemoryParsersTest(unittest.TestCase):
    def test_requests_served_by_pid(self) -> None:
        self.assertEqual(parse_requests_served(METRICS), {1001: 240, 1002: 260})

    def test_gunicorn_access_lines_by_pid(self) -> None:
        log = "<101> 200\n[2026-12-01 08:00:00 +0000] [100] [INFO] Booting worker with pid: 102\n<102> 200\n<101> 404"
        self.assertEqual(parse_gunicorn_access(log), {101: 2, 102: 1})

    def test_roles(self) -> None:
        self.assertEqual(role_of(10, 10, 1, "ferrocorn", "ferrocorn"), "master")
        self.assertEqual(role_of(11, 10, 10, "fc-forkserver", "ferrocorn-preload"), "fork server")
        self.assertEqual(role_of(12, 10, 10, "fc-worker", "ferrocorn"), "worker")
        self.assertEqual(role_of(13, 10, 12, "sh", "ferrocorn"), "other")
        self.assertEqual(role_of(12, 10, 10, "fc-forkserver", "gunicorn"), "worker")


class BootFiguresTest(unittest.TestCase):
    def test_spread_is_median_p90_max(self) -> None:
        self.assertEqual(spread([float(v) for v in range(1, 11)] + [None]), "5.5 / 9.0 / 10.0")
        self.assertEqual(spread([None]), "–")
        self.assertEqual(spread([150.0, 250.0]), "200 / 250 / 250")

    def test_cpu_per_boot_adds_the_fork_server(self) -> None:
        fresh = Boot(mode="fresh", phase="scale", n=1, worker_cpu_ms=100.0)
        forked = Boot(mode="preload", phase="scale", n=1, worker_cpu_ms=2.0, forkserver_own_ms=1.0)
        self.assertEqual((boot_cpu_ms(fresh, 0.9), boot_cpu_ms(forked, 0.5)), (100.0, 3.5))


if __name__ == "__main__":
    unittest.main()
