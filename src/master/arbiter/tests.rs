//! The arbiter fed with events and a fake clock: no processes, no sleeps.

use super::*;
use crate::dispatch::PoolNews;
use crate::master::event::ExitStatus;
use crate::master::policy::backoff::{self, Verdict};
use rand::SeedableRng;

fn arbiter(workers: usize) -> (Arbiter, Instant) {
    with_config(ArbiterConfig::basic(workers, Duration::from_secs(10)))
}

fn with_config(config: ArbiterConfig) -> (Arbiter, Instant) {
    let arbiter = Arbiter::with_rng(config, StdRng::seed_from_u64(42));
    (arbiter, Instant::now())
}

/// The workers an event spawned (shared with the recycling tests).
pub(super) fn spawned(actions: &[Action]) -> Vec<WorkerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { worker } => Some(*worker),
            _ => None,
        })
        .collect()
}

/// Starts `n` workers and brings them all to Serving.
fn serving(n: usize) -> (Arbiter, Instant, Vec<WorkerId>) {
    serving_with(ArbiterConfig::basic(n, Duration::from_secs(10)))
}

fn serving_with(config: ArbiterConfig) -> (Arbiter, Instant, Vec<WorkerId>) {
    let (mut arb, now) = with_config(config);
    let ids = spawned(&arb.on_event(Event::Start, now));
    for &worker in &ids {
        ready(&mut arb, worker, now);
    }
    (arb, now, ids)
}

/// Brings a booting worker to Serving; returns what the arbiter did.
fn ready(arb: &mut Arbiter, worker: WorkerId, now: Instant) -> Vec<Action> {
    arb.on_event(
        Event::Spawned {
            worker,
            pid: 100 + worker.0 as u32,
        },
        now,
    );
    let actions = arb.on_event(Event::Ready { worker }, now);
    assert!(matches!(actions[0], Action::Admit { worker: w, .. } if w == worker));
    actions
}

#[test]
fn start_spawns_the_desired_count() {
    let (mut arb, now) = arbiter(3);
    assert_eq!(spawned(&arb.on_event(Event::Start, now)).len(), 3);
}

#[test]
fn a_crash_is_replaced_at_once() {
    let (mut arb, now, ids) = serving(2);
    let actions = arb.on_event(
        Event::Exited {
            worker: ids[0],
            status: ExitStatus::Signal(9),
        },
        now,
    );
    assert!(actions.contains(&Action::Forget { worker: ids[0] }));
    assert_eq!(spawned(&actions).len(), 1);
}

#[test]
fn app_load_failure_stops_the_master_with_4() {
    let (mut arb, now) = arbiter(2);
    let ids = spawned(&arb.on_event(Event::Start, now));
    let actions = arb.on_event(
        Event::BootFailed {
            worker: ids[0],
            app_load: true,
            message: "app failed to load: no module named nope".into(),
        },
        now,
    );
    assert!(matches!(
        actions.last(),
        Some(Action::Exit { code: ExitCode::AppLoad, message: Some(m) }) if m.contains("nope")
    ));
    assert!(arb.finished());
}

#[test]
fn boot_deaths_back_off_then_give_up() {
    let (mut arb, mut now) = arbiter(1);
    let mut worker = spawned(&arb.on_event(Event::Start, now))[0];
    for failure in 1..backoff::GIVE_UP_AFTER {
        let actions = arb.on_event(
            Event::Exited {
                worker,
                status: ExitStatus::Code(1),
            },
            now,
        );
        assert!(
            spawned(&actions).is_empty(),
            "failure {failure} respawned at once"
        );
        let Verdict::RetryAfter(delay) = backoff::after_failures(failure) else {
            panic!("gave up too early");
        };
        assert!(spawned(&arb.on_event(Event::Tick, now + delay / 2)).is_empty());
        now += delay;
        let respawn = spawned(&arb.on_event(Event::Tick, now));
        assert_eq!(
            respawn.len(),
            1,
            "no respawn after the back-off of failure {failure}"
        );
        worker = respawn[0];
    }
    let actions = arb.on_event(
        Event::Exited {
            worker,
            status: ExitStatus::Code(1),
        },
        now,
    );
    assert!(matches!(
        actions.last(),
        Some(Action::Exit {
            code: ExitCode::WorkerBoot,
            ..
        })
    ));
}

#[test]
fn ready_resets_the_back_off() {
    let (mut arb, now) = arbiter(1);
    let first = spawned(&arb.on_event(Event::Start, now))[0];
    arb.on_event(
        Event::Exited {
            worker: first,
            status: ExitStatus::Code(1),
        },
        now,
    );
    let second = spawned(&arb.on_event(Event::Tick, now + Duration::from_secs(1)))[0];
    arb.on_event(Event::Ready { worker: second }, now);
    assert_eq!(arb.boot_failures, 0);
}

