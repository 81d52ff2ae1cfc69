//! Stagger: at most a bounded number of workers are being replaced at once,
//! so a max-requests limit with little jitter, a reload or a memory limit
//! that every worker hits never empties the pool.

/// The cap: the configured value, else a quarter of the workers, at least
/// 1 (the setting's meaning, defined with it).
pub use crate::config::validate::max_concurrent_retirements as cap;

/// Whether one more replacement may start while `in_progress` are running.
pub fn may_start(in_progress: usize, cap: usize) -> bool {
    in_progress < cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_the_workers_at_least_one() {
        assert_eq!(cap(1, None), 1);
        assert_eq!(cap(3, None), 1);
        assert_eq!(cap(8, None), 2);
        assert_eq!(cap(16, None), 4);
        assert_eq!(cap(16, Some(1)), 1);
        assert_eq!(cap(2, Some(2)), 2);
    }

    #[test]
    fn starts_below_the_cap_only() {
        assert!(may_start(0, 1));
        assert!(!may_start(1, 1));
        assert!(may_start(1, 2));
    }
}
