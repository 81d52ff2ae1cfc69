//! PEP 3333 through the whole server, with the app wrapped in
//! `wsgiref.validate.validator`: a spec violation is a 500 here.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::harness::{parse_response, wait_until, TestServer, DEADLINE};

fn server() -> TestServer {
    TestServer::start(&["--chdir", "tests/it/apps", "wsgi_checks:app"])
}

#[test]
fn environ_and_every_body_reading_style_pass_the_validator() {
    let server = server();
    let environ = server.get("/environ?q=%20x");
    assert_eq!(environ.status, 200, "{}", server.stderr());
    let text = environ.text();
    for needle in [
        "\"QUERY_STRING\": \"q=%20x\"",
        "\"SERVER_PROTOCOL\": \"HTTP/1.1\"",
        "\"REMOTE_ADDR\": \"127.0.0.1\"",
        "\"wsgi.url_scheme\": \"http\"",
        "\"wsgi.multithread\": false",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    // Issue 10, item 11b.
    let software = format!(
        "\"SERVER_SOFTWARE\": \"ferrocorn/{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&software), "{software} missing from {text}");
    let resp = server.post("/read-styles", b"12345line one\nline two\nthree");
    assert_eq!(resp.text(), "12345|line one\n|line two\nthree");
}

#[test]
fn write_callable_file_wrapper_and_204() {
    let server = server();
    assert_eq!(server.get("/write").text(), "written returned");
    let file = server.get("/file");
    assert_eq!(file.status, 200);
    assert_eq!(file.body.len(), 1_000_000);
    let none = server.get("/no-content");
    assert_eq!(none.status, 204);
    assert!(none.body.is_empty());
}

#[test]
fn a_100_mb_upload_is_never_held_whole_by_the_worker() {
    let server = server();
    let size = 100 * 1024 * 1024;
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {size}\r\n\r\n"
    )
    .unwrap();
    let block = vec![b'u'; 1024 * 1024];
    for _ in 0..100 {
        stream.write_all(&block).unwrap();
    }
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    let (resp, _) = parse_response(&out).unwrap();
    assert_eq!(resp.status, 200, "{}", server.stderr());
    let body = resp.text();
    let mut fields = body.split(' ');
    let total: usize = fields.next().unwrap().parse().unwrap();
    let grew_kib: usize = fields.next().unwrap().parse().unwrap();
    assert_eq!(total, size);
    assert!(
        grew_kib < 20 * 1024,
        "worker RSS grew by {grew_kib} KiB while reading 100 MiB"
    );
}

#[test]
fn client_disconnect_mid_stream_closes_the_iterable_once() {
    let server = server();
    assert_eq!(server.get("/closed").text(), "0");
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("chunk 1") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream); // the generator had 48 chunks (about 5 s) to go
    wait_until("close() after the disconnect", DEADLINE, || {
        match server.get("/closed").text().as_str() {
            "1" => Ok(()),
            other => Err(format!("close() called {other} times")),
        }
    });
}

/// A plain WSGI app (no validator: it breaks the rules on purpose) for issue 10.
const FRAMING_APP: &str = r#"
def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
    if path == "/length":  # ?VALUE: Content-Length VALUE on a 10-byte body
        start_response("200 OK", [("Content-Length", query)])
        return [b"0123456789"]
    if path == "/length-streamed":
        start_response("200 OK", [("Content-Length", query)])
        return iter([b"01234", b"56789"])
    if path == "/no-body":  # ?STATUS with a Content-Length
        start_response(query.replace("+", " "), [("Content-Length", "5")])
        return [b""]
    if path == "/status":  # ?STATUS as given to start_response
        start_response(query.replace("+", " "), [("Content-Length", "2")])
        return [b"ok"]
    if path == "/unknown-length":
        start_response("200 OK", [])
        return iter([b"ab", b"c"])
    if path == "/whole":
        start_response("200 OK", [])
        return [b"abc"]
    start_response("200 OK", [("Content-Length", "4")])
    return [b"next"]
"#;

fn framing_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("framing.py"), FRAMING_APP).unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    (
        TestServer::start(&["--pythonpath", &path, "framing:app"]),
        dir,
    )
}

