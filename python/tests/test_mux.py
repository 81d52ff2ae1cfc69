"""Tests of the worker's multiplexed lanes (Mux, MuxLane: -k gevent), playing
the master over a real socketpair. gevent is not needed: the same code runs on
real threads, and gevent's monkey-patching only makes those threads greenlets.

    python3 -m unittest discover -s python/tests -v
"""

from __future__ import annotations

import socket
import threading
import unittest

from test_worker import TIMEOUT, W, H, recv_exact, request_head


def mux_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return H.pack(len(payload), kind, flags, stream) + payload


def read_mux_frame(sock: socket.socket) -> tuple[int, int, int, bytes]:
    """(kind, flags, stream, payload) of the next frame from the worker."""
    length, kind, flags, stream = H.unpack(recv_exact(sock, 8))
    return kind, flags, stream, recv_exact(sock, length)


class MuxHarness(unittest.TestCase):
    STREAMS = 4

    def setUp(self) -> None:
        self.master, worker_end = socket.socketpair()
        self.master.settimeout(TIMEOUT)
        self.mux = W.Mux(worker_end, self.STREAMS)
        self.reader = threading.Thread(target=self.mux.run, daemon=True)
        self.reader.start()

    def tearDown(self) -> None:
        self.master.close()
        self.reader.join(TIMEOUT)
        self.mux.close()

    def credit(self, stream: int, n: int) -> None:
        self.master.sendall(mux_frame(W.CREDIT, 0, stream, W.CANCEL_NUMBER.pack(n)))


