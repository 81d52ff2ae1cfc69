//! Workers forked by the fork server (issue 9): they are the master's own
//! children, `--preload` imports the app once, HUP reloads code under
//! `--preload` and calls off a reload whose app cannot load, a killed fork
//! server fails no request, and a fork server that cannot start leaves the
//! master starting workers as fresh interpreters.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::harness::{
    command, kill_process, python_refusing_to_be_a_fork_server, wait_until, TestServer, DEADLINE,
};

/// A plain WSGI app that records each import (one line: the importing pid)
/// and answers with `body`.
fn write_app(dir: &Path, body: &str) {
    let imports = dir.join("imports.log");
    std::fs::write(
        dir.join("counted.py"),
        format!(
            "import os\n\
             with open({imports:?}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n\
             def app(environ, start_response):\n\
             \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
             \x20   return [{body:?}.encode()]\n"
        ),
    )
    .unwrap();
}

fn imports(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("imports.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn workers(server: &TestServer, n: usize) -> Vec<u32> {
    wait_until(&format!("{n} workers"), DEADLINE, || {
        match server.worker_pids() {
            pids if pids.len() == n => Ok(pids),
            pids => Err(format!("{pids:?}")),
        }
    })
}

#[test]
fn workers_are_the_masters_children_forked_by_one_fork_server() {
    let server = TestServer::start(&["-w", "3", "examples.flask_app:app"]);
    let pids = workers(&server, 3);
    let fork_server = server.fork_server_pid().expect("a fork server runs");
    for pid in pids.iter().chain([&fork_server]) {
        assert_eq!(ppid(*pid), Some(server.pid()), "pid {pid}");
    }
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn preload_imports_the_app_once_in_the_fork_server() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "preloaded");
    let path = dir.path().to_str().unwrap();
    let server = TestServer::start(&["-w", "3", "--preload", "--pythonpath", path, "counted:app"]);
    let pids = workers(&server, 3);
    assert_eq!(body(&server), "preloaded");
    let fork_server = server.fork_server_pid().expect("a fork server runs");
    assert_eq!(
        imports(dir.path()),
        vec![fork_server],
        "{}",
        server.stderr()
    );
    for pid in pids {
        assert_eq!(ppid(pid), Some(server.pid()));
    }
}

#[test]
fn without_preload_each_worker_imports_the_app_after_the_fork() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "imported");
    let path = dir.path().to_str().unwrap();
    let server = TestServer::start(&["-w", "2", "--pythonpath", path, "counted:app"]);
    let mut pids = workers(&server, 2);
    pids.sort_unstable();
    let mut imported = wait_until("both imports", DEADLINE, || match imports(dir.path()) {
        list if list.len() == 2 => Ok(list),
        list => Err(format!("{list:?}")),
    });
    imported.sort_unstable();
    assert_eq!(imported, pids);
}

#[test]
fn a_broken_app_with_preload_exits_4_with_the_traceback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.py"),
        "raise RuntimeError('no db here')\n",
    )
    .unwrap();
    let out = command(&[
        "-b",
        "127.0.0.1:0",
        "--preload",
        "--pythonpath",
        dir.path().to_str().unwrap(),
        "broken:app",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("Traceback"), "{stderr}");
    assert!(stderr.contains("RuntimeError: no db here"), "{stderr}");
}

#[test]
fn hup_with_preload_serves_new_code_and_a_broken_new_app_keeps_the_old_code() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "version one");
    let path = dir.path().to_str().unwrap();
    let metrics = format!("127.0.0.1:{}", crate::harness::free_port());
    let server = TestServer::start(&[
        "-w",
        "2",
        "--preload",
        "--metrics-bind",
        &metrics,
        "--pythonpath",
        path,
        "counted:app",
    ]);
    let first = workers(&server, 2);
    assert_eq!(body(&server), "version one");

    write_app(dir.path(), "version two, longer");
    server.signal("HUP");
    wait_until("the new code on new workers", DEADLINE, || {
        let pids = server.worker_pids();
        let body = body(&server);
        if body == "version two, longer"
            && pids.len() == 2
            && pids.iter().all(|p| !first.contains(p))
        {
            Ok(())
        } else {
            Err(format!("{body:?} from {pids:?}"))
        }
    });
    // One import per fork server: the first and the reloaded one.
    assert_eq!(imports(dir.path()).len(), 2, "{}", server.stderr());

    let mut second = workers(&server, 2);
    second.sort_unstable();
    std::fs::write(
        dir.path().join("counted.py"),
        "raise ImportError('half-deployed')\n",
    )
    .unwrap();
    server.signal("HUP");
    wait_until("the reload to be called off", DEADLINE, || {
        let series = "ferrocorn_reloads_total{outcome=\"called_off\"} ";
        match crate::harness::metric(&metrics, series) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}; stderr:\n{}", server.stderr())),
        }
    });
    for _ in 0..10 {
        assert_eq!(body(&server), "version two, longer");
    }
    let mut after = server.worker_pids();
    after.sort_unstable();
    assert_eq!(after, second, "{}", server.stderr());
}

#[test]
fn a_killed_fork_server_fails_no_request_and_comes_back() {
    let server = TestServer::start(&["-w", "2", "--threads", "2", "examples.flask_app:app"]);
    let before = workers(&server, 2);
    let fork_server = server.fork_server_pid().expect("a fork server runs");
    let stop = AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let status = server.get("/io?ms=2").status;
                    results.lock().unwrap().push(status);
                }
            });
        }
        wait_until("some load", DEADLINE, || {
            match results.lock().unwrap().len() {
                n if n >= 20 => Ok(()),
                n => Err(format!("{n} requests")),
            }
        });
        kill_process(fork_server);
        wait_until("a new fork server", DEADLINE, || {
            match server.fork_server_pid() {
                Some(pid) if pid != fork_server => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let served = results.lock().unwrap().len();
        wait_until("more load", DEADLINE, || {
            match results.lock().unwrap().len() {
                n if n >= served + 20 => Ok(()),
                n => Err(format!("{n} requests")),
            }
        });
        stop.store(true, Ordering::Relaxed);
    });
    let results = results.into_inner().unwrap();
    let failed: Vec<_> = results.iter().filter(|&&s| s != 200).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", server.stderr());
    assert_eq!(server.worker_pids(), before, "workers serve on");

    // The new fork server forks the next worker.
    kill_process(before[0]);
    wait_until("a replacement", DEADLINE, || {
        let pids = server.worker_pids();
        if pids.len() == 2 && !pids.contains(&before[0]) {
            Ok(())
        } else {
            Err(format!("{pids:?}"))
        }
    });
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn a_fork_server_that_cannot_start_leaves_workers_starting_as_fresh_interpreters() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = python_refusing_to_be_a_fork_server(dir.path());
    // The harness passes its own --python first; the last one given wins.
    let server = TestServer::start(&[
        "-w",
        "2",
        "--python",
        wrapper.to_str().unwrap(),
        "examples.flask_app:app",
    ]);
    let pids = workers(&server, 2);
    assert_eq!(server.fork_server_pid(), None);
    for pid in pids {
        assert_eq!(ppid(pid), Some(server.pid()));
    }
    assert_eq!(server.get("/hello").status, 200);
    assert!(
        server.stderr().contains("fresh interpreters"),
        "{}",
        server.stderr()
    );
}

fn body(server: &TestServer) -> String {
    String::from_utf8_lossy(&server.get("/").body).into_owned()
}
