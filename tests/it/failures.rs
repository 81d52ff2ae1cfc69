//! What goes wrong: app exceptions, dying workers, bad apps and configs,
//! a full queue, a queue wait past its timeout.

use std::time::Duration;

use crate::harness::{
    children_of, command, free_port, metric, wait_for_metric, wait_until, TestServer, DEADLINE,
};

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

    // Issue 10, 6: a negative number names its option and what it takes
    // (clap said "unexpected argument '-2' found"); a missing interpreter is
    // a configuration error, exit 2, not a worker boot failure (3).
    for (args, named) in [
        (&["--workers", "-2"][..], "invalid value \"-2\" for workers"),
        (&["--timeout", "-5"][..], "invalid value \"-5\" for timeout"),
        (
            &["--max-requests", "-1"][..],
            "invalid value \"-1\" for max_requests",
        ),
        (
            &["--python", "/nonexistent/python"][..],
            "python interpreter /nonexistent/python not found",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("examples.flask_app:app");
        let out = command(&all).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }

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

/// `--queue-timeout`: a request that waited that long for the one busy
/// worker gets 503, no sooner, while the busy one finishes; twice, since
/// the queue's one timer stops when the queue empties and the next queued
/// request starts it again.
#[test]
fn a_request_queued_past_the_queue_timeout_gets_503_and_the_busy_one_finishes() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start(&[
        "-w",
        "1",
        "--queue-timeout",
        "1",
        "--metrics-bind",
        &metrics,
        "examples.flask_app:app",
    ]);
    for round in 1..=2 {
        std::thread::scope(|s| {
            let busy = s.spawn(|| server.get("/io?ms=4000"));
            wait_for_metric(&metrics, "ferrocorn_requests_in_flight", 1.0);
            let sent = std::time::Instant::now();
            let queued = s.spawn(|| server.get("/hello"));
            wait_for_metric(&metrics, "ferrocorn_queue_length", 1.0);
            let refused = queued.join().unwrap();
            let waited = sent.elapsed();
            assert_eq!(refused.status, 503, "round {round}");
            assert!(
                waited >= Duration::from_secs(1),
                "round {round}: 503 after {waited:?}"
            );
            assert_eq!(
                metric(&metrics, "ferrocorn_requests_in_flight"),
                Some(1.0),
                "round {round}: the busy request still runs"
            );
            assert_eq!(busy.join().unwrap().status, 200, "round {round}");
        });
    }
    assert_eq!(server.get("/hello").status, 200);
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

/// Issue 10, 4: with `--threads`, a timeout failed the other requests in
/// flight on that worker with 502 (the worker was aborted at once). Now the
/// worker takes no new requests, dumps its stacks naming the lane that timed
/// out, lets its other lanes finish, and only then is aborted and replaced.
#[test]
fn a_timeout_with_threads_fails_only_the_request_that_timed_out() {
    let metrics = format!("127.0.0.1:{}", crate::harness::free_port());
    let server = TestServer::start(&[
        "-w",
        "1",
        "--threads",
        "4",
        "--timeout",
        "3",
        "--metrics-bind",
        &metrics,
        "examples.flask_app:app",
    ]);
    let before = server.get("/pid").text();
    let (slow, others) = std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/io?ms=6000"));
        wait_for_metric(&metrics, "ferrocorn_requests_in_flight", 1.0);
        // These start about a second later and still run when the slow one
        // times out (at 3 s); each ends well within its own timeout.
        std::thread::sleep(Duration::from_millis(1000));
        let others: Vec<_> = (0..3)
            .map(|_| s.spawn(|| server.get("/io?ms=2500").status))
            .collect();
        let others: Vec<u16> = others.into_iter().map(|h| h.join().unwrap()).collect();
        (slow.join().unwrap().status, others)
    });
    assert_eq!(slow, 504);
    assert_eq!(others, vec![200, 200, 200], "{}", server.stderr());
    server.wait_for_new_worker(&before);
    wait_until("the dump naming the lane", DEADLINE, || {
        let log = server.stderr();
        if log.contains("Timed out: lane") && log.contains("in io") {
            Ok(())
        } else {
            Err(log)
        }
    });
    // The worker's own frames carry its file name, not <stdin>.
    let log = server.stderr();
    assert!(log.contains(r#"File "ferrocorn_worker.py""#), "{log}");
    assert!(!log.contains("<stdin>"), "{log}");
}

/// Issue 10, 2: an app that imports fine but kills its worker at the first
/// request made the master respawn 900 times in 30 s (84% of the machine).
/// Workers that die young are backed off: over 4 s of requests, a handful
/// of replacements, not dozens.
#[test]
fn workers_that_die_at_their_first_request_are_backed_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("suicidal.py"),
        "import os\n\
         def app(environ, start_response):\n\
         \x20   if environ['PATH_INFO'] == '/die':\n\
         \x20       os._exit(1)\n\
         \x20   start_response('200 OK', [])\n\
         \x20   return [b'ok']\n",
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", crate::harness::free_port());
    let path = dir.path().to_str().unwrap();
    let server = TestServer::start(&[
        "-w",
        "1",
        "--preload",
        "--pythonpath",
        path,
        "--metrics-bind",
        &metrics,
        "suicidal:app",
    ]);
    let until = std::time::Instant::now() + Duration::from_secs(4);
    let mut sent = 0;
    while std::time::Instant::now() < until {
        let status = server.get("/die").status;
        assert!(status == 502 || status == 503, "{status}");
        sent += 1;
    }
    let crashes = crate::harness::metric(
        &metrics,
        r#"ferrocorn_worker_restarts_total{reason="crash"}"#,
    )
    .unwrap_or(0.0);
    assert!(sent >= 3, "{sent} requests");
    // Requests wait for the backed-off replacement; 0.1 + 0.2 + 0.4 + 0.8
    // + 1.6 s of back-off fit in 4 s: about 6 deaths.
    assert!(
        (1.0..=8.0).contains(&crashes),
        "{crashes} crashes in 4 s\n{}",
        server.stderr()
    );
}

