"""ferrocorn worker: runs one WSGI app and serves the requests its master sends.

The Rust master starts ``PYTHON -c BOOTSTRAP ferrocorn-forkserver`` and feeds
this file on stdin (BOOTSTRAP compiles it as ``ferrocorn_worker.py``; ``PYTHON -
ferrocorn-forkserver`` runs it too): the fork server (the end of this file) gets
ready up to the fork (with ``--preload`` the app imported) and forks a worker
whenever the master asks. If the fork server cannot run, the master starts a
worker directly as ``... ferrocorn-worker <id>``. Everything else comes from the FERROCORN_*
environment. This file owns the Python half of docs/protocol.md (the spec, read
it first): the handshakes on the control sockets, one thread per lane, the
environ, wsgi.input, start_response and the response frames (over the lane
sockets, or with FERROCORN_WORKER_RING_SIZE over ring lanes: RING-SPEC.md,
``RingLane``), and gunicorn's
server hooks from FERROCORN_HOOKS_FROM (docs/hooks.md). It does not speak
HTTP and has no policy: the master decides when a worker is started, retired,
killed or replaced.

Standard library only, Python 3.9+. The per-request path (``LaneServer.run``)
is the hot spot of the whole server: keep it to a few C-level calls.
"""

from __future__ import annotations

import ast
import collections
import difflib
import faulthandler
import gc
import importlib
import io
import json
import logging
import mmap
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from itertools import chain
from typing import Any, Callable, Iterable, Optional

PROTOCOL_VERSION = 3
MAX_PAYLOAD = 16 * 1024 * 1024

HELLO = 1
READY = 2
BOOT_FAILED = 3
REOPEN_LOG = 4
FORK = 5
FORKED = 6
FORK_FAILED = 7
DUMP_STACKS = 8
WHEN_READY = 9
CHILD_EXIT = 10
NWORKERS_CHANGED = 11
ON_RELOAD = 12
ON_EXIT = 13
PRE_EXEC = 14
REQUEST = 16
BODY = 17
CANCEL = 18
RESPONSE = 32
ERROR = 33
CREDIT = 19  # both ways, multiplexed lanes only: bytes given back (u64)

HAS_BODY = 0x01  # REQUEST
# REQUEST and CANCEL: the parity of the request's number on its lane. The
# master still sets it; the worker goes by CANCEL's payload (CANCEL_NUMBER).
ODD = 0x02
END = 0x01  # BODY
APP_LOAD = 0x01  # BOOT_FAILED
CONFIG = 0x02  # BOOT_FAILED: the hooks config or a hook, not the app (exit 3)

EXIT_OK = 0
EXIT_BOOT = 3
EXIT_APP_LOAD = 4
# --reload saw a file change (Rust: worker::EXIT_RELOAD): a reload, not a crash.
EXIT_RELOAD = 5

HEADER = struct.Struct("<IBBH")
HEADER_SIZE = HEADER.size
# A CANCEL's payload: the number of the request it cancels (1 for a lane's
# first REQUEST, 2 for the next, ...). Up to 7 requests may wait behind the
# running one, so the number, not a parity, says whose a CANCEL is.
CANCEL_NUMBER = struct.Struct("<Q")
CANCEL_SIZE = HEADER_SIZE + CANCEL_NUMBER.size
_unpack_number = CANCEL_NUMBER.unpack_from
# (kind << 8 | flags) of every frame a master may send on a lane.
_LANE_FRAMES = frozenset(
    (
        REQUEST << 8,
        REQUEST << 8 | HAS_BODY,
        REQUEST << 8 | ODD,
        REQUEST << 8 | HAS_BODY | ODD,
        BODY << 8,
        BODY << 8 | END,
        CANCEL << 8,
        CANCEL << 8 | ODD,
    )
)
RECV_SIZE = 64 * 1024
# Below this a frame header and its payload are joined into one sendall.
JOIN_LIMIT = 64 * 1024
FILE_BLOCK = 256 * 1024
# The largest BODY payload the worker sends (docs/protocol.md, Frames): the
# master holds a few frames per response, so a big chunk is cut into these and
# the lane socket's buffer makes the worker wait for a slow client (issue 10,
# item 12: with 16 MiB frames the master held 64 MiB per slow client).
BODY_FRAME = 256 * 1024  # the master's MAX_BODY_PAYLOAD: larger BODY frames are a protocol error
ERROR_TEXT_LIMIT = 4096

# A response head: status "NNN reason", then NUL name NUL value pairs. Names are
# RFC 9110 tokens; values and the reason may hold tab and obs-text but no other
# control character. One C-level fullmatch validates the whole head.
_HEAD_RE = re.compile(
    r"[0-9]{3}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?"
    r"(?:\x00[!#$%&'*+\-.^_`|~0-9A-Za-z]+\x00[^\x00-\x08\x0a-\x1f\x7f]*)*"
)
# Every Content-Length value of a validated head; each must be digits with
# optional blanks around them (no sign, no list), and all must agree.
_CONTENT_LENGTH_RE = re.compile(r"\x00content-length\x00([^\x00]*)", re.I)
_DIGITS_RE = re.compile(r"[ \t]*([0-9]+)[ \t]*")

log = logging.getLogger("ferrocorn.worker")


class ProtocolError(Exception):
    """The master sent a frame that breaks docs/protocol.md."""


class LaneClosed(Exception):
    """The lane reached EOF or could not be written: the master is gone or dropped it."""


class ClientDisconnected(OSError):
    """Raised by wsgi.input when the master sends CANCEL (the client left)."""


def cancel_number(payload: bytes, read: int) -> int:
    """The request number a CANCEL payload names; ProtocolError unless it is
    8 bytes and at most read (the number of REQUESTs read on the lane)."""
    if len(payload) != CANCEL_NUMBER.size:
        raise ProtocolError(f"CANCEL payload of {len(payload)} bytes, not {CANCEL_NUMBER.size}")
    number = _unpack_number(payload)[0]
    if number > read:
        raise ProtocolError(f"CANCEL for request {number}, but only {read} REQUESTs were read")
    return number


def frame(kind: int, flags: int, payload: bytes = b"") -> bytes:
    """One encoded frame; payload must be at most MAX_PAYLOAD bytes."""
    return HEADER.pack(len(payload), kind, flags, 0) + payload


# --------------------------------------------------------------------------- lane


