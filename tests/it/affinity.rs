//! Workers pinned one per CPU (`--worker-cpu-affinity`): with `spread`
//! every thread of a worker runs on the one CPU the fewest live workers
//! held when it started, a worker that dies leaves its CPU to its
//! replacement, a worker recycled after max-requests hands its CPU to the
//! one replacing it (a spare moves there when it takes over), and the
//! master is never pinned; `off` (the default) pins nothing, `auto`
//! spreads when there are at least as many workers as CPUs; an unknown
//! mode stops the start. The CPUs are read from
//! `/proc/PID/task/TID/status`; what "every CPU" means is this test's own
//! affinity, which the master inherits.

use crate::harness::{command, kill_process, root, wait_until, TestServer, DEADLINE};

/// The CPUs in a `Cpus_allowed_list` value such as `0-3,6`.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    list.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
            first..=last
        })
        .collect()
}

fn cpus_in(status: &str) -> Option<Vec<usize>> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(parse_cpu_list)
}

/// The CPUs this test may run on, and so the master it starts.
fn our_cpus() -> Vec<usize> {
    cpus_in(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap()
}

/// Each thread's allowed CPUs, for every thread of `pid` (empty once it is gone).
fn thread_cpus(pid: u32) -> Vec<Vec<usize>> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| cpus_in(&status))
        .collect()
}

/// The server's `workers` workers other than `gone`, each running its main
/// thread and `lanes` lane threads (a worker starts them once ready), all
/// threads of one worker on the same CPUs: each worker's pid and CPUs.
fn pool(
    server: &TestServer,
    workers: usize,
    lanes: usize,
    gone: &[u32],
) -> Result<Vec<(u32, Vec<usize>)>, String> {
    let pids: Vec<u32> = server
        .worker_pids()
        .into_iter()
        .filter(|pid| !gone.contains(pid))
        .collect();
    if pids.len() != workers {
        return Err(format!("workers: {pids:?}"));
    }
    let mut each = Vec::new();
    for pid in pids {
        let threads = thread_cpus(pid);
        if threads.len() < 1 + lanes {
            return Err(format!("worker {pid} runs {} threads", threads.len()));
        }
        if threads.iter().any(|cpus| *cpus != threads[0]) {
            return Err(format!("worker {pid}'s threads differ: {threads:?}"));
        }
        each.push((pid, threads[0].clone()));
    }
    Ok(each)
}

/// Waits for [`pool`].
fn workers_and_cpus(
    server: &TestServer,
    workers: usize,
    lanes: usize,
    gone: &[u32],
) -> Vec<(u32, Vec<usize>)> {
    wait_until("the workers and their lane threads", DEADLINE, || {
        pool(server, workers, lanes, gone)
    })
}

/// Asserts each worker runs on one CPU of ours and, while there are CPUs
/// enough, no two share one.
fn assert_spread(each: &[(u32, Vec<usize>)]) {
    let ours = our_cpus();
    let pinned: Vec<usize> = each
        .iter()
        .map(|(pid, cpus)| match cpus.as_slice() {
            [cpu] if ours.contains(cpu) => *cpu,
            other => panic!("worker {pid} may run on {other:?}; ours: {ours:?}"),
        })
        .collect();
    let mut distinct = pinned.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), pinned.len().min(ours.len()), "{each:?}");
}

fn start(args: &[&str]) -> TestServer {
    let server = TestServer::start_in(&root(), &[], args);
    assert_eq!(server.get("/hello").status, 200);
    server
}

#[test]
fn spread_pins_every_thread_of_each_worker_to_a_cpu_of_its_own_and_never_the_master() {
    let server = start(&[
        "-w",
        "2",
        "--threads",
        "2",
        "--worker-cpu-affinity",
        "spread",
        "examples.flask_app:app",
    ]);
    assert_spread(&workers_and_cpus(&server, 2, 2, &[]));
    let master = thread_cpus(server.pid());
    assert!(!master.is_empty());
    assert!(master.iter().all(|cpus| *cpus == our_cpus()), "{master:?}");
}

#[test]
fn a_worker_that_dies_leaves_its_cpu_to_its_replacement() {
    let server = start(&[
        "-w",
        "2",
        "--worker-cpu-affinity",
        "spread",
        "examples.flask_app:app",
    ]);
    let before = workers_and_cpus(&server, 2, 1, &[]);
    assert_spread(&before);
    let (killed, its_cpus) = before[0].clone();
    kill_process(killed);
    let after = workers_and_cpus(&server, 2, 1, &[killed]);
    assert_spread(&after);
    let replacement = after
        .iter()
        .find(|(pid, _)| *pid != before[1].0)
        .expect("a new worker");
    assert_eq!(
        replacement.1, its_cpus,
        "before {before:?}, after {after:?}"
    );
}

