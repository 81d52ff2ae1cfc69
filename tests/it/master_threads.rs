//! A master of several threads (`--master-threads`, tokio's work-stealing
//! runtime): the same rules as the single-threaded default. The whole
//! suite also runs on one with FERROCORN_TEST_MASTER_THREADS=2 (`make test`
//! does); the tests here name their thread count.

use crate::harness::{command, root, TestServer};

const THREADS: (&str, &str) = ("FERROCORN_MASTER_THREADS", "3");

/// Threads of process `pid`, from /proc.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| tasks.count())
        .unwrap_or(0)
}

#[test]
fn a_master_of_three_threads_serves_concurrent_clients_every_byte_and_stops_gracefully() {
    let mut server = TestServer::start_in(
        &root(),
        &[THREADS],
        &["-w", "2", "--threads", "2", "examples.flask_app:app"],
    );
    // The main thread and three runtime threads at least (the access log's
    // writer and the blocking pool may add more).
    assert!(
        thread_count(server.pid()) >= 4,
        "{}",
        thread_count(server.pid())
    );
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let (server, body) = (&server, &body);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for i in 0..40 {
                        if (client + i) % 4 == 0 {
                            let echoed = server.post("/echo", body);
                            if echoed.status != 200 || echoed.body != *body {
                                failures.push(format!("echo {client}/{i}: {}", echoed.status));
                            }
                        } else {
                            let hello = server.get("/hello");
                            if hello.status != 200 || hello.text() != "Hello, World!" {
                                failures.push(format!("hello {client}/{i}: {}", hello.status));
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:?}\n{}", server.stderr());
    // Both workers served: the requests were spread, whichever thread took them.
    let mut pids: Vec<String> = (0..20).map(|_| server.get("/pid").text()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 2, "{pids:?}");
    server.signal("TERM");
    assert_eq!(
        server.wait_exit(crate::harness::DEADLINE),
        Some(0),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_killed_worker_under_a_master_of_three_threads_takes_only_its_running_request() {
    crate::pipelining::killed_worker_takes_only_its_running_request(&[THREADS]);
}

#[test]
fn zero_master_threads_stop_the_server_at_start_naming_the_setting() {
    let output: std::process::Output =
        command(&["--master-threads", "0", "examples.flask_app:app"])
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("master_threads"), "{stderr}");
}