class _LaneEnds:
    """What the kinds of lane do alike, over their own send, send_parts and socket."""

    __slots__ = ()

    def send_body(self, data: bytes, flags: int = 0, head: bytes = b"") -> None:
        """One chunk as BODY frames of at most BODY_FRAME bytes; flags go on the last one.

        head (a RESPONSE frame, or empty) goes out before it in the same write.
        A small chunk is joined with its headers into one sendall; a larger one
        goes out as memoryview slices (no copy), each written with its frame
        header by one send_parts. Each write blocks while the lane is full (its
        socket, or a multiplexed lane's window), so a slow client holds back
        the worker, not the master's memory.
        """
        n = len(data)
        if n <= JOIN_LIMIT:
            self.send(b"".join((head, HEADER.pack(n, BODY, flags, 0), data)))
            return
        view = memoryview(data)
        pack = HEADER.pack
        for off in range(0, n, BODY_FRAME):
            part = view[off : off + BODY_FRAME]
            last = off + BODY_FRAME >= n
            self.send_parts((head, pack(len(part), BODY, flags if last else 0, 0), part))
            head = b""

    def send_error(self, text: str) -> None:
        data = text.encode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
        self.send(HEADER.pack(len(data), ERROR, 0, 0) + data)

    def shutdown_read(self) -> None:
        """Make a blocked or future read see EOF once what is queued (in the
        socket's buffer, or in the ring) is read."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


class Lane(_LaneEnds):
    """One lane socket: a buffered frame reader plus the send side."""

    __slots__ = ("index", "sock", "buf", "pos", "eof", "broken", "busy", "number", "_recv", "_poll", "sendall", "sendmsg")

    def __init__(self, index: int, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.index = index
        self.sock = sock
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.broken = False
        # The running request's number: the REQUEST frames read so far. A
        # CANCEL with a lower number is stale (its request is over).
        self.number = 0
        # Held while a request is in flight; stop() takes it to wait for idleness.
        self.busy = threading.Lock()
        self._recv = sock.recv
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        self._poll = poller.poll
        self.sendall = sock.sendall
        self.sendmsg = sock.sendmsg

    def read_frame(self) -> tuple[int, int, bytes]:
        """Block until one whole frame is read; return (kind, flags, payload)."""
        buf = self.buf
        pos = self.pos
        if len(buf) - pos < HEADER_SIZE:
            buf = self._fill()
            pos = 0
        length, kind, flags, reserved = HEADER.unpack_from(buf, pos)
        if (kind << 8 | flags) not in _LANE_FRAMES or reserved or length > MAX_PAYLOAD:
            raise ProtocolError(
                f"bad frame from master: kind={kind} flags={flags:#x} reserved={reserved} length={length}"
            )
        start = pos + HEADER_SIZE
        end = start + length
        if end <= len(buf):
            self.pos = end
            return kind, flags, buf[start:end]
        return kind, flags, self._read_rest(buf, start, length)

    def _fill(self) -> bytes:
        buf = self.buf[self.pos :]
        recv = self._recv
        wait = self._poll
        while len(buf) < HEADER_SIZE:
            # Wait in poll(POLLIN), not in a blocking recv(): a thread asleep in
            # recv() on a Unix socket is also woken, for nothing, each time the
            # master reads our last response (the kernel signals write space on
            # the same wait queue); poll() filters those wakeups out. That saves
            # a sleep and a wakeup per request for one extra syscall.
            wait()
            data = recv(RECV_SIZE)
            if not data:
                self.eof = True
                raise LaneClosed("lane closed by the master")
            buf = buf + data if buf else data
        self.buf = buf
        self.pos = 0
        return buf

    def _read_rest(self, buf: bytes, start: int, length: int) -> bytes:
        # A payload larger than what is buffered: read exactly the rest, so a
        # big body frame costs one allocation and never reads into the next frame.
        parts = [buf[start:]]
        have = len(parts[0])
        recv = self._recv
        while have < length:
            data = recv(length - have, socket.MSG_WAITALL)
            if not data:
                self.eof = True
                raise LaneClosed("lane closed by the master in the middle of a frame")
            parts.append(data)
            have += len(data)
        self.buf = b""
        self.pos = 0
        return b"".join(parts)

    def cancelled(self) -> bool:
        """Without blocking: True if the master cancelled the running request or the lane hit EOF.

        The CANCEL may sit behind frames that stay buffered: the rest of this
        request's body (for wsgi.input) or the next request, already waiting
        in the lane. A CANCEL at the front is consumed; one further back is
        left to be skipped as stale once this request is over.
        """
        if self.eof:
            return True
        if self._poll(0):
            data = self._recv(RECV_SIZE)
            if not data:
                self.eof = True
                return True
            self.buf = self.buf[self.pos :] + data if self.pos < len(self.buf) else data
            self.pos = 0
        buf = self.buf
        pos = front = self.pos
        end = len(buf)
        number = self.number
        later = number  # the numbers of the REQUESTs read or passed so far
        while pos + HEADER_SIZE <= end:
            length, kind, flags, _ = HEADER.unpack_from(buf, pos)
            if kind == CANCEL:
                if length != CANCEL_NUMBER.size:
                    raise ProtocolError(f"CANCEL payload of {length} bytes, not {CANCEL_NUMBER.size}")
                if pos + CANCEL_SIZE > end:
                    break  # its number is not here yet
                if cancel_number(buf[pos + HEADER_SIZE : pos + CANCEL_SIZE], later) == number:
                    if pos == front:
                        self.pos = pos + CANCEL_SIZE
                    return True
            elif kind == REQUEST:
                later += 1
            pos += HEADER_SIZE + length
        return False

    def send(self, data: bytes) -> None:
        """sendall, turning a dead master into LaneClosed."""
        try:
            self.sendall(data)
        except OSError as exc:
            self.broken = True
            raise LaneClosed(f"lane write failed: {exc}") from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send_parts(self, parts: tuple) -> None:
        """The parts in one sendmsg (a gather write), finishing a short write with sendall."""
        try:
            sent = self.sendmsg(parts)
            if sent < sum(map(len, parts)):  # only when a signal cut the write short
                for part in parts:
                    if sent >= len(part):
                        sent -= len(part)
                        continue
                    self.sendall(memoryview(part)[sent:])
                    sent = 0
        except OSError as exc:
            self.broken = True
            raise LaneClosed(f"lane write failed: {exc}") from None



# --------------------------------------------------------------------------- ring lanes

# RING-SPEC.md: a lane's frames through two byte rings in a shared memfd
# instead of the lane socket. The control page's words, as Q indices.
RING_PAGE = 4096
R_REQ_TAIL = 0  # master
R_REQ_HEAD = 8  # worker
R_RESP_TAIL = 16  # worker
R_RESP_HEAD = 24  # master
R_W_DATA_SLEEP = 32  # worker: odd = asleep waiting for request bytes
R_W_SPACE_SLEEP = 40  # worker: odd = asleep waiting for response-ring space
R_M_DATA_SLEEP = 48  # master: odd = asleep, ring its bell after RESP_TAIL
R_M_SPACE_SLEEP = 56  # master: odd = waits for request-ring space, ring after REQ_HEAD
R_W_LOST = 64  # worker: wake-ups by timeout that found work
RING_DEFAULT = 262144
RING_MIN = 65536
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
_unpack_header = HEADER.unpack_from
BELL = (1).to_bytes(8, "little")
# The first sleep is short: it covers a doorbell lost while the sleep word
# was not yet visible to the master; after it no wake-up can be lost.
FIRST_SLEEP_MS = 2
LONG_SLEEP_MS = 1000


class RingLane(_LaneEnds):
    """One lane over its two rings (RING-SPEC.md), with Lane's interface.

    The lane socket carries no bytes: it is polled only for EOF (the master
    closed it, or our own shutdown_read). A request already in the ring and a
    response that fits cost no system call: the doorbells are rung only when
    the master's sleep word says it sleeps.
    """

    __slots__ = (
        "index", "sock", "eof", "hup", "broken", "busy", "number", "mm", "q", "ring", "mask", "rbase", "resp",
        "head", "tail", "bell", "master_bell", "drop", "rung", "last_mdata", "last_mspace",
        "_release", "_acquire", "_poll", "_sock_poll", "_fence_lock",
    )

    def __init__(self, index: int, sock: socket.socket, memfd: int, bell: int, master_bell: int,
                 ring: int = RING_DEFAULT, drop_bell: int = 0) -> None:
        sock.setblocking(True)
        self.index = index
        self.sock = sock
        self.eof = False  # the lane is over: the socket said EOF and the ring is drained
        self.hup = False  # the socket said EOF (frames may still wait in the ring)
        self.broken = False
        self.number = 0  # as Lane.number
        self.busy = threading.Lock()
        try:
            mm = mmap.mmap(memfd, RING_PAGE + 2 * ring, flags=mmap.MAP_SHARED | MAP_POPULATE)
        finally:
            os.close(memfd)
        self.mm = mm
        self.q = memoryview(mm)[:RING_PAGE].cast("Q")
        self.ring = ring
        self.mask = ring - 1
        self.rbase = RING_PAGE + ring  # the response ring's first byte in mm
        self.resp = memoryview(mm)[RING_PAGE + ring : RING_PAGE + 2 * ring]
        self.head = self.q[R_REQ_HEAD]  # ours: REQ_HEAD as last stored
        self.tail = self.q[R_RESP_TAIL]  # ours: RESP_TAIL, ahead of the stored one while a write is unpublished
        self.bell = bell
        self.master_bell = master_bell
        self.drop = drop_bell  # FERROCORN_DROP_BELL: skip every Nth doorbell of this lane
        self.rung = 0
        self.last_mdata = self.last_mspace = 0  # even: never a sleep sequence
        lock = threading.Lock()  # the fence: private and uncontended, always held
        lock.acquire()
        self._fence_lock = lock
        self._release = lock.release
        self._acquire = lock.acquire
        poller = select.poll()
        poller.register(bell, select.POLLIN)
        poller.register(sock.fileno(), select.POLLIN)
        self._poll = poller.poll
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        self._sock_poll = poller.poll

    # -- the request ring

    def read_frame(self) -> tuple[int, int, bytes]:
        """Block until one whole frame is read; return (kind, flags, payload)."""
        # The hot path: literal word indices (R_*), no call but the copy-out,
        # the fence and the unpack. 0 = REQ_TAIL, 8 = REQ_HEAD, 56 = M_SPACE_SLEEP.
        q = self.q
        head = self.head
        ring = self.ring
        avail = q[0] - head
        if not 8 <= avail <= ring:
            avail = self._wait_data(HEADER_SIZE)
        off = head & self.mask
        mm = self.mm
        if off <= ring - 8:
            length, kind, flags, reserved = _unpack_header(mm, 4096 + off)
        else:
            length, kind, flags, reserved = HEADER.unpack(self._copy_out(head, HEADER_SIZE))
        if (kind << 8 | flags) not in _LANE_FRAMES or reserved or length > MAX_PAYLOAD:
            raise ProtocolError(
                f"bad frame from master: kind={kind} flags={flags:#x} reserved={reserved} length={length}"
            )
        end = 8 + length
        if avail < end:
            return kind, flags, self._read_rest(length)
        if off + end <= ring:
            payload = mm[4104 + off : 4104 + off + length]
        else:
            payload = self._copy_out(head + 8, length)
        # Copied out: now the master may overwrite it.
        head += end
        self.head = head
        q[8] = head
        self._release()
        self._acquire()
        s = q[56]
        if s & 1 and s != self.last_mspace:
            self.last_mspace = s
            self._ring_master()
        return kind, flags, payload

    def _copy_out(self, pos: int, n: int) -> bytes:
        """n bytes of the request stream from pos (n <= RING), joined across the end."""
        off = pos & self.mask
        mm = self.mm
        first = self.ring - off
        if n <= first:
            return mm[RING_PAGE + off : RING_PAGE + off + n]
        return mm[RING_PAGE + off : RING_PAGE + self.ring] + mm[RING_PAGE : RING_PAGE + n - first]

    def _consumed(self, head: int) -> None:
        """Store REQ_HEAD, then ring the master if it waits for space."""
        q = self.q
        self.head = head
        q[R_REQ_HEAD] = head
        self._release()
        self._acquire()
        s = q[R_M_SPACE_SLEEP]
        if s & 1 and s != self.last_mspace:
            self.last_mspace = s
            self._ring_master()

    def _read_rest(self, length: int) -> bytes:
        # A frame not yet whole in the ring (or larger than it): consume its
        # header, then copy the payload out piece by piece as the master
        # publishes it, freeing the space behind each piece.
        q = self.q
        pos = self.head + HEADER_SIZE
        self._consumed(pos)
        parts = []
        left = length
        while left:
            avail = q[R_REQ_TAIL] - pos
            if not 0 < avail <= self.ring:
                try:
                    avail = self._wait_data(1)
                except LaneClosed:
                    raise LaneClosed("lane closed by the master in the middle of a frame") from None
            take = avail if avail < left else left
            parts.append(self._copy_out(pos, take))
            pos += take
            left -= take
            self._consumed(pos)
        return b"".join(parts)

    def _wait_data(self, need: int) -> int:
        """Sleep until the request ring holds at least need bytes; return how many it holds.

        LaneClosed once the lane socket said EOF and what the ring holds is
        not enough (the ring is always drained first)."""
        q = self.q
        ring = self.ring

        def ready() -> bool:
            avail = q[R_REQ_TAIL] - self.head
            if avail > ring or avail < 0:
                raise ProtocolError(f"request ring indices out of range: tail - head = {avail}")
            return avail >= need

        self._sleep(R_W_DATA_SLEEP, ready)
        return q[R_REQ_TAIL] - self.head

    def _sleep(self, word: int, ready: Callable[[], bool]) -> None:
        """RING-SPEC.md's sleep procedure on one of our sleep words; LaneClosed at EOF."""
        q = self.q
        if ready():
            return
        if self.hup:
            self.eof = True
            raise LaneClosed("lane closed by the master")
        seq = q[word] | 1
        if seq == q[word]:
            seq += 2  # never left odd, but be safe: a new sequence
        q[word] = seq
        self._release()
        self._acquire()
        try:
            if ready():
                return
            timeout = FIRST_SLEEP_MS
            bell = self.bell
            poll = self._poll
            while True:
                events = poll(timeout)
                if not events:
                    if ready():
                        q[R_W_LOST] += 1
                        return
                    timeout = LONG_SLEEP_MS
                    continue
                for fd, _ in events:
                    if fd == bell:
                        try:
                            os.read(bell, 8)
                        except BlockingIOError:
                            pass
                    else:
                        self._check_eof()
                if ready():
                    return
                if self.hup:
                    self.eof = True
                    raise LaneClosed("lane closed by the master")
                # Woken with nothing to do (a doorbell for bytes we took
                # before we slept): the master rings once per sleep word,
                # so sleep anew under a new one, or its next doorbell would
                # never come.
                seq += 2
                q[word] = seq
                self._release()
                self._acquire()
                if ready():
                    return
                timeout = FIRST_SLEEP_MS
        finally:
            q[word] = seq + 1

    def _check_eof(self) -> None:
        """The lane socket is readable: EOF, or bytes the master must not send."""
        try:
            data = self.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            raise ProtocolError("bytes on the lane socket of a ring lane")
        self.hup = True

    def cancelled(self) -> bool:
        """Without blocking: True if the master cancelled the running request or the lane hit EOF.

        As Lane.cancelled: the frames the ring holds are scanned from the
        head; a CANCEL at the front is consumed, one further back is left."""
        if self.eof:
            return True
        q = self.q
        front = pos = self.head
        tail = q[R_REQ_TAIL]
        if 0 <= tail - pos <= self.ring:
            number = self.number
            later = number  # the numbers of the REQUESTs read or passed so far
            mask = self.mask
            lim = self.ring - HEADER_SIZE  # == ring - 8: a header or a number fits before the end
            mm = self.mm
            while tail - pos >= HEADER_SIZE:
                off = pos & mask
                if off <= lim:
                    length, kind, flags, _ = HEADER.unpack_from(mm, RING_PAGE + off)
                else:
                    length, kind, flags, _ = HEADER.unpack(self._copy_out(pos, HEADER_SIZE))
                if kind == CANCEL:
                    if length != CANCEL_NUMBER.size:
                        raise ProtocolError(f"CANCEL payload of {length} bytes, not {CANCEL_NUMBER.size}")
                    if tail - pos < CANCEL_SIZE:
                        break  # its number is not published yet
                    # The number may wrap the ring end.
                    cancel = self._copy_out(pos + HEADER_SIZE, CANCEL_NUMBER.size)
                    if cancel_number(cancel, later) == number:
                        if pos == front:
                            self._consumed(pos + CANCEL_SIZE)
                        return True
                elif kind == REQUEST:
                    later += 1
                pos += HEADER_SIZE + length
        if not self.hup and self._sock_poll(0):
            self._check_eof()
        if self.hup and q[R_REQ_TAIL] == self.head:
            self.eof = True  # as a socket lane: EOF once what the master sent is read
        return self.eof

    # -- the response ring

    def sendall(self, data: Any) -> None:
        """Copy data into the response ring and publish it (waits for space as it goes)."""
        # The hot path: 16 = RESP_TAIL, 24 = RESP_HEAD, 48 = M_DATA_SLEEP.
        n = len(data)
        tail = self.tail
        q = self.q
        ring = self.ring
        if 0 <= tail - q[24] <= ring - n:
            off = tail & self.mask
            if off + n <= ring:
                off += self.rbase
                self.mm[off : off + n] = data
            else:
                first = ring - off
                view = memoryview(data)
                self.resp[off:] = view[:first]
                self.resp[: n - first] = view[first:]
            tail += n
            self.tail = tail
            q[16] = tail
            self._release()
            self._acquire()
            s = q[48]
            if s & 1 and s != self.last_mdata:
                self.last_mdata = s
                self._ring_master()
            return
        self._put(data)
        self._publish()

    send = sendall

    def _put(self, data: Any) -> None:
        """Copy data into the ring as space allows, unpublished until the ring is full."""
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        q = self.q
        ring = self.ring
        mask = self.mask
        resp = self.resp
        n = len(view)
        done = 0
        while done < n:
            tail = self.tail
            free = ring - (tail - q[R_RESP_HEAD])
            if free <= 0 or free > ring:
                self._wait_space()
                continue
            take = n - done
            if take > free:
                take = free
            off = tail & mask
            if off + take > ring:
                take = ring - off
            resp[off : off + take] = view[done : done + take]
            done += take
            self.tail = tail + take

    def _publish(self) -> None:
        """Store RESP_TAIL, then ring the master if it sleeps."""
        q = self.q
        q[R_RESP_TAIL] = self.tail
        self._release()
        self._acquire()
        s = q[R_M_DATA_SLEEP]
        if s & 1 and s != self.last_mdata:
            self.last_mdata = s
            self._ring_master()

    def _wait_space(self) -> None:
        """Publish what is written, then sleep until the master frees some space."""
        self._publish()
        q = self.q
        ring = self.ring

        def ready() -> bool:
            used = self.tail - q[R_RESP_HEAD]
            if used < 0 or used > ring:
                raise ProtocolError(f"response ring indices out of range: tail - head = {used}")
            return used < ring

        try:
            self._sleep(R_W_SPACE_SLEEP, ready)
        except LaneClosed:
            self.broken = True
            raise LaneClosed("lane closed by the master while the worker waited for space") from None
        except ProtocolError:
            self.broken = True
            raise

    def _ring_master(self) -> None:
        if self.drop:
            self.rung += 1
            if self.rung % self.drop == 0:
                return  # FERROCORN_DROP_BELL: this one is lost
        try:
            os.write(self.master_bell, BELL)
        except OSError:
            pass  # a full (or gone) eventfd: the master wakes anyway, or the lane's EOF says it is gone

    def send_body(self, data: bytes, flags: int = 0, head: bytes = b"") -> None:
        """As Lane.send_body: BODY frames of at most BODY_FRAME bytes, flags on the last one."""
        n = len(data)
        pack = HEADER.pack
        if n <= JOIN_LIMIT:
            self.sendall(b"".join((head, pack(n, BODY, flags, 0), data)))
            return
        put = self._put
        if head:
            put(head)
        view = memoryview(data)
        for off in range(0, n, BODY_FRAME):
            part = view[off : off + BODY_FRAME]
            put(pack(len(part), BODY, flags if off + BODY_FRAME >= n else 0, 0))
            put(part)
        self._publish()

    def send_parts(self, parts: tuple) -> None:
        """The parts one after the other, published once (as space allows)."""
        put = self._put
        for part in parts:
            if len(part):
                put(part)
        self._publish()


    def close(self) -> None:
        """The socket, the bell and the mapping (the master bell is shared: kept)."""
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.close(self.bell)
        except OSError:
            pass


