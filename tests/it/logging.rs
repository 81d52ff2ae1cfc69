//! The error log itself (issue 11 item 6): master and workers write
//! gunicorn's line, and the events people alert on carry gunicorn's words.
//! The one test here that reads log wording, on purpose.

use crate::harness::{
    children_of, command, free_port, http_get, is_fork_server, kill_process, wait_until, DEADLINE,
};

/// gunicorn's `[%Y-%m-%d %H:%M:%S %z] [pid] [LEVEL] message`, i.e. the regex
/// `^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] .+$`.
fn is_gunicorn_line(line: &str) -> bool {
    let shape = |s: &str, pattern: &str| {
        s.len() == pattern.len()
            && s.chars().zip(pattern.chars()).all(|(c, p)| match p {
                'd' => c.is_ascii_digit(),
                's' => c == '+' || c == '-',
                _ => c == p,
            })
    };
    let (Some(stamp), Some(rest)) = (line.get(..27), line.get(27..)) else {
        return false;
    };
    let Some((pid, rest)) = rest.strip_prefix(" [").and_then(|r| r.split_once("] [")) else {
        return false;
    };
    let Some((level, message)) = rest.split_once("] ") else {
        return false;
    };
    shape(stamp, "[dddd-dd-dd dd:dd:dd sdddd]")
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level)
        && !message.is_empty()
}

#[test]
fn the_error_log_is_gunicorns_for_the_master_and_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = command(&[
        "-w",
        "2",
        "-b",
        &addr,
        "--error-logfile",
        log.to_str().unwrap(),
        "examples.flask_app:app",
    ])
    .spawn()
    .unwrap();
    // Killed on the way out even if an assertion fails first.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let master = child.id();
    let mut child = Reap(child);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let workers = || -> Vec<u32> {
        children_of(master)
            .into_iter()
            .filter(|&pid| !is_fork_server(pid))
            .collect()
    };
    wait_until("the server to serve", DEADLINE, || {
        match http_get(&addr, "/hello") {
            Ok(resp) if resp.status == 200 => Ok(()),
            other => Err(format!("{:?}\n{}", other.map(|r| r.status), text())),
        }
    });
    let first = wait_until("2 workers", DEADLINE, || match workers() {
        pids if pids.len() == 2 => Ok(pids),
        pids => Err(format!("{pids:?}")),
    });
    assert_eq!(http_get(&addr, "/hello").unwrap().status, 200);

    let victim = first[0];
    kill_process(victim);
    let replacement = wait_until("a replacement worker", DEADLINE, || {
        let pids = workers();
        match pids.iter().find(|p| !first.contains(p)) {
            Some(&new) if pids.len() == 2 => Ok(new),
            _ => Err(format!("{pids:?}")),
        }
    });
    wait_until("the replacement to serve", DEADLINE, || {
        match http_get(&addr, "/hello") {
            Ok(resp) if resp.status == 200 => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.status))),
        }
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &master.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = wait_until("the master to exit", DEADLINE, || {
        match child.0.try_wait() {
            Ok(Some(status)) => Ok(status.code()),
            _ => Err(text()),
        }
    });
    assert_eq!(code, Some(0), "{}", text());

    let text = text();
    for line in text.lines() {
        assert!(
            is_gunicorn_line(line),
            "not a gunicorn line: {line:?}\n{text}"
        );
    }
    let mut expected = vec![
        format!(
            "] [{master}] [INFO] Starting ferrocorn {}",
            env!("CARGO_PKG_VERSION")
        ),
        format!("] [{master}] [INFO] Listening at: http://127.0.0.1:{port} ({master})"),
        "[INFO] Using worker: sync".to_owned(),
        "[INFO] Handling signal: term".to_owned(),
        format!("[ERROR] Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?"),
        "[INFO] Shutting down: Master".to_owned(),
    ];
    for pid in first.iter().chain([&replacement]) {
        expected.push(format!("[INFO] Booting worker with pid: {pid}"));
    }
    for needle in &expected {
        let count = text.lines().filter(|l| l.contains(needle.as_str())).count();
        assert_eq!(count, 1, "{needle:?} once:\n{text}");
    }
    // A worker that stops cleanly says so once; the killed one doesn't.
    for pid in [first[1], replacement] {
        let exiting = format!("[INFO] Worker exiting (pid: {pid})");
        let count = text.lines().filter(|l| l.contains(&exiting)).count();
        assert_eq!(count, 1, "{exiting:?} once:\n{text}");
    }
    assert!(
        !text.contains(&format!("Worker exiting (pid: {victim})")),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.ends_with("Shutting down: Master")),
        "{text}"
    );
}
