//! What goes wrong: app exceptions, dying workers, bad apps and configs,
//! a full queue.

use std::time::Duration;

use crate::harness::{command, wait_until, TestServer, DEADLINE};

#[test]
fn app_exception_is_500_with_traceback_and_the_worker_keeps_serving() {
    let server = TestServer::start(&["-w", "1", "examples.flask_app:app"]);
    let before = server.get("/pid").text();
    let resp = server.get("/error");
    assert_eq!(resp.status, 500);
    wait_until("the traceback in the error log", DEADLINE, || {
        let log = server.stderr();
        if log.contains("RuntimeError: boom") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert_eq!(server.get("/pid").text(), before, "the worker was replaced");
}

#[test]
fn worker_death_mid_request_is_502_and_a_replacement_serves() {
    let server = TestServer::start(&["-w", "1", "examples.flask_app:app"]);
    let before = server.get("/pid").text();
    assert_eq!(server.get("/crash").status, 502);
    server.wait_for_new_worker(&before);
}

#[test]
fn other_workers_requests_survive_a_crash() {
    let server = TestServer::start(&["-w", "2", "examples.flask_app:app"]);
    std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/io?ms=1500"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(server.get("/crash").status, 502);
        assert_eq!(slow.join().unwrap().status, 200);
    });
}

#[test]
fn app_that_cannot_import_stops_the_master_with_exit_4() {
    let out = command(&["-b", "127.0.0.1:0", "examples.no_such_module:app"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("No module named 'examples.no_such_module'"),
        "{stderr}"
    );

    let out = command(&["-b", "127.0.0.1:0", "examples.flask_app:ap"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("did you mean app?"), "{stderr}");
}

#[test]
fn bad_config_stops_at_start_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "workerz = 2\n").unwrap();
    let out = command(&["-c", toml.to_str().unwrap(), "examples.flask_app:app"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("workerz"), "{stderr}");

    let out = command(&["--paste", "site.ini", "examples.flask_app:app"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--paste"));
}

#[test]
fn full_queue_gets_503_with_retry_after() {
    let server = TestServer::start(&["-w", "1", "--backlog", "1", "examples.flask_app:app"]);
    std::thread::scope(|s| {
        let busy = s.spawn(|| server.get("/io?ms=1500"));
        std::thread::sleep(Duration::from_millis(300));
        let queued = s.spawn(|| server.get("/hello"));
        std::thread::sleep(Duration::from_millis(300));
        let refused = server.get("/hello");
        assert_eq!(refused.status, 503);
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(busy.join().unwrap().status, 200);
        assert_eq!(queued.join().unwrap().status, 200);
    });
}

#[test]
fn request_past_the_timeout_gets_504_and_a_new_worker() {
    let server = TestServer::start(&["-w", "1", "--timeout", "2", "examples.flask_app:app"]);
    let before = server.get("/pid").text();
    let asked = std::time::Instant::now();
    let resp = server.get("/io?ms=5000");
    assert_eq!(resp.status, 504);
    // The app sleeps 5 s: an answer well before that came from the timeout.
    assert!(
        asked.elapsed() < Duration::from_millis(4500),
        "{:?}",
        asked.elapsed()
    );
    server.wait_for_new_worker(&before);
    wait_until("the stack dump in the error log", DEADLINE, || {
        let log = server.stderr();
        if log.contains("File ") && log.contains("in io") {
            Ok(())
        } else {
            Err(log)
        }
    });
}
