//! gunicorn-spelled options end to end: `--pythonpath`, `-e`, `--pid`, a
//! unix-socket bind next to TCP, and the access log format.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::harness::{parse_response, wait_until, TestServer, DEADLINE};

const APP: &str = r#"
import os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/gen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (chunk for chunk in [b"ab", b"cd", b"ef"])
    body = ("%s %s" % (os.environ.get("GREETING", "-"), environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn pythonpath_env_pid_unix_socket_and_access_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("extra_app.py"), APP).unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (sock, pid, access) = (path("s.sock"), path("server.pid"), path("access.log"));
    let unix_bind = format!("unix:{sock}");
    let pythonpath = dir.path().to_str().unwrap();
    let mut server = TestServer::start_binding(&[
        "-b",
        &unix_bind,
        "--pythonpath",
        pythonpath,
        "-e",
        "GREETING=hello",
        "--pid",
        &pid,
        "--access-logfile",
        &access,
        "--access-logformat",
        r#"%(h)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s"#,
        "extra_app:app",
    ]);
    // TCP and the unix socket serve the same app, with the -e variable.
    assert_eq!(server.get("/tcp?x=1").text(), "hello /tcp");
    let mut unix = UnixStream::connect(&sock).unwrap();
    unix.set_read_timeout(Some(DEADLINE)).unwrap();
    unix.write_all(b"GET /unix HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    unix.read_to_end(&mut out).unwrap();
    assert_eq!(parse_response(&out).unwrap().0.text(), "hello /unix");

    assert_eq!(
        std::fs::read_to_string(&pid).unwrap().trim(),
        server.pid().to_string()
    );
    let line = wait_until("the access log line", DEADLINE, || {
        let log = std::fs::read_to_string(&access).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("/tcp"))
            .map(str::to_string)
            .ok_or(log)
    });
    assert_eq!(
        line,
        r#"127.0.0.1 "GET /tcp?x=1 HTTP/1.1" 200 10 GET /tcp x=1"#
    );

    server.signal("TERM");
    assert_eq!(server.wait_exit(DEADLINE), Some(0));
    assert!(!std::path::Path::new(&pid).exists(), "pid file left behind");
    assert!(
        !std::path::Path::new(&sock).exists(),
        "socket file left behind"
    );
}
