//! Planned recycling with a fake clock and fake readings: max-requests with
//! jitter, replacement before retirement, the stagger cap, memory limits
//! and reload.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::dispatch::{PoolNews, Standing};
use crate::master::action::{Action, WorkerSignal};
use crate::master::arbiter::tests::{lived, spawned};
use crate::master::arbiter::{Arbiter, ArbiterConfig};
use crate::master::event::{Event, ExitStatus, WorkerSample};
use crate::worker::state::{RestartReason, RetireReason};
use crate::worker::WorkerId;

const MIB: u64 = 1 << 20;

fn config(workers: usize) -> ArbiterConfig {
    ArbiterConfig::basic(workers, Duration::from_secs(10))
}

fn retired(actions: &[Action]) -> Vec<(WorkerId, RetireReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Retire { worker, reason } => Some((*worker, *reason)),
            _ => None,
        })
        .collect()
}

fn limits(actions: &[Action]) -> Vec<Option<u64>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Admit { request_limit, .. } => Some(*request_limit),
            _ => None,
        })
        .collect()
}

struct Pool {
    arb: Arbiter,
    now: Instant,
}

impl Pool {
    fn start(config: ArbiterConfig) -> (Pool, Vec<WorkerId>, Vec<Option<u64>>) {
        let mut pool = Pool {
            arb: Arbiter::with_rng(config, StdRng::seed_from_u64(3)),
            now: Instant::now(),
        };
        let ids = spawned(&pool.on(Event::Start));
        let mut admitted = Vec::new();
        for &id in &ids {
            admitted.extend(limits(&pool.ready(id)));
        }
        // They have lived: a crash of theirs is replaced at once.
        pool.now += Duration::from_secs(2);
        lived(&mut pool.arb, &ids, pool.now);
        (pool, ids, admitted)
    }

    fn on(&mut self, event: Event) -> Vec<Action> {
        self.arb.on_event(event, self.now)
    }

    fn ready(&mut self, worker: WorkerId) -> Vec<Action> {
        self.on(Event::Spawned {
            worker,
            pid: 1000 + worker.0 as u32,
        });
        self.on(Event::Ready { worker })
    }

    fn exit(&mut self, worker: WorkerId) -> Vec<Action> {
        self.on(Event::Exited {
            worker,
            status: ExitStatus::Code(0),
        })
    }

    fn memory(&mut self, readings: &[(WorkerId, u64)]) -> Vec<Action> {
        let samples = readings
            .iter()
            .map(|&(worker, bytes)| WorkerSample {
                worker,
                served: None,
                memory: Some(bytes),
            })
            .collect();
        self.on(Event::Sample(samples))
    }
}

#[test]
fn each_worker_draws_its_own_limit_within_the_jitter() {
    let mut cfg = config(2);
    cfg.max_requests = 20;
    cfg.max_requests_jitter = 10;
    let (mut pool, mut ids, mut drawn) = Pool::start(cfg);
    // Recycle a few generations to see many draws.
    for _ in 0..10 {
        let old = ids.remove(0);
        let actions = pool.on(Event::Pool(PoolNews::RequestLimit {
            worker: old,
            served: 25,
        }));
        let new = spawned(&actions);
        assert_eq!(new.len(), 1);
        drawn.extend(limits(&pool.ready(new[0])));
        ids.push(new[0]);
        pool.on(Event::Pool(PoolNews::Drained {
            worker: old,
            served: 25,
        }));
        pool.exit(old);
    }
    let drawn: Vec<u64> = drawn.into_iter().map(|l| l.unwrap()).collect();
    assert!(drawn.iter().all(|l| (20..=30).contains(l)), "{drawn:?}");
    let first = drawn[0];
    assert!(
        drawn.iter().any(|&l| l != first),
        "limits not spread: {drawn:?}"
    );
}

#[test]
fn no_max_requests_means_no_limit() {
    let (_, _, drawn) = Pool::start(config(2));
    assert_eq!(drawn, vec![None, None]);
}