# --------------------------------------------------------------------------- wsgi.input


# --------------------------------------------------------------------------- multiplexed lanes

# docs/protocol.md, "Multiplexed lanes": a gevent worker's lanes are streams
# of one socket; each frame names its stream in the header's reserved field.
# Each direction of each stream may have MUX_WINDOW bytes outstanding; a
# sender starts a frame only while its window is open, and the receiver gives
# consumed bytes back in CREDIT frames, MUX_WINDOW // 2 at a time.
MUX_WINDOW = 256 * 1024
MUX_CREDIT_AT = MUX_WINDOW // 2
MUX_MAX_STREAMS = 1 << 16
_pack_stream = struct.Struct("<H").pack_into


class Mux:
    """One socket carrying many lanes: a reader that hands each frame to its
    lane, and a lock so that each lane's frames go out whole.

    Built for gevent (the caller has monkey-patched): the reader is a
    greenlet, waiting lanes wait on events, and a lane blocked on its window
    blocks only its own greenlet."""

    def __init__(self, sock: socket.socket, streams: int) -> None:
        if not 1 <= streams <= MUX_MAX_STREAMS:
            raise ValueError(f"a multiplexed socket carries 1 to {MUX_MAX_STREAMS} lanes, not {streams}")
        sock.setblocking(True)
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False
        self.lanes = [MuxLane(index, self) for index in range(streams)]
        # Called (in the reader) with a lane that gets its first frame.
        self.on_first_frame: Optional[Callable[[Any], None]] = None

    def send(self, data: Any) -> None:
        """Write whole frames, never interleaved with another lane's."""
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self.closed = True
                raise LaneClosed(f"lane write failed: {exc}") from None

    def run(self) -> None:
        """Hand every frame from the master to its lane, until EOF."""
        lanes = self.lanes
        recv = self.sock.recv
        unpack = _unpack_header
        buf = bytearray()
        try:
            while True:
                data = recv(RECV_SIZE)
                if not data:
                    break
                buf += data
                pos = 0
                end = len(buf)
                view = memoryview(buf)
                while end - pos >= HEADER_SIZE:
                    length, kind, flags, stream = unpack(buf, pos)
                    if length > MAX_PAYLOAD or stream >= len(lanes):
                        raise ProtocolError(f"bad frame from master: kind={kind} stream={stream} length={length}")
                    stop = pos + HEADER_SIZE + length
                    if stop > end:
                        break
                    payload = bytes(view[pos + HEADER_SIZE : stop])
                    lane = lanes[stream]
                    if kind == CREDIT:
                        if length != CANCEL_NUMBER.size:
                            raise ProtocolError(f"CREDIT payload of {length} bytes, not {CANCEL_NUMBER.size}")
                        lane.window += _unpack_number(payload)[0]
                        lane.writable.set()
                    else:
                        lane.frames.append((kind, flags, payload))
                        lane.readable.set()
                        if not lane.started:
                            lane.started = True
                            if self.on_first_frame is not None:
                                self.on_first_frame(lane)
                    pos = stop
                view.release()
                del buf[:pos]
        except ProtocolError as exc:
            log.error("multiplexed lanes: %s; closing them all", exc)
        except OSError as exc:
            log.debug("multiplexed lanes: read failed: %s", exc)
        finally:
            self.closed = True
            for lane in lanes:
                lane.readable.set()
                lane.writable.set()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class MuxLane(_LaneEnds):
    """One stream of a Mux, with Lane's interface."""

    __slots__ = ("index", "mux", "frames", "readable", "writable", "window", "taken", "eof", "closed", "broken",
                 "busy", "number", "sendall", "started")

    def __init__(self, index: int, mux: Mux) -> None:
        self.index = index
        self.mux = mux
        self.frames: collections.deque = collections.deque()
        self.readable = threading.Event()
        self.writable = threading.Event()
        self.window = MUX_WINDOW  # bytes we may still send
        self.taken = 0  # bytes read since the last CREDIT
        self.eof = False
        self.closed = False  # shutdown_read: no more requests for this lane
        self.broken = False
        self.number = 0
        self.busy = threading.Lock()
        self.sendall = self.send
        self.started = False  # a greenlet serves it (Mux.on_first_frame)

    def read_frame(self) -> tuple[int, int, bytes]:
        frames = self.frames
        while not frames:
            if self.closed or self.mux.closed:
                self.eof = True
                raise LaneClosed("lane closed by the master")
            self.readable.clear()
            if not frames and not self.closed and not self.mux.closed:
                self.readable.wait()
        kind, flags, payload = frames.popleft()
        if (kind << 8 | flags) not in _LANE_FRAMES:
            raise ProtocolError(f"bad frame from master: kind={kind} flags={flags:#x} length={len(payload)}")
        self._took(HEADER_SIZE + len(payload))
        return kind, flags, payload

    def _took(self, n: int) -> None:
        self.taken += n
        if self.taken >= MUX_CREDIT_AT:
            given, self.taken = self.taken, 0
            self.mux.send(HEADER.pack(CANCEL_NUMBER.size, CREDIT, 0, self.index) + CANCEL_NUMBER.pack(given))

    def cancelled(self) -> bool:
        """Without blocking: True if the master cancelled the running request
        or the lanes are gone (as Lane.cancelled, over the queued frames)."""
        if self.mux.closed:
            return True
        number = self.number
        later = number
        for position, (kind, _, payload) in enumerate(self.frames):
            if kind == CANCEL:
                if cancel_number(payload, later) == number:
                    if position == 0:
                        self.frames.popleft()
                        self._took(CANCEL_SIZE)
                    return True
            elif kind == REQUEST:
                later += 1
        return False

    def shutdown_read(self) -> None:
        self.closed = True
        self.readable.set()

    def send(self, data: Any) -> None:
        """Whole frames (of this lane, stream field 0) out, each started only
        in an open window; LaneClosed once the master is gone."""
        mux = self.mux
        if mux.closed:
            self.broken = True
            raise LaneClosed("lane closed by the master")
        buf = bytearray(data)
        n = len(buf)
        pos = 0
        index = self.index
        while pos < n:
            _pack_stream(buf, pos + 6, index)
            pos += HEADER_SIZE + _unpack_header(buf, pos)[0]
        if self.window >= n:  # the usual case: all at once
            self.window -= n
            self._send(buf)
            return
        view = memoryview(buf)
        pos = 0
        while pos < n:  # frame by frame, each in an open window
            stop = pos + HEADER_SIZE + _unpack_header(buf, pos)[0]
            self._wait_window()
            self.window -= stop - pos
            self._send(view[pos:stop])
            pos = stop

    def _send(self, data: Any) -> None:
        try:
            self.mux.send(data)
        except LaneClosed:
            self.broken = True
            raise

    def _wait_window(self) -> None:
        while self.window <= 0:
            if self.mux.closed:
                self.broken = True
                raise LaneClosed("lane closed by the master")
            self.writable.clear()
            if self.window <= 0 and not self.mux.closed:
                self.writable.wait()

    def send_parts(self, parts: tuple) -> None:
        self.send(b"".join(parts))

    def close(self) -> None:
        """The lane's greenlet is done; the socket stays for the others."""


