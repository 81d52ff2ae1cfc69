"""Tests of the fork server in python/ferrocorn_worker.py, playing the master.

The test process makes itself a child subreaper, as the master does, so the
workers the fork server forks (through a middle process that exits at once)
become its children: it can check their ppid and reap their exit status.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from test_worker import APP_SOURCE, RING, TIMEOUT, WORKER_PATH, MasterBell, RingMaster, W, get, recv_frame

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def recv_message(sock: socket.socket) -> tuple[int, int, bytes]:
    data = sock.recv(64 * 1024)
    assert data, "the fork server closed its socket"
    length, kind, flags, reserved = W.HEADER.unpack_from(data)
    assert reserved == 0 and len(data) == W.HEADER_SIZE + length, data
    return kind, flags, data[W.HEADER_SIZE :]


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class ForkServerProcess:
    def __init__(self, app: str, app_dir: str, preload: bool) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.settimeout(TIMEOUT)
        env = dict(os.environ)
        env.update({
            "FERROCORN_FORKSERVER_CONTROL_FD": str(theirs.fileno()),
            "FERROCORN_FORKSERVER_PRELOAD": "1" if preload else "0",
            "FERROCORN_WORKER_APP": app,
            "FERROCORN_WORKER_MASTER_PID": str(os.getpid()),
            "FERROCORN_WORKER_PYTHONPATH": "",
            "FERROCORN_WORKER_LOG_LEVEL": "info",
            "FERROCORN_WORKER_COUNT": "2",
        })
        self.proc = subprocess.Popen(
            [sys.executable, "-", "ferrocorn-forkserver"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=[theirs.fileno()],
            env=env,
            cwd=app_dir,
        )
        self.proc.stdin.write(WORKER_PATH.read_bytes())
        self.proc.stdin.close()
        theirs.close()
        self.sockets: list = []
        self.hubs: list = []

    def send(self, kind: int, payload: bytes = b"", fds: tuple = ()) -> None:
        socket.send_fds(self.control, [W.frame(kind, 0, payload)], list(fds))

    def fork(self, worker: int, lanes: int = 1, ring_size: int = 0) -> tuple[int, dict, socket.socket, list]:
        """FORK one worker; return (reply kind, reply, worker control, lanes).

        With ring_size, ring lanes (RING-SPEC.md): the lanes returned are
        RingMasters; the descriptors are control, lane sockets, then the
        master bell and each lane's memfd and bell."""
        control, control_theirs = socket.socketpair()
        pairs = [socket.socketpair() for _ in range(lanes)]
        fds = [control_theirs.fileno()] + [theirs.fileno() for _, theirs in pairs]
        message = {"worker": worker, "lanes": lanes}
        masters: list = []
        if ring_size:
            hub = MasterBell()
            self.hubs.append(hub)
            masters = [RingMaster(ours, hub, ring_size) for ours, _ in pairs]
            fds.append(hub.fd)
            for m in masters:
                fds += [m.memfd, m.bell]
            message["ring_size"] = ring_size
        self.send(W.FORK, json.dumps(message).encode(), fds)
        control_theirs.close()
        for _, theirs in pairs:
            theirs.close()
        kind, _, payload = recv_message(self.control)
        control.settimeout(TIMEOUT)
        ours = masters or [o for o, _ in pairs]
        for lane in ours:
            lane.settimeout(TIMEOUT)
        self.sockets += [control] + ours
        return kind, json.loads(payload), control, ours

    def close(self) -> None:
        for sock in [self.control] + self.sockets:
            sock.close()
        for hub in self.hubs:
            hub.close()
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


def handshake(control: socket.socket) -> dict:
    """A forked worker's HELLO, then READY (its app is loaded); returns the HELLO."""
    kind, _, hello = recv_frame(control)
    assert kind == W.HELLO, (kind, hello)
    kind, _, payload = recv_frame(control)
    assert kind == W.READY, (kind, payload)
    return json.loads(hello)


