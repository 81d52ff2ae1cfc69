"""The smallest WSGI app: `ferrocorn examples.wsgi_hello:app`. No framework, no dependency."""

BODY = b"Hello, World!"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
