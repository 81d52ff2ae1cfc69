//! gunicorn's server hooks (issue 11, item 4; docs/hooks.md): a config
//! named by `FERROCORN_HOOKS_FROM` in which every hook appends one JSON line
//! (hook, pid, key arguments) to a file. The real server runs through
//! requests, TTIN, TTOU, a killed worker, HUP and TERM; then each hook's
//! calls and arguments are checked. Waits read that file or /proc, never
//! the log's wording.

use std::path::Path;

use serde_json::Value;

use crate::harness::{command, kill_process, wait_until, TestServer, DEADLINE};

const CONFIG: &str = r#"
import json, os
LOG = __LOG__

def _rec(hook, **facts):
    with open(LOG, "a") as f:
        f.write(json.dumps(dict(hook=hook, pid=os.getpid(), **facts)) + "\n")

def on_starting(server):
    _rec("on_starting", master=server.pid, workers=server.num_workers, bind=server.cfg.bind,
         timeout=server.cfg.timeout, max_requests=server.cfg.max_requests)
def when_ready(server): _rec("when_ready", master=server.pid)
def pre_fork(server, worker): _rec("pre_fork", age=worker.age)
def post_fork(server, worker): _rec("post_fork", age=worker.age, ppid=worker.ppid)
def post_worker_init(worker): _rec("post_worker_init", age=worker.age)
def pre_request(worker, req):
    _rec("pre_request", path=req.path, method=req.method, nr=worker.nr)
    if req.path == "/raise":
        raise RuntimeError("pre_request hook bug on purpose")
def post_request(worker, req, environ, resp):
    _rec("post_request", path=req.path, code=resp.status_code, sent=resp.sent)
def worker_int(worker): _rec("worker_int", age=worker.age)
def worker_abort(worker): _rec("worker_abort", age=worker.age)
def worker_exit(server, worker): _rec("worker_exit", age=worker.age)
def child_exit(server, worker): _rec("child_exit", age=worker.age, child=worker.pid)
def nworkers_changed(server, new_value, old_value): _rec("nworkers_changed", new=new_value, old=old_value)
def on_reload(server): _rec("on_reload")
def on_exit(server): _rec("on_exit")
"#;

const APP: &str = r#"
import os
def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn calls(log: &Path, hook: &str) -> Vec<Value> {
    records(log)
        .into_iter()
        .filter(|r| r["hook"] == hook)
        .collect()
}

/// Waits until `hook` has run at least `n` times; returns its calls.
fn wait_calls(log: &Path, hook: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} {hook} call(s)"), DEADLINE, || {
        let found = calls(log, hook);
        if found.len() >= n {
            Ok(found)
        } else {
            Err(format!("{found:?}"))
        }
    })
}

fn wait_workers(server: &TestServer, n: usize) -> Vec<u32> {
    wait_until(&format!("{n} workers"), DEADLINE, || {
        match server.worker_pids() {
            pids if pids.len() == n => Ok(pids),
            pids => Err(format!("{pids:?}")),
        }
    })
}

fn pid_of(value: &Value, key: &str) -> u32 {
    value[key].as_u64().expect("a pid") as u32
}