class MuxTest(MuxHarness):
    def test_frames_reach_the_lane_they_name(self) -> None:
        self.master.sendall(mux_frame(W.BODY, W.END, 3, b"three") + mux_frame(W.BODY, 0, 1, b"one"))
        self.assertEqual(self.mux.lanes[3].read_frame(), (W.BODY, W.END, b"three"))
        self.assertEqual(self.mux.lanes[1].read_frame(), (W.BODY, 0, b"one"))
        self.assertFalse(self.mux.lanes[0].frames)

    def test_sends_are_stamped_with_the_lane(self) -> None:
        lane = self.mux.lanes[2]
        lane.send_body(b"hello", W.END, head=W.frame(W.RESPONSE, 0, b"200 OK"))
        self.assertEqual(read_mux_frame(self.master), (W.RESPONSE, 0, 2, b"200 OK"))
        self.assertEqual(read_mux_frame(self.master), (W.BODY, W.END, 2, b"hello"))

    def test_a_body_past_the_window_waits_for_credit_and_other_lanes_go_on(self) -> None:
        lane = self.mux.lanes[0]
        body = bytes(range(256)) * (W.MUX_WINDOW // 256) * 2  # two windows
        sender = threading.Thread(target=lane.send_body, args=(body, W.END))
        sender.start()
        got = b""
        while len(got) < W.MUX_WINDOW:
            kind, _, stream, payload = read_mux_frame(self.master)
            self.assertEqual((kind, stream), (W.BODY, 0))
            got += payload
        sender.join(0.2)
        self.assertTrue(sender.is_alive(), "a lane past its window must wait")
        self.mux.lanes[1].send(W.frame(W.BODY, W.END, b"x"))
        self.assertEqual(read_mux_frame(self.master), (W.BODY, W.END, 1, b"x"))
        self.credit(0, len(got) + 8)
        while len(got) < len(body):
            kind, flags, stream, payload = read_mux_frame(self.master)
            got += payload
        sender.join(TIMEOUT)
        self.assertEqual(got, body)
        self.assertEqual(flags, W.END)

    def test_what_a_lane_reads_is_given_back(self) -> None:
        lane = self.mux.lanes[1]
        chunk = b"z" * 65536
        read = 0
        while read < W.MUX_CREDIT_AT:
            self.master.sendall(mux_frame(W.BODY, 0, 1, chunk))
            self.assertEqual(lane.read_frame()[2], chunk)
            read += 8 + len(chunk)
        kind, _, stream, payload = read_mux_frame(self.master)
        self.assertEqual((kind, stream, W.CANCEL_NUMBER.unpack(payload)[0]), (W.CREDIT, 1, read))

    def test_cancelled_finds_its_cancel_among_the_queued_frames(self) -> None:
        lane = self.mux.lanes[0]
        lane.number = 1
        self.master.sendall(mux_frame(W.CANCEL, W.ODD, 0, W.CANCEL_NUMBER.pack(1)))
        for _ in range(100):
            if lane.frames:
                break
            threading.Event().wait(0.01)
        self.assertTrue(lane.cancelled())
        self.assertFalse(lane.frames, "a CANCEL at the front is consumed")
        self.assertFalse(lane.cancelled())

    def test_eof_closes_every_lane(self) -> None:
        self.master.sendall(mux_frame(W.BODY, 0, 2, b"last"))
        self.master.shutdown(socket.SHUT_WR)
        self.assertEqual(self.mux.lanes[2].read_frame(), (W.BODY, 0, b"last"))
        for lane in self.mux.lanes:
            with self.assertRaises(W.LaneClosed):
                lane.read_frame()
            self.assertTrue(lane.cancelled())

    def test_a_frame_for_a_lane_that_does_not_exist_closes_them_all(self) -> None:
        with self.assertLogs(W.log, "ERROR") as logs:
            self.master.sendall(mux_frame(W.BODY, 0, self.STREAMS, b"?"))
            with self.assertRaises(W.LaneClosed):
                self.mux.lanes[0].read_frame()
        self.assertIn("stream=4", "\n".join(logs.output))

    def test_a_lane_is_started_on_its_first_frame_only(self) -> None:
        started = []
        seen = threading.Semaphore(0)
        self.mux.on_first_frame = lambda lane: (started.append(lane.index), seen.release())
        self.master.sendall(mux_frame(W.BODY, 0, 2, b"a") + mux_frame(W.BODY, 0, 2, b"b") + mux_frame(W.BODY, 0, 0, b"c"))
        self.assertEqual(self.mux.lanes[0].read_frame()[2], b"c")
        self.assertTrue(seen.acquire(timeout=TIMEOUT) and seen.acquire(timeout=TIMEOUT))
        self.assertEqual(started, [2, 0])

    def test_shutdown_read_ends_one_lane_after_its_queue(self) -> None:
        lane = self.mux.lanes[3]
        self.master.sendall(mux_frame(W.BODY, 0, 3, b"queued"))
        self.assertEqual(lane.read_frame()[2], b"queued")
        lane.shutdown_read()
        with self.assertRaises(W.LaneClosed):
            lane.read_frame()
        self.mux.lanes[0].send(W.frame(W.BODY, 0, b"still"))
        self.assertEqual(read_mux_frame(self.master)[2:], (0, b"still"))


class MuxServeTest(MuxHarness):
    """LaneServer, unchanged, on MuxLanes: requests on two lanes at once."""

    def test_two_lanes_serve_at_once_each_answering_on_its_own(self) -> None:
        release = threading.Event()
        started = threading.Semaphore(0)

        def app(environ: dict, start_response):
            body = environ["wsgi.input"].read()
            started.release()
            if environ["PATH_INFO"] == "/slow":
                release.wait(TIMEOUT)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [environ["PATH_INFO"].encode(), body]

        base = W.base_environ(self.STREAMS, 1)
        stopping = [False]
        for index in (0, 1):
            server = W.LaneServer(self.mux.lanes[index], app, base, stopping)
            threading.Thread(target=server.run, daemon=True).start()
        self.master.sendall(mux_frame(W.REQUEST, W.HAS_BODY, 0, request_head("POST", "/slow", content_length=4)))
        self.master.sendall(mux_frame(W.BODY, W.END, 0, b"slow"))
        self.assertTrue(started.acquire(timeout=TIMEOUT))
        self.master.sendall(mux_frame(W.REQUEST, 0, 1, request_head("GET", "/fast")))
        kind, _, stream, head = read_mux_frame(self.master)
        self.assertEqual((kind, stream), (W.RESPONSE, 1), "the fast lane answers while the slow one waits")
        self.assertTrue(head.startswith(b"200 OK"))
        body = b""
        while True:
            kind, flags, stream, payload = read_mux_frame(self.master)
            self.assertEqual((kind, stream), (W.BODY, 1))
            body += payload
            if flags & W.END:
                break
        self.assertEqual(body, b"/fast")
        release.set()
        kind, _, stream, _ = read_mux_frame(self.master)
        self.assertEqual((kind, stream), (W.RESPONSE, 0))
        body = b""
        while True:
            kind, flags, stream, payload = read_mux_frame(self.master)
            body += payload
            if flags & W.END:
                break
        self.assertEqual(body, b"/slowslow")


if __name__ == "__main__":
    unittest.main()