#[test]
fn the_old_worker_serves_until_its_replacement_is_ready() {
    let mut cfg = config(1);
    cfg.max_requests = 100;
    let (mut pool, ids, _) = Pool::start(cfg);
    let actions = pool.on(Event::Pool(PoolNews::RequestLimit {
        worker: ids[0],
        served: 100,
    }));
    assert!(actions.contains(&Action::SetStanding {
        worker: ids[0],
        standing: Standing::Reserve
    }));
    assert!(actions.contains(&Action::CountRestart {
        reason: RestartReason::Retired(RetireReason::MaxRequests)
    }));
    assert!(retired(&actions).is_empty(), "-w 1 must not stall on boot");
    let new = spawned(&actions);
    assert_eq!(new.len(), 1, "the replacement starts at once");
    pool.now += Duration::from_secs(3);
    assert!(retired(&pool.on(Event::Tick)).is_empty());
    let actions = pool.ready(new[0]);
    assert_eq!(retired(&actions), vec![(ids[0], RetireReason::MaxRequests)]);
    // It drains, is stopped, exits: nobody else is spawned.
    let actions = pool.on(Event::Pool(PoolNews::Drained {
        worker: ids[0],
        served: 104,
    }));
    assert_eq!(actions, vec![Action::Stop { worker: ids[0] }]);
    assert!(spawned(&pool.exit(ids[0])).is_empty());
    assert_eq!(pool.arb.serving(), 1);
}

#[test]
fn stagger_caps_how_many_are_replaced_at_once() {
    let mut cfg = config(4);
    cfg.max_requests = 10;
    let (mut pool, ids, _) = Pool::start(cfg);
    let mut replacements = Vec::new();
    for &id in &ids {
        replacements.extend(spawned(&pool.on(Event::Pool(PoolNews::RequestLimit {
            worker: id,
            served: 10,
        }))));
    }
    assert_eq!(replacements.len(), 1, "cap for 4 workers is 1");
    // The first replacement is ready: the old worker drains and the next
    // due worker's replacement starts at once.
    let actions = pool.ready(replacements[0]);
    assert_eq!(retired(&actions), vec![(ids[0], RetireReason::MaxRequests)]);
    let second = spawned(&actions);
    assert_eq!(second.len(), 1);
    // Its exit changes nothing: one replacement boots at a time.
    assert!(spawned(&pool.exit(ids[0])).is_empty());
    // Capacity never dipped: every step kept 4 serving (3 old, 1 new).
    assert_eq!(pool.arb.serving(), 4);
}

#[test]
fn a_replacement_that_dies_booting_is_retried_and_the_old_worker_keeps_serving() {
    let mut cfg = config(1);
    cfg.max_requests = 10;
    let (mut pool, ids, _) = Pool::start(cfg);
    let first = spawned(&pool.on(Event::Pool(PoolNews::RequestLimit {
        worker: ids[0],
        served: 10,
    })))[0];
    let actions = pool.on(Event::Exited {
        worker: first,
        status: ExitStatus::Code(1),
    });
    assert!(retired(&actions).is_empty(), "the old worker must stay");
    pool.now += Duration::from_secs(1);
    let second = spawned(&pool.on(Event::Tick));
    assert_eq!(second.len(), 1, "retried after the back-off");
    assert_eq!(
        retired(&pool.ready(second[0])),
        vec![(ids[0], RetireReason::MaxRequests)]
    );
}

#[test]
fn a_single_memory_spike_is_ignored_two_in_a_row_retire() {
    let mut cfg = config(2);
    cfg.memory.soft = Some(100 * MIB);
    let (mut pool, ids, _) = Pool::start(cfg);
    let actions = pool.memory(&[(ids[0], 150 * MIB), (ids[1], 50 * MIB)]);
    assert!(spawned(&actions).is_empty(), "one sample over is a spike");
    pool.memory(&[(ids[0], 60 * MIB), (ids[1], 50 * MIB)]);
    assert!(spawned(&pool.memory(&[(ids[0], 150 * MIB), (ids[1], 50 * MIB)])).is_empty());
    let actions = pool.memory(&[(ids[0], 160 * MIB), (ids[1], 50 * MIB)]);
    assert!(actions.contains(&Action::SetStanding {
        worker: ids[0],
        standing: Standing::Excluded
    }));
    assert!(actions.contains(&Action::CountRestart {
        reason: RestartReason::Retired(RetireReason::Memory)
    }));
    let new = spawned(&actions);
    assert_eq!(new.len(), 1);
    assert_eq!(
        retired(&pool.ready(new[0])),
        vec![(ids[0], RetireReason::Memory)]
    );
}

