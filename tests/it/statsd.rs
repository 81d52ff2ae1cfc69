//! gunicorn's statsd metrics (issue 12 item 5): the test is the collector,
//! a UDP socket on 127.0.0.1, and reads what the master flushes each second.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::{TestServer, DEADLINE};

/// What the collector has seen so far, summed as statsd would.
#[derive(Debug, Default)]
struct Seen {
    counters: HashMap<String, u64>,
    /// Gauges and histograms (`gunicorn.backlog`): the last value.
    gauges: HashMap<String, u64>,
    timers: usize,
    /// Lines not in `NAME:VALUE|TYPE|#env:test` form.
    malformed: Vec<String>,
    datagrams: usize,
}

impl Seen {
    fn add(&mut self, datagram: &str) {
        self.datagrams += 1;
        for line in datagram.split('\n') {
            let parsed = line.strip_suffix("|#env:test").and_then(|rest| {
                let (name, rest) = rest.split_once(':')?;
                let (value, kind) = rest.split_once('|')?;
                Some((name.to_string(), value, kind))
            });
            match parsed {
                Some((name, value, "c")) if value.parse::<u64>().is_ok() => {
                    *self.counters.entry(name).or_default() += value.parse::<u64>().unwrap();
                }
                Some((name, value, "g" | "h")) if value.parse::<u64>().is_ok() => {
                    self.gauges.insert(name, value.parse().unwrap());
                }
                Some((name, value, "ms"))
                    if name == "app.gunicorn.request.duration" && value.parse::<f64>().is_ok() =>
                {
                    self.timers += 1;
                }
                _ => self.malformed.push(line.to_string()),
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Reads datagrams into `seen` until `done` holds or the deadline passes.
fn collect_until(collector: &UdpSocket, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while !done(seen) {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; seen: {seen:?}"
        );
        match collector.recv(&mut buf) {
            Ok(n) => {
                assert!(n <= 1432, "a datagram of {n} bytes");
                seen.add(std::str::from_utf8(&buf[..n]).expect("statsd lines are ASCII"));
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => panic!("collector recv: {err}"),
        }
    }
}

#[test]
fn requests_statuses_durations_workers_and_backlog_reach_the_collector() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let statsd = collector.local_addr().unwrap().to_string();
    // `spawn`, not `start`: its readiness probes would be counted too. The
    // workers gauge says when the server serves.
    let server = TestServer::spawn(&[
        "-w",
        "2",
        "--statsd-host",
        &statsd,
        "--statsd-prefix",
        "app",
        "--dogstatsd-tags",
        "env:test",
        "--enable-backlog-metric",
        "examples.flask_app:app",
    ]);
    let mut seen = Seen::default();
    collect_until(&collector, &mut seen, "app.gunicorn.workers = 2", |s| {
        s.gauges.get("app.gunicorn.workers") == Some(&2)
    });
    assert_eq!(
        seen.counter("app.gunicorn.requests"),
        0,
        "nothing was requested yet"
    );

    let (ok, missing) = (12, 3);
    for _ in 0..ok {
        assert_eq!(server.get("/hello").status, 200);
    }
    for _ in 0..missing {
        assert_eq!(server.get("/no-such-page").status, 404);
    }
    let n = ok + missing;
    collect_until(
        &collector,
        &mut seen,
        "the requests counter to reach N",
        |s| s.counter("app.gunicorn.requests") >= n && s.timers >= n as usize,
    );
    assert_eq!(seen.counter("app.gunicorn.requests"), n, "{seen:?}");
    assert_eq!(
        seen.counter("app.gunicorn.request.status.200"),
        ok,
        "{seen:?}"
    );
    assert_eq!(
        seen.counter("app.gunicorn.request.status.404"),
        missing,
        "{seen:?}"
    );
    assert_eq!(
        seen.timers, n as usize,
        "one timer line per request: {seen:?}"
    );
    // Nothing waits in the accept queue of a server this idle.
    assert_eq!(
        seen.gauges.get("app.gunicorn.backlog"),
        Some(&0),
        "{seen:?}"
    );
    // A stopping server sends its last second too.
    for _ in 0..2 {
        assert_eq!(server.get("/hello").status, 200);
    }
    drop(server);
    collect_until(&collector, &mut seen, "the last flush, at exit", |s| {
        s.counter("app.gunicorn.requests") >= n + 2
    });
    assert_eq!(
        seen.counter("app.gunicorn.request.status.200"),
        ok + 2,
        "{seen:?}"
    );
    assert!(
        seen.malformed.is_empty(),
        "lines not in gunicorn's form: {:?}",
        seen.malformed
    );
}

/// Whether any UDP socket of this machine is bound to `port` (/proc/net/udp).
fn udp_port_taken(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        line.split_whitespace()
            .nth(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
            == Some(port)
    })
}

#[test]
fn a_collector_that_is_down_costs_requests_nothing_and_is_logged_once() {
    // A port nothing listens on: each send after the first is refused. The
    // port is free when probed, but another test's socket may take it
    // before the first send; then the sends are not refused, and the test
    // starts again on another port.
    let (server, statsd) = loop {
        let port = {
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let statsd = format!("127.0.0.1:{port}");
        let server = TestServer::start(&["--statsd-host", &statsd, "examples.flask_app:app"]);
        let warned = |server: &TestServer| {
            server.stderr().lines().any(|line| {
                line.contains("[WARNING]") && line.contains(&format!("statsd at {statsd}"))
            })
        };
        let start = Instant::now();
        let mut taken = false;
        while !warned(&server) {
            assert!(
                start.elapsed() < DEADLINE,
                "no warning about the refused sends; stderr:\n{}",
                server.stderr()
            );
            assert_eq!(server.get("/hello").status, 200);
            // The master's own socket holds a port of its own, not this one.
            if udp_port_taken(port) {
                taken = true;
                break;
            }
        }
        if !taken {
            break (server, statsd);
        }
    };
    let warnings = || {
        server
            .stderr()
            .lines()
            .filter(|line| {
                line.contains("[WARNING]") && line.contains(&format!("statsd at {statsd}"))
            })
            .count()
    };
    // A few more flushes (one a second) must not repeat it.
    let more = Instant::now();
    while more.elapsed() < Duration::from_secs(3) {
        assert_eq!(server.get("/hello").status, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(warnings(), 1, "stderr:\n{}", server.stderr());
}