class Input:
    """wsgi.input over the BODY frames of one request, read lazily from the lane."""

    __slots__ = ("_lane", "_buf", "_pos", "_done", "cancelled")

    def __init__(self, lane: Lane) -> None:
        self._lane = lane
        self._buf = b""
        self._pos = 0
        self._done = False
        self.cancelled = False

    def _next(self) -> bytes:
        """The next non-empty chunk of the body, b"" at its end."""
        if self.cancelled:
            raise ClientDisconnected("client disconnected")
        read_frame = self._lane.read_frame
        while not self._done:
            try:
                kind, flags, payload = read_frame()
            except LaneClosed:
                self._done = self.cancelled = True
                raise ClientDisconnected("client disconnected (lane closed)") from None
            if kind == BODY:
                if flags & END:
                    self._done = True
                if payload:
                    return payload
            elif kind == CANCEL:
                number = self._lane.number
                if cancel_number(payload, number) != number:
                    continue  # stale: for an earlier request, it crossed that one's END
                self._done = self.cancelled = True
                raise ClientDisconnected("client disconnected")
            else:
                raise ProtocolError(f"frame kind {kind} inside a request body")
        return b""

    def read(self, size: Optional[int] = -1) -> bytes:
        buf = self._buf
        pos = self._pos
        if size is None or size < 0:
            parts = [buf[pos:]]
            self._buf = b""
            self._pos = 0
            while not self._done:
                parts.append(self._next())
            return b"".join(parts)
        if len(buf) - pos >= size:
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = [buf[pos:]]
        have = len(parts[0])
        self._buf = b""
        self._pos = 0
        while have < size and not self._done:
            chunk = self._next()
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if have > size:
            self._buf = data
            self._pos = size
            return data[:size]
        return data

    def readline(self, size: Optional[int] = -1) -> bytes:
        if size is None or size < 0:
            size = sys.maxsize
        parts: list[bytes] = []
        while True:
            buf = self._buf
            pos = self._pos
            i = buf.find(b"\n", pos, pos + size)
            if i >= 0:
                end = i + 1
            elif len(buf) - pos >= size:
                end = pos + size
            elif self._done:
                end = len(buf)
            else:
                if pos < len(buf):
                    parts.append(buf[pos:])
                    size -= len(buf) - pos
                self._buf = b""
                self._pos = 0
                self._buf = self._next()
                continue
            self._pos = end
            if parts:
                parts.append(buf[pos:end])
                return b"".join(parts)
            return buf[pos:end]

    def readlines(self, hint: Optional[int] = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Discard the unread rest of the body, up to END or CANCEL."""
        self._buf = b""
        self._pos = 0
        try:
            while not self._done:
                self._next()
        except ClientDisconnected:
            pass


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks, closes it once."""

    def __init__(self, filelike: Any, blksize: int = FILE_BLOCK) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


# --------------------------------------------------------------------------- response


class AppError(Exception):
    """The app broke the WSGI contract (bad status, headers or body chunk)."""


# Validated heads: joined text -> (RESPONSE frame, Content-Length or None,
# status forbids a body). Most apps answer with a few distinct heads, so a
# dict hit replaces the validation regex and the encoding. Bounded by clearing.
_HEADS: dict = {}
_HEADS_MAX = 512
_NO_BODY_CODES = frozenset(["204", "304"] + [str(c) for c in range(100, 200)])


def encode_head(status: Any, headers: Any) -> tuple[bytes, Optional[int], bool]:
    """Validate the head and return (RESPONSE frame, Content-Length, no body); AppError if invalid."""
    if status is None:
        raise AppError("app returned without calling start_response()")
    try:
        flat = [status]
        flat.extend(chain.from_iterable(headers))
        text: Optional[str] = "\0".join(flat)
    except TypeError:
        text = None
    entry = _HEADS.get(text) if text is not None else None
    if entry is not None:
        return entry
    try:
        ok = (
            text is not None
            and all(item.__class__ is tuple and len(item) == 2 for item in headers)
            and _HEAD_RE.fullmatch(text) is not None
        )
        payload = text.encode("latin-1") if ok else b""  # type: ignore[union-attr]
    except (TypeError, UnicodeEncodeError):
        ok = False
    if not ok:
        raise AppError(f"invalid status or headers from app: status={status!r} headers={headers!r}")
    content_length = None
    for value in _CONTENT_LENGTH_RE.findall(text):  # type: ignore[arg-type]
        m = _DIGITS_RE.fullmatch(value)
        if m is None or (content_length is not None and int(m.group(1)) != content_length):
            raise AppError(f"invalid Content-Length from app: headers={headers!r} (one number of bytes, digits only)")
        content_length = int(m.group(1))
    entry = (
        HEADER.pack(len(payload), RESPONSE, 0, 0) + payload,
        content_length,
        status[:3] in _NO_BODY_CODES,
    )
    if len(_HEADS) >= _HEADS_MAX:
        _HEADS.clear()
    _HEADS[text] = entry
    return entry


def with_header(head: bytes, name: str, value: str) -> bytes:
    """The RESPONSE frame head with one more header (only on rare paths: it copies)."""
    payload = b"".join((head[HEADER_SIZE:], b"\0", name.encode("latin-1"), b"\0", value.encode("latin-1")))
    return HEADER.pack(len(payload), RESPONSE, 0, 0) + payload


def as_bytes(chunk: Any) -> bytes:
    """A body chunk as bytes; str and other non-bytes-like types are app errors."""
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise AppError(f"app body chunk must be bytes, got {type(chunk).__name__}")


class LaneServer:
    """Serves one lane: REQUEST in, app call, RESPONSE + BODY frames out."""

    def __init__(
        self,
        lane: Lane,
        app: Callable,
        base_environ: dict,
        stopping: list,
        hooks: Optional[Hooks] = None,
        hook_worker: Optional[HookWorker] = None,
    ) -> None:
        self.lane = lane
        self.app = app
        self.base = base_environ
        self.stopping = stopping
        self.debug = log.isEnabledFor(logging.DEBUG)
        self.hooks = hooks or Hooks()
        self.hook_worker = hook_worker
        self.served = 0  # requests started on this lane (worker.nr for the hooks)
        self.sent = 0  # body bytes sent for the running request (resp.sent)
        # Per-request state, reset by run() for each request.
        self.status: Optional[str] = None
        self.headers: Any = None
        self.head_sent = False
        self.no_body = False
        self.is_head = False
        self.left = -1  # what Content-Length still allows after write() (-1: no limit)
        self.input: Optional[Input] = None
        # The running request and since when, for the stack dump after a
        # timeout (DUMP_STACKS): which lane ran what, for how long.
        self.environ: Optional[dict] = None
        self.since = 0.0
        self.sendall = lane.sendall
        self.start_response = self._start_response  # bind once, not per request
        self.write = self._write

    # -- the WSGI callables

    def _start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def _write(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if data.__class__ is not bytes:
            data = as_bytes(data)
        if not data:
            return
        if not self.head_sent:
            head, content_length, no_body = encode_head(self.status, self.headers)
            self.no_body = no_body or self.is_head
            if content_length is None:
                head = self._unframed(head)
            else:
                self.left = content_length
            self._send_head(head, self._allowed(data))
        elif not self.no_body:
            data = self._allowed(data)
            if data:
                self.lane.send_body(data)
                self.sent += len(data)

    # -- sending

    def _send_head(self, head: bytes, first: bytes) -> None:
        """RESPONSE + BODY(first), not the end: more chunks follow."""
        self.head_sent = True
        lane = self.lane
        if self.no_body:
            lane.send(head)
        else:
            lane.send_body(first, 0, head)
            self.sent += len(first)

    def _send_result(self, result: Iterable[bytes]) -> bool:
        """Send the app iterable; return False if the client left (CANCEL) midway.

        One chunk (a list/tuple, or an iterable whose first chunk reaches the
        declared Content-Length, as Flask's) goes out in one sendall:
        RESPONSE + BODY(END). Anything else streams chunk by chunk.

        Content-Length (issue 10, item 8): the worker refuses an invalid one
        (encode_head: an app error, logged here with its request, 500 before
        anything is sent), never sends more body than it allows, and says
        Connection: close when it cut a whole body short of what the app gave
        (the app meant another message). It does not pad a body that is
        shorter: the master, which frames the client's response, closes the
        client connection after it. Both checks run once per distinct head
        (the head cache) or once per response, never per byte.
        """
        cls = result.__class__
        if cls is list or cls is tuple:
            body = result[0] if len(result) == 1 else b"".join(result)  # type: ignore[index,arg-type]
            it = None
        else:
            body = b""
            it = iter(result)
            for body in it:
                if body:
                    break
            else:
                it = None
        if body.__class__ is not bytes:
            body = as_bytes(body)
        if self.head_sent:  # the app used write()
            return self._send_rest(self._allowed(body), it, self.left)
        head, content_length, no_body = encode_head(self.status, self.headers)
        if no_body or self.is_head:
            self.no_body = True
            body = b""
        elif content_length is not None and len(body) >= content_length:
            if len(body) > content_length:
                self._mismatch(f"is longer than its Content-Length ({len(body)} > {content_length} bytes): cut, and the connection is closed after it")
                body = body[:content_length]  # PEP 3333: never more than Content-Length
                head = with_header(head, "Connection", "close")
        elif it is not None:
            if content_length is None:
                head = self._unframed(head)
            self._send_head(head, body)  # the first chunk must not wait for the next one
            return self._send_rest(b"", it, -1 if content_length is None else content_length - len(body))
        elif content_length is None:
            if self.environ and self.environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
                # The whole body is here: an HTTP/1.0 client can keep the connection.
                head = with_header(head, "Content-Length", str(len(body)))
        else:
            self._mismatch(f"is shorter than its Content-Length ({len(body)} < {content_length} bytes): the connection is closed after it")
        self.head_sent = True
        self.sent = len(body)
        if len(body) <= JOIN_LIMIT:
            try:
                self.sendall(b"".join((head, HEADER.pack(len(body), BODY, END, 0), body)))
            except OSError as exc:
                self.lane.broken = True
                raise LaneClosed(f"lane write failed: {exc}") from None
        else:
            self.lane.send_body(body, END, head)
        return True

    def _unframed(self, head: bytes) -> bytes:
        """The head of a body streamed without Content-Length.

        HTTP/1.0 has no chunked coding, so such a body ends when the connection
        closes: say so (gunicorn does), since the master, where it builds the
        client's response, does not see the request's version.
        """
        if self.environ and self.environ.get("SERVER_PROTOCOL") == "HTTP/1.0" and not self.no_body:
            return with_header(head, "Connection", "close")
        return head

    def _allowed(self, data: bytes) -> bytes:
        """What Content-Length still allows of a write() chunk."""
        left = self.left
        if left < 0 or self.no_body:
            return data
        if len(data) > left:
            if left == 0:
                return b""  # said once, when the cut was made
            self._mismatch("is longer than its Content-Length: cut")
            data = data[:left]
        self.left = left - len(data)
        return data

    def _mismatch(self, what: str) -> None:
        environ = self.environ or {}
        log.warning(
            "%s %s: the app's body %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI") or environ.get("PATH_INFO"),
            what,
        )

    def _send_rest(self, first: bytes, it: Optional[Iterable[bytes]], left: int) -> bool:
        """After the head: first, then each chunk of it as it is produced, then END.

        left is what Content-Length still allows (-1: no limit). Between chunks,
        look (without blocking) for a CANCEL from the master.
        """
        lane = self.lane
        no_body = self.no_body
        if first and not no_body:
            lane.send_body(first)
            self.sent += len(first)
        if it is not None:
            inp = self.input
            for chunk in it:
                if lane.cancelled() or (inp is not None and inp.cancelled):
                    return False
                if chunk.__class__ is not bytes:
                    chunk = as_bytes(chunk)
                if not chunk or no_body:
                    continue
                if left >= 0:
                    if len(chunk) >= left:
                        if len(chunk) > left:
                            self._mismatch("is longer than its Content-Length: cut")
                        lane.send_body(chunk[:left])
                        self.sent += left
                        left = 0
                        break
                    left -= len(chunk)
                lane.send_body(chunk)
                self.sent += len(chunk)
        if left > 0 and not no_body:
            self._mismatch(f"is shorter than its Content-Length ({left} bytes missing): the connection is closed after it")
        lane.send(HEADER.pack(0, BODY, END, 0))
        return True

    # -- the loop

    def run(self) -> None:
        """Serve requests until the lane closes or the worker stops."""
        lane = self.lane
        read_frame = lane.read_frame
        base_copy = self.base.copy
        app = self.app
        start_response = self.start_response
        stopping = self.stopping
        busy = lane.busy
        debug = self.debug
        new_empty_input = io.BytesIO
        monotonic = time.monotonic
        # Looked up once: without these hooks a request costs nothing more.
        hooks = self.hooks
        hooked = hooks.pre_request is not None or hooks.post_request is not None
        while True:
            try:
                kind, flags, payload = read_frame()
            except LaneClosed:
                return
            except ProtocolError as exc:
                log.error("lane %d: %s; dropping the lane", lane.index, exc)
                return
            if kind != REQUEST:
                if kind == CANCEL:
                    try:
                        cancel_number(payload, lane.number)
                    except ProtocolError as exc:
                        log.error("lane %d: %s; dropping the lane", lane.index, exc)
                        return
                    continue  # stale: it crossed our END, the request is already over
                log.error("lane %d: frame kind %d while waiting for a request; dropping the lane", lane.index, kind)
                return
            lane.number += 1
            with busy:
                fields = payload.decode("latin-1").split("\0")
                if len(fields) & 1:
                    log.error("lane %d: request head has an odd number of fields; dropping the lane", lane.index)
                    return
                environ = base_copy()
                pairs = iter(fields)
                environ.update(zip(pairs, pairs))
                if flags & HAS_BODY:
                    inp: Optional[Input] = Input(lane)
                    environ["wsgi.input"] = inp
                else:
                    inp = None
                    environ["wsgi.input"] = new_empty_input()
                self.input = inp
                self.environ = environ
                self.since = monotonic()
                self.status = self.headers = None
                self.head_sent = self.no_body = False
                self.left = -1
                self.is_head = environ.get("REQUEST_METHOD") == "HEAD"
                self.served += 1
                self.sent = 0
                ended = False
                result = None
                if hooked:
                    req = HookRequest(environ)
                    hooks.call("pre_request", self.hook_worker, req)
                try:
                    result = app(environ, start_response)
                    try:
                        ended = self._send_result(result)
                    finally:
                        close = getattr(result, "close", None)
                        if close is not None:
                            close()
                    if not ended:  # cancelled mid-stream: close() ran, now END
                        lane.send(HEADER.pack(0, BODY, END, 0))
                        ended = True
                except LaneClosed:
                    return
                except ProtocolError as exc:
                    log.error("lane %d: %s; dropping the lane", lane.index, exc)
                    return
                except BaseException as exc:  # noqa: B036 - an app must never kill its worker
                    ended = self._fail(exc, environ, ended)
                    if ended is None:
                        return
                if hooked:
                    resp = HookResponse(self.status, self.headers, self.sent)
                    hooks.call("post_request", self.hook_worker, req, environ, resp)
                if debug:
                    log.debug(
                        "lane %d: %s %s -> %s",
                        lane.index,
                        environ.get("REQUEST_METHOD"),
                        environ.get("RAW_URI"),
                        self.status,
                    )
                if inp is not None and not inp._done:
                    try:
                        inp.drain()
                    except (LaneClosed, ProtocolError):
                        return
                self.input = None
            if stopping[0] or lane.eof:  # stopping: [bool] shared with Worker.stop()
                return

    def _fail(self, exc: BaseException, environ: dict, ended: bool) -> Optional[bool]:
        """Log an app failure and send ERROR unless the response is over; None if the lane died."""
        method = environ.get("REQUEST_METHOD")
        target = environ.get("RAW_URI") or environ.get("PATH_INFO")
        if isinstance(exc, ClientDisconnected) and self.input is not None and self.input.cancelled:
            # The client left while the app read its body: not an app bug.
            log.debug("client disconnected during %s %s", method, target)
        else:
            log.error(
                "error handling %s %s (%s the response head was sent)",
                method,
                target,
                "after" if self.head_sent else "before",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        if self.lane.broken:
            return None
        if ended:
            return True
        try:
            self.lane.send_error(f"app raised {type(exc).__name__}: {exc}")
        except LaneClosed:
            return None
        return True


# --------------------------------------------------------------------------- boot


class BootError(Exception):
    """The worker could not start (exit 3), or with app_load the app failed (exit 4)."""

    def __init__(
        self, message: str, app_load: bool = False, cause: Optional[BaseException] = None, config: bool = False
    ) -> None:
        super().__init__(message)
        self.app_load = app_load
        self.cause = cause
        self.config = config  # the hooks config or a hook failed (BOOT_FAILED with CONFIG)

    @property
    def flags(self) -> int:
        """The BOOT_FAILED flags for this error."""
        return (APP_LOAD if self.app_load else 0) | (CONFIG if self.config else 0)

    def report(self) -> str:
        """The error line, then the traceback of its cause when there is one."""
        if self.cause is None:
            return str(self)
        tb = "".join(traceback.format_exception(type(self.cause), self.cause, self.cause.__traceback__))
        return f"{self}\n{tb}"


def import_app(spec: str) -> Callable:
    """Import ``module:attr`` or ``module:factory(literal args)``, as gunicorn's util.import_app."""
    module_name, sep, expr = spec.partition(":")
    if not sep:
        expr = "application"
    expr = expr.strip()

    def fail(msg: str, cause: Optional[BaseException] = None) -> BootError:
        return BootError(f'app "{spec}" {msg}', app_load=True, cause=cause)

    if not module_name:
        raise fail("is not valid: expected module:attr or module:factory(args)")
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise fail(f"is not valid: cannot parse {expr!r} as an attribute name or a call") from None
    if isinstance(node, ast.Name):
        name, args, kwargs = node.id, None, None
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise fail(f"is not valid: the arguments of {expr!r} must be literal values") from None
        if None in kwargs:
            raise fail(f"is not valid: the arguments of {expr!r} must be literal values")
    else:
        raise fail(f"is not valid: {expr!r} must be an attribute name or a call like factory(args)")

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            if module_name.endswith(".py"):
                hint = f"did you mean {module_name[:-3]}:{expr}?"
            else:
                hint = "check the module name, the working directory and --pythonpath"
            raise fail(f"not found: no module named {missing} ({hint})", exc) from None
        raise fail(f"failed to import: {exc}", exc) from None
    except BaseException as exc:
        raise fail(f"failed to import: {type(exc).__name__}: {exc}", exc) from None

    try:
        obj = getattr(module, name)
    except AttributeError:
        close = difflib.get_close_matches(name, [n for n in dir(module) if not n.startswith("__")], n=1)
        if close:
            hint = f" (did you mean {close[0]}?)"
        elif not sep:
            hint = f" (no attribute was given, so {name} was used: name it as {module_name}:attr)"
        else:
            hint = ""
        raise fail(f"not found: module {module_name} has no attribute {name}{hint}") from None
    if args is not None:
        try:
            obj = obj(*args, **(kwargs or {}))
        except BaseException as exc:
            raise fail(f"failed: factory {name}() raised {type(exc).__name__}: {exc}", exc) from None
        if obj is None:
            raise fail(f"failed: factory {name}() returned None instead of a WSGI app")
    if not callable(obj):
        raise fail(f"is not callable: {name} is a {type(obj).__name__}, expected a WSGI app")
    return obj


def patch_for_gevent(env: Any) -> None:
    """-k gevent: gevent's monkey-patching, as gunicorn's gevent worker does
    it, before the app (and anything of the user's) is imported, so the app's
    sockets, sleeps and locks yield to the other greenlets. A BootError names
    the interpreter without gevent.

    With --preload the fork server patches before it imports the app and its
    workers inherit the patched modules; without, each forked worker patches
    itself right after the fork, the fork server never does."""
    if env.get("FERROCORN_WORKER_MODEL", "") != "gevent":
        return
    try:
        from gevent import monkey
    except ImportError as exc:
        raise BootError(
            f"worker class gevent needs the gevent package in the worker's Python ({sys.executable}): "
            f"{exc}; install it there (pip install gevent)"
        ) from None
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


class Config:
    """The FERROCORN_* environment (docs/protocol.md, "Processes and sockets")."""

    def __init__(self, env: dict) -> None:
        def need(key: str) -> str:
            value = env.get(key)
            if value is None or value == "":
                raise BootError(f"{key} is not set: start workers through the ferrocorn master")
            return value

        def number(key: str, text: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise BootError(f"{key}={text!r} is not a number") from None

        self.control_fd = number("FERROCORN_WORKER_CONTROL_FD", need("FERROCORN_WORKER_CONTROL_FD"))
        self.lane_fds = [number("FERROCORN_WORKER_LANE_FDS", f) for f in need("FERROCORN_WORKER_LANE_FDS").split(",")]
        self.app = need("FERROCORN_WORKER_APP")
        self.worker_id = env.get("FERROCORN_WORKER_ID", "?")
        master = env.get("FERROCORN_WORKER_MASTER_PID", "")
        self.master_pid = number("FERROCORN_WORKER_MASTER_PID", master) if master else None
        self.pythonpath = [p for p in env.get("FERROCORN_WORKER_PYTHONPATH", "").split(os.pathsep) if p]
        level = env.get("FERROCORN_WORKER_LOG_LEVEL", "info").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise BootError(f"FERROCORN_WORKER_LOG_LEVEL={level.lower()!r} is not one of debug, info, warning, error, critical")
        self.log_level = level
        self.workers = number("FERROCORN_WORKER_COUNT", env.get("FERROCORN_WORKER_COUNT", "1"))
        # Ring lanes (RING-SPEC.md): on iff FERROCORN_WORKER_RING_SIZE is set.
        self.ring_size = 0
        self.master_bell_fd = -1
        self.ring_fds: list = []  # (memfd, bell) per lane
        ring = env.get("FERROCORN_WORKER_RING_SIZE", "")
        if ring:
            size = number("FERROCORN_WORKER_RING_SIZE", ring)
            if size < RING_MIN or size & (size - 1):
                raise BootError(f"FERROCORN_WORKER_RING_SIZE={ring!r} is not a power of two >= {RING_MIN}")
            self.ring_size = size
            self.master_bell_fd = number("FERROCORN_WORKER_MASTER_BELL_FD", need("FERROCORN_WORKER_MASTER_BELL_FD"))
            pairs = need("FERROCORN_WORKER_RING_FDS").split(",")
            for pair in pairs:
                memfd, sep, bell = pair.partition(":")
                if not sep:
                    raise BootError(f"FERROCORN_WORKER_RING_FDS={env['FERROCORN_WORKER_RING_FDS']!r}: {pair!r} is not memfd:bell")
                self.ring_fds.append((number("FERROCORN_WORKER_RING_FDS", memfd), number("FERROCORN_WORKER_RING_FDS", bell)))
            if len(self.ring_fds) != len(self.lane_fds):
                raise BootError(
                    f"FERROCORN_WORKER_RING_FDS has {len(self.ring_fds)} memfd:bell pairs for "
                    f"{len(self.lane_fds)} lanes (FERROCORN_WORKER_LANE_FDS)"
                )
        # -k gevent: the lanes are streams of the one lane socket (Mux), as
        # many as --worker-connections.
        lanes = len(self.lane_fds)
        self.worker_class = env.get("FERROCORN_WORKER_MODEL", "") or ("sync" if lanes == 1 else "gthread")
        if self.worker_class not in ("sync", "gthread", "gevent"):
            raise BootError(f"FERROCORN_WORKER_MODEL={self.worker_class!r} is not one of sync, gthread, gevent")
        self.gevent = self.worker_class == "gevent"
        self.lane_count = lanes
        if self.gevent:
            if lanes != 1 or self.ring_size:
                raise BootError("a gevent worker gets one lane socket (FERROCORN_WORKER_LANE_FDS) and no rings")
            count = env.get("FERROCORN_WORKER_MUX_LANES", "")
            self.lane_count = number("FERROCORN_WORKER_MUX_LANES", count or "1000")
            if not 1 <= self.lane_count <= MUX_MAX_STREAMS:
                raise BootError(f"FERROCORN_WORKER_MUX_LANES={count!r} is not between 1 and {MUX_MAX_STREAMS}")
        elif lanes > 1:
            self.worker_class = "gthread"
        drop = env.get("FERROCORN_DROP_BELL", "")
        self.drop_bell = number("FERROCORN_DROP_BELL", drop) if drop else 0
        if self.drop_bell < 0:
            raise BootError(f"FERROCORN_DROP_BELL={drop!r} is negative (0 or absent: off)")
        self.env = env


def setup_logging(level: str) -> None:
    """Worker log lines to stderr in gunicorn's error-log format (glogging.py's
    error_fmt and datefmt), the same line the master writes; the app's own
    loggers are left alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(message)s", "[%Y-%m-%d %H:%M:%S %z]")
    )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def base_environ(lanes: int, workers: int) -> dict:
    """The wsgi.* constants every request environ starts from."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": lanes > 1,
        "wsgi.multiprocess": workers > 1,
        "wsgi.run_once": False,
        # Our wsgi.input always ends at the end of the body (END), with or
        # without CONTENT_LENGTH, so it is safe to read to EOF.
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "SCRIPT_NAME": "",
    }


# --------------------------------------------------------------------------- server hooks

# gunicorn's server hooks (docs/hooks.md says when each runs and with what).
# pre_exec runs in the fork server when USR2 starts a new master (PRE_EXEC).
HOOK_NAMES = (
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
)
# The logger hooks get as server.log and worker.log: a child of the worker's
# logger, so its lines go through the same gunicorn-format handler.
hook_log = logging.getLogger("ferrocorn.worker.hooks")


def _no_hook(*args: Any) -> None:
    return None


class Hooks:
    """The hook callables of the FERROCORN_HOOKS_FROM config; a hook it does
    not define is None, so callers test it once, not per call."""

    def __init__(self, namespace: Optional[dict] = None, source: str = "") -> None:
        self.source = source
        namespace = namespace or {}
        for name in HOOK_NAMES:
            value = namespace.get(name)
            setattr(self, name, value if callable(value) else None)

    def call(self, name: str, *args: Any) -> None:
        """Run one hook; an exception is logged with its traceback and swallowed."""
        hook = getattr(self, name)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("exception in %s hook", name)

    def call_strict(self, name: str, *args: Any) -> None:
        """Run a hook whose failure stops the process, as in gunicorn
        (on_starting, post_fork, post_worker_init): BootError, exit 3."""
        hook = getattr(self, name)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:
            raise BootError(f"{name} hook from {self.source} raised {type(exc).__name__}: {exc}", cause=exc, config=True) from None


def load_hooks(spec: str) -> Hooks:
    """Execute the config FERROCORN_HOOKS_FROM names (an absolute file path, or
    python:module) as gunicorn does and take its hooks; BootError (exit 3,
    not an app error) if it cannot run."""
    if not spec:
        return Hooks()
    try:
        if spec.startswith("python:"):
            namespace = vars(importlib.import_module(spec[len("python:") :]))
        else:
            if not os.path.isabs(spec):
                raise BootError(f"FERROCORN_HOOKS_FROM={spec!r} must be an absolute path or python:module", config=True)
            with open(spec, "rb") as f:
                source = f.read()
            namespace = {
                "__builtins__": __builtins__,
                "__name__": "__config__",
                "__file__": spec,
                "__doc__": None,
                "__package__": None,
            }
            exec(compile(source, spec, "exec"), namespace)
    except BootError:
        raise
    except BaseException as exc:
        raise BootError(f"hooks config {spec} failed to execute: {type(exc).__name__}: {exc}", cause=exc, config=True) from None
    return Hooks(namespace, spec)


class HookConfig:
    """`cfg` of the hooks' server and worker: the settings this process
    knows, plus each hook by name (a no-op when not defined), as gunicorn's cfg."""

    # The master-side settings FERROCORN_WORKER_SETTINGS carries (JSON, in
    # gunicorn's names and units); None when it is absent.
    MASTER_SETTINGS = (
        "bind",
        "backlog",
        "worker_class",
        "timeout",
        "graceful_timeout",
        "keepalive",
        "max_requests",
        "max_requests_jitter",
        "limit_request_line",
        "umask",
        "initgroups",
        "uid",
        "gid",
    )

    def __init__(self, env: Any, hooks: Hooks, threads: Optional[int]) -> None:
        try:
            master = json.loads(env.get("FERROCORN_WORKER_SETTINGS", "") or "{}")
        except ValueError:
            master = {}
        for name in self.MASTER_SETTINGS:
            setattr(self, name, master.get(name) if isinstance(master, dict) else None)
        workers = env.get("FERROCORN_WORKER_COUNT", "1")
        self.workers = int(workers) if workers.isdigit() else 1
        self.threads = threads
        if env.get("FERROCORN_WORKER_MODEL", "") == "gevent":
            # gunicorn's gevent worker ignores threads; its lanes are connections.
            self.worker_class = "gevent"
            self.worker_connections = threads
            self.threads = 1
        elif threads is not None:
            self.worker_class = "sync" if threads == 1 else "gthread"
        self.worker_class_str = self.worker_class
        self.preload_app = env.get("FERROCORN_FORKSERVER_PRELOAD", "") == "1"
        self.wsgi_app = env.get("FERROCORN_WORKER_APP", "")
        self.pythonpath = [p for p in env.get("FERROCORN_WORKER_PYTHONPATH", "").split(os.pathsep) if p]
        self.chdir = os.getcwd()
        self.loglevel = env.get("FERROCORN_WORKER_LOG_LEVEL", "info")
        self.proc_name = "ferrocorn"
        # gunicorn's cfg.user and cfg.group hold the validated ids, as cfg.uid and cfg.gid.
        self.user, self.group = self.uid, self.gid
        self.hooks_from = hooks.source
        for name in HOOK_NAMES:
            setattr(self, name, getattr(hooks, name) or _no_hook)


class HookServer:
    """`server` as the hooks get it (gunicorn passes its Arbiter)."""

    def __init__(self, cfg: HookConfig, master_pid: Optional[int]) -> None:
        self.pid = master_pid
        self.cfg = cfg
        self.log = hook_log
        self.num_workers = cfg.workers
        self.worker_class = cfg.worker_class
        self.proc_name = cfg.proc_name


class HookWorker:
    """`worker` as the hooks get it (gunicorn passes its Worker)."""

    def __init__(self, age: int, cfg: HookConfig, ppid: Optional[int], pid: Optional[int] = None) -> None:
        self.age = age
        self.pid = pid
        self.ppid = ppid
        self.cfg = cfg
        self.log = hook_log
        self.alive = True
        self.booted = False
        # gunicorn's: the limit, or sys.maxsize when off. The master enforces
        # it, with a jitter it draws per worker that the worker never hears of.
        self.max_requests = cfg.max_requests or sys.maxsize
        self.servers: list = []
        self.exit_status: Optional[str] = None

    @property
    def nr(self) -> int:
        """Requests this worker has started so far, on all its lanes."""
        return sum(server.served for server in self.servers)


def _worker_id(text: str) -> int:
    return int(text) if text.isdigit() else 0


class HookRequest:
    """`req` of pre_request and post_request, built from the request's environ."""

    __slots__ = ("method", "uri", "path", "query", "version", "headers", "remote_addr", "peer_addr", "scheme")

    def __init__(self, environ: dict) -> None:
        self.method = environ.get("REQUEST_METHOD")
        self.uri = environ.get("RAW_URI", "")
        path, _, query = self.uri.partition("?")
        self.path = path or environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", query)
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            major, minor = protocol[5:].split(".")
            self.version = (int(major), int(minor))
        except ValueError:
            self.version = (1, 1)
        headers = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-"), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                headers.append((key.replace("_", "-"), value))
        self.headers = headers
        port = environ.get("REMOTE_PORT", "")
        self.remote_addr = self.peer_addr = (environ.get("REMOTE_ADDR", ""), int(port) if port.isdigit() else 0)
        self.scheme = environ.get("wsgi.url_scheme", "http")


class HookResponse:
    """`resp` of post_request."""

    __slots__ = ("status", "status_code", "headers", "sent")

    def __init__(self, status: Optional[str], headers: Any, sent: int) -> None:
        self.status = status
        code = status[:3] if isinstance(status, str) else ""
        self.status_code = int(code) if code.isdigit() else None
        self.headers = list(headers) if headers else []
        self.sent = sent


# --------------------------------------------------------------------------- worker


class Worker:
    """The main thread: handshake, lane threads, control socket and signals."""

    def __init__(
        self,
        config: Config,
        control: socket.socket,
        hooks: Optional[Hooks] = None,
        hook_server: Optional[HookServer] = None,
    ) -> None:
        self.config = config
        self.control = control
        self.servers: list[LaneServer] = []
        self.use_hooks(hooks or Hooks(), hook_server)
        self.stopping = [False]  # read by every lane thread after each request
        self.lanes: list = []  # Lane, RingLane or MuxLane
        self.mux: Optional[Mux] = None  # -k gevent: the socket all lanes share
        self.threads: list[threading.Thread] = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_w.setblocking(False)

    def send_control(self, kind: int, flags: int = 0, payload: bytes = b"") -> None:
        self.control.sendall(frame(kind, flags, payload[:MAX_PAYLOAD]))

    def hello(self) -> None:
        config = self.config
        lanes = config.lane_count
        info = {
            "pid": os.getpid(),
            "protocol": PROTOCOL_VERSION,
            "python": "%d.%d.%d" % sys.version_info[:3],
            "worker_class": config.worker_class,
            "lanes": lanes,
            "max_payload": MAX_PAYLOAD,
            "transport": "mux" if config.gevent else "ring" if config.ring_size else "socket",
        }
        self.send_control(HELLO, 0, json.dumps(info).encode())

    def open_lanes(self) -> None:
        """The lanes, in ring mode their rings mapped (a BootError if they cannot be)."""
        config = self.config
        if self.lanes:
            return
        if config.gevent:
            fd = config.lane_fds[0]
            try:
                self.mux = Mux(socket.socket(fileno=fd), config.lane_count)
            except OSError as exc:
                raise BootError(f"FERROCORN_WORKER_LANE_FDS: the lane socket (fd {fd}) is not a socket: {exc}") from None
            self.lanes = self.mux.lanes
            return
        lanes = []
        for index, fd in enumerate(config.lane_fds):
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise BootError(f"FERROCORN_WORKER_LANE_FDS: lane {index} (fd {fd}) is not a socket: {exc}") from None
            if config.ring_size:
                memfd, bell = config.ring_fds[index]
                try:
                    lane: Any = RingLane(index, sock, memfd, bell, config.master_bell_fd, config.ring_size, config.drop_bell)
                except (OSError, ValueError) as exc:
                    raise BootError(f"FERROCORN_WORKER_RING_FDS: cannot map lane {index}'s ring (memfd {memfd}): {exc}") from None
            else:
                lane = Lane(index, sock)
            lanes.append(lane)
        self.lanes = lanes

    def serve(self, app: Callable) -> int:
        """Run the lane threads and wait for the end; return the exit status."""
        config = self.config
        base = base_environ(config.lane_count, config.workers)
        self.open_lanes()

        def start_lane(lane: Any) -> None:
            server = LaneServer(lane, app, base, self.stopping, self.hooks, self.hook_worker)
            thread = threading.Thread(target=self._lane_main, args=(server,), name=f"lane-{lane.index}")
            thread.daemon = True
            self.servers.append(server)
            self.threads.append(thread)
            thread.start()

        reader = None
        if self.mux is not None:
            # A greenlet per lane once the lane gets its first frame: the master
            # reuses the lanes it lent last, so a worker holds about as many as
            # ran at once, not --worker-connections of them (each a saved stack).
            self.mux.on_first_frame = start_lane
            reader = threading.Thread(target=self.mux.run, name="mux")
            reader.daemon = True
            reader.start()
        else:
            for lane in self.lanes:
                start_lane(lane)
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(self.wake_r.fileno(), select.POLLIN)
        control_fd = self.control.fileno()
        while True:
            if not any(t.is_alive() for t in self.threads) and not (reader is not None and reader.is_alive()):
                log.debug("all lanes closed, worker exiting")
                return EXIT_OK
            if config.master_pid is not None and os.getppid() != config.master_pid:
                log.warning("master %d is gone, worker exiting", config.master_pid)
                return EXIT_OK
            for fd, _ in poller.poll(1000):
                if fd == control_fd:
                    data, fds, _, _ = socket.recv_fds(self.control, 4096, 4)
                    if not data:
                        log.debug("control socket closed, stopping gracefully")
                        return self.stop()
                    self._on_control(data, fds)
                else:
                    wakes = self.wake_r.recv(4096)
                    if signal.SIGTERM in wakes:
                        log.debug("got SIGTERM, stopping gracefully")
                        return self.stop()

    def _on_control(self, data: bytes, fds: list) -> None:
        """A REOPEN_LOG frame carries the error log's new file (after USR1):
        it becomes this process's stderr, for the logger, tracebacks and
        faulthandler alike. Anything else from the master is ignored."""
        kinds = []
        pos = 0
        while pos + HEADER_SIZE <= len(data):
            length, kind, _, _ = HEADER.unpack_from(data, pos)
            kinds.append(kind)
            pos += HEADER_SIZE + length
        for fd in fds:
            if REOPEN_LOG in kinds:
                sys.stderr.flush()
                os.dup2(fd, 2)
                capture_output(os.environ)
                log.info("Error log reopened")
            os.close(fd)
        if DUMP_STACKS in kinds:
            self.dump_stacks()

    def dump_stacks(self) -> None:
        """A request timed out (the master told us): log what each busy lane
        runs, the longest-running first (the one that timed out), then every
        thread's stack, and serve on; the master aborts this worker once its
        other lanes are done."""
        now = time.monotonic()
        busy = sorted(
            ((now - s.since, s, t) for s, t in zip(self.servers, self.threads) if s.lane.busy.locked() and s.environ),
            key=lambda item: -item[0],
        )
        for rank, (age, server, thread) in enumerate(busy):
            environ = server.environ or {}
            log.error(
                "%s lane %d (thread 0x%016x) has run %s %s for %.1f s",
                # Not "WORKER TIMEOUT": that is the master's one line per timeout.
                "Timed out:" if rank == 0 else "Also busy:",
                server.lane.index,
                thread.ident or 0,
                environ.get("REQUEST_METHOD", "?"),
                environ.get("RAW_URI", environ.get("PATH_INFO", "?")),
                age,
            )
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        if self.mux is not None:
            # faulthandler sees the one OS thread; gevent knows every greenlet's stack.
            try:
                from gevent import util

                sys.stderr.write("".join(line + "\n" for line in util.format_run_info()))
            except Exception as exc:  # noqa: BLE001 - a stack dump must not stop the worker
                log.error("cannot list the greenlets' stacks: %s", exc)
            sys.stderr.flush()

    def _lane_main(self, server: LaneServer) -> None:
        try:
            server.run()
        except BaseException:
            log.exception("lane %d: unexpected failure; the lane is closed", server.lane.index)
        finally:
            server.lane.close()
            try:
                self.wake_w.send(b"\0")
            except OSError:
                pass

    def use_hooks(self, hooks: Hooks, hook_server: Optional[HookServer] = None) -> None:
        """The hooks and the server and worker objects they get. Forked, the
        server is the fork server's own object (hooks share state through it,
        as gunicorn's forked workers share the Arbiter)."""
        config = self.config
        self.hooks = hooks
        cfg = HookConfig(config.env, hooks, config.lane_count)
        self.hook_server = hook_server or HookServer(cfg, config.master_pid)
        self.hook_worker = HookWorker(_worker_id(config.worker_id), cfg, os.getppid(), os.getpid())
        self.hook_worker.servers = self.servers

    def exit_hooks(self, *names: str) -> None:
        """The worker is going: run these hooks (worker_int, worker_abort:
        with the worker) and then worker_exit (with the server and the worker)."""
        self.hook_worker.alive = False
        for name in names:
            self.hooks.call(name, self.hook_worker)
        self.hooks.call("worker_exit", self.hook_server, self.hook_worker)

    def stop(self) -> int:
        """Graceful stop: take no new request, let in-flight ones finish, exit 0."""
        self.stopping[0] = True
        self.hook_worker.alive = False
        for lane in self.lanes:
            with lane.busy:  # waits for the lane's request in flight
                lane.shutdown_read()
        for thread in self.threads:
            thread.join()
        # The master writes gunicorn's "Worker exiting (pid: N)" once it has
        # reaped this process, so the line is there even for a worker that dies.
        log.debug("worker stopped")
        return EXIT_OK


def install_signals(wake_fd: int, worker: Optional[Worker] = None) -> None:
    """TERM only wakes the main loop (set_wakeup_fd); INT and QUIT exit at once
    (after the worker_int and worker_exit hooks, if any)."""

    def quick_exit(signum: int, frame: Any) -> None:
        if worker is not None and (worker.hooks.worker_int is not None or worker.hooks.worker_exit is not None):
            worker.exit_hooks("worker_int")
            sys.stderr.flush()
        os._exit(EXIT_OK)

    signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, quick_exit)
    signal.signal(signal.SIGQUIT, quick_exit)


def install_abort_hook(worker: Worker) -> None:
    """ABRT (a timeout) stays with faulthandler, which dumps every stack from C
    even while a stuck thread holds the GIL; only a config with worker_abort
    gets a Python handler instead: it dumps the stacks, runs worker_abort and
    worker_exit, then dies by ABRT as before. It runs when the main thread
    gets the GIL, which a thread stuck in C code may never release."""
    if worker.hooks.worker_abort is None:
        return

    def abort(signum: int, frame: Any) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        worker.exit_hooks("worker_abort")
        sys.stderr.flush()
        faulthandler.disable()
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.abort()

    signal.signal(signal.SIGABRT, abort)


def main(
    env: Optional[dict] = None,
    preloaded: Optional[Callable] = None,
    hooks: Optional[Hooks] = None,
    hook_server: Optional[HookServer] = None,
) -> int:
    """Boot the worker and serve; return the exit status (0, 3 or 4).

    ``preloaded`` is the app the fork server imported (``--preload``); without
    it the worker imports the app itself, after the fork, as gunicorn's do.
    ``hooks`` and ``hook_server`` come from the fork server, which ran the
    FERROCORN_HOOKS_FROM config before forking; without them (a fresh
    interpreter) the worker runs that config itself, before the app import.
    """
    env = os.environ if env is None else env
    faulthandler.enable(all_threads=True)  # SIGABRT (timeout) dumps every thread's stack
    control: Optional[socket.socket] = None
    worker: Optional[Worker] = None
    try:
        # The control socket first, so that every later boot error reaches the master.
        control_fd = env.get("FERROCORN_WORKER_CONTROL_FD", "")
        try:
            control = socket.socket(fileno=int(control_fd))
            control.setblocking(True)
        except (ValueError, OSError) as exc:
            raise BootError(f"FERROCORN_WORKER_CONTROL_FD={control_fd!r} is not a socket: {exc}") from None
        config = Config(env)
        set_sched_policy(env)
        pin_to_cpu(env)
        patch_for_gevent(env)
        set_process_name("fc-worker")
        set_proc_title("worker", env)
        capture_output(env)
        setup_logging(config.log_level)
        if config.master_pid is not None and os.getppid() != config.master_pid:
            raise BootError(f"parent pid {os.getppid()} is not the master pid {config.master_pid}")
        sys.path[0:0] = config.pythonpath
        # The master logs gunicorn's "Booting worker with pid: N" for this boot.
        log.debug("booting worker %s with pid %d", config.worker_id, os.getpid())
        worker = Worker(config, control)
        install_signals(worker.wake_w.fileno(), worker)
        worker.open_lanes()
        worker.hello()
        if hooks is None:  # a fresh interpreter: the config runs here, before the app
            import ctypes

            set_owner_process(env, config.master_pid, ctypes.CDLL(None, use_errno=True))
            hooks = load_hooks(env.get("FERROCORN_HOOKS_FROM", ""))
        worker.use_hooks(hooks, hook_server)
        install_abort_hook(worker)
        # gunicorn: post_fork in the child before the app loads, post_worker_init
        # after; either raising is a worker boot failure (exit 3).
        hooks.call_strict("post_fork", worker.hook_server, worker.hook_worker)
        install_spew(env)
        also_watch: list = []
        if preloaded is None:
            try:
                app = import_app(config.app)
            except BootError as exc:
                app = reload_fail_app(env, exc, also_watch)
            log.debug("app loaded: %s", config.app)
        else:
            app = preloaded
        hooks.call_strict("post_worker_init", worker.hook_worker)
        worker.hook_worker.booted = True
        start_reloader(env, also=also_watch)
        worker.send_control(READY)
    except BootError as exc:
        text = exc.report()
        if log.handlers:
            log.error("%s", text.rstrip())
        else:
            sys.stderr.write(text.rstrip() + "\n")
        if control is not None:
            try:
                control.sendall(frame(BOOT_FAILED, exc.flags, text.encode("utf-8", "replace")[:MAX_PAYLOAD]))
            except OSError:
                pass
        if worker is not None:
            worker.exit_hooks()
        return EXIT_APP_LOAD if exc.app_load else EXIT_BOOT
    status = worker.serve(app)
    worker.exit_hooks()
    return EXIT_RELOAD if RELOADING.is_set() and status == EXIT_OK else status


# --------------------------------------------------------------------------- fork server

# Linux prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
PID = struct.Struct("<i")
# How long a forked worker waits to be adopted by the master (its parent, the
# short-lived middle process, exits right after the second fork).
ADOPTION_TIMEOUT = 5.0


class BecomeWorker(BaseException):
    """Raised in a freshly forked worker: unwinds the fork server's loop, so the
    worker runs at the top of the stack and exits through sys.exit (atexit
    handlers and stdio flushing included), as gunicorn's forked workers do."""

    def __init__(self, worker_id: int, fds: list, lanes: int = 0, ring_size: int = 0, cpu: Optional[int] = None) -> None:
        super().__init__(worker_id)
        self.worker_id = worker_id
        self.fds = fds
        self.lanes = lanes or len(fds) - 1
        self.ring_size = ring_size
        self.cpu = cpu


class ForkServer:
    """Gets a worker ready up to the fork, then forks one per FORK message.

    Every worker must be the master's direct child (waitpid, exit statuses,
    signals): the fork server forks a middle process, which forks the worker
    and exits at once; the orphaned worker is adopted by the master, which is
    a child subreaper. The fork server itself reaps only the middle process.
    """

    def __init__(self, env: dict, control: socket.socket) -> None:
        self.env = env
        self.control = control
        self.app_spec = env.get("FERROCORN_WORKER_APP", "")
        self.preload = env.get("FERROCORN_FORKSERVER_PRELOAD", "") == "1"
        master = env.get("FERROCORN_WORKER_MASTER_PID", "")
        self.master_pid = int(master) if master.isdigit() else None
        self.app: Optional[Callable] = None
        # The FERROCORN_HOOKS_FROM config, run by boot(); forked workers inherit it.
        self.hooks = Hooks()
        self.hook_server = HookServer(HookConfig(env, self.hooks, None), self.master_pid)
        # Loaded once here, so a forked worker needs no import to call prctl.
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)

    def send(self, kind: int, flags: int = 0, payload: bytes = b"") -> None:
        self.control.sendall(frame(kind, flags, payload[:MAX_PAYLOAD]))

    def boot(self) -> None:
        """HELLO, the app with --preload, then READY; raises BootError."""
        info = {
            "pid": os.getpid(),
            "protocol": PROTOCOL_VERSION,
            "python": "%d.%d.%d" % sys.version_info[:3],
            "preload": self.preload,
            "max_payload": MAX_PAYLOAD,
        }
        self.send(HELLO, 0, json.dumps(info).encode())
        # Before the config's hooks and the app: no code of theirs runs as root.
        set_owner_process(self.env, self.master_pid, self.libc)
        self.hooks = load_hooks(self.env.get("FERROCORN_HOOKS_FROM", ""))
        self.hook_server = HookServer(HookConfig(self.env, self.hooks, None), self.master_pid)
        if self.env.get("FERROCORN_FORKSERVER_FIRST", "") == "1":
            # Once per master, before the app import. gunicorn's master dies
            # when on_starting raises: here the fork server fails to boot.
            self.hooks.call_strict("on_starting", self.hook_server)
        if self.preload:
            patch_for_gevent(self.env)
            self.app = import_app(self.app_spec)
            log.info("app preloaded: %s", self.app_spec)
        # Move everything imported so far out of the collector's reach: a
        # collection in a worker would otherwise write to every old object's
        # header and un-share its page (Python's gc.freeze advice for forks).
        gc.freeze()
        self.send(READY)

    def serve(self) -> int:
        """Answer FORK messages until the master closes the socket."""
        while True:
            data, fds, _, _ = socket.recv_fds(self.control, 64 * 1024, 1024)
            if not data:
                for fd in fds:
                    os.close(fd)
                log.debug("control socket closed, fork server exiting")
                return EXIT_OK
            if len(data) < HEADER_SIZE:
                raise ProtocolError(f"short message of {len(data)} bytes from master")
            length, kind, _, _ = HEADER.unpack_from(data)
            payload = data[HEADER_SIZE : HEADER_SIZE + length]
            if kind == FORK:
                self.fork(payload, fds)
            elif WHEN_READY <= kind <= ON_EXIT:
                for fd in fds:
                    os.close(fd)
                if self.run_hook(kind, payload):
                    log.debug("on_exit done, fork server exiting")
                    return EXIT_OK
            elif kind == PRE_EXEC:
                for fd in fds:
                    os.close(fd)
                self.run_hook(kind, payload)
                # The master starts the new master once this answer is in.
                self.send(PRE_EXEC, 0, b"{}")
            elif kind == REOPEN_LOG and fds:
                sys.stderr.flush()
                os.dup2(fds[0], 2)
                capture_output(self.env)
                for fd in fds:
                    os.close(fd)
                log.info("Error log reopened")
            else:
                for fd in fds:
                    os.close(fd)

    def run_hook(self, kind: int, payload: bytes) -> bool:
        """A master-side server hook the master asked for (docs/hooks.md);
        True after ON_EXIT (the fork server then exits). A hook that raises is
        logged and the fork server serves on."""
        try:
            args = json.loads(payload) if payload else {}
        except ValueError:
            args = {}
        hooks = self.hooks
        server = self.hook_server
        if kind == WHEN_READY:
            hooks.call("when_ready", server)
        elif kind == CHILD_EXIT:
            worker = HookWorker(int(args.get("worker", 0)), server.cfg, self.master_pid, args.get("pid"))
            worker.alive = False
            hooks.call("child_exit", server, worker)
        elif kind == NWORKERS_CHANGED:
            new, old = args.get("new"), args.get("old")
            server.num_workers = new
            hooks.call("nworkers_changed", server, new, old)
        elif kind == ON_RELOAD:
            hooks.call("on_reload", server)
        elif kind == ON_EXIT:
            hooks.call("on_exit", server)
            return True
        elif kind == PRE_EXEC:
            hooks.call("pre_exec", server)
        return False

    def fork(self, payload: bytes, fds: list) -> None:
        """FORK: fork a worker onto the descriptors that came with it (its
        control socket, then its lanes) and tell the master its pid. In the
        worker itself this raises BecomeWorker."""
        worker_id = -1
        try:
            request = json.loads(payload)
            worker_id = int(request["worker"])
            lanes = int(request["lanes"])
            ring_size = int(request.get("ring_size") or 0)
            cpu = request.get("cpu")
            cpu = None if cpu is None else int(cpu)
            # control, lanes..., and with rings: master bell, then memfd, bell per lane
            want = 1 + lanes + (1 + 2 * lanes if ring_size > 0 else 0)
            if len(fds) != want:
                rings = f" with ring_size {ring_size}" if ring_size > 0 else ""
                raise ValueError(f"{len(fds)} descriptors for {request['lanes']} lanes{rings}")
            cfg = self.hook_server.cfg
            if self.env.get("FERROCORN_WORKER_MODEL", "") != "gevent":
                cfg.threads = int(request["lanes"])
                cfg.worker_class = cfg.worker_class_str = "sync" if cfg.threads == 1 else "gthread"
            self.hook_server.worker_class = cfg.worker_class
            if self.hooks.pre_fork is not None:
                self.hooks.call("pre_fork", self.hook_server, HookWorker(worker_id, self.hook_server.cfg, self.master_pid))
            pid = self.double_fork(worker_id, fds, lanes, max(ring_size, 0), cpu)
        except BecomeWorker:
            raise
        except Exception as exc:
            log.error("cannot fork worker %s: %s", worker_id, exc)
            reply = {"worker": worker_id, "error": f"{type(exc).__name__}: {exc}"}
            self.send(FORK_FAILED, 0, json.dumps(reply).encode())
            pid = None
        # The worker has its copies; ours would keep its sockets from ever
        # reaching EOF, and every later worker would inherit them.
        for fd in fds:
            os.close(fd)
        if pid is not None:
            self.send(FORKED, 0, json.dumps({"worker": worker_id, "pid": pid}).encode())

    def double_fork(self, worker_id: int, fds: list, lanes: int = 0, ring_size: int = 0, cpu: Optional[int] = None) -> int:
        """Fork the worker through a middle process; return the worker's pid."""
        fork, waitpid = fork_server_process_calls()
        read_end, write_end = os.pipe()
        try:
            middle = fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if middle == 0:
            try:
                os.close(read_end)
                worker = fork()
                if worker:
                    os.write(write_end, PID.pack(worker))
            except BaseException:
                os._exit(EXIT_BOOT)
            if worker:
                os._exit(EXIT_OK)
            os.close(write_end)
            raise BecomeWorker(worker_id, fds, lanes, ring_size, cpu)
        os.close(write_end)
        try:
            data = b""
            while len(data) < PID.size:
                chunk = os.read(read_end, PID.size - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read_end)
            try:
                waitpid(middle, 0)
            except ChildProcessError:
                pass  # reaped already: by a SIGCHLD handler of the user's, say
        if len(data) != PID.size:
            raise OSError("the middle process died before it forked the worker")
        return PID.unpack(data)[0]