def reap(pid: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    raise AssertionError(f"worker {pid} did not exit")


class ForkServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        become_subreaper()

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.app_dir = tmp.name
        Path(self.app_dir, "wapp.py").write_text(APP_SOURCE)

    def start(self, app: str = "wapp:app", preload: bool = True) -> ForkServerProcess:
        server = ForkServerProcess(app, self.app_dir, preload)
        self.addCleanup(server.close)
        return server

    def boot(self, server: ForkServerProcess) -> dict:
        kind, _, payload = recv_message(server.control)
        self.assertEqual(kind, W.HELLO)
        hello = json.loads(payload)
        kind, _, payload = recv_message(server.control)
        self.assertEqual(kind, W.READY, payload)
        return hello

    def test_forked_worker_is_our_child_serves_and_exits_cleanly(self) -> None:
        server = self.start()
        hello = self.boot(server)
        self.assertEqual((hello["pid"], hello["preload"]), (server.proc.pid, True))
        self.assertEqual((hello["protocol"], hello["max_payload"]), (W.PROTOCOL_VERSION, W.MAX_PAYLOAD))
        kind, reply, control, lanes = server.fork(3, lanes=2)
        self.assertEqual(kind, W.FORKED, reply)
        pid = reply["pid"]
        self.assertEqual((reply["worker"], ppid_of(pid)), (3, os.getpid()))
        self.assertEqual(handshake(control)["pid"], pid)
        for lane in lanes:
            self.assertEqual(get(lane, path="/x").body, b"/x %d" % pid)
        with open(f"/proc/{pid}/comm") as comm:
            self.assertEqual(comm.read().strip(), "fc-worker")
        control.close()
        self.assertEqual(reap(pid), 0)
        # The fork server serves on: a second worker.
        kind, reply, control, lanes = server.fork(4)
        self.assertEqual(kind, W.FORKED)
        handshake(control)
        control.close()
        self.assertEqual(reap(reply["pid"]), 0)

    def test_without_preload_the_worker_imports_after_the_fork(self) -> None:
        server = self.start(app="nosuchmod:app", preload=False)
        self.assertFalse(self.boot(server)["preload"])
        kind, reply, control, _ = server.fork(5)
        self.assertEqual(kind, W.FORKED)
        self.assertEqual(recv_frame(control)[0], W.HELLO)
        kind, flags, payload = recv_frame(control)
        self.assertEqual((kind, flags), (W.BOOT_FAILED, W.APP_LOAD))
        self.assertIn("no module named nosuchmod", payload.decode())
        self.assertEqual(reap(reply["pid"]), 4)

    def test_a_preload_that_cannot_import_is_an_app_load_failure(self) -> None:
        server = self.start(app="nosuchmod:app")
        self.assertEqual(recv_message(server.control)[0], W.HELLO)
        kind, flags, payload = recv_message(server.control)
        self.assertEqual((kind, flags), (W.BOOT_FAILED, W.APP_LOAD))
        self.assertIn("Traceback", payload.decode())
        self.assertEqual(server.proc.wait(TIMEOUT), 4)

    def test_a_bad_fork_request_is_refused_and_the_server_goes_on(self) -> None:
        server = self.start()
        self.boot(server)
        a, b = socket.socketpair()
        server.send(W.FORK, json.dumps({"worker": 9, "lanes": 2}).encode(), [a.fileno()])
        a.close()
        kind, _, payload = recv_message(server.control)
        self.assertEqual(kind, W.FORK_FAILED)
        self.assertIn("1 descriptors for 2 lanes", json.loads(payload)["error"])
        # Its copy of the descriptor is closed: our end sees EOF.
        b.settimeout(TIMEOUT)
        self.assertEqual(b.recv(1), b"")
        b.close()
        kind, reply, control, _ = server.fork(10)
        self.assertEqual(kind, W.FORKED)
        handshake(control)
        control.close()
        self.assertEqual(reap(reply["pid"]), 0)

    def test_a_forked_worker_on_ring_lanes(self) -> None:
        server = self.start()
        self.boot(server)
        kind, reply, control, lanes = server.fork(12, lanes=2, ring_size=RING)
        self.assertEqual(kind, W.FORKED, reply)
        pid = reply["pid"]
        hello = handshake(control)
        self.assertEqual((hello["pid"], hello["transport"], hello["lanes"]), (pid, "ring", 2))
        for _ in range(3):
            for lane in lanes:
                self.assertEqual(get(lane, path="/r").body, b"/r %d" % pid)
        self.assertEqual(lanes[1].q[16], lanes[1].q[24])  # the responses went through the ring
        control.close()
        self.assertEqual(reap(pid), 0)
        # A socket worker next: no ring variables leak into it.
        kind, reply, control, lanes = server.fork(13)
        self.assertEqual(handshake(control)["transport"], "socket")
        self.assertEqual(get(lanes[0], path="/s").body, b"/s %d" % reply["pid"])
        control.close()
        self.assertEqual(reap(reply["pid"]), 0)

    def test_ring_descriptors_are_counted(self) -> None:
        server = self.start()
        self.boot(server)
        a, b = socket.socketpair()
        server.send(W.FORK, json.dumps({"worker": 14, "lanes": 1, "ring_size": RING}).encode(), [a.fileno(), b.fileno()])
        a.close()
        b.close()
        kind, _, payload = recv_message(server.control)
        self.assertEqual(kind, W.FORK_FAILED)
        self.assertIn("2 descriptors for 1 lanes with ring_size 65536", json.loads(payload)["error"])

    def test_eof_stops_the_fork_server_but_not_its_workers(self) -> None:
        server = self.start()
        self.boot(server)
        _, reply, control, lanes = server.fork(11)
        handshake(control)
        server.control.close()
        self.assertEqual(server.proc.wait(TIMEOUT), 0)
        self.assertEqual(get(lanes[0], path="/still").body, b"/still %d" % reply["pid"])
        control.close()
        self.assertEqual(reap(reply["pid"]), 0)


if __name__ == "__main__":
    unittest.main()
