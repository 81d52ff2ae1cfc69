//! The arbiter fed with events and a fake clock: no processes, no sleeps.

use super::*;
use crate::dispatch::PoolNews;
use crate::master::event::ExitStatus;
use crate::master::event::Sig;
use crate::master::policy::backoff;
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
            Action::Spawn { worker, .. } => Some(*worker),
            _ => None,
        })
        .collect()
}

/// Starts `n` workers and brings them all to Serving.
fn serving(n: usize) -> (Arbiter, Instant, Vec<WorkerId>) {
    serving_with(ArbiterConfig::basic(n, Duration::from_secs(10)))
}

/// `n` workers that have lived: ready, a request served each, past the
/// young age (a crash of theirs is replaced at once).
fn serving_with(config: ArbiterConfig) -> (Arbiter, Instant, Vec<WorkerId>) {
    let (mut arb, now) = with_config(config);
    let ids = spawned(&arb.on_event(Event::Start, now));
    for &worker in &ids {
        ready(&mut arb, worker, now);
    }
    let now = now + Duration::from_secs(2);
    lived(&mut arb, &ids, now);
    (arb, now, ids)
}

/// Each of `ids` has served a request, as the periodic sample says.
pub(super) fn lived(arb: &mut Arbiter, ids: &[WorkerId], now: Instant) {
    let samples = ids
        .iter()
        .map(|&worker| WorkerSample {
            worker,
            served: Some(1),
            memory: None,
        })
        .collect();
    arb.on_event(Event::Sample(samples), now);
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
fn a_worker_that_exits_for_reload_is_replaced_at_once_as_a_reload_even_young() {
    let (mut arb, now) = arbiter(1);
    let ids = spawned(&arb.on_event(Event::Start, now));
    ready(&mut arb, ids[0], now);
    // Young and without a request served: a crash would be backed off.
    let actions = arb.on_event(
        Event::Exited {
            worker: ids[0],
            status: ExitStatus::Code(crate::worker::EXIT_RELOAD),
        },
        now,
    );
    assert_eq!(spawned(&actions).len(), 1, "{actions:?}");
    assert!(actions.contains(&Action::CountRestart {
        reason: RestartReason::Retired(RetireReason::Reload)
    }));
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

fn died(arb: &mut Arbiter, worker: WorkerId, now: Instant) -> Vec<Action> {
    arb.on_event(
        Event::Exited {
            worker,
            status: ExitStatus::Code(1),
        },
        now,
    )
}

fn exits_with(actions: &[Action], code: ExitCode) -> bool {
    matches!(actions.last(), Some(Action::Exit { code: c, .. }) if *c == code)
}

#[test]
fn boot_deaths_back_off_then_give_up() {
    let (mut arb, mut now) = arbiter(1);
    let mut worker = spawned(&arb.on_event(Event::Start, now))[0];
    for step in 1..backoff::GIVE_UP_AFTER {
        let actions = died(&mut arb, worker, now);
        assert!(
            spawned(&actions).is_empty(),
            "step {step} respawned at once"
        );
        let delay = backoff::delay(step);
        assert!(spawned(&arb.on_event(Event::Tick, now + delay / 2)).is_empty());
        now += delay;
        let respawn = spawned(&arb.on_event(Event::Tick, now));
        assert_eq!(
            respawn.len(),
            1,
            "no respawn after the back-off of step {step}"
        );
        worker = respawn[0];
    }
    assert!(exits_with(
        &died(&mut arb, worker, now),
        ExitCode::WorkerBoot
    ));
}

/// Issue 10, 1: `-w 8` with an app that dies while importing backs off
/// round by round as `-w 1` does, instead of exiting after 0.27 s.
#[test]
fn many_workers_dying_in_one_round_are_one_back_off_step() {
    let (mut arb, mut now) = arbiter(8);
    let mut round = spawned(&arb.on_event(Event::Start, now));
    for step in 1..backoff::GIVE_UP_AFTER {
        for &worker in &round {
            let actions = died(&mut arb, worker, now);
            assert!(!arb.finished(), "gave up at step {step}");
            assert!(spawned(&actions).is_empty());
        }
        now += backoff::delay(step);
        round = spawned(&arb.on_event(Event::Tick, now));
        assert_eq!(round.len(), 8, "round {step} respawns every worker");
    }
    let mut last = Vec::new();
    for &worker in &round {
        last = died(&mut arb, worker, now);
    }
    assert!(exits_with(&last, ExitCode::WorkerBoot));
}

/// Issue 10, 1: replacements killed while they boot (an OOM killer) never
/// stop a server whose other workers serve: it keeps backing off.
#[test]
fn a_serving_master_never_gives_up_on_booting_replacements() {
    let (mut arb, mut now, ids) = serving(4);
    let actions = died(&mut arb, ids[0], now);
    let mut worker = spawned(&actions)[0];
    for step in 1..=backoff::GIVE_UP_AFTER * 3 {
        let actions = died(&mut arb, worker, now);
        assert!(!arb.finished(), "gave up at step {step}: {actions:?}");
        now += backoff::delay(step);
        assert!(backoff::delay(step) <= backoff::CAP);
        worker = spawned(&arb.on_event(Event::Tick, now))[0];
    }
    assert_eq!(arb.serving(), 3);
}

/// Issue 10, 2: an app that imports fine but kills its worker at the first
/// request is backed off (900 respawns in 30 s before), and the back-off
/// ends once a worker lives.
#[test]
fn workers_that_die_young_are_backed_off_until_one_lives() {
    let (mut arb, mut now, ids) = serving(1);
    // A worker that lived is replaced at once; its replacement dies young.
    let mut worker = spawned(&died(&mut arb, ids[0], now))[0];
    arb.on_event(Event::Ready { worker }, now);
    let mut respawns = 0;
    let end = now + Duration::from_secs(30);
    while now < end {
        let actions = died(&mut arb, worker, now);
        assert!(spawned(&actions).is_empty(), "respawned at once");
        let next = loop {
            now += Duration::from_millis(100);
            let spawned = spawned(&arb.on_event(Event::Tick, now));
            if let Some(&w) = spawned.first() {
                break w;
            }
        };
        respawns += 1;
        arb.on_event(Event::Ready { worker: next }, now);
        worker = next;
    }
    assert!(respawns < 15, "{respawns} respawns in 30 s");
    // It lives: serves a request and passes the young age.
    lived(&mut arb, &[worker], now);
    now += Duration::from_secs(2);
    arb.on_event(Event::Tick, now);
    let actions = died(&mut arb, worker, now);
    assert_eq!(
        spawned(&actions).len(),
        1,
        "an old worker's crash is replaced at once"
    );
}

#[test]
fn ready_resets_the_back_off() {
    let (mut arb, now) = arbiter(1);
    let first = spawned(&arb.on_event(Event::Start, now))[0];
    died(&mut arb, first, now);
    let second = spawned(&arb.on_event(Event::Tick, now + Duration::from_secs(1)))[0];
    arb.on_event(Event::Ready { worker: second }, now);
    assert_eq!(arb.boot_steps.step(), 0);
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

/// Issue 10, 3: the whole stop takes at most --graceful-timeout (10 s
/// here); it took that plus 5 s before.
#[test]
fn term_past_the_graceful_timeout_kills_busy_workers_and_exits() {
    let (mut arb, now, ids) = serving(1);
    arb.on_event(Event::Signal(Sig::Term), now);
    assert!(arb
        .on_event(Event::Tick, now + Duration::from_secs(9))
        .is_empty());
    let actions = arb.on_event(Event::Tick, now + Duration::from_secs(10));
    assert!(actions.contains(&Action::Signal {
        worker: ids[0],
        signal: WorkerSignal::Kill
    }));
    assert!(matches!(
        actions.last(),
        Some(Action::Exit {
            code: ExitCode::Clean,
            ..
        })
    ));
    assert!(arb.finished());
}

#[test]
fn connections_closed_early_leave_the_workers_the_rest_of_the_graceful_timeout() {
    let (mut arb, now, ids) = serving(1);
    arb.on_event(Event::Signal(Sig::Term), now);
    let actions = arb.on_event(Event::ConnectionsClosed, now + Duration::from_secs(4));
    assert!(actions.contains(&Action::Stop { worker: ids[0] }));
    assert!(arb
        .on_event(Event::Tick, now + Duration::from_secs(9))
        .is_empty());
    let actions = arb.on_event(Event::Tick, now + Duration::from_secs(10));
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