def fork_server_process_calls() -> tuple:
    """The fork and waitpid the fork server forks workers with.

    Under gevent's patching (-k gevent --preload patches the fork server)
    os.fork is gevent's fork_and_watch and os.waitpid waits for its libev
    child watcher. The fork server has no hub until that first fork makes
    one, and libev only then installs its SIGCHLD handler: a middle process
    that exits first sends its SIGCHLD to no handler, and the waitpid never
    returns (seen as no worker ever ready, 503 until the test's deadline).
    So, under gevent: its fork without the watcher (the child still
    re-initialises any hub it inherits) and the kernel's waitpid, which reaps
    the middle process whenever it exits; the hub's loop never runs in
    between, so libev cannot reap it first."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("os"):
        return os.fork, os.waitpid
    from gevent.os import fork_gevent

    return fork_gevent, monkey.get_original("os", "waitpid")


def set_proc_title(role: str, env: Any) -> None:
    """The title ps -o args shows: ``ferrocorn: ROLE [NAME]``, gunicorn's
    ``worker [NAME]`` as setproctitle writes it (src/process/title.rs does
    the same for the master). Like setproctitle, it overwrites the argument
    area the kernel reads /proc/PID/cmdline from (arg_start..arg_end of
    /proc/self/stat), padded with NULs and never grown; Python read its argv
    long before. Best effort: the comm (fc-worker, fc-forkserver) stays."""
    name = env.get("FERROCORN_WORKER_PROC_NAME", "")
    if not name:
        return
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[48 - 3]), int(fields[49 - 3])
        if end <= start:
            return
        import ctypes

        title = f"ferrocorn: {role} [{name}]".encode("utf-8", "replace")[: end - start - 1]
        ctypes.memmove(start, title.ljust(end - start, b"\0"), end - start)
    except (OSError, ValueError, IndexError):
        pass


def capture_output(env: Any) -> None:
    """--capture-output: stdout (print) goes where stderr goes, the error log
    file; the master asks for it only when there is one, as gunicorn does."""
    if env.get("FERROCORN_WORKER_CAPTURE_OUTPUT", "") == "1":
        sys.stdout.flush()
        os.dup2(2, 1)


def reload_files(extra: list) -> list:
    """gunicorn's Reloader.get_files: the source of every imported module,
    then the extra files, glob patterns expanded anew at each check."""
    import glob

    files = [re.sub(r"py[co]$", "py", m.__file__) for m in tuple(sys.modules.values()) if getattr(m, "__file__", None)]
    for entry in extra:
        if any(c in entry for c in "*?["):
            files.extend(sorted(glob.glob(entry, recursive=True)))
        else:
            files.append(entry)
    return files


def changed_file(mtimes: dict, files: list) -> Optional[str]:
    """One check of gunicorn's poll reloader: the first file whose mtime grew
    since it was first seen, else None (a file seen for the first time only
    has its mtime noted; a missing one is skipped)."""
    for name in files:
        try:
            mtime = os.stat(name).st_mtime
        except OSError:
            continue
        seen = mtimes.setdefault(name, mtime)
        if mtime > seen:
            return name
    return None


# Set by the reloader: the worker's graceful stop then exits EXIT_RELOAD.
RELOADING = threading.Event()


def reload_fail_app(env: Any, exc: BootError, also_watch: list) -> Callable:
    """gunicorn's load_wsgi under --reload: an app whose code has a
    SyntaxError does not stop the server; the worker logs the traceback,
    answers every request 500 with it (gunicorn's make_fail_app), and
    watches the broken file, so fixing it brings a worker with the fixed
    code. Any other import failure (or without --reload) is raised again."""
    cause = exc.cause
    if env.get("FERROCORN_WORKER_RELOAD", "") != "1" or not isinstance(cause, SyntaxError):
        raise exc
    text = exc.report()
    log.error("%s", text.rstrip())
    if cause.filename:
        also_watch.append(cause.filename)
    body = text.encode("utf-8", "replace")

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def start_reloader(env: Any, interval: float = 1.0, also: Iterable[str] = ()) -> Optional[threading.Thread]:
    """--reload: a daemon thread checks the files every second; on a change it
    logs gunicorn's line and stops the worker gracefully (SIGTERM to itself;
    it exits EXIT_RELOAD), and the master starts a fresh one at once, which
    imports the new code."""
    if env.get("FERROCORN_WORKER_RELOAD", "") != "1":
        return None
    extra = [f for f in env.get("FERROCORN_WORKER_RELOAD_EXTRA_FILES", "").split("\n") if f] + list(also)

    # The first look, before READY: a change made once the worker serves is
    # never taken for the first mtime (gunicorn's thread takes it later).
    mtimes: dict = {}
    changed_file(mtimes, reload_files(extra))

    def watch() -> None:
        while True:
            time.sleep(interval)
            name = changed_file(mtimes, reload_files(extra))
            if name is not None:
                log.info("Worker reloading: %s modified", name)
                RELOADING.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return

    log.warning("Reloader is on. Use in development only!")
    thread = threading.Thread(target=watch, name="reloader", daemon=True)
    thread.start()
    return thread


class Spew:
    """gunicorn's debug.Spew: print every line executed, as module:line: source."""

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            import linecache

            lineno = frame.f_lineno
            filename = frame.f_globals.get("__file__")
            if filename:
                name = frame.f_globals.get("__name__", "[unknown]")
                line = linecache.getline(filename, lineno)
            else:
                name = "[unknown]"
                line = "Unknown code named [%s].  VM instruction #%d" % (frame.f_code.co_name, frame.f_lasti)
            print("%s:%s: %s" % (name, lineno, line.rstrip()))
        return self