#[test]
fn per_request_readings_count_as_samples() {
    let mut cfg = config(2);
    cfg.memory.soft = Some(100 * MIB);
    let (mut pool, ids, _) = Pool::start(cfg);
    let reading = |bytes| {
        Event::Pool(PoolNews::Rss {
            worker: ids[1],
            bytes,
            served: 7,
        })
    };
    assert!(spawned(&pool.on(reading(120 * MIB))).is_empty());
    assert_eq!(spawned(&pool.on(reading(121 * MIB))).len(), 1);
}

#[test]
fn over_the_hard_limit_is_killed_at_once_and_replaced() {
    let mut cfg = config(2);
    cfg.memory.soft = Some(100 * MIB);
    cfg.memory.hard = Some(200 * MIB);
    let (mut pool, ids, _) = Pool::start(cfg);
    let actions = pool.memory(&[(ids[0], 250 * MIB), (ids[1], 50 * MIB)]);
    assert_eq!(retired(&actions), vec![(ids[0], RetireReason::MemoryHard)]);
    assert!(actions.contains(&Action::Signal {
        worker: ids[0],
        signal: WorkerSignal::Kill
    }));
    assert!(actions.contains(&Action::CountRestart {
        reason: RestartReason::Retired(RetireReason::MemoryHard)
    }));
    assert_eq!(spawned(&actions).len(), 1);
}

#[test]
fn over_the_total_budget_the_largest_worker_retires() {
    let mut cfg = config(3);
    cfg.memory.total = Some(300 * MIB);
    cfg.max_concurrent_retirements = Some(3);
    let (mut pool, ids, _) = Pool::start(cfg);
    let round = [(ids[0], 90 * MIB), (ids[1], 140 * MIB), (ids[2], 100 * MIB)];
    assert!(
        spawned(&pool.memory(&round)).is_empty(),
        "one round is a spike"
    );
    let actions = pool.memory(&round);
    assert!(actions.contains(&Action::SetStanding {
        worker: ids[1],
        standing: Standing::Excluded
    }));
    assert!(actions.contains(&Action::CountRestart {
        reason: RestartReason::Retired(RetireReason::MemoryTotal)
    }));
    assert_eq!(spawned(&actions).len(), 1, "one worker, not all");
}

#[test]
fn reload_rolls_every_worker_new_ones_first() {
    let (mut pool, ids, _) = Pool::start(config(2));
    let mut cfg = config(2);
    cfg.max_requests = 500;
    let actions = pool.on(Event::Reloaded(cfg));
    assert!(
        retired(&actions).is_empty(),
        "nobody leaves before a replacement"
    );
    let first = spawned(&actions);
    assert_eq!(first.len(), 1, "stagger cap 1 for 2 workers");
    let actions = pool.ready(first[0]);
    assert_eq!(
        limits(&actions),
        vec![Some(500)],
        "new workers get the new config"
    );
    assert_eq!(retired(&actions), vec![(ids[0], RetireReason::Reload)]);
    // The first old worker drains; the second's replacement starts at once.
    let second = spawned(&actions);
    assert_eq!(second.len(), 1);
    let actions = pool.exit(ids[0]);
    assert!(spawned(&actions).is_empty());
    assert!(
        !actions.contains(&Action::SettleReload),
        "an old worker still serves"
    );
    assert_eq!(
        retired(&pool.ready(second[0])),
        vec![(ids[1], RetireReason::Reload)]
    );
    // The last old worker is gone: the old config (and its fork server) can go.
    assert!(pool.exit(ids[1]).contains(&Action::SettleReload));
    assert_eq!(pool.arb.serving(), 2);
    assert!(pool
        .arb
        .facts(pool.now)
        .iter()
        .all(|f| f.id == first[0].0 || f.id == second[0].0));
}

#[test]
fn reload_to_fewer_workers_retires_the_extra_ones_without_replacing_them() {
    let (mut pool, ids, _) = Pool::start(config(3));
    let mut cfg = config(1);
    cfg.max_concurrent_retirements = Some(3);
    let actions = pool.on(Event::Reloaded(cfg));
    let new = spawned(&actions);
    assert_eq!(new.len(), 1);
    assert_eq!(retired(&actions).len(), 2, "two are not needed at all");
    assert_eq!(retired(&pool.ready(new[0])).len(), 1);
    for id in ids {
        pool.exit(id);
    }
    assert_eq!(pool.arb.serving(), 1);
}

