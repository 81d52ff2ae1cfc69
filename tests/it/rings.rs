//! Ring lanes (the default, docs/protocol.md "Ring lanes"): the rules that
//! hold on socket lanes hold on shared memory, a lost doorbell costs a
//! bounded wait, socket lanes serve when asked for by name, and a
//! transport name that does not exist stops the server. The tests here
//! name their transport, so they hold whatever
//! FERROCORN_TEST_LANE_TRANSPORT says for the rest.

use std::time::{Duration, Instant};

use crate::harness::{command, free_port, metric, root, wait_until, TestServer, DEADLINE};

const LOST_MASTER: &str = "ferrocorn_lost_wakeups_total{side=\"master\"} ";
const LOST_WORKER: &str = "ferrocorn_lost_wakeups_total{side=\"worker\"} ";
const RING: (&str, &str) = ("FERROCORN_LANE_TRANSPORT", "ring");

#[test]
fn lost_doorbells_cost_a_bounded_wait_and_are_counted() {
    // Both sides skip every third doorbell they would ring: the sleeper on
    // the other side must find the work by its sleep's time bound (2 ms).
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start_in(
        &root(),
        &[RING, ("FERROCORN_DROP_BELL", "3")],
        &[
            "-w",
            "1",
            "--metrics-bind",
            &metrics,
            "examples.flask_app:app",
        ],
    );
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let start = Instant::now();
        let response = server.get("/hello");
        slowest = slowest.max(start.elapsed());
        assert_eq!(response.status, 200, "request {i}: {}", server.stderr());
    }
    // A doorbell lost for good would hang a request for a second or more
    // (the worker's unbounded sleeps) or forever (the master's): this is a
    // liveness bound, far above the 2 ms a lost doorbell may cost.
    assert!(
        slowest < Duration::from_millis(900),
        "slowest request {slowest:?}"
    );
    for series in [LOST_MASTER, LOST_WORKER] {
        wait_until(series, DEADLINE, || match metric(&metrics, series) {
            Some(n) if n > 0.0 => Ok(()),
            n => Err(format!("{series}= {n:?}")),
        });
    }
}

#[test]
fn a_killed_worker_with_requests_waiting_in_its_ring_takes_only_its_running_one() {
    crate::pipelining::killed_worker_takes_only_its_running_request(&[RING]);
}

/// Serves `/hello` and echoes a 3 MB body (larger than a ring, both ways)
/// on lanes of `transport`.
fn serves_and_echoes_a_large_body(transport: &str) {
    let server = TestServer::start_in(
        &root(),
        &[("FERROCORN_LANE_TRANSPORT", transport)],
        &["-w", "1", "--threads", "2", "examples.flask_app:app"],
    );
    assert_eq!(server.get("/hello").text(), "Hello, World!");
    let body = vec![b'x'; 3_000_000];
    let echoed = server.post("/echo", &body);
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body.len(), body.len());
}

#[test]
fn bodies_larger_than_the_rings_cross_both_ways() {
    serves_and_echoes_a_large_body(RING.1);
}

#[test]
fn socket_lanes_serve_when_asked_for_by_name() {
    serves_and_echoes_a_large_body("socket");
}

#[test]
fn an_unknown_transport_stops_the_server_at_start_naming_it() {
    let output = command(&["-b", "127.0.0.1:0", "examples.flask_app:app"])
        .env("FERROCORN_LANE_TRANSPORT", "pigeon")
        .output()
        .expect("ferrocorn runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FERROCORN_LANE_TRANSPORT") && stderr.contains("pigeon"),
        "{stderr}"
    );
}

#[test]
fn a_master_nap_past_the_bound_stops_the_server_at_start_naming_it() {
    for bad in ["3ms", "soon"] {
        let output = command(&["-b", "127.0.0.1:0", "examples.flask_app:app"])
            .env("FERROCORN_MASTER_NAP", bad)
            .output()
            .expect("ferrocorn runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("FERROCORN_MASTER_NAP") && stderr.contains(bad),
            "{stderr}"
        );
    }
}

