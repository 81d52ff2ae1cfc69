//! Issue 10 item 14: random and mutated request heads over real sockets, and
//! workers SIGKILLed at random under load. Seeded, so a failure reproduces.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{exchange_raw, http_get, proc_state, wait_until, TestServer, DEADLINE};

/// Whether `pid` runs and is not a zombie.
fn alive(pid: u32) -> bool {
    proc_state(format!("/proc/{pid}/stat")).is_some_and(|state| state != 'Z')
}

const VALID: &[&str] = &[
    "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    "GET /hello?x=1&y=%20 HTTP/1.1\r\nHost: t\r\nUser-Agent: fuzz\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /caf%C3%A9/%FF HTTP/1.0\r\nHost: t\r\nX-A: 1\r\nX-A: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
];

/// One mutation of a valid request: inserted bytes, CR/LF/NUL/0x80 bytes,
/// long lines under the limits (4094 request line, 8190 field), truncations.
fn mutate(rng: &mut StdRng, request: &[u8]) -> Vec<u8> {
    let mut bytes = request.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..7) {
            0 => {
                let b = [b'\r', b'\n', 0, 0x80, 0xff, b' ', b':', b'\t'][rng.random_range(0..8)];
                bytes.insert(at, b);
            }
            1 => {
                let noise: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.splice(at..at, noise);
            }
            2 => bytes.truncate(at),
            3 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            4 => {
                // A long path, still under --limit-request-line.
                let len = rng.random_range(100..4000);
                let path = vec![b'a'; len];
                if let Some(space) = bytes.iter().position(|&b| b == b' ') {
                    bytes.splice(space + 1..space + 1, path);
                }
            }
            5 => {
                // A long header, still under --limit-request-field_size.
                if let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") {
                    let len = rng.random_range(100..8000);
                    let mut line = b"\r\nX-Long: ".to_vec();
                    line.resize(line.len() + len, b'v');
                    bytes.splice(eol..eol, line);
                }
            }
            _ => {
                // Another header line, maybe an odd one.
                let line = [
                    &b"\r\nX_Under: 1"[..],
                    b"\r\nContent-Length: 3",
                    b"\r\nTransfer-Encoding: chunked",
                    b"\r\nHost: other",
                    b"\r\n: empty-name",
                    b"\r\nX-Obs: caf\xe9",
                    b"\r\n folded",
                    b"\r\nExpect: 100-continue",
                ][rng.random_range(0..8)];
                if let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") {
                    bytes.splice(eol..eol, line.iter().copied());
                }
            }
        }
    }
    bytes
}

/// The status one fuzzed exchange got (`None`: a clean close), or why it
/// is a failure.
fn judge(outcome: std::io::Result<(Vec<u8>, bool)>) -> Result<Option<u16>, String> {
    let (bytes, closed) = outcome.map_err(|e| format!("no answer and no close: {e}"))?;
    if bytes.is_empty() && closed {
        return Ok(None);
    }
    let line_end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| format!("no status line in {:?}", String::from_utf8_lossy(&bytes)))?;
    let line = String::from_utf8_lossy(&bytes[..line_end]).into_owned();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| (s.len() == 3).then(|| s.parse().ok()).flatten())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(format!("bad status line {line:?}"));
    }
    if !closed && !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!("incomplete head {line:?}"));
    }
    match status {
        500 | 502 => Err(format!("status line {line:?}")),
        100..=599 => Ok(Some(status)),
        _ => Err(format!("status line {line:?}")),
    }
}

#[test]
fn mutated_request_heads_get_an_answer_or_a_close() {
    let server = TestServer::start(&["-w", "1", "examples.flask_app:app"]);
    let mut rng = StdRng::seed_from_u64(0x14c1);
    let mut failures = Vec::new();
    let (mut answered, mut closed) = (0, 0);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..300 {
        let base = VALID[case % VALID.len()].as_bytes();
        let request = if case < VALID.len() {
            base.to_vec()
        } else {
            mutate(&mut rng, base)
        };
        let outcome = exchange_raw(&server.addr, &request, Duration::from_secs(10));
        match judge(outcome) {
            Ok(None) => closed += 1,
            Ok(Some(status)) => {
                answered += 1;
                *statuses.entry(status).or_default() += 1;
            }
            Err(why) => failures.push(format!(
                "case {case}: {why}; request {:?}",
                String::from_utf8_lossy(&request[..request.len().min(300)])
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 300 requests failed ({answered} answered, {closed} closed):\n{}\nstderr:\n{}",
        failures.len(),
        failures.join("\n"),
        server.stderr()
    );
    assert!(answered > 100, "only {answered} answered, {closed} closed");
    assert_eq!(server.get("/hello").status, 200);
    assert!(alive(server.pid()), "the master died");
    eprintln!("request heads: {closed} closed, {answered} answered: {statuses:?}");
}

#[test]
fn sigkilled_workers_fail_only_their_own_requests() {
    let server = TestServer::start(&["-w", "3", "--threads", "1", "examples.flask_app:app"]);
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let seen_failures = Mutex::new(Vec::new());
    let mut kills: Vec<u32> = Vec::new();
    let mut rng = StdRng::seed_from_u64(0x14c2);
    let run_for = Duration::from_secs(12);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&server.addr, "/io?ms=20") {
                        Ok(resp) if resp.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let what = other.map(|r| r.status.to_string());
                            seen_failures.lock().unwrap().push(format!("{what:?}"));
                        }
                    }
                }
            });
        }
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        while start.elapsed() < run_for {
            let pids = server.worker_pids();
            if pids.len() == 3 {
                let victim = pids[rng.random_range(0..pids.len())];
                assert!(
                    server.worker_pids().contains(&victim),
                    "only the server's own workers are killed"
                );
                crate::harness::kill_process(victim);
                kills.push(victim);
                wait_until("a replacement worker", DEADLINE, || {
                    let now = server.worker_pids();
                    if now.len() == 3 && !now.contains(&victim) {
                        Ok(())
                    } else {
                        Err(format!("workers {now:?} after killing {victim}"))
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(700..1300)));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    assert!(
        kills.len() >= 5,
        "only {} kills in {run_for:?}",
        kills.len()
    );
    assert!(
        failed <= kills.len(),
        "{failed} failed requests ({:?}) for {} killed workers, {ok} ok; stderr:\n{}",
        seen_failures.lock().unwrap(),
        kills.len(),
        server.stderr()
    );
    assert!(ok > 200, "only {ok} requests served");
    wait_until(
        "the server to serve after the kills",
        DEADLINE,
        || match server.get("/hello").status {
            200 => Ok(()),
            status => Err(format!("status {status}")),
        },
    );
    assert!(alive(server.pid()), "the master died");
    eprintln!("chaos: {} kills, {failed} failed, {ok} ok", kills.len());
}