/// Recycles the workers every 4 requests, over and over, sending requests
/// that sleep 100 ms two at a time: two that both finished within 180 ms
/// of being sent ran at the same time. If both workers answer again later,
/// neither was finishing its last request beside its own replacement (which
/// takes its CPU), so they were the two serving workers, and must be on
/// different CPUs.
fn serving_workers_stay_spread(spares: usize) {
    let count = spares.to_string();
    let server = start(&[
        "-w",
        "2",
        "--max-requests",
        "4",
        "--spare-workers",
        &count,
        "--worker-cpu-affinity",
        "spread",
        "examples.flask_app:app",
    ]);
    let mut together = Vec::new();
    let mut rounds: Vec<Vec<u32>> = Vec::new();
    for _ in 0..24 {
        let sent = std::time::Instant::now();
        let answers: Vec<(u32, std::time::Duration, Vec<Vec<usize>>)> = std::thread::scope(|s| {
            let both: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let resp = server.get("/pid?ms=100");
                        assert_eq!(resp.status, 200);
                        let pid: u32 = resp.text().trim().parse().expect("a pid");
                        (pid, sent.elapsed(), thread_cpus(pid))
                    })
                })
                .collect();
            both.into_iter().map(|h| h.join().unwrap()).collect()
        });
        rounds.push(answers.iter().map(|a| a.0).collect());
        let [(a, a_took, a_cpus), (b, b_took, b_cpus)] = &answers[..] else {
            unreachable!()
        };
        let limit = std::time::Duration::from_millis(180);
        if a == b || *a_took > limit || *b_took > limit || a_cpus.is_empty() || b_cpus.is_empty() {
            continue; // not both at once, or one left already
        }
        for (pid, threads) in [(a, a_cpus), (b, b_cpus)] {
            assert!(
                threads.iter().all(|t| *t == threads[0]),
                "worker {pid}: {threads:?}"
            );
        }
        together.push((
            rounds.len(),
            [(*a, a_cpus[0].clone()), (*b, b_cpus[0].clone())],
        ));
    }
    let workers: std::collections::BTreeSet<u32> = rounds.iter().flatten().copied().collect();
    assert!(workers.len() >= 8, "the workers were recycled: {rounds:?}");
    let answers_later =
        |pid: u32, after: usize| rounds[after..].iter().flatten().any(|p| *p == pid);
    let serving: Vec<_> = together
        .iter()
        .filter(|(after, pair)| pair.iter().all(|(pid, _)| answers_later(*pid, *after)))
        .collect();
    assert!(
        serving.len() >= 3,
        "pairs of serving workers: {serving:?}; rounds {rounds:?}"
    );
    for (_, pair) in serving {
        assert_spread(pair);
    }
}

#[test]
fn a_replacement_for_a_recycled_worker_takes_its_cpu() {
    // Without a spare, the replacement starts while the old worker still
    // runs, and must take its CPU, not the first of the two both hold.
    serving_workers_stay_spread(0);
}

#[test]
fn a_spare_that_takes_over_moves_to_the_cpu_of_the_worker_it_replaces() {
    // The spare was placed when it started, before anyone knew whom it
    // would replace.
    serving_workers_stay_spread(1);
}

#[test]
fn off_by_default_pins_nothing_and_auto_spreads_with_a_worker_for_every_cpu() {
    let ours = our_cpus();
    for args in [
        &[
            "-w",
            "2",
            "--worker-cpu-affinity",
            "off",
            "examples.flask_app:app",
        ][..],
        &["-w", "2", "examples.flask_app:app"][..],
    ] {
        let server = start(args);
        for (pid, cpus) in workers_and_cpus(&server, 2, 1, &[]) {
            assert_eq!(cpus, ours, "{args:?}: worker {pid}");
        }
    }
    // As many workers as CPUs spreads them (on a single CPU there is
    // nothing to spread; past 8 CPUs this starts fewer workers than CPUs).
    let workers = ours.len().clamp(1, 8);
    let count = workers.to_string();
    let auto = start(&[
        "-w",
        &count,
        "--worker-cpu-affinity",
        "auto",
        "examples.flask_app:app",
    ]);
    let each = workers_and_cpus(&auto, workers, 1, &[]);
    if ours.len() >= 2 && ours.len() <= 8 {
        assert_spread(&each);
    } else {
        assert!(each.iter().all(|(_, cpus)| *cpus == ours), "{each:?}");
    }
}

#[test]
fn an_unknown_mode_stops_the_start_naming_it() {
    for args in [
        &[
            "-b",
            "127.0.0.1:0",
            "--worker-cpu-affinity",
            "fast",
            "examples.flask_app:app",
        ][..],
        &[
            "--check-config",
            "--worker-cpu-affinity",
            "fast",
            "examples.flask_app:app",
        ][..],
    ] {
        let output = command(args).output().expect("ferrocorn runs");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("worker-cpu-affinity") && stderr.contains("fast"),
            "{args:?}: {stderr}"
        );
    }
}
