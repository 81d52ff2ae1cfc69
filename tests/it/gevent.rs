//! `-k gevent`: many requests at once per worker, each in its own greenlet,
//! over one multiplexed lane socket; with gevent from `.venv-gevent` and
//! the app in `tests/it/apps/greenlets.py`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::*;

fn start_gevent(extra: &[&str]) -> TestServer {
    start_gevent_with(&[], extra)
}

fn start_gevent_with(env: &[(&str, &str)], extra: &[&str]) -> TestServer {
    let python = gevent_python();
    let python = python.to_str().unwrap();
    let mut args = vec![
        "--python",
        python,
        "-k",
        "gevent",
        "--chdir",
        "tests/it/apps",
    ];
    args.extend_from_slice(extra);
    args.push("greenlets:app");
    TestServer::start_in(&root(), env, &args)
}

#[test]
fn two_hundred_sleeping_requests_run_at_once_on_one_worker() {
    let server = start_gevent(&["-w", "1", "--worker-connections", "500"]);
    // Each sleeps until all 200 have been in at once (at most 20 s).
    let statuses = server.get_concurrently(200, "/io?ms=20000&until=200");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{statuses:?}\n{}",
        server.stderr()
    );
    let peak: usize = server.get("/peak").text().parse().unwrap();
    assert!(peak >= 200, "the app saw at most {peak} requests at once");
    assert!(
        server.stderr().contains("Using worker: gevent"),
        "{}",
        server.stderr()
    );
}

#[test]
fn bodies_stream_both_ways_through_many_greenlets_at_once() {
    let server = start_gevent(&["-w", "1", "--worker-connections", "100"]);
    std::thread::scope(|s| {
        let echoes: Vec<_> = (0..16)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    // Past the 256 KiB window both ways, each a different length.
                    let body: Vec<u8> = (0..600_000 + i * 1_001)
                        .map(|n| (n * 7 + i) as u8)
                        .collect();
                    let resp = server.post("/echo", &body);
                    (resp.status, resp.body == body)
                })
            })
            .collect();
        let streams: Vec<_> = (0..16)
            .map(|_| s.spawn(|| server.get("/stream?chunks=5&ms=50")))
            .collect();
        for echo in echoes {
            assert_eq!(echo.join().unwrap(), (200, true), "{}", server.stderr());
        }
        for stream in streams {
            let resp = stream.join().unwrap();
            assert_eq!(resp.status, 200);
            assert_eq!(resp.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
        }
    });
}

#[test]
fn a_request_past_the_timeout_gets_504_and_the_others_are_served() {
    let server = start_gevent(&["-w", "1", "--timeout", "2", "--graceful-timeout", "2"]);
    std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/io?ms=20000"));
        // Requests around it keep being served while it sleeps.
        for _ in 0..5 {
            assert_eq!(server.get("/io?ms=10").status, 200);
        }
        assert_eq!(slow.join().unwrap().status, 504, "{}", server.stderr());
    });
    wait_until("serving after the timeout", DEADLINE, || {
        match server.get("/pid").status {
            200 => Ok(()),
            other => Err(format!("status {other}")),
        }
    });
}

#[test]
fn a_killed_worker_fails_only_its_own_requests() {
    let marks = tempfile::tempdir().unwrap();
    let dir = marks.path().to_str().unwrap();
    let server = start_gevent_with(&[], &["-w", "2", "-e", &format!("MARK_DIR={dir}")]);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2, "{}", server.stderr());
    let count = 60;
    // Each sleeps 6 s: long enough that none is over before the kill, even
    // on a busy machine (one that were would succeed and fail the test).
    let victim = std::thread::scope(|s| {
        let requests: Vec<_> = (0..count)
            .map(|id| {
                let server = &server;
                s.spawn(move || (id, http_get(&server.addr, &format!("/io?ms=6000&id={id}"))))
            })
            .collect();
        // Every request is in the app (each wrote its id) before the kill.
        let victim = wait_until("every request to start", DEADLINE, || {
            let started: usize = workers.iter().map(|pid| marked(dir, *pid).len()).sum();
            let victim = workers
                .iter()
                .copied()
                .find(|pid| !marked(dir, *pid).is_empty());
            match victim {
                Some(pid) if started == count => Ok(pid),
                _ => Err(format!("{started} of {count} started")),
            }
        });
        kill_process(victim);
        let theirs = marked(dir, victim);
        for handle in requests {
            let (id, result) = handle.join().unwrap();
            let ok = matches!(&result, Ok(resp) if resp.status == 200);
            assert_eq!(
                ok,
                !theirs.contains(&id.to_string()),
                "request {id} ({result:?}): only the killed worker's requests may fail\n{}",
                server.stderr()
            );
        }
        victim
    });
    wait_until("a replacement worker", DEADLINE, || {
        let now = server.worker_pids();
        match now.len() == 2 && !now.contains(&victim) {
            true => Ok(()),
            false => Err(format!("workers {now:?}")),
        }
    });
    assert_eq!(server.get("/pid").status, 200);
}