/// Issue 10, 5: USR2 (gunicorn's binary upgrade) ended master and workers
/// at once and left the pid file. Now it starts a new master beside the
/// running one (issue 12, 4; the whole upgrade is in `upgrade.rs`): the
/// master, its worker and its pid file stay.
#[test]
fn usr2_keeps_the_master_and_its_workers_serving() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("ferrocorn.pid");
    let mut server = TestServer::start(&[
        "-w",
        "1",
        "--pid",
        pidfile.to_str().unwrap(),
        "examples.flask_app:app",
    ]);
    let before = server.worker_pids();
    server.signal("USR2");
    let upgrade_pidfile = dir.path().join("ferrocorn.pid.2");
    let new_master = wait_until("the new master's pid file", DEADLINE, || {
        let text = std::fs::read_to_string(&upgrade_pidfile).map_err(|e| e.to_string())?;
        let pid: u32 = text.trim().parse().map_err(|_| text.clone())?;
        match children_of(server.pid()).contains(&pid) {
            true => Ok(pid),
            false => Err(format!("{pid} is not the master's child")),
        }
    });
    let _cleanup = crate::upgrade::Stray(new_master);
    assert_eq!(server.get("/hello").status, 200);
    assert!(server.worker_pids().contains(&before[0]));
    assert!(pidfile.exists());
    // The new master is the server's child: it reaps it.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &new_master.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the new master to exit", DEADLINE, || {
        match children_of(server.pid()).contains(&new_master) {
            false => Ok(()),
            true => Err("still running".into()),
        }
    });
    server.signal("TERM");
    assert_eq!(server.wait_exit(DEADLINE), Some(0), "{}", server.stderr());
}

/// Issue 10, 6: `--check-config` passed an app module that does not exist
/// and a bad `--access-logformat`. Like gunicorn's, it now imports the app
/// (in the configured interpreter) and checks everything a start would.
#[test]
fn check_config_imports_the_app_and_checks_the_access_log_format() {
    let run = |args: &[&str]| {
        let mut all = vec!["--check-config"];
        all.extend_from_slice(args);
        let out = command(&all).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["examples.flask_app:app"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run(&["examples.no_such_module:app"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("no_such_module"), "{stderr}");
    let (code, stderr) = run(&["--access-logformat", "%(zz", "examples.flask_app:app"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("access-logformat"), "{stderr}");
}
