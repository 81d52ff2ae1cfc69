//! max-requests with jitter, gunicorn's rule: each worker draws its own
//! limit `max_requests + uniform(0..=jitter)` when it is spawned, so workers
//! started together do not all retire together.

use rand::Rng;

/// The request limit for a new worker, or `None` when `max_requests` is 0.
pub fn draw_limit(max_requests: u64, jitter: u64, rng: &mut impl Rng) -> Option<u64> {
    if max_requests == 0 {
        return None;
    }
    Some(max_requests.saturating_add(rng.random_range(0..=jitter)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn zero_disables() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(draw_limit(0, 50, &mut rng), None);
    }

    #[test]
    fn no_jitter_is_exact() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(draw_limit(20, 0, &mut rng), Some(20));
    }

    #[test]
    fn draws_spread_over_the_whole_inclusive_range() {
        let mut rng = StdRng::seed_from_u64(7);
        let draws: Vec<u64> = (0..2000)
            .map(|_| draw_limit(20, 10, &mut rng).unwrap())
            .collect();
        assert!(draws.iter().all(|&d| (20..=30).contains(&d)));
        for value in 20..=30 {
            assert!(draws.contains(&value), "{value} never drawn");
        }
    }
}