/// Writes `first` and then a second request on one connection, and reads
/// until the server closes it.
fn pipelined(server: &TestServer, first: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let second = "GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    stream
        .write_all(format!("{first}{second}").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

fn get_then_next(server: &TestServer, target: &str) -> Vec<u8> {
    pipelined(server, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

/// The head of the first response, as text.
fn head_of(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Issue 10, item 8: <https://github.com/ferrocorn/ferrocorn/issues/10>.
#[test]
fn issue_10_a_wrong_content_length_never_desyncs_the_connection() {
    let (server, _dir) = framing_server();
    // Shorter than declared: the 10 bytes, then the connection closes; the
    // next request is never answered from the same stream.
    let out = get_then_next(&server, "/length?100");
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(head_of(&out).contains("content-length: 100"), "{text}");
    assert!(text.ends_with("\r\n\r\n0123456789"), "{text}");
    let out = get_then_next(&server, "/length-streamed?100");
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.ends_with("\r\n\r\n0123456789"), "{text}");
    // Longer: Content-Length bytes, and the connection is closed after them.
    let out = get_then_next(&server, "/length?4");
    let (resp, rest) = parse_response(&out).unwrap();
    assert_eq!(
        (resp.text().as_str(), resp.header("connection")),
        ("0123", Some("close"))
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    // Invalid: 500 before anything is sent; the connection serves on.
    for bad in ["abc", "-1", "+5", "1,2"] {
        let out = get_then_next(&server, &format!("/length?{bad}"));
        let (resp, rest) = parse_response(&out).unwrap();
        assert_eq!(resp.status, 500, "{bad}: {}", String::from_utf8_lossy(&out));
        let (next, _) = parse_response(rest).unwrap();
        assert_eq!(next.text(), "next", "{bad}");
    }
    // 204 and 304 carry no Content-Length; HEAD keeps the app's (gunicorn does).
    for status in ["204+No+Content", "304+Not+Modified"] {
        let out = get_then_next(&server, &format!("/no-body?{status}"));
        let head = head_of(&out);
        assert!(!head.contains("content-length"), "{head}");
        let rest = &out[head.len() + 4..];
        assert_eq!(parse_response(rest).unwrap().0.text(), "next", "{status}");
    }
    let out = pipelined(&server, "HEAD /length?100 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        head_of(&out).contains("content-length: 100"),
        "{}",
        head_of(&out)
    );
    let rest = &out[head_of(&out).len() + 4..];
    assert_eq!(parse_response(rest).unwrap().0.text(), "next");
}

/// Issue 10, item 11b: <https://github.com/ferrocorn/ferrocorn/issues/10>.
#[test]
fn issue_10_the_status_line_is_the_apps() {
    let (server, _dir) = framing_server();
    for (status, line) in [
        ("200+Everything+Fine", "HTTP/1.1 200 Everything Fine"),
        ("200+ok", "HTTP/1.1 200 ok"),
        ("404", "HTTP/1.1 404 Not Found"),
        ("599", "HTTP/1.1 599 Unknown"),
        ("599+Network+Whatever", "HTTP/1.1 599 Network Whatever"),
        ("201+Created", "HTTP/1.1 201 Created"),
    ] {
        let raw = get_then_next(&server, &format!("/status?{status}"));
        let head = head_of(&raw);
        assert_eq!(head.lines().next(), Some(line), "{head}");
    }
}

/// Issue 10, item 11b: an HTTP/1.0 keep-alive request whose response has
/// no length is told that the connection closes; a whole body gets a
/// Content-Length and the connection serves on.
#[test]
fn issue_10_http_1_0_says_close_when_it_closes() {
    let (server, _dir) = framing_server();
    let out = pipelined(
        &server,
        "GET /unknown-length HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    let (resp, _) = parse_response(&out).unwrap();
    let connection = resp.header("connection").unwrap_or_default();
    assert!(connection.split(',').any(|t| t.trim() == "close"), "{text}");
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    let out = pipelined(
        &server,
        "GET /whole HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let (resp, rest) = parse_response(&out).unwrap();
    assert_eq!(
        (resp.header("content-length"), resp.header("connection")),
        (Some("3"), Some("keep-alive"))
    );
    assert_eq!(parse_response(rest).unwrap().0.text(), "next");
}
