//! Requests waiting in a busy lane behind the running one: they are used
//! under load, and a worker that dies or times out takes only the request
//! it was running with it; the one waiting behind goes to another worker.

use std::process::Command;

use crate::harness::{free_port, http_get, wait_until, TestServer, DEADLINE};

fn metric(metrics_addr: &str, series: &str) -> f64 {
    let text = http_get(metrics_addr, "/metrics")
        .unwrap_or_else(|e| panic!("/metrics: {e}"))
        .text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

const WAITED: &str = "ferrocorn_requests_waited_in_lane_total ";
const REDISPATCHED: &str = "ferrocorn_requests_redispatched_total ";
const IN_FLIGHT: &str = "ferrocorn_requests_in_flight ";

/// Waits until the series reaches `at_least`.
fn wait_metric(server: &TestServer, metrics: &str, series: &str, at_least: f64) {
    wait_until(series, DEADLINE, || {
        let value = metric(metrics, series);
        if value >= at_least {
            Ok(())
        } else {
            let all = http_get(metrics, "/metrics")
                .map(|r| r.text())
                .unwrap_or_default();
            let load: Vec<&str> = all
                .lines()
                .filter(|l| l.starts_with("ferrocorn_") && !l.contains("bucket"))
                .collect();
            Err(format!(
                "{series}= {value}; {load:#?}\nlog:\n{}",
                server.stderr()
            ))
        }
    });
}

#[test]
fn short_requests_wait_in_busy_lanes_under_load_and_none_fails() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start(&[
        "-w",
        "2",
        "--metrics-bind",
        &metrics,
        "examples.flask_app:app",
    ]);
    wait_metric(
        &server,
        &metrics,
        "ferrocorn_workers{state=\"serving\"} ",
        2.0,
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..40)
                        .map(|_| server.get("/hello").status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(statuses.len(), 320);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // 8 clients on 2 lanes: whenever a lane frees up, a request is waiting.
    assert!(metric(&metrics, WAITED) > 0.0, "{}", server.stderr());

    // Turned off, nothing waits in a lane.
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start(&[
        "-w",
        "2",
        "--pipeline-below",
        "0",
        "--metrics-bind",
        &metrics,
        "examples.flask_app:app",
    ]);
    assert!(server
        .get_concurrently(16, "/hello")
        .iter()
        .all(|&s| s == 200));
    assert_eq!(metric(&metrics, WAITED), 0.0);
}

#[test]
fn a_killed_worker_takes_only_its_running_request_with_it() {
    let metrics = format!("127.0.0.1:{}", free_port());
    // --pipeline-below 60s: requests also wait behind the slow ones here.
    let server = TestServer::start(&[
        "-w",
        "2",
        "--pipeline-below",
        "60s",
        "--metrics-bind",
        &metrics,
        "examples.flask_app:app",
    ]);
    // Both workers up (start() waits for one), and each learns its
    // (short) service time.
    wait_metric(
        &server,
        &metrics,
        "ferrocorn_workers{state=\"serving\"} ",
        2.0,
    );
    assert!(server.get_concurrently(4, "/pid").iter().all(|&s| s == 200));
    let waited_before = metric(&metrics, WAITED);
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let slow: Vec<_> = (0..2)
            .map(|_| s.spawn(|| server.get("/pid?ms=3000")))
            .collect();
        wait_metric(&server, &metrics, IN_FLIGHT, 2.0);
        // Four more: two queue, and (two queued are overload) the oldest two
        // move into the lanes, one behind each slow request.
        let waiting: Vec<_> = (0..4).map(|_| s.spawn(|| server.get("/pid"))).collect();
        wait_metric(&server, &metrics, WAITED, waited_before + 2.0);
        // One request runs and one waits in each worker's lane: kill one worker.
        let workers = server.worker_pids();
        assert_eq!(workers.len(), 2, "{workers:?}");
        let victim = workers[0];
        let killed = Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        slow.into_iter()
            .chain(waiting)
            .map(|h| {
                let resp = h.join().unwrap();
                (resp.status, resp.text())
            })
            .collect()
    });
    let mut statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 502],
        "{results:?}\n{}",
        server.stderr()
    );
    assert_eq!(metric(&metrics, REDISPATCHED), 1.0, "{}", server.stderr());
}

#[test]
fn a_request_waiting_behind_one_that_times_out_is_served_by_the_replacement() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start(&[
        "-w",
        "1",
        "--timeout",
        "1",
        "--pipeline-below",
        "60s",
        "--metrics-bind",
        &metrics,
        "examples.flask_app:app",
    ]);
    let before = server.get("/pid").text();
    let waited_before = metric(&metrics, WAITED);
    let (slow, waiting) = std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/pid?ms=3000"));
        wait_metric(&server, &metrics, IN_FLIGHT, 1.0);
        // Two queued: the first moves into the lane behind the slow one.
        let waiting: Vec<_> = (0..2).map(|_| s.spawn(|| server.get("/pid"))).collect();
        wait_metric(&server, &metrics, WAITED, waited_before + 1.0);
        let waiting: Vec<_> = waiting.into_iter().map(|h| h.join().unwrap()).collect();
        (slow.join().unwrap(), waiting)
    });
    assert_eq!(slow.status, 504);
    for resp in &waiting {
        assert_eq!(resp.status, 200, "{}", server.stderr());
        assert_ne!(resp.text(), before, "served by the replacement");
    }
    assert_eq!(metric(&metrics, REDISPATCHED), 1.0);
}
