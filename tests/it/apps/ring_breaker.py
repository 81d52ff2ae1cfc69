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


def flood(environ, start_response):
    """?mb=N MiB in 64 KiB chunks, writing how many bytes it has yielded so
    far to the file ?progress= names: a client that reads nothing must
    stop it, through the lane's back-pressure, long before the end."""
    from urllib.parse import parse_qs

    query = parse_qs(environ["QUERY_STRING"])
    total = int(query["mb"][0]) << 20
    progress = query["progress"][0]
    chunk = b"x" * 65536
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))])

    def body():
        sent = 0
        while sent < total:
            yield chunk
            sent += len(chunk)
            with open(progress + ".tmp", "w") as f:
                f.write(str(sent))
            os.replace(progress + ".tmp", progress)

    return body()


def app(environ, start_response):
    how = environ["PATH_INFO"].strip("/")
    if how == "flood":
        return flood(environ, start_response)
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
