//! The workers' CPU scheduling policy (`FERROCORN_WORKER_SCHED`): every
//! thread of every worker runs under SCHED_BATCH by default, under the
//! policy it started with when asked for `normal`, and the master never
//! changes its own; a policy that does not exist stops the start (and
//! fails `--check-config`).

use crate::harness::{command, root, wait_until, TestServer, DEADLINE};

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// The scheduling policy of each thread of `pid`, from /proc (field 41 of
/// `stat`, counted after the parenthesised command name).
fn thread_policies(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new(); // gone (a worker that exited between listing and reading)
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| {
            let after_comm = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
            after_comm
                .split(' ')
                .nth(41 - 3)
                .and_then(|policy| policy.parse().ok())
                .expect("stat has a policy")
        })
        .collect()
}

/// Starts two workers of two lane threads each under `env` and returns the
/// master's policies and every worker thread's, once both workers run
/// their lanes (a worker starts its lane threads when it is ready, and the
/// server answers as soon as the first one is).
fn policies_under(env: &[(&str, &str)]) -> (Vec<u32>, Vec<u32>) {
    let server = TestServer::start_in(
        &root(),
        env,
        &["-w", "2", "--threads", "2", "examples.flask_app:app"],
    );
    assert_eq!(server.get("/hello").status, 200);
    let threads = wait_until("both workers run their lanes", DEADLINE, || {
        let workers = server.worker_pids();
        let each: Vec<Vec<u32>> = workers.iter().map(|&pid| thread_policies(pid)).collect();
        // The main thread and the two lane threads of each worker.
        match each.iter().map(Vec::len).collect::<Vec<_>>().as_slice() {
            [a, b] if *a >= 3 && *b >= 3 => Ok(each.concat()),
            counts => Err(format!("threads per worker: {counts:?}")),
        }
    });
    (thread_policies(server.pid()), threads)
}

#[test]
fn every_worker_thread_runs_as_batch_by_default_and_the_master_does_not() {
    let (master, workers) = policies_under(&[]);
    assert!(workers.iter().all(|&p| p == SCHED_BATCH), "{workers:?}");
    assert!(master.iter().all(|&p| p == SCHED_OTHER), "{master:?}");
}

#[test]
fn workers_keep_the_normal_policy_when_asked_by_name() {
    let (_, workers) = policies_under(&[("FERROCORN_WORKER_SCHED", "normal")]);
    assert!(workers.iter().all(|&p| p == SCHED_OTHER), "{workers:?}");
}

#[test]
fn an_unknown_policy_stops_the_start_and_fails_check_config_naming_it() {
    for args in [
        &["-b", "127.0.0.1:0", "examples.flask_app:app"][..],
        &["--check-config", "examples.flask_app:app"][..],
    ] {
        let output = command(args)
            .env("FERROCORN_WORKER_SCHED", "fifo")
            .output()
            .expect("ferrocorn runs");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("FERROCORN_WORKER_SCHED") && stderr.contains("fifo"),
            "{args:?}: {stderr}"
        );
    }
}
