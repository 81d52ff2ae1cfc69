//! Back-off for workers that keep dying: each step doubles the wait before
//! the next spawn (capped), and past a limit a master whose workers never
//! became ready gives up instead of spinning forever.
//!
//! [`Steps`] counts *rounds*, not deaths: when 8 workers die importing the
//! same broken app, that is one failed round, and only a replacement spawned
//! after the round began can fail the next one. So `-w 8` backs off exactly
//! as `-w 1` does.

use std::time::{Duration, Instant};

/// First wait after a boot failure.
pub const BASE: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
pub const CAP: Duration = Duration::from_secs(5);
/// Consecutive boot failures after which the master stops.
pub const GIVE_UP_AFTER: u32 = 5;

/// What to do after `failures` consecutive boot failures (1 = the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Spawn the replacement after this delay.
    RetryAfter(Duration),
    /// Stop the master: this is a crash loop.
    GiveUp,
}

/// The verdict after `failures` consecutive boot failures.
pub fn after_failures(failures: u32) -> Verdict {
    if failures == 0 {
        return Verdict::RetryAfter(Duration::ZERO);
    }
    if failures >= GIVE_UP_AFTER {
        return Verdict::GiveUp;
    }
    let factor = 1u32 << (failures - 1).min(16);
    Verdict::RetryAfter((BASE * factor).min(CAP))
}

/// Consecutive failed rounds, for one kind of death (dying while booting,
/// or dying young after boot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    step: u32,
    /// When the current round began: a worker spawned before it belongs to
    /// a round already counted.
    since: Option<Instant>,
}

impl Steps {
    /// A worker spawned at `spawned_at` died at `now`. Returns the step it
    /// belongs to and whether it started a new one (log once per step).
    pub fn failed(&mut self, spawned_at: Instant, now: Instant) -> (u32, bool) {
        let new_round = self.since.is_none_or(|since| spawned_at > since);
        if new_round {
            self.step += 1;
            self.since = Some(now);
        }
        (self.step, new_round)
    }

    /// A worker lived: the count starts again.
    pub fn reset(&mut self) {
        *self = Steps::default();
    }

    /// Failed rounds so far.
    pub fn step(&self) -> u32 {
        self.step
    }
}

/// The wait before respawning after failed round `step` (1 = the first).
pub fn delay(step: u32) -> Duration {
    if step == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (step - 1).min(16);
    (BASE * factor).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_deaths_of_one_round_are_one_step() {
        let t0 = Instant::now();
        let mut steps = Steps::default();
        // Eight workers spawned at t0 die importing the app.
        let at = t0 + Duration::from_millis(200);
        assert_eq!(steps.failed(t0, at), (1, true));
        for _ in 0..7 {
            assert_eq!(steps.failed(t0, at + Duration::from_millis(5)), (1, false));
        }
        // Their retries, spawned after the round began, fail the next round.
        let retry = at + delay(1);
        // (A worker spawned as the round began still belongs to it.)
        assert_eq!(steps.failed(at, retry), (1, false));
        assert_eq!(
            steps.failed(retry, retry + Duration::from_millis(200)),
            (2, true)
        );
        assert_eq!(
            steps.failed(retry, retry + Duration::from_millis(210)),
            (2, false)
        );
        steps.reset();
        assert_eq!(steps.step(), 0);
        assert_eq!(steps.failed(t0, retry), (1, true));
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(delay(0), Duration::ZERO);
        assert_eq!(delay(1), BASE);
        assert_eq!(delay(3), BASE * 4);
        assert_eq!(delay(30), CAP);
    }

    #[test]
    fn doubles_then_gives_up() {
        assert_eq!(after_failures(0), Verdict::RetryAfter(Duration::ZERO));
        assert_eq!(after_failures(1), Verdict::RetryAfter(BASE));
        assert_eq!(after_failures(2), Verdict::RetryAfter(BASE * 2));
        assert_eq!(after_failures(3), Verdict::RetryAfter(BASE * 4));
        assert_eq!(after_failures(4), Verdict::RetryAfter(BASE * 8));
        assert_eq!(after_failures(GIVE_UP_AFTER), Verdict::GiveUp);
    }
}
