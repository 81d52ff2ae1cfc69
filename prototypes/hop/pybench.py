"""Costs of the worker's shared-memory primitives, in its interpreter (throwaway, docs/design/hop.md).

    python prototypes/hop/pybench.py
"""
import mmap, os, threading, timeit

mem = mmap.mmap(-1, 4096)
ctrl = memoryview(mem).cast("Q")
lock = threading.Lock(); lock.acquire()
rel, acq = lock.release, lock.acquire
efd = os.eventfd(0, os.EFD_NONBLOCK)


def t(label, stmt, n=500_000):
    best = min(timeit.repeat(stmt, number=n, repeat=5, globals=globals())) / n * 1e9
    print(f"{label:45} {best:7.0f} ns")


t("8-byte load  ctrl[0]", "ctrl[0]")
t("8-byte store ctrl[1] = 5", "ctrl[1] = 5")
t("fence: lock.release(); lock.acquire()", "rel(); acq()")
t("os.eventfd_write (doorbell, nobody waits)", "os.eventfd_write(efd, 1)", 200_000)
t("os.write 8 bytes (3.9 fallback doorbell)", "os.write(efd, b'\\1\\0\\0\\0\\0\\0\\0\\0')", 200_000)
