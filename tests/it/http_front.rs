//! The HTTP front: keep-alive, pipelining, HEAD, limits and malformed input.
//! A malformed request gets a 4xx and the server keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;

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
