//! The open model (k6's constant-arrival-rate): arrival `i` is due at
//! `start + i / rate` for every `i / rate < duration`. A due arrival starts
//! at once if fewer than `max_in_flight` requests are in flight, on an idle
//! pooled connection or a new one; otherwise it is dropped (k6's
//! dropped_iterations). It is never queued or sent late, so a slow server
//! shows up as drops and latency, not as a lower offered rate.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::client::exchange;
use super::phase::Phase;
use super::Setup;

/// Seed of the mix's RNG, so a plan sends the same sequence of endpoints.
const SEED: u64 = 0x5eed;

/// Arrivals scheduled in `duration` at `rate` per second: the `i >= 0` with
/// `i / rate < duration`.
pub(crate) fn arrivals(rate: f64, duration: Duration) -> u64 {
    let n = (rate * duration.as_secs_f64()).ceil();
    // Floating point can put the last due time exactly on `duration`.
    let n = n as u64;
    if n > 0 && due_after(n - 1, rate) >= duration {
        n - 1
    } else {
        n
    }
}

/// When arrival `i` is due, from the start.
fn due_after(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Runs the open model for `duration`, then waits for the requests in flight
/// (each ends within the request timeout).
pub(crate) async fn drive(
    setup: &Arc<Setup>,
    phase: &Phase,
    rate: f64,
    max_in_flight: usize,
    duration: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut rng = SmallRng::seed_from_u64(SEED);
    let start = phase.started();
    for i in 0..arrivals(rate, duration) {
        let due = start + due_after(i, rate);
        // A late wake-up (timer granularity is 1 ms, so at high rates one
        // wake-up covers several arrivals) still counts every due arrival:
        // the loop walks them one by one without sleeping.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        } else {
            // A long backlog of due arrivals must not hog the worker thread
            // that the requests' tasks need.
            tokio::task::coop::consume_budget().await;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            phase.dropped();
            continue;
        };
        let endpoint = setup.mix.pick(&mut rng);
        let req = setup.mix.request(endpoint);
        phase.sent(endpoint);
        phase.enter();
        let (setup, phase) = (Arc::clone(setup), phase.clone());
        tokio::spawn(async move {
            let mut conn = setup.pool.take();
            let outcome =
                exchange(&mut conn, setup.pool.target(), req, setup.request_timeout).await;
            if let Some(conn) = conn {
                setup.pool.put(conn);
            }
            phase.ended(endpoint, outcome);
            phase.leave();
            // The slot frees only after the outcome is recorded, so holding
            // every slot below means every request has been counted.
            drop(slot);
        });
    }
    tokio::time::sleep_until(start + duration).await;
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    // Each request ends within the request timeout; the margin covers
    // scheduling. Past it, Phase::finish counts stragglers as timeouts.
    let _ = tokio::time::timeout(
        setup.request_timeout + super::DRAIN_MARGIN,
        slots.acquire_many(all),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_due_strictly_inside_the_duration() {
        let s = Duration::from_secs;
        assert_eq!(arrivals(200.0, s(1)), 200);
        assert_eq!(arrivals(100.0, s(1)), 100);
        assert_eq!(arrivals(0.5, s(1)), 1, "i = 0 is due at once");
        assert_eq!(arrivals(0.5, s(3)), 2, "0 s and 2 s");
        assert_eq!(arrivals(3.0, Duration::from_millis(1001)), 4);
        assert_eq!(arrivals(1000.0, Duration::ZERO), 0);
        for (rate, d) in [
            (333.3, 7.0),
            (20_000.0, 60.0),
            (0.1, 100.0),
            (7.0, 1.0 / 7.0 * 3.0),
        ] {
            let d = Duration::from_secs_f64(d);
            let n = arrivals(rate, d);
            assert!(due_after(n - 1, rate) < d, "{rate} {d:?}");
            assert!(due_after(n, rate) >= d, "{rate} {d:?}");
        }
    }
}