def install_spew(env: Any) -> Optional[Spew]:
    """--spew: trace this thread and every thread started later (the lanes)."""
    if env.get("FERROCORN_WORKER_SPEW", "") != "1":
        return None
    spew = Spew()
    threading.settrace(spew)
    sys.settrace(spew)
    return spew


def set_process_name(name: str) -> None:
    """The name ps -o comm, top and /proc/PID/comm show (forked workers
    would otherwise all look like the fork server); best effort."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass


def set_sched_policy(env: Any) -> None:
    """Put this process under the CPU scheduling policy the master names
    (FERROCORN_WORKER_SCHED, which it checked): ``batch`` (the default) is
    Linux's SCHED_BATCH, the same CPU share as SCHED_OTHER but no wake-up
    preemption, so a worker rung by the master waits for an idle core or the
    master's next sleep instead of taking the master's core from it. Called
    before the worker starts a thread: Linux's policy is per thread, and the
    lane threads inherit it. Best effort: no such call, no change."""
    if env.get("FERROCORN_WORKER_SCHED", "batch") != "batch" or not hasattr(os, "SCHED_BATCH"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        log.debug("cannot switch to SCHED_BATCH: %s", exc)


def pin_to_cpu(env: Any) -> None:
    """Pin this process to the CPU the master chose (FERROCORN_WORKER_CPU,
    set when ``worker_cpu_affinity`` spreads the workers): one worker per
    core, so the kernel cannot pile two workers and the master onto one core
    while another idles. Called before the worker starts a thread, so every
    thread inherits it. A CPU that cannot be used (a cpuset narrowed since
    the master read its own) leaves the worker unpinned, with a warning."""
    cpu = env.get("FERROCORN_WORKER_CPU", "")
    if not cpu or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {int(cpu)})
    except (ValueError, OSError) as exc:
        log.warning("cannot pin the worker to CPU %s: %s", cpu, exc)


def adopt_and_guard(master_pid: Optional[int], libc: Any) -> None:
    """In a forked worker: wait until the master has adopted it, then ask for
    SIGKILL when the master dies (set before adoption, the middle process's
    exit would send it)."""
    if master_pid is None:
        return
    deadline = time.monotonic() + ADOPTION_TIMEOUT
    while os.getppid() != master_pid:
        if time.monotonic() > deadline:
            raise BootError(f"parent pid {os.getppid()} is not the master pid {master_pid} (is the master a child subreaper?)")
        time.sleep(0.0002)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise BootError("prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != master_pid:  # the master died in between
        os._exit(EXIT_OK)


# Linux prctl(2) option: whether the process may be ptraced and dumped, and so
# whether its /proc files belong to it.
PR_SET_DUMPABLE = 4


def set_owner_process(env: Any, master_pid: Optional[int], libc: Any) -> None:
    """--user, --group, --initgroups: gunicorn's ``util.set_owner_process``,
    run before any config hook or app code (the fork server's workers inherit it).

    As gunicorn: all digits is an id, anything else a name; a uid or gid of
    0 changes nothing (its truth test); the group stays the master's unless
    given. Unlike gunicorn, a process that changes its user keeps none of
    the master's supplementary groups (gunicorn's workers keep root's), and
    with initgroups the group becomes the primary group too (gunicorn sets
    only the supplementary list, so its workers keep the master's gid).
    """
    user = env.get("FERROCORN_WORKER_USER", "")
    group = env.get("FERROCORN_WORKER_GROUP", "")
    if not user and not group:
        return
    import grp
    import pwd

    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid if user else os.geteuid()
    except KeyError:
        raise BootError(f"no such user: {user!r} (--user)", config=True) from None
    try:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid if group else os.getegid()
    except KeyError:
        raise BootError(f"no such group: {group!r} (--group)", config=True) from None
    changes_user = bool(uid) and uid != os.getuid()
    try:
        username = None
        if gid and uid:
            try:
                username = pwd.getpwuid(uid).pw_name
            except KeyError:
                pass  # gunicorn: a uid without a name gets no initgroups
        if gid and username is not None and env.get("FERROCORN_WORKER_INITGROUPS", "") == "1":
            os.initgroups(username, gid)
        elif changes_user and os.geteuid() == 0:
            os.setgroups([])
        if gid and gid != os.getgid():
            os.setgid(gid)
        if changes_user:
            os.setuid(uid)
    except OSError as exc:
        raise BootError(
            f"cannot switch to user {user or uid} and group {group or gid}: {exc} "
            "(--user and --group need a master started as root)",
            config=True,  # the next fork server or worker would fail the same way
        ) from None
    # A change of credentials clears the parent-death signal and makes the
    # process undumpable, which gives its /proc files (comm, the title) to
    # root: set both again, as the master set them for the old credentials.
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise BootError("prctl(PR_SET_PDEATHSIG) failed")
    if master_pid is not None and os.getppid() != master_pid:  # the master died in between
        os._exit(EXIT_OK)
    log.debug("running as uid %d gid %d groups %s", os.getuid(), os.getgid(), os.getgroups())


def run_forked_worker(server: ForkServer, become: BecomeWorker) -> int:
    """The worker side of a fork: fresh signals, adopted by the master, then main()."""
    set_process_name("fc-worker")
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    server.control.close()
    gc.enable()
    fds = become.fds
    control_fd, lane_fds = fds[0], fds[1 : 1 + become.lanes]
    worker_env = {
        "FERROCORN_WORKER_CONTROL_FD": str(control_fd),
        "FERROCORN_WORKER_LANE_FDS": ",".join(str(fd) for fd in lane_fds),
        "FERROCORN_WORKER_ID": str(become.worker_id),
        "FERROCORN_WORKER_RING_SIZE": "",
        "FERROCORN_WORKER_MASTER_BELL_FD": "",
        "FERROCORN_WORKER_RING_FDS": "",
        "FERROCORN_WORKER_CPU": "" if become.cpu is None else str(become.cpu),
    }
    if become.ring_size > 0:
        rings = fds[2 + become.lanes :]
        worker_env["FERROCORN_WORKER_RING_SIZE"] = str(become.ring_size)
        worker_env["FERROCORN_WORKER_MASTER_BELL_FD"] = str(fds[1 + become.lanes])
        worker_env["FERROCORN_WORKER_RING_FDS"] = ",".join(f"{m}:{b}" for m, b in zip(rings[::2], rings[1::2]))
    os.environ.update(worker_env)
    env = dict(server.env)
    env.update(worker_env)
    try:
        adopt_and_guard(server.master_pid, server.libc)
    except BootError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_BOOT
    return main(env, server.app, server.hooks, server.hook_server)


def forkserver_main(env: Optional[dict] = None) -> int:
    """Run the fork server; in each forked worker, run the worker. Returns an exit status."""
    env = os.environ if env is None else env
    # No collections while the fork server builds what the workers share
    # (they would leave freed holes in its pages); gc.freeze() at READY.
    gc.disable()
    fd = env.get("FERROCORN_FORKSERVER_CONTROL_FD", "")
    try:
        control = socket.socket(fileno=int(fd))
        control.setblocking(True)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"FERROCORN_FORKSERVER_CONTROL_FD={fd!r} is not a socket: {exc}\n")
        return EXIT_BOOT
    server = ForkServer(env, control)
    set_process_name("fc-forkserver")
    set_proc_title("forkserver", env)
    capture_output(env)
    try:
        level = env.get("FERROCORN_WORKER_LOG_LEVEL", "info").upper()
        setup_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO")
        if server.master_pid is not None and os.getppid() != server.master_pid:
            raise BootError(f"parent pid {os.getppid()} is not the master pid {server.master_pid}")
        sys.path[0:0] = [p for p in env.get("FERROCORN_WORKER_PYTHONPATH", "").split(os.pathsep) if p]
        # TERM and INT reach the whole process group (a service manager, a
        # terminal's Ctrl-C): the master decides, and closes our socket.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, lambda signum, frame: os._exit(EXIT_OK))
        server.boot()
    except BootError as exc:
        text = exc.report()
        log.error("%s", text.rstrip())
        try:
            server.send(BOOT_FAILED, exc.flags, text.encode("utf-8", "replace"))
        except OSError:
            pass
        return EXIT_APP_LOAD if exc.app_load else EXIT_BOOT
    try:
        return server.serve()
    except BecomeWorker as become:
        return run_forked_worker(server, become)


if __name__ == "__main__":
    if sys.argv[1:2] == ["ferrocorn-forkserver"]:
        sys.exit(forkserver_main())
    sys.exit(main())