#[test]
fn a_crash_is_counted_and_replaced() {
    let (mut pool, ids, _) = Pool::start(config(2));
    let actions = pool.on(Event::Exited {
        worker: ids[0],
        status: ExitStatus::Signal(9),
    });
    assert!(actions.contains(&Action::CountRestart {
        reason: RestartReason::Crash
    }));
    assert_eq!(spawned(&actions).len(), 1);
}

#[test]
fn a_reload_whose_app_cannot_load_is_called_off_and_the_old_workers_keep_serving() {
    let (mut pool, ids, _) = Pool::start(config(2));
    let mut cfg = config(3);
    cfg.max_requests = 10;
    let new = spawned(&pool.on(Event::Reloaded(cfg)));
    assert_eq!(new.len(), 2, "one replacement (cap 1) and one more worker");
    let actions = pool.on(Event::BootFailed {
        worker: new[0],
        app_load: true,
        message: "app failed to load: No module named 'nope'".into(),
    });
    assert!(actions.contains(&Action::RevertConfig), "{actions:?}");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Exit { .. })),
        "a bad reload must not stop a serving master: {actions:?}"
    );
    assert!(actions.contains(&Action::SetStanding {
        worker: ids[0],
        standing: Standing::Normal
    }));
    assert!(spawned(&actions).is_empty(), "back to the old count of 2");
    for &worker in &new {
        assert!(retired(&actions).contains(&(worker, RetireReason::Reload)));
        pool.exit(worker);
    }
    assert_eq!(pool.arb.serving(), 2);
    assert!(!pool.arb.finished());
    // The old config is back: a later crash is replaced with no request limit.
    let replacement = spawned(&pool.on(Event::Exited {
        worker: ids[1],
        status: ExitStatus::Signal(9),
    }));
    assert_eq!(limits(&pool.ready(replacement[0])), vec![None]);
}

#[test]
fn an_app_that_cannot_load_at_start_still_stops_the_master() {
    let mut pool = Pool {
        arb: Arbiter::with_rng(config(1), StdRng::seed_from_u64(1)),
        now: Instant::now(),
    };
    let first = spawned(&pool.on(Event::Start))[0];
    let actions = pool.on(Event::BootFailed {
        worker: first,
        app_load: true,
        message: "app failed to load".into(),
    });
    assert!(matches!(actions.last(), Some(Action::Exit { .. })));
}

#[test]
fn a_single_worker_over_its_memory_limit_stays_in_reserve_so_nothing_stalls() {
    let mut cfg = config(1);
    cfg.memory.soft = Some(100 * MIB);
    let (mut pool, ids, _) = Pool::start(cfg);
    pool.memory(&[(ids[0], 150 * MIB)]);
    let actions = pool.memory(&[(ids[0], 160 * MIB)]);
    assert!(actions.contains(&Action::SetStanding {
        worker: ids[0],
        standing: Standing::Reserve
    }));
    assert_eq!(spawned(&actions).len(), 1);
}

fn admitted(actions: &[Action]) -> Vec<WorkerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Admit { worker, .. } => Some(*worker),
            _ => None,
        })
        .collect()
}

fn limit_reached(pool: &mut Pool, worker: WorkerId) -> Vec<Action> {
    pool.on(Event::Pool(PoolNews::RequestLimit { worker, served: 10 }))
}

/// Two workers and one spare, all ready; returns the pool, the workers and the spare.
fn with_a_ready_spare() -> (Pool, Vec<WorkerId>, WorkerId) {
    let mut cfg = config(2);
    cfg.max_requests = 10;
    cfg.max_requests_jitter = 5;
    cfg.spare_workers = 1;
    let mut pool = Pool {
        arb: Arbiter::with_rng(cfg, StdRng::seed_from_u64(3)),
        now: Instant::now(),
    };
    let ids = spawned(&pool.on(Event::Start));
    assert_eq!(ids.len(), 3, "two workers and a spare");
    let mut admits = Vec::new();
    for &id in &ids {
        admits.extend(admitted(&pool.ready(id)));
    }
    assert_eq!(admits, ids[..2], "the spare is not admitted");
    assert_eq!(pool.arb.serving(), 2);
    (pool, ids[..2].to_vec(), ids[2])
}

