"""Tests of the server hooks in python/ferrocorn_worker.py (docs/hooks.md):
loading the FERROCORN_HOOKS_FROM config, the objects the hooks get, and when
the worker and the fork server call them. The config used here appends one
JSON line per call to a file, which the tests read back.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path
from typing import Any
from unittest import mock

from test_forkserver import ForkServerProcess, become_subreaper, handshake, reap, recv_message
from test_worker import APP_SOURCE, TIMEOUT, LaneHarness, W, WorkerProcess, get, hold, recv_frame

# Every hook records its name, its process and the key facts of its arguments.
RECORDING_CONFIG = '''
import json, os
LOG = {log!r}

def _rec(hook, **facts):
    with open(LOG, "a") as f:
        f.write(json.dumps(dict(hook=hook, pid=os.getpid(), **facts)) + "\\n")

def on_starting(server): _rec("on_starting", master=server.pid, workers=server.num_workers)
def when_ready(server): _rec("when_ready")
def pre_fork(server, worker): _rec("pre_fork", age=worker.age)
def post_fork(server, worker): _rec("post_fork", age=worker.age, wpid=worker.pid, ppid=worker.ppid, booted=worker.booted)
def post_worker_init(worker): _rec("post_worker_init", age=worker.age, nr=worker.nr, threads=worker.cfg.threads)
def pre_request(worker, req): _rec("pre_request", method=req.method, path=req.path, query=req.query, uri=req.uri,
                                   version=list(req.version), headers=req.headers, nr=worker.nr)
def post_request(worker, req, environ, resp):
    _rec("post_request", path=req.path, status=resp.status, code=resp.status_code, sent=resp.sent,
         same_env=environ["PATH_INFO"] == req.path)
def worker_int(worker): _rec("worker_int", age=worker.age, alive=worker.alive)
def worker_abort(worker): _rec("worker_abort", age=worker.age)
def worker_exit(server, worker): _rec("worker_exit", age=worker.age, nr=worker.nr)
def child_exit(server, worker): _rec("child_exit", age=worker.age, wpid=worker.pid)
def nworkers_changed(server, new_value, old_value): _rec("nworkers_changed", new=new_value, old=old_value)
def on_reload(server): _rec("on_reload")
def on_exit(server): _rec("on_exit")
THE_FILE = __file__
not_a_hook = 3
def pre_exec(server): _rec("pre_exec")
'''


def records(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def wait_for(path: Path, hook: str, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [r for r in records(path) if r["hook"] == hook]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{hook} x{count} never recorded; seen: {records(path)}")
        time.sleep(0.005)


class HookFiles(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.log = self.dir / "hooks.jsonl"
        self.config = self.dir / "gunicorn.conf.py"
        self.config.write_text(RECORDING_CONFIG.format(log=str(self.log)))
        (self.dir / "wapp.py").write_text(APP_SOURCE)


class LoadTest(HookFiles):
    def test_a_file_is_executed_with_its_file_name_and_its_hooks_are_taken(self) -> None:
        hooks = W.load_hooks(str(self.config))
        for name in W.HOOK_NAMES:
            self.assertTrue(callable(getattr(hooks, name)), name)
        self.assertEqual(hooks.pre_request.__globals__["THE_FILE"], str(self.config))
        self.assertEqual(hooks.source, str(self.config))

    def test_a_hook_name_bound_to_something_not_callable_is_ignored(self) -> None:
        self.config.write_text(self.config.read_text() + '\nwhen_ready = "not callable"\n')
        self.assertIsNone(W.load_hooks(str(self.config)).when_ready)

    def test_no_config_means_no_hooks(self) -> None:
        hooks = W.load_hooks("")
        self.assertTrue(all(getattr(hooks, name) is None for name in W.HOOK_NAMES))

    def test_python_module(self) -> None:
        (self.dir / "myhooks.py").write_text("def post_fork(server, worker):\n    pass\n")
        sys.path.insert(0, str(self.dir))
        self.addCleanup(sys.path.remove, str(self.dir))
        self.addCleanup(sys.modules.pop, "myhooks", None)
        hooks = W.load_hooks("python:myhooks")
        self.assertIsNotNone(hooks.post_fork)
        self.assertIsNone(hooks.pre_fork)

    def test_a_failing_config_is_a_boot_error_not_an_app_error(self) -> None:
        self.config.write_text("x = 1\nraise ValueError('bad setting')\n")
        with self.assertRaises(W.BootError) as ctx:
            W.load_hooks(str(self.config))
        self.assertFalse(ctx.exception.app_load)
        self.assertEqual(ctx.exception.flags, W.CONFIG)
        report = ctx.exception.report()
        self.assertIn("ValueError: bad setting", report)
        self.assertIn("Traceback", report)
        self.assertIn(str(self.config), report)
        with self.assertRaises(W.BootError):
            W.load_hooks("python:no_such_hooks_module")
        with self.assertRaises(W.BootError) as ctx:
            W.load_hooks("relative/gunicorn.conf.py")
        self.assertIn("absolute path", str(ctx.exception))

    def test_a_raising_hook_is_logged_and_swallowed(self) -> None:
        def boom(worker: Any) -> None:
            raise RuntimeError("hook bug")

        hooks = W.Hooks({"post_worker_init": boom})
        with self.assertLogs(W.log, "ERROR") as logs:
            hooks.call("post_worker_init", None)
        self.assertIn("exception in post_worker_init hook", logs.output[0])
        self.assertIn("RuntimeError: hook bug", logs.output[0])
        with self.assertRaises(W.BootError):
            hooks.call_strict("post_worker_init", None)


class ObjectsTest(unittest.TestCase):
    def test_request_from_environ(self) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/a b",
            "QUERY_STRING": "x=1",
            "RAW_URI": "/a%20b?x=1",
            "SERVER_PROTOCOL": "HTTP/1.0",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "4321",
            "CONTENT_TYPE": "text/plain",
            "HTTP_HOST": "example",
            "HTTP_X_TRACE_ID": "7",
            "wsgi.url_scheme": "http",
        }
        req = W.HookRequest(environ)
        self.assertEqual((req.method, req.path, req.query, req.uri), ("POST", "/a%20b", "x=1", "/a%20b?x=1"))
        self.assertEqual(req.version, (1, 0))
        self.assertEqual(req.headers, [("CONTENT-TYPE", "text/plain"), ("HOST", "example"), ("X-TRACE-ID", "7")])
        self.assertEqual(req.remote_addr, ("127.0.0.1", 4321))
        self.assertEqual(req.peer_addr, ("127.0.0.1", 4321))

    def test_response_server_worker_and_cfg(self) -> None:
        resp = W.HookResponse("404 Not Found", [("A", "b")], 12)
        self.assertEqual((resp.status, resp.status_code, resp.headers, resp.sent), ("404 Not Found", 404, [("A", "b")], 12))
        hooks = W.Hooks({"pre_fork": print})
        env = {
            "FERROCORN_WORKER_COUNT": "3",
            "FERROCORN_WORKER_APP": "m:app",
            "FERROCORN_FORKSERVER_PRELOAD": "1",
            "FERROCORN_WORKER_SETTINGS": json.dumps(
                {"bind": ["127.0.0.1:8000"], "timeout": 30.0, "max_requests": 100, "worker_class": "gthread", "umask": 18, "uid": 65534, "gid": 65534}
            ),
        }
        cfg = W.HookConfig(env, hooks, 2)
        self.assertEqual((cfg.umask, cfg.uid, cfg.gid, cfg.user, cfg.group), (18, 65534, 65534, 65534, 65534))
        self.assertEqual((cfg.workers, cfg.threads, cfg.worker_class, cfg.preload_app, cfg.wsgi_app), (3, 2, "gthread", True, "m:app"))
        self.assertEqual((cfg.bind, cfg.timeout, cfg.max_requests, cfg.keepalive), (["127.0.0.1:8000"], 30.0, 100, None))
        self.assertEqual(W.HookWorker(1, cfg, None).max_requests, 100)
        self.assertEqual(W.HookConfig({}, hooks, None).worker_class, None)
        self.assertIs(cfg.pre_fork, print)
        self.assertIsNone(cfg.post_fork())  # an undefined hook is a no-op, as in gunicorn
        server = W.HookServer(cfg, 42)
        self.assertEqual((server.pid, server.num_workers, server.worker_class), (42, 3, "gthread"))
        for level in ("debug", "info", "warning", "error", "critical", "exception"):
            self.assertTrue(callable(getattr(server.log, level)))
        worker = W.HookWorker(5, cfg, 42, 99)
        self.assertEqual((worker.age, worker.ppid, worker.pid, worker.alive, worker.booted, worker.nr), (5, 42, 99, True, False, 0))
        self.assertEqual(W.HookWorker(1, W.HookConfig({}, hooks, 1), None).max_requests, sys.maxsize)


class LaneHooksTest(HookFiles):
    def test_pre_and_post_request_see_the_request_and_response(self) -> None:
        # The lane thread reads the hooks when it starts; give it the hooks first.
        hooks = W.load_hooks(str(self.config))
        harness_app = lambda e, s: (s("200 OK", [("Content-Length", "5")]), [b"hello"])[1]  # noqa: E731
        original = W.LaneServer.__init__

        def with_hooks(server: Any, *args: Any, **kw: Any) -> None:
            original(server, *args, **kw)
            server.hooks = hooks
            server.hook_worker = W.HookWorker(1, W.HookConfig({}, hooks, 1), None, os.getpid())
            server.hook_worker.servers = [server]

        with mock.patch.object(W.LaneServer, "__init__", with_hooks):
            harness = LaneHarness(harness_app)
        self.addCleanup(harness.close)
        r = get(harness.master, path="/p", query="q=1", headers=(("X-Id", "9"),))
        self.assertEqual(r.body, b"hello")
        get(harness.master, method="HEAD", path="/h")
        post = wait_for(self.log, "post_request", 2)
        pre = wait_for(self.log, "pre_request", 2)
        self.assertEqual(pre[0]["method"], "GET")
        self.assertEqual((pre[0]["path"], pre[0]["query"], pre[0]["uri"]), ("/p", "q=1", "/p?q=1"))
        self.assertEqual(pre[0]["version"], [1, 1])
        self.assertIn(["X-ID", "9"], pre[0]["headers"])
        self.assertEqual([p["nr"] for p in pre], [1, 2])
        self.assertEqual(post[0], {**post[0], "status": "200 OK", "code": 200, "sent": 5, "same_env": True})
        self.assertEqual(post[1]["sent"], 0)  # HEAD: no body bytes

    def test_a_raising_pre_request_does_not_fail_the_request(self) -> None:
        def boom(worker: Any, req: Any) -> None:
            raise RuntimeError("pre_request bug")

        hooks = W.Hooks({"pre_request": boom}, "test")
        original = W.LaneServer.__init__

        def with_hooks(server: Any, *args: Any, **kw: Any) -> None:
            original(server, *args, **kw)
            server.hooks = hooks

        with mock.patch.object(W.LaneServer, "__init__", with_hooks):
            harness = LaneHarness(lambda e, s: (s("200 OK", []), [b"ok"])[1])
        self.addCleanup(harness.close)
        with self.assertLogs(W.log, "ERROR") as logs:
            r = get(harness.master, path="/")
        self.assertEqual((r.status, r.body), ("200 OK", b"ok"))
        self.assertIn("exception in pre_request hook", logs.output[0])


class WorkerHooksTest(HookFiles):
    def start(self, **kw: Any) -> WorkerProcess:
        env = {"FERROCORN_HOOKS_FROM": str(self.config)}
        worker = WorkerProcess("wapp:app", app_dir=str(self.dir), extra_env=env, **kw)
        self.addCleanup(worker.close)
        return worker

    def test_a_fresh_worker_runs_the_config_then_its_hooks_in_order(self) -> None:
        w = self.start()
        w.handshake()
        get(w.lanes[0], path="/x")
        w.control.close()
        self.assertEqual(w.wait(), 0)
        seen = [(r["hook"], r["pid"]) for r in records(self.log)]
        pid = w.proc.pid
        self.assertEqual(
            seen,
            [("post_fork", pid), ("post_worker_init", pid), ("pre_request", pid), ("post_request", pid), ("worker_exit", pid)],
            w.stderr(),
        )
        post_fork = records(self.log)[0]
        self.assertEqual((post_fork["age"], post_fork["wpid"], post_fork["ppid"], post_fork["booted"]), (7, pid, os.getpid(), False))
        self.assertEqual(records(self.log)[-1]["nr"], 1)

    def test_a_config_that_fails_is_a_boot_failure_exit_3(self) -> None:
        self.config.write_text("import nosuchthing_for_hooks\n")
        w = self.start()
        self.assertEqual(recv_frame(w.control)[0], W.HELLO)
        kind, flags, payload = recv_frame(w.control)
        self.assertEqual((kind, flags), (W.BOOT_FAILED, W.CONFIG))
        self.assertIn("nosuchthing_for_hooks", payload.decode())
        self.assertIn("Traceback", payload.decode())
        self.assertEqual(w.wait(), 3)

    def test_quit_runs_worker_int_then_worker_exit(self) -> None:
        w = self.start()
        w.handshake()
        hold(w.lanes[0], 5)
        w.proc.send_signal(signal.SIGQUIT)
        self.assertEqual(w.wait(), 0)
        hooks = [r["hook"] for r in records(self.log)]
        self.assertEqual(hooks[-2:], ["worker_int", "worker_exit"], w.stderr())
        self.assertFalse(records(self.log)[-2]["alive"])

    def test_abort_dumps_stacks_runs_worker_abort_and_dies_by_abrt(self) -> None:
        w = self.start()
        w.handshake()
        hold(w.lanes[0], 5)
        w.proc.send_signal(signal.SIGABRT)
        self.assertEqual(w.wait(), -signal.SIGABRT)
        hooks = [r["hook"] for r in records(self.log)]
        self.assertEqual(hooks[-2:], ["worker_abort", "worker_exit"], w.stderr())
        self.assertIn("wapp.py", w.stderr())  # the stack dump is still there


class ForkServerHooksTest(HookFiles):
    @classmethod
    def setUpClass(cls) -> None:
        become_subreaper()

    def start(self, first: bool = True) -> ForkServerProcess:
        env = {"FERROCORN_HOOKS_FROM": str(self.config)}
        if first:
            env["FERROCORN_FORKSERVER_FIRST"] = "1"
        with mock.patch.dict(os.environ, env):
            server = ForkServerProcess("wapp:app", str(self.dir), preload=True)
        self.addCleanup(server.close)
        kind, _, _ = recv_message(server.control)
        self.assertEqual(kind, W.HELLO)
        kind, _, payload = recv_message(server.control)
        self.assertEqual(kind, W.READY, payload)
        return server

    def test_master_side_hooks_run_in_the_fork_server(self) -> None:
        server = self.start()
        fs = server.proc.pid
        server.send(W.NWORKERS_CHANGED, json.dumps({"new": 2, "old": None}).encode())
        kind, reply, control, _ = server.fork(3)
        self.assertEqual(kind, W.FORKED, reply)
        handshake(control)
        server.send(W.WHEN_READY, b"{}")
        control.close()
        self.assertEqual(reap(reply["pid"]), 0)
        server.send(W.CHILD_EXIT, json.dumps({"worker": 3, "pid": reply["pid"]}).encode())
        server.send(W.ON_RELOAD, b"{}")
        # USR2: the master starts the new master once pre_exec answers.
        server.send(W.PRE_EXEC, b"{}")
        kind, _, _ = recv_message(server.control)
        self.assertEqual(kind, W.PRE_EXEC)
        server.send(W.ON_EXIT, b"{}")
        self.assertEqual(server.proc.wait(TIMEOUT), 0)
        seen = [(r["hook"], r["pid"]) for r in records(self.log)]
        worker = reply["pid"]
        # Each process runs its hooks in order; between the two, only what
        # causes what is ordered (WHEN_READY and the worker's exit race).
        self.assertEqual(
            [hook for hook, pid in seen if pid == fs],
            ["on_starting", "nworkers_changed", "pre_fork", "when_ready", "child_exit", "on_reload", "pre_exec", "on_exit"],
        )
        self.assertEqual([hook for hook, pid in seen if pid == worker], ["post_fork", "post_worker_init", "worker_exit"])
        order = [hook for hook, _ in seen]
        self.assertLess(order.index("pre_fork"), order.index("post_fork"))
        self.assertLess(order.index("post_worker_init"), order.index("when_ready"))
        self.assertLess(order.index("worker_exit"), order.index("child_exit"))
        by_hook = {r["hook"]: r for r in records(self.log)}
        self.assertEqual(by_hook["on_starting"]["master"], os.getpid())
        self.assertEqual((by_hook["nworkers_changed"]["new"], by_hook["nworkers_changed"]["old"]), (2, None))
        self.assertEqual((by_hook["child_exit"]["age"], by_hook["child_exit"]["wpid"]), (3, worker))
        self.assertEqual(by_hook["pre_fork"]["age"], 3)

    def test_only_the_first_fork_server_runs_on_starting(self) -> None:
        server = self.start(first=False)
        server.send(W.ON_EXIT, b"{}")
        self.assertEqual(server.proc.wait(TIMEOUT), 0)
        self.assertEqual([r["hook"] for r in records(self.log)], ["on_exit"])

    def test_a_raising_on_starting_fails_the_boot_with_exit_3(self) -> None:
        self.config.write_text("def on_starting(server):\n    raise RuntimeError('no')\n")
        with mock.patch.dict(os.environ, {"FERROCORN_HOOKS_FROM": str(self.config), "FERROCORN_FORKSERVER_FIRST": "1"}):
            server = ForkServerProcess("wapp:app", str(self.dir), preload=True)
        self.addCleanup(server.close)
        self.assertEqual(recv_message(server.control)[0], W.HELLO)
        kind, flags, payload = recv_message(server.control)
        self.assertEqual((kind, flags), (W.BOOT_FAILED, W.CONFIG))
        self.assertIn("on_starting hook", payload.decode())
        self.assertEqual(server.proc.wait(TIMEOUT), 3)


if __name__ == "__main__":
    logging.basicConfig()
    unittest.main()
