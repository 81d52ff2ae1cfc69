//! Signals and process lifetime: graceful TERM, TTIN/TTOU, no orphans.

use std::time::Duration;

use crate::harness::{wait_until, TestServer, DEADLINE};

#[test]
fn term_lets_the_request_in_flight_finish_then_exits_0() {
    let mut server = TestServer::start(&["-w", "1", "examples.flask_app:app"]);
    let code = std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/io?ms=3000"));
        std::thread::sleep(Duration::from_millis(500));
        server.signal("TERM");
        let resp = slow.join().unwrap();
        assert_eq!(resp.status, 200);
        resp
    });
    let _ = code;
    assert_eq!(server.wait_exit(DEADLINE), Some(0), "{}", server.stderr());
}

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let server = TestServer::start(&["-w", "1", "examples.flask_app:app"]);
    wait_until("1 worker", DEADLINE, || count(&server, 1));
    server.signal("TTIN");
    wait_until("2 workers", DEADLINE, || count(&server, 2));
    server.signal("TTOU");
    wait_until("1 worker", DEADLINE, || count(&server, 1));
    assert_eq!(server.get("/hello").status, 200);
}

fn count(server: &TestServer, n: usize) -> Result<(), String> {
    let pids = server.worker_pids();
    if pids.len() == n {
        Ok(())
    } else {
        Err(format!("{pids:?}"))
    }
}

#[test]
fn workers_die_with_a_killed_master() {
    let mut server = TestServer::start(&["-w", "2", "examples.flask_app:app"]);
    let pids = wait_until("2 workers", DEADLINE, || {
        let pids = server.worker_pids();
        if pids.len() == 2 {
            Ok(pids)
        } else {
            Err(format!("{pids:?}"))
        }
    });
    server.signal("KILL");
    let _ = server.wait_exit(DEADLINE);
    wait_until("the workers to die", DEADLINE, || {
        let alive: Vec<_> = pids
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
            })
            .collect();
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("alive: {alive:?}"))
        }
    });
}
