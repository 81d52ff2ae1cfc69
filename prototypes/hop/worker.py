"""hopbench's Python worker (throwaway prototype for docs/design/hop.md). Stdlib only.

Serves the real WSGI app over one of two transports, chosen by HOP_MODE:

- sock: today's lane framing on a socketpair (poll, then recv; one sendall of
  RESPONSE + BODY(END)), as python/ferrocorn_worker.py does on its hot path;
- shm: a request ring and a response ring in a memfd the master mapped too,
  8-byte control words read and written as native 'Q' items of a memoryview
  (one aligned 8-byte load or store each on x86-64), an eventfd doorbell.

The environ arrives NUL-separated (HOP_ENV=split, today's encoding) or as a
marshal'ed dict (HOP_ENV=marshal). HOP_PROFILE=1 adds thread_time_ns (CPU)
timings of decode / app / encode+publish and prints them on SIGTERM.
"""

from __future__ import annotations

import importlib
import io
import marshal
import mmap
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from itertools import chain

HEADER = struct.Struct("<IBBH")
U32 = struct.Struct("<I")
REQUEST, RESPONSE, BODY, END = 16, 32, 17, 1

# control words, in 8-byte units (main.rs has the byte offsets)
REQ_TAIL, REQ_HEAD, W_SLEEP, RESP_TAIL, RESP_HEAD, M_SLEEP = 0, 8, 16, 24, 32, 40
CTRL = 4096


def load_app(spec: str):
    sys.path.insert(0, os.getcwd())
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


BASE = {
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
    "SCRIPT_NAME": "",
}

_HEADS: dict = {}

stats = {"n": 0, "decode": 0, "app": 0, "encode": 0, "wait": 0, "sleeps": 0, "lost": 0, "bells": 0, "dropped": 0}
PROFILE = os.environ.get("HOP_PROFILE") == "1"


def report(*_):
    n = stats["n"] or 1
    print(
        f"worker {os.getpid()}: {stats['n']} requests; per request ns: decode {stats['decode'] // n} "
        f"app {stats['app'] // n} encode+publish {stats['encode'] // n}; sleeps {stats['sleeps']} "
        f"lost wake-ups {stats['lost']} doorbells to master {stats['bells']} (dropped on purpose {stats['dropped']})",
        file=sys.stderr,
        flush=True,
    )
    os._exit(0)


def make_handler(app):
    """One request: payload (environ) -> response (head bytes, body bytes)."""
    marshaled = os.environ.get("HOP_ENV") == "marshal"
    base_copy = BASE.copy
    loads = marshal.loads
    empty = io.BytesIO
    state = [None, None]

    def start_response(status, headers, exc_info=None):
        state[0] = status
        state[1] = headers

    perf = time.thread_time_ns  # CPU time of this thread: preemption by other load is not counted

    def handle(payload) -> tuple:
        if PROFILE:
            t0 = perf()
        environ = base_copy()
        if marshaled:
            environ.update(loads(payload))
        else:
            fields = bytes(payload).decode("latin-1").split("\0")
            pairs = iter(fields)
            environ.update(zip(pairs, pairs))
        environ["wsgi.input"] = empty()
        if PROFILE:
            t1 = perf()
        state[0] = None
        result = app(environ, start_response)
        try:
            body = result[0] if result.__class__ is list and len(result) == 1 else b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if PROFILE:
            t2 = perf()
            stats["decode"] += t1 - t0
            stats["app"] += t2 - t1
        text = "\0".join(chain((state[0],), chain.from_iterable(state[1])))
        head = _HEADS.get(text)
        if head is None:
            head = _HEADS[text] = text.encode("latin-1")
        return head, body

    return handle


def serve_sock(app) -> None:
    sock = socket.socket(fileno=int(os.environ["HOP_FD"]))
    sock.setblocking(True)
    recv = sock.recv
    sendall = sock.sendall
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    wait = poller.poll
    handle = make_handler(app)
    perf = time.thread_time_ns  # CPU time of this thread: preemption by other load is not counted
    buf = b""
    unpack = HEADER.unpack_from
    pack = HEADER.pack
    while True:
        while len(buf) < 8:
            wait()
            data = recv(262144)
            if not data:
                return
            buf += data
        length, kind, flags, _ = unpack(buf, 0)
        while len(buf) < 8 + length:
            data = recv(262144)
            if not data:
                return
            buf += data
        payload = buf[8 : 8 + length]
        buf = buf[8 + length :]
        head, body = handle(payload)
        if PROFILE:
            t2 = perf()
        sendall(b"".join((pack(len(head), RESPONSE, 0, 0), head, pack(len(body), BODY, END, 0), body)))
        if PROFILE:
            stats["encode"] += perf() - t2
        stats["n"] += 1


