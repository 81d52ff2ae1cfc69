"""set_owner_process in python/ferrocorn_worker.py: gunicorn's
util.set_owner_process rules (uid/gid 0 change nothing, the group stays the
master's unless given) and ferrocorn's two changes (no supplementary groups
kept, initgroups also sets the primary group), on faked os calls."""

from __future__ import annotations

import unittest
from types import SimpleNamespace
from typing import Any
from unittest import mock

from test_worker import W

NOBODY = SimpleNamespace(pw_uid=65534, pw_name="nobody")
NOGROUP = SimpleNamespace(gr_gid=65534)


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list = []

    def prctl(self, *args: Any) -> int:
        self.calls.append(args)
        return 0


def switch(env: dict, fail: Any = None) -> list:
    """Run set_owner_process as a root process with `env`; return the os calls."""
    calls: list = []

    def record(name: str) -> Any:
        def call(*args: Any) -> None:
            calls.append((name, *args))
            if fail == name:
                raise PermissionError(1, "Operation not permitted")

        return call

    def getpwnam(name: str) -> Any:
        if name != "nobody":
            raise KeyError(name)
        return NOBODY

    def getgrnam(name: str) -> Any:
        if name != "nogroup":
            raise KeyError(name)
        return NOGROUP

    def getpwuid(uid: int) -> Any:
        if uid != 65534:
            raise KeyError(uid)
        return NOBODY

    patches = [mock.patch(f"os.{name}", record(name)) for name in ("setuid", "setgid", "setgroups", "initgroups")]
    patches += [mock.patch(f"os.{name}", lambda: 0) for name in ("getuid", "getgid", "geteuid", "getegid")]
    patches += [
        mock.patch("os.getgroups", lambda: []),
        mock.patch("os.getppid", lambda: 1),
        mock.patch("pwd.getpwnam", getpwnam),
        mock.patch("pwd.getpwuid", getpwuid),
        mock.patch("grp.getgrnam", getgrnam),
    ]
    for patch in patches:
        patch.start()
    try:
        W.set_owner_process(env, 1, FakeLibc())
    finally:
        for patch in reversed(patches):
            patch.stop()
    return calls


class SetOwnerProcess(unittest.TestCase):
    def test_nothing_given_changes_nothing(self) -> None:
        self.assertEqual(switch({}), [])

    def test_user_alone_keeps_the_masters_group_and_drops_its_supplementary_groups(self) -> None:
        calls = switch({"FERROCORN_WORKER_USER": "nobody"})
        self.assertEqual(calls, [("setgroups", []), ("setuid", 65534)])

    def test_numbers_are_ids(self) -> None:
        calls = switch({"FERROCORN_WORKER_USER": "65534", "FERROCORN_WORKER_GROUP": "65534"})
        self.assertEqual(calls, [("setgroups", []), ("setgid", 65534), ("setuid", 65534)])

    def test_initgroups_sets_the_users_groups_and_the_primary_group(self) -> None:
        env = {"FERROCORN_WORKER_USER": "nobody", "FERROCORN_WORKER_GROUP": "nogroup", "FERROCORN_WORKER_INITGROUPS": "1"}
        calls = switch(env)
        self.assertEqual(calls, [("initgroups", "nobody", 65534), ("setgid", 65534), ("setuid", 65534)])

    def test_zero_ids_change_nothing_as_in_gunicorn(self) -> None:
        self.assertEqual(switch({"FERROCORN_WORKER_USER": "0", "FERROCORN_WORKER_GROUP": "0"}), [])

    def test_group_alone_sets_only_the_group(self) -> None:
        self.assertEqual(switch({"FERROCORN_WORKER_GROUP": "nogroup"}), [("setgid", 65534)])

    def test_unknown_names_and_refusals_are_config_boot_errors(self) -> None:
        for env in ({"FERROCORN_WORKER_USER": "ghost"}, {"FERROCORN_WORKER_GROUP": "ghosts"}):
            with self.assertRaises(W.BootError) as caught:
                switch(env)
            self.assertTrue(caught.exception.config)
            self.assertIn("no such", str(caught.exception))
        with self.assertRaises(W.BootError) as caught:
            switch({"FERROCORN_WORKER_USER": "nobody"}, fail="setuid")
        self.assertTrue(caught.exception.config)
        self.assertIn("need a master started as root", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