#[test]
fn term_drains_then_stops_workers_then_exits_clean() {
    let (mut arb, now, ids) = serving(2);
    let actions = arb.on_event(Event::Signal(Sig::Term), now);
    assert_eq!(actions, vec![Action::StopAccepting { graceful: true }]);
    let actions = arb.on_event(Event::ConnectionsClosed, now);
    for &worker in &ids {
        assert!(actions.contains(&Action::Stop { worker }));
    }
    // A stopping server replaces nobody.
    let actions = arb.on_event(
        Event::Exited {
            worker: ids[0],
            status: ExitStatus::Code(0),
        },
        now,
    );
    assert!(spawned(&actions).is_empty());
    let actions = arb.on_event(
        Event::Exited {
            worker: ids[1],
            status: ExitStatus::Code(0),
        },
        now,
    );
    assert!(matches!(
        actions.last(),
        Some(Action::Exit {
            code: ExitCode::Clean,
            ..
        })
    ));
}

#[test]
fn term_past_the_graceful_timeout_stops_workers_anyway() {
    let (mut arb, now, ids) = serving(1);
    arb.on_event(Event::Signal(Sig::Term), now);
    assert!(arb
        .on_event(Event::Tick, now + Duration::from_secs(9))
        .is_empty());
    let actions = arb.on_event(Event::Tick, now + Duration::from_secs(10));
    assert!(actions.contains(&Action::Stop { worker: ids[0] }));
    let actions = arb.on_event(Event::Tick, now + Duration::from_secs(16));
    assert!(actions.contains(&Action::Signal {
        worker: ids[0],
        signal: WorkerSignal::Kill
    }));
    assert!(arb.finished());
}

#[test]
fn quick_stop_exits_at_once() {
    let (mut arb, now, _) = serving(2);
    let actions = arb.on_event(Event::Signal(Sig::Int), now);
    assert_eq!(actions[0], Action::StopAccepting { graceful: false });
    assert!(matches!(
        actions.last(),
        Some(Action::Exit {
            code: ExitCode::Clean,
            ..
        })
    ));
}

#[test]
fn timeout_aborts_the_worker_and_replaces_it_at_once() {
    let (mut arb, now, ids) = serving(2);
    let actions = arb.on_event(Event::RequestTimeout { worker: ids[1] }, now);
    assert!(actions.contains(&Action::Retire {
        worker: ids[1],
        reason: RetireReason::Timeout
    }));
    assert!(actions.contains(&Action::Signal {
        worker: ids[1],
        signal: WorkerSignal::Abort
    }));
    assert_eq!(
        spawned(&actions).len(),
        1,
        "capacity must not wait for the exit"
    );
    let actions = arb.on_event(
        Event::Exited {
            worker: ids[1],
            status: ExitStatus::Signal(6),
        },
        now,
    );
    assert!(spawned(&actions).is_empty(), "already replaced");
}

#[test]
fn ttin_and_ttou_change_the_count() {
    let (mut arb, now, ids) = serving(2);
    assert_eq!(
        spawned(&arb.on_event(Event::Signal(Sig::Ttin), now)).len(),
        1
    );
    let actions = arb.on_event(Event::Signal(Sig::Ttou), now);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Retire {
            reason: RetireReason::ScaleDown,
            ..
        }
    )));
    let (mut one, now, _) = serving(1);
    assert!(
        one.on_event(Event::Signal(Sig::Ttou), now).is_empty(),
        "never below one worker"
    );
    let _ = ids;
}

#[test]
fn a_retiring_worker_that_overstays_gets_term_then_kill() {
    let (mut arb, now, ids) = serving(1);
    arb.on_event(Event::ProtocolError { worker: ids[0] }, now);
    let actions = arb.on_event(Event::Tick, now + Duration::from_secs(10));
    assert!(actions.contains(&Action::Signal {
        worker: ids[0],
        signal: WorkerSignal::Term
    }));
    let actions = arb.on_event(Event::Tick, now + Duration::from_secs(15));
    assert!(actions.contains(&Action::Signal {
        worker: ids[0],
        signal: WorkerSignal::Kill
    }));
}

#[test]
fn drained_worker_is_stopped() {
    let (mut arb, now, ids) = serving(1);
    arb.on_event(Event::ProtocolError { worker: ids[0] }, now);
    assert_eq!(
        arb.on_event(
            Event::Pool(PoolNews::Drained {
                worker: ids[0],
                served: 3
            }),
            now
        ),
        vec![Action::Stop { worker: ids[0] }]
    );
}
