"""Environ decode cost, in the worker's interpreter: today's NUL split vs a marshal'ed dict.

    python prototypes/hop/envbench.py     (throwaway, for docs/design/hop.md)
"""
import marshal, sys, timeit

BASE = {"wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.input_terminated": True, "SCRIPT_NAME": ""}
CGI = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", ""), ("PATH_INFO", "/hello"), ("QUERY_STRING", ""),
       ("SERVER_NAME", "127.0.0.1"), ("SERVER_PORT", "8000"), ("SERVER_PROTOCOL", "HTTP/1.1"),
       ("SERVER_SOFTWARE", "ferrocorn/0.1.0"), ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "51234"),
       ("RAW_URI", "/hello"), ("wsgi.url_scheme", "http")]
WRK = [("HTTP_HOST", "127.0.0.1:8000")]
BROWSER = WRK + [("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
                 ("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                 ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"), ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
                 ("HTTP_CONNECTION", "keep-alive"), ("HTTP_COOKIE", "session=abcdef0123456789; theme=dark"),
                 ("HTTP_UPGRADE_INSECURE_REQUESTS", "1"), ("HTTP_SEC_FETCH_DEST", "document"),
                 ("HTTP_SEC_FETCH_MODE", "navigate"), ("HTTP_SEC_FETCH_SITE", "none")]


def split_payload(pairs):
    return "\0".join(x for kv in pairs for x in kv).encode("latin-1")


def marshal_payload(pairs):  # what hopbench's EnvWriter writes: '{', 'Z' keys, 'z' values, '0'
    out = bytearray(b"{")
    for k, v in pairs:
        for s, t in ((k, b"Z"), (v, b"z")):
            b = s.encode("ascii")
            out += t + bytes([len(b)]) + b
    return bytes(out + b"0")


def bench(name, pairs):
    sp, mp = split_payload(pairs), marshal_payload(pairs)
    assert marshal.loads(mp) == dict(pairs)
    copy, loads = BASE.copy, marshal.loads

    def split():
        e = copy(); it = iter(sp.decode("latin-1").split("\0")); e.update(zip(it, it)); return e

    def marsh():
        e = copy(); e.update(loads(mp)); return e

    def marsh_only():
        return loads(mp)

    for label, fn in (("split+update", split), ("marshal+update", marsh), ("marshal alone", marsh_only)):
        n = 200_000
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9
        print(f"{name:8} {len(pairs):2} pairs  {label:15} {best:6.0f} ns")


bench("wrk", CGI + WRK)
bench("browser", CGI + BROWSER)