#[test]
fn a_master_that_never_naps_serves_a_pipelined_load_as_well() {
    // Naps are the default; without them the pump sleeps on doorbells.
    let (server, _metrics) = crate::pipelining::start_with_env(
        &[RING, ("FERROCORN_MASTER_NAP", "0")],
        "2",
        &["--pipeline-below", "60s"],
    );
    let statuses = crate::pipelining::hellos(&server, 8, 50);
    assert_eq!(statuses.len(), 400);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

#[test]
fn a_worker_that_breaks_its_ring_gets_502_and_is_replaced() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start_in(
        &root(),
        &[RING],
        &[
            "-w",
            "1",
            "--metrics-bind",
            &metrics,
            "--chdir",
            "tests/it/apps",
            "ring_breaker:app",
        ],
    );
    const PROTOCOL_ERRORS: &str = "ferrocorn_worker_restarts_total{reason=\"protocol_error\"} ";
    for (n, how) in ["/index", "/kind", "/oversized"].into_iter().enumerate() {
        wait_until("a serving worker", DEADLINE, || {
            match server.get("/healthy").status {
                200 => Ok(()),
                status => Err(format!("{status}")),
            }
        });
        let broken = server.get(how);
        assert_eq!(broken.status, 502, "{how}: {}", server.stderr());
        wait_until(PROTOCOL_ERRORS, DEADLINE, || {
            match metric(&metrics, PROTOCOL_ERRORS) {
                Some(count) if count >= (n + 1) as f64 => Ok(()),
                count => Err(format!("{count:?}")),
            }
        });
    }
    assert_eq!(server.get("/healthy").text(), "not broken\n");
}

#[test]
fn a_client_that_reads_nothing_stalls_the_worker_not_the_masters_memory() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let progress = dir.path().join("progress");
    let server = TestServer::start_in(
        &root(),
        &[RING],
        &[
            "-w",
            "1",
            "--threads",
            "2",
            "--chdir",
            "tests/it/apps",
            "ring_breaker:app",
        ],
    );
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss();
    let mut client = std::net::TcpStream::connect(&server.addr).unwrap();
    // 256 MiB asked for; the client never reads a byte of it.
    write!(
        client,
        "GET /flood?mb=256&progress={} HTTP/1.1\r\nHost: test\r\n\r\n",
        progress.display()
    )
    .unwrap();
    let sent = || {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    // The app stops where back-pressure holds it: its count stands still.
    let mut last = None;
    wait_until("the app held back by the lane", DEADLINE, || {
        std::thread::sleep(Duration::from_millis(300));
        let now = sent();
        let stood = now.is_some() && now == last;
        last = now;
        if stood {
            Ok(())
        } else {
            Err(format!("{now:?} bytes so far"))
        }
    });
    let held = last.unwrap();
    assert!(
        held < 64 << 20,
        "the app got {held} bytes out to a client that reads nothing"
    );
    let grew = rss().saturating_sub(before);
    eprintln!("stalled client: the app got {held} bytes out, the master grew by {grew}");
    assert!(grew < 32 << 20, "the master grew by {grew} bytes");
    // The other lane still serves, and the stalled one is freed when the
    // client leaves.
    assert_eq!(server.get("/healthy").status, 200);
    drop(client);
    for _ in 0..4 {
        assert_eq!(server.get("/healthy").status, 200);
    }
}

/// Many bodies at once, of every size from empty to more than twice a ring
/// (256 KiB) and of seeded random bytes, echoed through ring lanes by two
/// workers of two lanes each: every byte comes back where it was sent.
/// A missing fence (a tail seen before the bytes under it, on a weakly
/// ordered CPU such as aarch64) shows here as a torn or shifted body.
#[test]
fn concurrent_bodies_of_every_size_cross_the_rings_byte_for_byte() {
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    let server = TestServer::start_in(
        &root(),
        &[RING],
        &["-w", "2", "--threads", "2", "examples.flask_app:app"],
    );
    let sizes = [
        0..64,
        64..4096,
        4096..65_536,
        200_000..300_000,
        300_000..600_000,
    ];
    std::thread::scope(|s| {
        for client in 0..4u64 {
            let server = &server;
            let sizes = &sizes;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(client);
                for i in 0..60 {
                    let range = sizes[i % sizes.len()].clone();
                    let mut body = vec![0u8; rng.random_range(range)];
                    rng.fill_bytes(&mut body);
                    let echoed = server.post("/echo", &body);
                    assert_eq!(echoed.status, 200, "client {client}, request {i}");
                    if echoed.body != body {
                        let at = echoed.body.iter().zip(&body).position(|(a, b)| a != b);
                        panic!(
                            "client {client}, request {i}: {} bytes sent, {} back, first difference at {at:?}",
                            body.len(),
                            echoed.body.len()
                        );
                    }
                }
            });
        }
    });
}