#[test]
fn every_server_hook_runs_with_gunicorns_arguments_issue_11() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.jsonl");
    let config = dir.path().join("gunicorn.conf.py");
    let source = CONFIG.replace("__LOG__", &format!("{:?}", log.to_str().unwrap()));
    std::fs::write(&config, source).unwrap();
    std::fs::write(dir.path().join("hooked.py"), APP).unwrap();
    let path = dir.path().to_str().unwrap();
    // As a gunicorn deployment gives it: -c gunicorn.conf.py.
    let config_arg = config.to_str().unwrap();
    let mut server = TestServer::start_binding(&[
        "-c",
        config_arg,
        "-w",
        "2",
        "--pythonpath",
        path,
        "hooked:app",
    ]);
    let master = server.pid();
    let first = wait_workers(&server, 2);
    wait_calls(&log, "when_ready", 1);

    // Requests: each one pre_request and post_request, a raising
    // pre_request included (logged, the request still gets 200).
    const SENT: usize = 5;
    for i in 0..SENT {
        assert_eq!(server.get(&format!("/n/{i}")).status, 200);
    }
    let raised = server.get("/raise");
    assert_eq!(raised.status, 200, "{}", server.stderr());
    let ours = |hook: &str| -> Vec<Value> {
        calls(&log, hook)
            .into_iter()
            .filter(|r| r["path"].as_str().unwrap_or("").starts_with("/n/"))
            .collect()
    };
    wait_until("post_request for every request", DEADLINE, || {
        let n = ours("post_request").len();
        let raise = calls(&log, "post_request")
            .iter()
            .filter(|r| r["path"] == "/raise")
            .count();
        (n == SENT && raise == 1)
            .then_some(())
            .ok_or(format!("{n} post_request calls, {raise} for /raise"))
    });
    assert_eq!(ours("pre_request").len(), SENT);
    for call in ours("post_request") {
        assert_eq!(call["code"], 200, "{call}");
        assert!(call["sent"].as_u64().unwrap() > 0, "{call}");
        assert!(first.contains(&pid_of(&call, "pid")), "{call}");
    }
    let raising = calls(&log, "post_request");
    let raising = raising.iter().find(|r| r["path"] == "/raise").unwrap();
    assert_eq!(raising["code"], 200);
    wait_until("the hook's traceback in the error log", DEADLINE, || {
        let err = server.stderr();
        err.contains("RuntimeError: pre_request hook bug on purpose")
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });

    // TTIN, TTOU: nworkers_changed, gunicorn's (new, old).
    server.signal("TTIN");
    wait_workers(&server, 3);
    wait_calls(&log, "nworkers_changed", 2);
    server.signal("TTOU");
    wait_calls(&log, "nworkers_changed", 3);
    let retired = wait_calls(&log, "child_exit", 1);
    let retired = pid_of(&retired[0], "child");
    wait_workers(&server, 2);

    // A killed worker: child_exit names its pid; its replacement is forked.
    let victim = server.worker_pids()[0];
    kill_process(victim);
    wait_until("child_exit for the killed worker", DEADLINE, || {
        calls(&log, "child_exit")
            .iter()
            .any(|c| pid_of(c, "child") == victim)
            .then_some(())
            .ok_or(format!("{:?}", calls(&log, "child_exit")))
    });
    wait_until("a replacement for the killed worker", DEADLINE, || {
        let pids = server.worker_pids();
        (pids.len() == 2 && !pids.contains(&victim))
            .then_some(())
            .ok_or(format!("{pids:?}"))
    });

    let before_hup = server.worker_pids();
    server.signal("HUP");
    wait_until("1 on_reload call", DEADLINE, || {
        let found = calls(&log, "on_reload");
        (!found.is_empty())
            .then_some(())
            .ok_or_else(|| format!("none yet; the server said:\n{}", server.stderr()))
    });
    wait_until("the HUP roll to finish", DEADLINE, || {
        let pids = server.worker_pids();
        (pids.len() == 2 && pids.iter().all(|p| !before_hup.contains(p)))
            .then_some(())
            .ok_or(format!("{pids:?}, before HUP {before_hup:?}"))
    });
    assert_eq!(server.get("/n/after-hup").status, 200);

    server.signal("TERM");
    assert_eq!(server.wait_exit(DEADLINE), Some(0), "{}", server.stderr());

    let all = records(&log);
    let count = |hook: &str| all.iter().filter(|r| r["hook"] == hook).count();
    let on_starting = calls(&log, "on_starting");
    assert_eq!(on_starting.len(), 1, "{all:?}");
    assert_eq!(pid_of(&on_starting[0], "master"), master);
    assert_eq!(on_starting[0]["workers"], 2);
    assert_eq!(on_starting[0]["timeout"], 30.0);
    assert_eq!(on_starting[0]["max_requests"], 0);
    assert_eq!(on_starting[0]["bind"], serde_json::json!(["127.0.0.1:0"]));
    assert_eq!(count("when_ready"), 1, "{all:?}");
    assert_eq!(pid_of(&calls(&log, "when_ready")[0], "master"), master);
    let changes: Vec<(Value, Value)> = calls(&log, "nworkers_changed")
        .iter()
        .map(|c| (c["new"].clone(), c["old"].clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (Value::from(2), Value::Null),
            (Value::from(3), Value::from(2)),
            (Value::from(2), Value::from(3)),
        ]
    );
    // Every forked worker: pre_fork in the fork server, then post_fork and
    // post_worker_init in the worker, which the master adopted.
    let post_fork = calls(&log, "post_fork");
    assert_eq!(count("pre_fork"), post_fork.len(), "{all:?}");
    assert!(post_fork.len() >= 2 + 1 + 1 + 2, "{all:?}"); // first, TTIN, replacement, HUP roll
    for call in &post_fork {
        assert_eq!(pid_of(call, "ppid"), master, "{call}");
    }
    assert_eq!(count("post_worker_init"), post_fork.len(), "{all:?}");
    // Exits: the retired and the killed worker, and every worker at TERM.
    let children: Vec<u32> = calls(&log, "child_exit")
        .iter()
        .map(|c| pid_of(c, "child"))
        .collect();
    assert!(children.contains(&retired) && children.contains(&victim));
    let exited: Vec<u32> = calls(&log, "worker_exit")
        .iter()
        .map(|c| pid_of(c, "pid"))
        .collect();
    assert!(exited.contains(&retired), "{all:?}");
    assert!(!exited.contains(&victim), "a SIGKILLed worker runs no hook");
    assert_eq!(count("on_reload"), 1);
    assert_eq!(count("on_exit"), 1, "{all:?}");
    assert_eq!(
        all.last().map(|r| r["hook"].clone()),
        Some(Value::from("on_exit"))
    );
}

#[test]
fn a_hooks_config_that_fails_is_a_boot_failure_exit_3_with_its_traceback() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gunicorn.conf.py");
    std::fs::write(&config, "raise ValueError('hooks config bug on purpose')\n").unwrap();
    std::fs::write(dir.path().join("hooked.py"), APP).unwrap();
    let out = command(&[
        "-b",
        "127.0.0.1:0",
        "--pythonpath",
        dir.path().to_str().unwrap(),
        "hooked:app",
    ])
    .env("FERROCORN_HOOKS_FROM", &config)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Traceback"), "{stderr}");
    assert!(
        stderr.contains("ValueError: hooks config bug on purpose"),
        "{stderr}"
    );
}
