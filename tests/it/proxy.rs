//! Behind a proxy (issue 12, item 1): what a front-end may say about a
//! request, as gunicorn judges it. The test client is 127.0.0.1, trusted
//! by default; `--forwarded-allow-ips 10.0.0.1` makes it untrusted.

use serde_json::Value;

use crate::harness::{Response, TestServer};

const APP: &str = "examples.flask_app:app";

fn get(server: &TestServer, head: &str) -> Response {
    server.raw(&format!("{head}Host: t\r\nConnection: close\r\n\r\n"))
}

fn environ(response: &Response) -> Value {
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("/environ answers JSON")
}

fn v2_ipv4(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&8000u16.to_be_bytes());
    header
}

/// A trusted peer: the scheme headers, a SCRIPT_NAME header and PROXY
/// headers count; `-e SCRIPT_NAME=/app` splits the path.
#[test]
fn a_trusted_front_end_sets_scheme_script_name_and_client_address() {
    // The bare flag last, as gunicorn's `--proxy-protocol` means auto.
    let server = TestServer::start(&["-e", "SCRIPT_NAME=/app", APP, "--proxy-protocol"]);
    let env = environ(&get(
        &server,
        "GET /app/environ HTTP/1.1\r\nX-Forwarded-Proto: https\r\n",
    ));
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_eq!(env["SCRIPT_NAME"], "/app");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    let env = environ(&get(
        &server,
        "GET /app/environ HTTP/1.1\r\nX-Forwarded-Ssl: off\r\n",
    ));
    assert_eq!(env["wsgi.url_scheme"], "http");

    // gunicorn's InvalidSchemeHeaders.
    let conflict = get(
        &server,
        "GET /app/environ HTTP/1.1\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Proto: http\r\n",
    );
    assert_eq!(conflict.status, 400);

    // A path outside SCRIPT_NAME is gunicorn's ConfigurationProblem.
    assert_eq!(get(&server, "GET /other HTTP/1.1\r\n").status, 500);

    // A trusted SCRIPT_NAME header beats the environment's.
    let env = environ(&get(
        &server,
        "GET /api/environ HTTP/1.1\r\nSCRIPT_NAME: /api\r\n",
    ));
    assert_eq!(env["SCRIPT_NAME"], "/api");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(env["HTTP_SCRIPT_NAME"], "/api");

    // PROXY v1 and v2: the client they name is REMOTE_ADDR.
    let v1 = server.raw(
        "PROXY TCP4 192.0.2.7 127.0.0.1 40000 8000\r\nGET /app/environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let env = environ(&v1);
    assert_eq!(env["REMOTE_ADDR"], "192.0.2.7");
    assert_eq!(env["REMOTE_PORT"], "40000");
    assert_eq!(env["PROXY_PROTOCOL"], "TCP4");
    assert_eq!(env["PROXY_ADDR"], "127.0.0.1");
    assert_eq!(env["PROXY_PORT"], "8000");
    let mut v2 = v2_ipv4([198, 51, 100, 9], 5555);
    v2.extend_from_slice(b"GET /app/environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let env = environ(&server.raw_bytes(&v2));
    assert_eq!(env["REMOTE_ADDR"], "198.51.100.9");
    assert_eq!(env["REMOTE_PORT"], "5555");
    let v6 = server.raw(
        "PROXY TCP6 2001:db8::5 ::1 443 8000\r\nGET /app/environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(environ(&v6)["REMOTE_ADDR"], "2001:db8::5");

    // Malformed: gunicorn's InvalidProxyLine, 400; the server serves on.
    let bad = server.raw("PROXY TCP4 192.0.2.7 nowhere 1 2\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(bad.status, 400);
    let mut bad_v2 = v2_ipv4([1, 2, 3, 4], 1);
    bad_v2[12] = 0x31; // version 3
    assert_eq!(server.raw_bytes(&bad_v2).status, 400);
    // Without a PROXY header the connection is plain HTTP.
    let env = environ(&get(&server, "GET /app/environ HTTP/1.1\r\n"));
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env.get("PROXY_PROTOCOL").is_none(), "{env}");
}

/// An untrusted peer: its scheme and SCRIPT_NAME headers are ignored (the
/// latter dropped as every underscore header), and its PROXY header gets
/// gunicorn's 403.
#[test]
fn an_untrusted_peer_cannot_set_scheme_script_name_or_a_proxy_header() {
    let server = TestServer::start(&[
        "--forwarded-allow-ips",
        "10.0.0.1",
        "--proxy-protocol",
        "v1",
        "--proxy-allow-from",
        "10.0.0.0/8",
        APP,
    ]);
    let env = environ(&get(
        &server,
        "GET /environ HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\nSCRIPT_NAME: /environ\r\n",
    ));
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["SCRIPT_NAME"], "");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert!(env.get("HTTP_SCRIPT_NAME").is_none(), "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_PROTO"], "https");

    let refused = server.raw(
        "PROXY TCP4 192.0.2.7 127.0.0.1 40000 8000\r\nGET /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(refused.status, 403);
    assert_eq!(get(&server, "GET /hello HTTP/1.1\r\n").status, 200);
}