#[test]
fn a_ready_spare_replaces_a_due_worker_at_once_and_the_next_spare_boots() {
    let (mut pool, ids, spare) = with_a_ready_spare();
    let actions = limit_reached(&mut pool, ids[0]);
    assert_eq!(admitted(&actions), vec![spare]);
    assert!(
        actions.contains(&Action::Admit {
            worker: spare,
            request_limit: actions.iter().find_map(|a| match a {
                Action::Admit { request_limit, .. } => *request_limit,
                _ => None,
            }),
            request_cap: Some(15),
            replaces: Some(ids[0]),
        }),
        "admitted with the cap max_requests + jitter: {actions:?}"
    );
    assert_eq!(retired(&actions), vec![(ids[0], RetireReason::MaxRequests)]);
    assert_eq!(spawned(&actions).len(), 1, "the next spare");
    assert_eq!(pool.arb.serving(), 2, "capacity never dipped");
}

#[test]
fn a_spare_still_booting_becomes_the_replacement_and_the_due_worker_waits_in_reserve() {
    let mut cfg = config(2);
    cfg.max_requests = 10;
    cfg.spare_workers = 1;
    let mut pool = Pool {
        arb: Arbiter::with_rng(cfg, StdRng::seed_from_u64(3)),
        now: Instant::now(),
    };
    let ids = spawned(&pool.on(Event::Start));
    pool.ready(ids[0]);
    pool.ready(ids[1]);
    let actions = limit_reached(&mut pool, ids[0]);
    assert!(actions.contains(&Action::SetStanding {
        worker: ids[0],
        standing: Standing::Reserve
    }));
    assert!(
        retired(&actions).is_empty(),
        "not before its replacement is ready"
    );
    // The booting spare is its replacement; the next spare boots now.
    assert_eq!(spawned(&actions).len(), 1);
    let actions = pool.ready(ids[2]);
    assert_eq!(admitted(&actions), vec![ids[2]]);
    assert_eq!(retired(&actions), vec![(ids[0], RetireReason::MaxRequests)]);
    assert!(spawned(&actions).is_empty());
}

#[test]
fn a_due_worker_waiting_for_its_turn_serves_only_in_reserve() {
    let mut cfg = config(4);
    cfg.max_requests = 10;
    let (mut pool, ids, _) = Pool::start(cfg);
    limit_reached(&mut pool, ids[0]);
    // The stagger cap (1 of 4) holds the second one back: it must not take
    // all the traffic meanwhile.
    let actions = limit_reached(&mut pool, ids[1]);
    assert!(spawned(&actions).is_empty());
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::SetStanding { .. }))
            .collect::<Vec<_>>(),
        vec![&Action::SetStanding {
            worker: ids[1],
            standing: Standing::Reserve
        }]
    );
}

#[test]
fn a_reload_drops_the_spare_of_the_old_config_and_boots_a_new_one() {
    let (mut pool, _, spare) = with_a_ready_spare();
    let mut cfg = config(2);
    cfg.max_requests = 10;
    cfg.spare_workers = 1;
    let actions = pool.on(Event::Reloaded(cfg));
    assert!(actions.contains(&Action::Stop { worker: spare }));
    assert!(!admitted(&actions).contains(&spare));
    // One replacement (cap 1) and the new config's spare.
    assert_eq!(spawned(&actions).len(), 2, "{actions:?}");
}

#[test]
fn no_spare_without_planned_recycling() {
    let mut cfg = config(2);
    cfg.spare_workers = 1;
    let mut arb = Arbiter::with_rng(cfg, StdRng::seed_from_u64(3));
    assert_eq!(
        spawned(&arb.on_event(Event::Start, Instant::now())).len(),
        2
    );
}

/// systemd's RELOADING lasts from the HUP until the last worker of the old
/// config is gone, or until the shell says the config could not be read.
#[test]
fn reloading_lasts_from_hup_to_the_settled_roll_or_the_refused_read() {
    let (mut pool, ids, _) = Pool::start(config(1));
    assert!(!pool.arb.reloading());
    assert!(pool
        .on(Event::Signal(crate::master::event::Sig::Hup))
        .contains(&Action::ReloadConfig));
    assert!(pool.arb.reloading(), "the shell is reading the config");
    pool.on(Event::ReloadRefused);
    assert!(!pool.arb.reloading(), "the running config stays");
    pool.on(Event::Signal(crate::master::event::Sig::Hup));
    let new = spawned(&pool.on(Event::Reloaded(config(1))));
    assert!(pool.arb.reloading());
    pool.ready(new[0]);
    assert!(pool.arb.reloading(), "the old worker still drains");
    assert!(pool.exit(ids[0]).contains(&Action::SettleReload));
    assert!(!pool.arb.reloading());
}
