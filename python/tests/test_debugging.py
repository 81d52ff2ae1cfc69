"""Tests of the worker's gunicorn debugging and process settings: --spew's
trace function, --reload's file poller, --name's process title and
--capture-output (python/ferrocorn_worker.py; stdlib only)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest
from pathlib import Path
from unittest import mock

from test_worker import WORKER_PATH, W


def run_snippet(code: str, **kwargs) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with the worker module importable."""
    prelude = f"import sys; sys.path.insert(0, {str(WORKER_PATH.parent)!r}); import ferrocorn_worker as W\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], timeout=30, **kwargs)


class SpewTest(unittest.TestCase):
    def test_off_unless_asked(self) -> None:
        self.assertIsNone(W.install_spew({}))
        self.assertIsNone(sys.gettrace() if not hasattr(sys, "monitoring") else None)

    def test_every_executed_line_is_printed_in_this_thread_and_later_threads(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "spewed_mod.py"
            path.write_text("def f(x):\n    y = x + 1\n    return y * 2\n")
            spec = __import__("importlib.util").util.spec_from_file_location("spewed_mod", path)
            module = __import__("importlib.util").util.module_from_spec(spec)
            spec.loader.exec_module(module)
            out = io.StringIO()
            previous = sys.gettrace()
            try:
                with contextlib.redirect_stdout(out):
                    W.install_spew({"FERROCORN_WORKER_SPEW": "1"})
                    module.f(1)
                    thread = threading.Thread(target=module.f, args=(2,))
                    thread.start()
                    thread.join()
            finally:
                sys.settrace(previous)
                threading.settrace(None)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines.count("spewed_mod:2:     y = x + 1"), 2, lines)
        self.assertEqual(lines.count("spewed_mod:3:     return y * 2"), 2, lines)


class ReloaderTest(unittest.TestCase):
    def test_a_file_is_noted_first_and_reported_when_its_mtime_grows(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "a.py", Path(tmp) / "b.txt"
            a.write_text("1")
            b.write_text("1")
            missing = str(Path(tmp) / "missing")
            mtimes: dict = {}
            files = [str(a), missing, str(b)]
            self.assertIsNone(W.changed_file(mtimes, files))
            self.assertIsNone(W.changed_file(mtimes, files))
            stat = b.stat()
            os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
            self.assertEqual(W.changed_file(mtimes, files), str(b))

    def test_files_are_the_imported_modules_and_the_extra_files_with_globs(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "t").mkdir()
            (Path(tmp) / "t" / "x.html").write_text("")
            (Path(tmp) / "t" / "y.html").write_text("")
            plain = str(Path(tmp) / "conf.ini")
            files = W.reload_files([plain, str(Path(tmp) / "t" / "*.html")])
        self.assertIn(os.__file__, files)
        self.assertIn(plain, files)
        self.assertEqual([f for f in files if f.endswith(".html")], [str(Path(tmp) / "t" / n) for n in ("x.html", "y.html")])

    def test_the_reloader_logs_gunicorns_line_and_terms_its_worker(self) -> None:
        self.assertIsNone(W.start_reloader({}))
        with tempfile.TemporaryDirectory() as tmp:
            extra = Path(tmp) / "settings.ini"
            extra.write_text("a")
            env = {"FERROCORN_WORKER_RELOAD": "1", "FERROCORN_WORKER_RELOAD_EXTRA_FILES": f"{tmp}/none\n{extra}"}
            with mock.patch.object(W.os, "kill") as kill, self.assertLogs(W.log, "INFO") as logs:
                thread = W.start_reloader(env, interval=0.01)
                self.assertTrue(thread.daemon)
                # Its first check notes the mtime; change it until the thread sees a change.
                while thread.is_alive():
                    stat = extra.stat()
                    os.utime(extra, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
                    thread.join(0.05)
            kill.assert_called_once_with(os.getpid(), signal.SIGTERM)
        self.assertTrue(W.RELOADING.is_set(), "the worker's stop then exits EXIT_RELOAD")
        W.RELOADING.clear()
        self.assertIn(f"Worker reloading: {extra} modified", "\n".join(logs.output))


class ReloadFailAppTest(unittest.TestCase):
    def boot_error(self, tmp: str, source: str) -> "W.BootError":
        Path(tmp, "broken_mod.py").write_text(source)
        sys.path.insert(0, tmp)
        try:
            W.import_app("broken_mod:app")
        except W.BootError as exc:
            return exc
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("broken_mod", None)
        self.fail("the import succeeded")

    def test_a_syntax_error_is_served_as_500_and_its_file_watched(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            exc = self.boot_error(tmp, "def app(:\n")
            watched: list = []
            with self.assertLogs(W.log, "ERROR"):
                app = W.reload_fail_app({"FERROCORN_WORKER_RELOAD": "1"}, exc, watched)
            self.assertEqual(watched, [str(Path(tmp, "broken_mod.py"))])
            seen: list = []
            body = b"".join(app({}, lambda status, headers: seen.append(status)))
            self.assertEqual(seen, ["500 Internal Server Error"])
            self.assertIn(b"SyntaxError", body)

    def test_without_reload_or_for_other_errors_the_boot_error_stands(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            syntax = self.boot_error(tmp, "def app(:\n")
            with self.assertRaises(W.BootError):
                W.reload_fail_app({}, syntax, [])
            missing = self.boot_error(tmp, "x = 1\n")
            with self.assertRaises(W.BootError):
                W.reload_fail_app({"FERROCORN_WORKER_RELOAD": "1"}, missing, [])


class ProcessTitleTest(unittest.TestCase):
    def test_the_title_replaces_the_command_line_and_the_comm_stays(self) -> None:
        result = run_snippet(
            """
            W.set_process_name("fc-worker")
            W.set_proc_title("worker", {"FERROCORN_WORKER_PROC_NAME": "shop"})
            print(open("/proc/self/cmdline", "rb").read().split(b"\\0")[0].decode())
            print(open("/proc/self/comm").read().strip())
            """,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.stdout.splitlines(), ["ferrocorn: worker [shop]", "fc-worker"], result.stderr)

    def test_a_long_title_is_cut_to_the_original_command_line(self) -> None:
        result = run_snippet(
            """
            before = len(open("/proc/self/cmdline", "rb").read())
            W.set_proc_title("worker", {"FERROCORN_WORKER_PROC_NAME": "n" * 100000})
            after = open("/proc/self/cmdline", "rb").read()
            print(before == len(after), after.endswith(b"\\0"), after.startswith(b"ferrocorn: worker [nnn"))
            """,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.stdout.strip(), "True True True", result.stderr)


class CaptureOutputTest(unittest.TestCase):
    def test_stdout_goes_to_stderr_only_when_asked(self) -> None:
        with tempfile.TemporaryFile() as err:
            run_snippet(
                """
                print("before", flush=True)
                W.capture_output({})
                print("still stdout", flush=True)
                W.capture_output({"FERROCORN_WORKER_CAPTURE_OUTPUT": "1"})
                print("captured", flush=True)
                """,
                stdout=subprocess.DEVNULL,
                stderr=err,
                check=True,
            )
            err.seek(0)
            self.assertEqual(err.read().decode().splitlines(), ["captured"])


if __name__ == "__main__":
    unittest.main()
