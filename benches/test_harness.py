"""Unit tests of the benchmark harness (parsing, ratios, process handling). No load, no servers.

Run: python3 -m unittest discover -s benches -p 'test_*.py'
"""

from __future__ import annotations

import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.measure import process_stats, process_tree, sample_memory  # noqa: E402
from harness.process import stop_server  # noqa: E402
from harness.report import RunResult, ratios  # noqa: E402
from harness.wrk import WrkResult, parse_wrk  # noqa: E402

WRK_OK = """\
Running 3s test @ http://127.0.0.1:18123/hello
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    28.63ms    6.14ms  66.98ms   66.86%
    Req/Sec     1.74k   299.40     2.50k    76.67%
  Latency Distribution
     50%   28.31ms
     75%   32.76ms
     90%   36.83ms
     99%   45.23ms
  5211 requests in 3.01s, 844.90KB read
Requests/sec:   1731.69
Transfer/sec:    280.77KB
"""

WRK_ERRORS = """\
Running 1s test @ http://127.0.0.1:18123/nope
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.78ms    6.32ms    1.20s   93.31%
    Req/Sec     1.10k   258.01     1.37k    70.00%
  Latency Distribution
     50%  850.00us
     75%   10.15ms
     90%   13.28ms
     99%    1.20s
  1094 requests in 1.01s, 393.47KB read
  Socket errors: connect 1, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 1094
Requests/sec:   1087.84
Transfer/sec:    391.26KB
"""


class ParseWrkTest(unittest.TestCase):
    def test_plain_run(self) -> None:
        self.assertEqual(parse_wrk(WRK_OK), WrkResult(1731.69, 28.31, 45.23, 0, 0))

    def test_units_and_errors(self) -> None:
        r = parse_wrk(WRK_ERRORS)
        self.assertAlmostEqual(r.p50_ms, 0.85)
        self.assertAlmostEqual(r.p99_ms, 1200.0)
        self.assertEqual((r.non_2xx, r.socket_errors, r.errors), (1094, 16, 1110))

    def test_missing_parts_raise(self) -> None:
        with self.assertRaisesRegex(ValueError, "Requests/sec"):
            parse_wrk("")
        without_latency = "\n".join(line for line in WRK_OK.splitlines() if "%" not in line)
        with self.assertRaisesRegex(ValueError, "--latency"):
            parse_wrk(without_latency)


def row(server: str, rps: float, p99: float, status: str = "ok") -> RunResult:
    return RunResult(server=server, app="flask", status=status, command="",
                     wrk=WrkResult(rps, 1.0, p99, 0, 0))


class RatiosTest(unittest.TestCase):
    def test_best_gunicorn_is_the_one_with_most_requests(self) -> None:
        rs = ratios([row("ferrocorn", 6000, 10), row("gunicorn-sync", 5000, 20),
                     row("gunicorn-gthread", 3000, 5), row("granian", 12000, 8)])
        self.assertEqual([(x.reference, x.requests_per_s, x.p99) for x in rs],
                         [("gunicorn-best (gunicorn-sync)", 1.2, 0.5), ("granian", 0.5, 1.25)])

    def test_no_ratio_without_a_working_ferrocorn(self) -> None:
        self.assertEqual(ratios([row("ferrocorn", 0, 0, status="failed to start"), row("granian", 1, 1)]), [])


class ProcessTest(unittest.TestCase):
    def test_tree_memory_and_stop_reach_a_child_that_ignores_term(self) -> None:
        script = "trap '' TERM; sleep 60 & echo started; wait"
        proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True)
        self.assertEqual(proc.stdout.readline(), b"started\n")
        tree = process_tree(proc.pid, process_stats())
        self.assertEqual(len(tree), 2)
        self.assertEqual(sample_memory(proc.pid).processes, 2)
        start = time.monotonic()
        stop_server(proc, grace_s=0.5)
        self.assertLess(time.monotonic() - start, 5)
        proc.stdout.close()
        # the orphaned child may linger as a zombie until init reaps it
        alive = [pid for pid, fields in process_stats().items() if pid in tree and fields[0] != "Z"]
        self.assertEqual(alive, [])


if __name__ == "__main__":
    unittest.main()
