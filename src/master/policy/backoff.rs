//! Back-off for workers that keep dying before they are ready: each
//! consecutive boot failure doubles the wait before the next spawn, and past
//! a limit the master gives up instead of spinning forever.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
