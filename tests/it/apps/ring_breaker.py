"""An app that breaks its own worker's ring lane, as a buggy or hostile
worker would: the master must answer 502 and replace the worker, never
trust what it finds in shared memory. Only meaningful on ring lanes with
one lane per worker (it breaks every ring lane of its process)."""

import gc
import os
import struct

HEADER = struct.Struct("<IBBH")
BODY = 17


def ring_lanes():
    return [o for o in gc.get_objects() if type(o).__name__ == "RingLane"]


def app(environ, start_response):
    how = environ["PATH_INFO"].strip("/")
    for lane in ring_lanes():
        if how == "index":
            # A response tail far past what the ring can hold (the lane's
            # own copy too, so its next publish keeps it there).
            lane.tail = lane.q[24] + 4 * lane.ring
            lane.q[16] = lane.tail
            os.write(lane.master_bell, (1).to_bytes(8, "little"))
        elif how == "kind":
            lane.sendall(HEADER.pack(0, 250, 0, 0))
        elif how == "oversized":
            # A BODY frame larger than the master takes (256 KiB).
            lane.sendall(HEADER.pack(300 * 1024, BODY, 0, 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"not broken\n"]
