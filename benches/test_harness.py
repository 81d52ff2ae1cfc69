"""Unit tests of the benchmark harness (parsing, ratios, process handling). No load, no servers.

Run: python3 -m unittest discover -s benches -p 'test_*.py'
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import unittest
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.measure import process_stats, process_tree, sample_memory  # noqa: E402
from harness.paced import PacedLoad, percentile  # noqa: E402
from harness.process import start_server, stop_server  # noqa: E402
from harness.measure import CpuUsage  # noqa: E402
from harness.report import RunResult, ratios, summarize  # noqa: E402
from harness.restarts import gunicorn_worker_pids, parse_restarts  # noqa: E402
from harness.syscalls import (SyscallCounter, parse_perf_count, parse_request_count, perf_available,  # noqa: E402
                              rate)
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
        both = ratios([row("ferrocorn", 6000, 10), row("granian", 12000, 8), row("granian-default", 10000, 20)])
        self.assertEqual([(r.reference, r.requests_per_s) for r in both],
                         [("granian", 0.5), ("granian-default", 0.6)])
        # Ring lanes against socket lanes, in the same run.
        lanes = ratios([row("ferrocorn", 6000, 10), row("ferrocorn-socket", 4000, 20)])
        self.assertEqual([(r.reference, r.requests_per_s, r.p99) for r in lanes],
                         [("ferrocorn-socket", 1.5, 0.5)])

    def test_ferrocorn_rows_name_their_transport_and_master_threads(self) -> None:
        from compare import server_command
        from harness.options import parse_args

        config = parse_args(["--servers", "ferrocorn,ferrocorn-mt2,ferrocorn-socket,ferrocorn-normal-sched",
                             "--out", "/nonexistent"])
        argv = {s: server_command(config, s, "wsgi", 8000, []).argv for s in config.servers}
        self.assertNotIn("--master-threads", argv["ferrocorn"])
        self.assertEqual(argv["ferrocorn-mt2"][argv["ferrocorn-mt2"].index("--master-threads") + 1], "2")
        self.assertEqual(argv["ferrocorn-socket"][:2], ("env", "FERROCORN_LANE_TRANSPORT=socket"))
        self.assertEqual(argv["ferrocorn-normal-sched"][:2], ("env", "FERROCORN_WORKER_SCHED=normal"))
        self.assertNotIn("env", argv["ferrocorn"])
        self.assertTrue(all(a[-1] == "wsgi_hello:app" for a in argv.values()))

    def test_no_ratio_without_a_working_ferrocorn(self) -> None:
        self.assertEqual(ratios([row("ferrocorn", 0, 0, status="failed to start"), row("granian", 1, 1)]), [])


class RoundsTest(unittest.TestCase):
    def test_each_server_is_represented_by_its_median_successful_run(self) -> None:
        runs = [row("ferrocorn", 9000, 1), row("granian", 5, 1, status="crashed"), row("ferrocorn", 7000, 3),
                row("granian", 12000, 2), row("ferrocorn", 8000, 2), row("granian", 0, 0, status="load failed")]
        for i, r in enumerate(runs):
            r.round = i // 2 + 1
        by_server = {s.median.server: s for s in summarize(runs)}
        self.assertEqual(list(by_server), ["ferrocorn", "granian"])
        self.assertEqual((by_server["ferrocorn"].median.wrk.requests_per_s, by_server["ferrocorn"].median.round),
                         (8000, 3))
        self.assertEqual(by_server["ferrocorn"].ok_rates, [7000, 8000, 9000])
        # one success among failures: the success stands for the server
        self.assertEqual(by_server["granian"].median.wrk.requests_per_s, 12000)
        self.assertEqual(len(by_server["granian"].runs), 3)

    def test_even_count_takes_the_lower_middle_and_all_failed_shows_a_failure(self) -> None:
        even = summarize([row("ferrocorn", 2, 1), row("ferrocorn", 4, 1)])
        self.assertEqual(even[0].median.wrk.requests_per_s, 2)
        failed = summarize([row("granian", 0, 0, status="failed to start")])
        self.assertEqual((failed[0].median.status, failed[0].ok_rates), ("failed to start", []))

    def test_cpu_per_request(self) -> None:
        cpu = CpuUsage(server_cores=1.5, wrk_cores=0.2, other_cores=0.0, top_cores=0.3)
        total, top = cpu.per_request_us(10_000)
        self.assertAlmostEqual(total, 150.0)
        self.assertAlmostEqual(top, 30.0)
        self.assertEqual(cpu.per_request_us(0), (0.0, 0.0))

    def test_steal_is_counted_apart_from_other_work(self) -> None:
        from harness.measure import CpuSnapshot, cpu_usage
        before = CpuSnapshot(wall_s=100.0, machine_busy_s=1000.0, server_s=10.0, top_s=2.0, children_s=1.0,
                             self_s=0.5, steal_s=40.0)
        # 2 s of wall clock: the machine was busy 3.6 s, of it 0.8 s stolen, 2 s server, 0.4 s wrk, 0.1 s us.
        after = CpuSnapshot(wall_s=102.0, machine_busy_s=1003.6, server_s=12.0, top_s=2.5, children_s=1.4,
                            self_s=0.6, steal_s=40.8)
        cpu = cpu_usage(before, after)
        self.assertAlmostEqual(cpu.steal_cores, 0.4)
        self.assertAlmostEqual(cpu.other_cores, 0.15)
        self.assertAlmostEqual(cpu.server_cores, 1.0)
        self.assertAlmostEqual(cpu.wrk_cores, 0.2)

    def test_switches_per_request_split_the_first_process_from_the_rest(self) -> None:
        cpu = CpuUsage(server_cores=1.0, wrk_cores=0.1, other_cores=0.0, top_cores=0.2,
                       server_switches_per_s=30_000, top_switches_per_s=10_000)
        top, rest = cpu.switches_per_request(10_000)
        self.assertAlmostEqual(top, 1.0)
        self.assertAlmostEqual(rest, 2.0)
        self.assertEqual(cpu.switches_per_request(0), (0.0, 0.0))

    def test_context_switches_count_every_thread_of_a_live_process(self) -> None:
        from harness.measure import context_switches
        self.assertGreater(context_switches(os.getpid()), 0)
        self.assertEqual(context_switches(2 ** 22 + 1), 0)  # no such pid


class SyscallsTest(unittest.TestCase):
    def test_perf_csv_gives_the_count_or_none(self) -> None:
        self.assertEqual(parse_perf_count("Events disabled\nEvents enabled\n"
                                          "20026,,raw_syscalls:sys_enter,80701569,100.00,,\n"), 20026)
        # No counted thread ran: none of them made a call.
        self.assertEqual(parse_perf_count("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n"), 0)
        self.assertIsNone(parse_perf_count("<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n"))
        self.assertIsNone(parse_perf_count("Error:\nNo permission to enable raw_syscalls:sys_enter event.\n"))

    def test_per_request_needs_every_count_and_the_request_count(self) -> None:
        self.assertEqual(parse_request_count(WRK_OK), 5211)
        self.assertIsNone(parse_request_count("Requests/sec: 1.0\n"))
        calls = rate([5211, 3 * 5211], 5211)
        self.assertEqual((calls.first, calls.rest), (1.0, 3.0))
        self.assertIsNone(rate([5211, None], 5211))
        self.assertIsNone(rate([5211, 0], None))

    @unittest.skipUnless(perf_available(), "no perf on this machine")
    def test_counts_exactly_the_calls_made_between_start_and_stop(self) -> None:
        # A child that makes N stat calls per line it reads: 5,000 before counting starts,
        # 20,000 while it counts; perf must see the 20,000 and a few of the loop's own.
        code = "import os, sys\nfor line in sys.stdin:\n    [os.stat('/') for _ in range(int(line))]\n" \
               "    print('done', flush=True)\n"
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        try:
            def calls(n: int) -> None:
                child.stdin.write(f"{n}\n")
                child.stdin.flush()
                self.assertEqual(child.stdout.readline().strip(), "done")

            counter = SyscallCounter(perf_available(), [[child.pid], []])
            calls(5_000)
            counter.start()
            calls(20_000)
            counted, empty = counter.stop()
        finally:
            child.stdin.close()
            child.wait(timeout=10)
        if counted is None:
            self.skipTest("perf cannot count raw_syscalls:sys_enter here (permissions or tracefs)")
        self.assertEqual(empty, 0)
        self.assertGreaterEqual(counted, 20_000)
        self.assertLess(counted, 20_500)


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
        # The orphaned child may linger as a zombie until init reaps it, and a
        # busy machine may take a moment to finish killing it: wait, bounded.
        deadline = time.monotonic() + 5
        while True:
            alive = [pid for pid, fields in process_stats().items() if pid in tree and fields[0] != "Z"]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertEqual(alive, [])

    def test_a_server_leads_its_group_and_its_session_only_when_asked(self) -> None:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            for own_session in (True, False):
                log = Path(tmp) / f"{own_session}.log"
                proc = start_server(["sleep", "30"], Path(tmp), log, own_session=own_session)
                try:
                    self.assertEqual(os.getpgid(proc.pid), proc.pid)
                    expected = proc.pid if own_session else os.getsid(0)
                    self.assertEqual(os.getsid(proc.pid), expected, f"own_session={own_session}")
                finally:
                    stop_server(proc, grace_s=0.5)


METRICS = """\
# HELP ferrocorn_worker_restarts Workers replaced, by reason.
# TYPE ferrocorn_worker_restarts counter
ferrocorn_worker_restarts_total{reason="max_requests"} 7
ferrocorn_worker_restarts_total{reason="memory"} 0
ferrocorn_worker_restarts_total{reason="crash",extra="a\\"b"} 2.0
ferrocorn_worker_restarts_created{reason="crash"} 1764000000.0
ferrocorn_requests_total{status="200"} 300
# EOF
"""

GUNICORN_LOG = """\
[2026-11-23 05:50:01 +0000] [100] [INFO] Starting gunicorn 27.0.1
[2026-11-23 05:50:01 +0000] [100] [INFO] Listening at: http://127.0.0.1:4000 (100)
[2026-11-23 05:50:01 +0000] [101] [INFO] Booting worker with pid: 101
[2026-11-23 05:50:01 +0000] [102] [INFO] Booting worker with pid: 102
[2026-11-23 05:50:05 +0000] [101] [INFO] Autorestarting worker after current request.
[2026-11-23 05:50:05 +0000] [101] [INFO] Worker exiting (pid: 101)
[2026-11-23 05:50:05 +0000] [103] [INFO] Booting worker with pid: 103
[2026-11-23 05:50:05 +0000] [103] [INFO] Booting worker with pid: 103
"""


class RestartsTest(unittest.TestCase):
    def test_ferrocorn_counters_by_reason(self) -> None:
        self.assertEqual(parse_restarts(METRICS), Counter({"max_requests": 7, "crash": 2}))
        self.assertEqual(parse_restarts(""), Counter())

    def test_gunicorn_worker_pids_each_once(self) -> None:
        self.assertEqual(gunicorn_worker_pids(GUNICORN_LOG), [101, 102, 103])


class PacedLoadTest(unittest.TestCase):
    def test_percentile_nearest_rank(self) -> None:
        values = [float(v) for v in range(1, 101)]
        self.assertEqual((percentile(values, 50), percentile(values, 99), percentile(values, 100)), (50, 99, 100))
        self.assertEqual(percentile([7.0], 1), 7.0)
        self.assertIsNone(percentile([], 50))

    def test_sends_the_scheduled_requests_and_counts_non_2xx(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/ok" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            ok, missing = PacedLoad(port, "/ok", 40, 0.5, 2, 5), PacedLoad(port, "/nope", 40, 0.5, 2, 5)
            for load in (ok, missing):
                start = time.monotonic()
                load.start()
                self.assertTrue(load.join(10))
                self.assertGreaterEqual(time.monotonic() - start, 0.45)  # paced, not as fast as it can
        finally:
            server.shutdown()
            server.server_close()
        r = ok.snapshot()
        self.assertEqual((r.scheduled, r.sent, r.done, r.ok, r.failed, r.not_sent), (20, 20, 20, 20, 0, 0))
        r = missing.snapshot()
        self.assertEqual((r.done, r.non_2xx, r.failed), (20, 20, 20))


if __name__ == "__main__":
    unittest.main()
