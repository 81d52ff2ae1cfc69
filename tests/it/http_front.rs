//! The HTTP front: keep-alive, pipelining, HEAD, limits and malformed input.
//! A malformed request gets a 4xx and the server keeps serving.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::harness::{parse_response, TestServer, DEADLINE};

fn exchange(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn keep_alive_and_pipelining() {
    let server = TestServer::start(&["examples.flask_app:app"]);
    let out = exchange(
        &server,
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let (first, rest) = parse_response(&out).unwrap();
    let (second, rest) = parse_response(rest).unwrap();
    let (third, rest) = parse_response(rest).unwrap();
    assert_eq!(first.text(), "Hello, World!");
    assert!(second.text().parse::<u32>().is_ok());
    assert_eq!(third.text(), "Hello, World!");
    assert!(rest.is_empty());
}

#[test]
fn http_1_0_and_head() {
    let server = TestServer::start(&["examples.flask_app:app"]);
    let resp = server.raw("GET /hello HTTP/1.0\r\n\r\n");
    assert_eq!(resp.text(), "Hello, World!");
    let out = exchange(
        &server,
        b"HEAD /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD response has a body: {text:?}"
    );
}

/// Each case: raw request, expected status. The server must answer each
/// with that status and still serve a good request afterwards.
const MALFORMED: &[(&str, &[u8], u16)] = &[
    ("garbage request line", b"NOT HTTP\r\n\r\n", 400),
    ("bad content-length", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
    ("two different content-lengths", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("transfer-encoding not chunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("request line too long", b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("header line too long", b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\nI: 9\r\nJ: 10\r\n\r\n", 431),
    ("body over the limit", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413),
    ("content-length with transfer-encoding (smuggling)", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("transfer-encoding then content-length", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("nul in the path", b"GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
];

#[test]
fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let server = TestServer::start(&[
        "--limit-request-line",
        "100",
        "--limit-request-field_size",
        "100",
        "--limit-request-fields",
        "8",
        "--limit-request-body",
        "1000",
        "examples.flask_app:app",
    ]);
    for (name, request, expected) in MALFORMED {
        let out = exchange(&server, request);
        let status = parse_response(&out)
            .map(|(r, _)| r.status)
            .unwrap_or_else(|e| panic!("{name}: no response ({e})"));
        assert_eq!(status, *expected, "{name}");
        assert_eq!(
            server.get("/hello").status,
            200,
            "server unhealthy after {name}"
        );
    }
}

#[test]
fn silent_connection_is_closed_by_the_header_timeout() {
    let server = TestServer::start(&["--header-timeout", "1", "examples.flask_app:app"]);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET /hello HTTP/1.1\r\nHost:").unwrap();
    let mut out = Vec::new();
    // The server closes (maybe after a 408); it must not wait forever.
    let _ = stream.read_to_end(&mut out);
    assert_eq!(server.get("/hello").status, 200);
}

/// Sends `bytes`, half-closes the write side if `half_close`, and reads
/// until the server closes or `wait` passes (then whatever came so far).
fn exchange_with(bytes: &[u8], addr: &str, half_close: bool, wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(bytes).unwrap();
    if half_close {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

fn status_of(out: &[u8], what: &str) -> u16 {
    parse_response(out)
        .map(|(r, _)| r.status)
        .unwrap_or_else(|e| panic!("{what}: no response ({e})"))
}

// Issue 10, item 9: `printf 'GET / ...' | nc -N` got nothing back, because
// the server treated the client's FIN as the client going away.
#[test]
fn a_client_that_half_closes_after_its_request_gets_the_response() {
    let server = TestServer::start(&["examples.flask_app:app"]);
    let out = exchange_with(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        &server.addr,
        true,
        DEADLINE,
    );
    let (resp, rest) = parse_response(&out).unwrap_or_else(|e| panic!("no response: {e}"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "Hello, World!"));
    assert!(rest.is_empty(), "{rest:?}");
    // Two pipelined requests, then FIN: both are answered.
    let out = exchange_with(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        &server.addr,
        true,
        DEADLINE,
    );
    let (_, rest) = parse_response(&out).unwrap();
    let (second, _) = parse_response(rest).unwrap_or_else(|e| panic!("no second response: {e}"));
    assert_eq!(second.status, 200);
}

// Issue 10, item 10: hyper accepts bare-LF line endings, and the CL+TE guard
// only found heads ending in CRLF CRLF, so a bare-LF head with both framing
// headers reached the app. Bare-LF heads get 400 (as in gunicorn), however
// they arrive, and the connection is closed after it.
#[test]
fn bare_lf_request_heads_get_400() {
    let server = TestServer::start(&["examples.flask_app:app"]);
    let cases: &[(&str, &[u8])] = &[
        (
            "bare-LF head with Content-Length and Transfer-Encoding",
            b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n",
        ),
        ("bare-LF GET", b"GET /hello HTTP/1.1\nHost: x\n\n"),
        (
            "one bare LF among CRLFs",
            b"GET /hello HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
        ),
        (
            "bare LF ending the head",
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\n",
        ),
    ];
    for (name, request) in cases {
        // The body of the first case never comes: the 400 must not wait for it.
        let out = exchange_with(request, &server.addr, false, Duration::from_secs(10));
        assert_eq!(status_of(&out, name), 400, "{name}");
        assert_eq!(server.get("/hello").status, 200, "unhealthy after {name}");
    }
    // A bare-LF head pipelined behind a good request is refused too.
    let out = exchange_with(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
        &server.addr,
        false,
        Duration::from_secs(10),
    );
    let (first, rest) = parse_response(&out).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(status_of(rest, "pipelined bare-LF head"), 400);
}

// Issue 10, item 11: framing and method cases hyper lets through.
#[test]
fn duplicate_host_mixed_codings_chunked_over_the_limit_and_connect_are_refused() {
    let server = TestServer::start(&["--limit-request-body", "1000", "examples.flask_app:app"]);
    let mut over_limit =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        over_limit.extend_from_slice(b"190\r\n");
        over_limit.extend_from_slice(&[b'a'; 400]);
        over_limit.extend_from_slice(b"\r\n");
    }
    over_limit.extend_from_slice(b"0\r\n\r\n");
    let cases: &[(&str, &[u8], u16)] = &[
        ("two Host headers", b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("gzip, chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        ("gzip then chunked on two lines", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        ("chunked twice", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        ("chunked upload over --limit-request-body", &over_limit, 413),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
    ];
    for (name, request, expected) in cases {
        let out = exchange_with(request, &server.addr, false, Duration::from_secs(10));
        assert_eq!(status_of(&out, name), *expected, "{name}");
        assert_eq!(server.get("/hello").status, 200, "unhealthy after {name}");
    }
    // The refusals did not turn away what is fine: one Host, plain chunked.
    let out = exchange_with(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        &server.addr,
        false,
        DEADLINE,
    );
    let (resp, _) = parse_response(&out).unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
}

// Issue 10, item 11b: the environ names the server, as gunicorn's
// `gunicorn/VERSION` does.
#[test]
fn the_environ_has_server_software() {
    let server = TestServer::start(&["examples.flask_app:app"]);
    let environ = server.get("/environ").text();
    let expected = format!(
        "\"SERVER_SOFTWARE\": \"ferrocorn/{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        environ.contains(&expected),
        "{expected} missing from {environ}"
    );
}
