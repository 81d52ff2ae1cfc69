//! Requests waiting in a busy lane behind the running one: they are used
//! under load, and a worker that dies or times out takes only the request
//! it was running with it; the one waiting behind goes to another worker.

use std::process::Command;

use crate::harness::{free_port, metric, wait_until, TestServer, DEADLINE};

const WAITED: &str = "ferrocorn_requests_waited_in_lane_total ";
const REDISPATCHED: &str = "ferrocorn_requests_redispatched_total ";
const IN_FLIGHT: &str = "ferrocorn_requests_in_flight ";
const SERVING: &str = "ferrocorn_workers{state=\"serving\"} ";

/// The series' value; the test fails if `/metrics` lacks it.
fn value(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or_else(|| panic!("no {series} on /metrics"))
}

/// Waits until the series reaches `at_least`.
fn wait_metric(server: &TestServer, metrics: &str, series: &str, at_least: f64) {
    wait_until(series, DEADLINE, || match metric(metrics, series) {
        Some(value) if value >= at_least => Ok(()),
        value => Err(format!("{series}= {value:?}; log:\n{}", server.stderr())),
    });
}

/// Serves the example Flask app with `-w workers`, `extra` flags and
/// metrics on a free port; returns once every worker is serving (start()
/// waits for one) with the metrics address.
fn start(workers: &str, extra: &[&str]) -> (TestServer, String) {
    start_with_env(&[], workers, extra)
}

/// As [`start`], with `env` added to the server's environment.
pub(crate) fn start_with_env(
    env: &[(&str, &str)],
    workers: &str,
    extra: &[&str],
) -> (TestServer, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["-w", workers, "--metrics-bind", &metrics];
    args.extend_from_slice(extra);
    args.push("examples.flask_app:app");
    let server = TestServer::start_in(&crate::harness::root(), env, &args);
    let all: f64 = workers.parse().expect("a worker count");
    wait_metric(&server, &metrics, SERVING, all);
    (server, metrics)
}

/// `clients` clients, each sending `each` GETs of /hello back to back;
/// every status.
pub(crate) fn hellos(server: &TestServer, clients: usize, each: usize) -> Vec<u16> {
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    (0..each)
                        .map(|_| server.get("/hello").status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    })
}

#[test]
fn short_requests_wait_in_busy_lanes_under_load_and_none_fails() {
    let (server, metrics) = start("2", &[]);
    let statuses = hellos(&server, 8, 40);
    assert_eq!(statuses.len(), 320);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // 8 clients on 2 lanes: whenever a lane frees up, a request is waiting.
    assert!(value(&metrics, WAITED) > 0.0, "{}", server.stderr());

    // Turned off, nothing waits in a lane.
    let (server, metrics) = start("2", &["--pipeline-below", "0"]);
    assert!(server
        .get_concurrently(16, "/hello")
        .iter()
        .all(|&s| s == 200));
    assert_eq!(value(&metrics, WAITED), 0.0);
}

#[test]
fn a_killed_worker_takes_only_its_running_request_with_it() {
    killed_worker_takes_only_its_running_request(&[]);
}

/// Two slow requests run, two requests wait behind each, one worker is
/// SIGKILLed: only its running request fails, the two behind it are served
/// by the other worker. `env` picks the lanes' transport.
pub(crate) fn killed_worker_takes_only_its_running_request(env: &[(&str, &str)]) {
    // --pipeline-below 60s: requests also wait behind the slow ones here.
    let (server, metrics) = start_with_env(env, "2", &["--pipeline-below", "60s"]);
    // Each worker learns its (short) service time.
    assert!(server.get_concurrently(4, "/pid").iter().all(|&s| s == 200));
    let waited_before = value(&metrics, WAITED);
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let slow: Vec<_> = (0..2)
            .map(|_| s.spawn(|| server.get("/pid?ms=3000")))
            .collect();
        wait_metric(&server, &metrics, IN_FLIGHT, 2.0);
        // Five more: while two or more are queued (overload) the oldest move
        // into the lanes, the shortest line first, so two wait behind each
        // slow request (the default depth is 16) and the fifth stays queued.
        let waiting: Vec<_> = (0..5).map(|_| s.spawn(|| server.get("/pid"))).collect();
        wait_metric(&server, &metrics, WAITED, waited_before + 4.0);
        // One request runs and two wait in each worker's lane: kill one worker.
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
        [200, 200, 200, 200, 200, 200, 502],
        "{results:?}\n{}",
        server.stderr()
    );
    // Both requests that waited behind the killed one went elsewhere.
    assert_eq!(value(&metrics, REDISPATCHED), 2.0, "{}", server.stderr());
}

#[test]
fn a_request_waiting_behind_one_that_times_out_is_served_by_the_replacement() {
    let (server, metrics) = start("1", &["--timeout", "1", "--pipeline-below", "60s"]);
    let before = server.get("/pid").text();
    let waited_before = value(&metrics, WAITED);
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
    assert_eq!(value(&metrics, REDISPATCHED), 1.0);
}