/// The ids the app marked in `dir` for worker `pid`.
fn marked(dir: &str, pid: u32) -> HashSet<String> {
    std::fs::read_to_string(format!("{dir}/{pid}"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_cpu_bound_request_holds_up_its_workers_other_greenlets() {
    let marks = tempfile::tempdir().unwrap();
    let dir = marks.path().to_str().unwrap();
    let server = start_gevent_with(&[], &["-w", "1", "-e", &format!("MARK_DIR={dir}")]);
    let mark = || std::fs::read_to_string(format!("{dir}/cpu")).unwrap_or_default();
    std::thread::scope(|s| {
        let server = &server;
        let cpu = s.spawn(move || server.get("/cpu?ms=1500&mark=cpu").status);
        wait_until("the CPU-bound request to start", DEADLINE, || {
            match mark() {
                text if text.contains("started") => Ok(()),
                text => Err(format!("mark {text:?}")),
            }
        });
        // Sent while the CPU is held: answered only once the app let go of it.
        assert_eq!(server.get("/pid").status, 200);
        assert!(
            mark().contains("ended"),
            "another greenlet ran while a request held the CPU; as in gunicorn's gevent worker, it must wait"
        );
        assert_eq!(cpu.join().unwrap(), 200);
    });
}

#[test]
fn max_requests_recycles_a_gevent_worker() {
    let server = start_gevent(&["-w", "1", "--max-requests", "20"]);
    let first = server.get("/pid").text();
    let statuses = server.get_concurrently(50, "/io?ms=20");
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    server.wait_for_new_worker(&first);
}

#[test]
fn a_graceful_stop_finishes_the_requests_in_flight() {
    let marks = tempfile::tempdir().unwrap();
    let dir = marks.path().to_str().unwrap();
    let mut server = start_gevent_with(&[], &["-w", "1", "-e", &format!("MARK_DIR={dir}")]);
    let pid = server.worker_pids()[0];
    std::thread::scope(|s| {
        let requests: Vec<_> = (0..40)
            .map(|id| {
                let addr = server.addr.clone();
                s.spawn(move || http_get(&addr, &format!("/io?ms=1000&id={id}")).map(|r| r.status))
            })
            .collect();
        wait_until("every request to start", DEADLINE, || {
            match marked(dir, pid).len() {
                40 => Ok(()),
                n => Err(format!("{n} started")),
            }
        });
        server.signal("TERM");
        for request in requests {
            assert_eq!(request.join().unwrap(), Ok(200));
        }
    });
    assert_eq!(server.wait_exit(DEADLINE), Some(0), "{}", server.stderr());
}

#[test]
fn without_gevent_installed_the_server_stops_at_start_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    // A virtualenv of our own, without pip or anything else: no gevent, whatever the machine has.
    let made = std::process::Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let bare = venv.join("bin/python");
    let args = [
        "-b",
        "127.0.0.1:0",
        "--python",
        bare.to_str().unwrap(),
        "-k",
        "gevent",
    ];
    let output = command(&args)
        .args(["--chdir", "tests/it/apps", "greenlets:app"])
        .output()
        .expect("ferrocorn runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("worker class gevent needs the gevent package"),
        "{stderr}"
    );
    assert!(stderr.contains("No module named 'gevent'"), "{stderr}");
    assert!(stderr.contains("pip install gevent"), "{stderr}");
}

#[test]
fn too_many_worker_connections_for_a_gevent_worker_is_refused_by_name() {
    let args = [
        "-b",
        "127.0.0.1:0",
        "-k",
        "gevent",
        "--worker-connections",
        "70000",
    ];
    let output = command(&args)
        .arg("greenlets:app")
        .output()
        .expect("ferrocorn runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("worker_connections"), "{stderr}");
    assert!(
        stderr.contains("at most 65536 with worker class gevent"),
        "{stderr}"
    );
}

#[test]
fn with_preload_the_fork_server_patches_before_it_imports_the_app() {
    // Patched before the import, the app's time.sleep is gevent's in every
    // forked worker: sleeps overlap in one worker (unpatched, the first
    // would hold the worker for its whole 10 s and the rest queue behind).
    let server = start_gevent(&["-w", "1", "--preload"]);
    let statuses = server.get_concurrently(50, "/io?ms=10000&until=50");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{statuses:?}\n{}",
        server.stderr()
    );
    let peak: usize = server.get("/peak").text().parse().unwrap();
    assert!(peak >= 50, "only {peak} requests slept at once");
    assert!(
        server.stderr().contains("preload=true"),
        "{}",
        server.stderr()
    );
}

/// The race behind the test above failing 2 runs in ~10: a gevent-patched
/// fork server whose first fork creates the hub, and with it libev's
/// SIGCHLD handler, only after the middle process has exited. gevent's
/// waitpid then waits forever on a child watcher that never fires. Here
/// the parent is held back (an at-fork hook in the fork server's process
/// only) until the middle process has surely exited; the double fork must
/// still return the worker's pid.
#[test]
fn a_gevent_patched_fork_server_reaps_a_middle_process_that_exited_before_its_hub_existed() {
    let script = r#"
import os, sys
sys.path.insert(0, "python")
from gevent import monkey
monkey.patch_all()
import ferrocorn_worker as fw
from gevent.hub import _get_hub
assert _get_hub() is None, "a hub before the first fork: this test would not provoke the race"
real_sleep = monkey.get_original("time", "sleep")
top = os.getpid()
os.register_at_fork(after_in_parent=lambda: os.getpid() == top and real_sleep(0.5))
try:
    pid = fw.ForkServer.double_fork(None, 1, [])
except fw.BecomeWorker:
    os._exit(0)
print(pid, flush=True)
"#;
    let mut child = std::process::Command::new(gevent_python())
        .args(["-c", script])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Polled rather than wait_until: a hung child is killed, not left behind.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let hung = child.try_wait().unwrap().is_none();
    if hung {
        child.kill().unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!hung, "the double fork never returned\n{stdout}\n{stderr}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.trim().parse::<u32>().is_ok(), "{stdout}\n{stderr}");
}

#[test]
fn a_leaking_app_on_gevent_is_recycled_past_the_memory_limit_without_failing_a_request() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let python = gevent_python();
    let server = TestServer::start_in(
        &root(),
        &[],
        &[
            "--python",
            python.to_str().unwrap(),
            "-k",
            "gevent",
            "-w",
            "2",
            "--max-memory",
            "100MB",
            "--memory-check-interval",
            "100ms",
            "--metrics-bind",
            &metrics,
            "examples.flask_app:app",
        ],
    );
    // 300 MiB leaked, 10 at a time, against about 60 MiB of room per worker.
    for _ in 0..30 {
        let statuses = server.get_concurrently(10, "/leak?kb=1024");
        assert!(
            statuses.iter().all(|&s| s == 200),
            "{statuses:?}\n{}",
            server.stderr()
        );
    }
    let restarts = wait_until("memory restarts", DEADLINE, || {
        match metric(
            &metrics,
            "ferrocorn_worker_restarts_total{reason=\"memory\"}",
        ) {
            Some(n) if n >= 2.0 => Ok(n),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(restarts >= 2.0);
}
