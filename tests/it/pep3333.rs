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
