//! Counts the master's error-log lines by level (gunicorn's statsd logger
//! sends them as `gunicorn.log.critical`, `.error`, `.warning`). A tracing
//! layer on the error-log subscriber, so it sees exactly the events that
//! pass the filter and become lines; it only adds to process-wide atomics,
//! which `crate::metrics::statsd` reads. The workers' own lines (Python's
//! stderr) do not pass through here and are not counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::CRITICAL_FIELD;

/// The levels counted, in the order of [`totals`].
pub const LEVELS: [&str; 3] = ["critical", "error", "warning"];

static TOTALS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Lines of each of [`LEVELS`] since the process started.
pub fn totals() -> [u64; 3] {
    TOTALS.each_ref().map(|total| total.load(Relaxed))
}

/// The layer; add it to the error-log subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineCounts;

impl<S: Subscriber> Layer<S> for LineCounts {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let index = match *event.metadata().level() {
            Level::ERROR => {
                let mut critical = IsCritical(false);
                event.record(&mut critical);
                if critical.0 {
                    0
                } else {
                    1
                }
            }
            Level::WARN => 2,
            _ => return,
        };
        TOTALS[index].fetch_add(1, Relaxed);
    }
}

/// Whether an event carries `critical = true` (see `line.rs`).
struct IsCritical(bool);

impl Visit for IsCritical {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD {
            self.0 = value;
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn levels_are_counted_and_critical_is_its_own() {
        let subscriber = tracing_subscriber::registry().with(LineCounts);
        let before = totals();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!({ CRITICAL_FIELD } = true, "WORKER TIMEOUT (pid:1)");
            tracing::error!("boom");
            tracing::error!("boom");
            tracing::warn!("hm");
            tracing::info!("fine");
        });
        let after = totals();
        // Other tests may log at the same time: at least these were added.
        assert!(after[0] > before[0]);
        assert!(after[1] >= before[1] + 2);
        assert!(after[2] > before[2]);
    }
}
