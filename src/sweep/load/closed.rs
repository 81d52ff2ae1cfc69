//! The closed model (JMeter's thread group): each user is a task that sends
//! a request on its own keep-alive connection, waits for the answer and goes
//! on, `loops` times or until stopped. Stages change the number of users at
//! their times: new users start at once; removed users (the newest first)
//! finish their current request, then stop. The run ends at its duration
//! or, earlier, when no user is left running and no stage lies ahead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::exchange;
use super::phase::Phase;
use super::Setup;
use crate::sweep::model::Stage;

/// What the closed model runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crew<'a> {
    /// Users at the start.
    pub users: usize,
    /// Requests per user, if bounded.
    pub loops: Option<u64>,
    /// Later user counts, sorted by time.
    pub stages: &'a [Stage],
    /// Each user starts a request every `pace`, if set.
    pub pace: Option<Duration>,
}

/// The users started so far.
struct Users {
    tasks: JoinSet<()>,
    /// Stop flags of the users not asked to stop yet, oldest first.
    active: Vec<Arc<AtomicBool>>,
    /// Ids handed out so far; each user seeds its RNG with its id.
    next_id: u64,
}

impl Users {
    fn resize(&mut self, setup: &Arc<Setup>, phase: &Phase, crew: Crew<'_>, users: usize) {
        let (loops, pace) = (crew.loops, crew.pace);
        while self.active.len() > users {
            if let Some(stop) = self.active.pop() {
                stop.store(true, Ordering::Relaxed);
            }
        }
        while self.active.len() < users {
            let stop = Arc::new(AtomicBool::new(false));
            self.active.push(Arc::clone(&stop));
            let (setup, phase, id) = (Arc::clone(setup), phase.clone(), self.next_id);
            self.next_id += 1;
            self.tasks
                .spawn(async move { user(&setup, &phase, id, (loops, pace), &stop).await });
        }
    }
}

/// Runs the closed model for at most `duration`; returns when every user
/// has stopped (or, past the request timeout, has been abandoned).
pub(crate) async fn drive(setup: &Arc<Setup>, phase: &Phase, crew: Crew<'_>, duration: Duration) {
    let start = phase.started();
    let end = start + duration;
    let mut users = Users {
        tasks: JoinSet::new(),
        active: Vec::new(),
        next_id: 0,
    };
    users.resize(setup, phase, crew, crew.users);
    let mut stages = crew.stages.iter().peekable();
    loop {
        let next_stage = stages.peek().map(|s| start + s.at);
        if users.tasks.is_empty() && next_stage.is_none() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep_until(next_stage.unwrap_or(end)), if next_stage.is_some() => {
                if let Some(stage) = stages.next() {
                    users.resize(setup, phase, crew, stage.users);
                }
            }
            Some(_) = users.tasks.join_next(), if !users.tasks.is_empty() => {}
        }
    }
    users.resize(setup, phase, crew, 0);
    let tasks = &mut users.tasks;
    let all_stopped = async move { while tasks.join_next().await.is_some() {} };
    // A user's current request ends within the request timeout; past it the
    // JoinSet's drop aborts the rest and Phase::finish counts them as timeouts.
    let _ = tokio::time::timeout(setup.request_timeout + super::DRAIN_MARGIN, all_stopped).await;
}

/// One user: requests on its own connection, back to back or one every
/// `pace` (its first one at a random point of the first `pace`, so users
/// started together do not send in step).
async fn user(
    setup: &Setup,
    phase: &Phase,
    id: u64,
    (loops, pace): (Option<u64>, Option<Duration>),
    stop: &AtomicBool,
) {
    let mut rng = SmallRng::seed_from_u64(id);
    let mut conn = setup.pool.take();
    phase.enter();
    let mut done = 0u64;
    let mut next = pace.map(|pace| Instant::now() + pace.mul_f64(rng.random::<f64>()));
    while !stop.load(Ordering::Relaxed) && loops.is_none_or(|l| done < l) {
        if let (Some(at), Some(pace)) = (next, pace) {
            if !pause_until(at, stop).await {
                break;
            }
            // Start to start; a late request is followed at once, not in a burst.
            next = Some((at + pace).max(Instant::now()));
        }
        done += 1;
        let endpoint = setup.mix.pick(&mut rng);
        let req = setup.mix.request(endpoint);
        phase.sent(endpoint);
        let outcome = exchange(&mut conn, setup.pool.target(), req, setup.request_timeout).await;
        phase.ended(endpoint, outcome);
    }
    phase.leave();
    if let Some(conn) = conn {
        // Kept for the next stretch (the measured run after the warm-up).
        setup.pool.put(conn);
    }
}

/// Waits until `at`, looking at `stop` at least every 50 ms; false if the
/// user was stopped first (a removed user does not wait out its pace).
async fn pause_until(at: Instant, stop: &AtomicBool) -> bool {
    const LOOK: Duration = Duration::from_millis(50);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        tokio::time::sleep((at - now).min(LOOK)).await;
    }
}