def serve_shm(app) -> None:
    size = int(os.environ["HOP_MEM_SIZE"])
    slots = int(os.environ["HOP_SLOTS"])
    slot = int(os.environ["HOP_SLOT"])
    mem = mmap.mmap(int(os.environ["HOP_MEM_FD"]), size)
    view = memoryview(mem)
    ctrl = view[:CTRL].cast("Q")  # native 8-byte items: one aligned load/store each
    req_base = CTRL
    resp_base = CTRL + slots * slot
    bell = int(os.environ["HOP_DOORBELL_FD"])
    master = int(os.environ["HOP_MASTER_FD"])
    has_eventfd = hasattr(os, "eventfd_write")
    poller = select.poll()
    poller.register(bell, select.POLLIN)
    wait = poller.poll
    # A store then a load of another word may be reordered even on x86-64
    # (store buffer), and Python has no fence. An uncontended lock
    # release + acquire is a locked RMW (x86) / release-store + acquire-load
    # pair (aarch64) in CPython's C code: a full fence for our purpose.
    fence_lock = threading.Lock()
    fence_lock.acquire()
    release, acquire = fence_lock.release, fence_lock.acquire
    use_fence = os.environ.get("HOP_FENCE", "1") == "1"
    drop = int(os.environ.get("HOP_DROP_BELL", "0"))  # test: skip every Nth doorbell to the master
    handle = make_handler(app)
    perf = time.thread_time_ns  # CPU time of this thread: preemption by other load is not counted
    head_i = 0
    resp_i = 0
    sleep_seq = 0
    last_rung = 0
    from_bytes = int.from_bytes
    pack_into = U32.pack_into
    while True:
        if ctrl[REQ_TAIL] == head_i:
            # declare sleep (odd), fence, look again, then sleep; the first
            # sleep is bounded (2 ms) because a doorbell may have been lost
            sleep_seq += 1
            ctrl[W_SLEEP] = sleep_seq
            if use_fence:
                release()
                acquire()
            if ctrl[REQ_TAIL] == head_i:
                stats["sleeps"] += 1
                timeout = 2
                while True:
                    ready = wait(timeout)
                    if ready:
                        os.eventfd_read(bell) if has_eventfd else os.read(bell, 8)
                        break
                    if ctrl[REQ_TAIL] != head_i:
                        stats["lost"] += 1
                        break
                    timeout = 1000  # the sleep word is visible by now: no more lost wake-ups
            sleep_seq += 1
            ctrl[W_SLEEP] = sleep_seq
            continue
        off = req_base + (head_i % slots) * slot
        n = from_bytes(view[off : off + 4], "little")
        payload = view[off + 4 : off + 4 + n]
        head, body = handle(payload)
        payload.release()
        head_i += 1
        ctrl[REQ_HEAD] = head_i
        if PROFILE:
            t2 = perf()
        # the response ring cannot be full: the master has at most SLOTS requests out
        roff = resp_base + (resp_i % slots) * slot
        hl, bl = len(head), len(body)
        pack_into(view, roff, 4 + hl + bl)
        pack_into(view, roff + 4, hl)
        view[roff + 8 : roff + 8 + hl] = head
        view[roff + 8 + hl : roff + 8 + hl + bl] = body
        resp_i += 1
        ctrl[RESP_TAIL] = resp_i  # x86-64: stores are not reordered with stores
        if use_fence:
            release()
            acquire()
        s = ctrl[M_SLEEP]
        if s & 1 and s != last_rung:
            last_rung = s
            stats["bells"] += 1
            if drop and stats["bells"] % drop == 0:
                stats["dropped"] += 1  # test: a lost doorbell, which the master's 2 ms sleep bound must cover
            else:
                os.eventfd_write(master, 1) if has_eventfd else os.write(master, (1).to_bytes(8, "little"))
        if PROFILE:
            stats["encode"] += perf() - t2
        stats["n"] += 1


def main() -> None:
    signal.signal(signal.SIGTERM, report)
    app = load_app(os.environ["HOP_APP"])
    if os.environ["HOP_MODE"] == "sock":
        serve_sock(app)
    else:
        serve_shm(app)


if __name__ == "__main__":
    main()
