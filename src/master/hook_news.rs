//! What the fork server's server hooks must hear about the arbiter's counts
//! (docs/hooks.md): `nworkers_changed` when the desired worker count moves
//! (the first time with old = null, as gunicorn's), and `when_ready` once,
//! when every first worker serves. Pure: the shell feeds it the counts after
//! each event and sends what it returns; nothing here decides for the arbiter.

use serde_json::{json, Value};

use crate::protocol::frame::Kind;

/// The counts the hooks were last told of.
#[derive(Debug, Default)]
pub struct HookNews {
    told_ready: bool,
    told_desired: Option<usize>,
}

impl HookNews {
    /// The hook messages (kind, JSON payload) the new counts call for.
    /// Nothing while the master stops: gunicorn's `nworkers_changed` is about
    /// TTIN, TTOU and reloads, not the stop.
    pub fn observe(
        &mut self,
        serving: usize,
        desired: usize,
        stopping: bool,
    ) -> Vec<(Kind, Value)> {
        let mut news = Vec::new();
        if stopping {
            return news;
        }
        if self.told_desired != Some(desired) {
            news.push((
                Kind::NworkersChanged,
                json!({ "new": desired, "old": self.told_desired }),
            ));
            self.told_desired = Some(desired);
        }
        if !self.told_ready && desired > 0 && serving >= desired {
            news.push((Kind::WhenReady, json!({})));
            self.told_ready = true;
        }
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(news: &[(Kind, Value)]) -> Vec<Kind> {
        news.iter().map(|(kind, _)| *kind).collect()
    }

    #[test]
    fn first_count_then_ready_once_then_changes() {
        let mut news = HookNews::default();
        let start = news.observe(0, 2, false);
        assert_eq!(
            start,
            vec![(Kind::NworkersChanged, json!({"new": 2, "old": null}))]
        );
        assert!(news.observe(1, 2, false).is_empty());
        assert_eq!(kinds(&news.observe(2, 2, false)), vec![Kind::WhenReady]);
        // TTIN, TTOU: the count moves, ready is not said again.
        assert_eq!(
            news.observe(2, 3, false),
            vec![(Kind::NworkersChanged, json!({"new": 3, "old": 2}))]
        );
        assert!(news.observe(3, 3, false).is_empty());
        assert_eq!(
            news.observe(3, 2, false),
            vec![(Kind::NworkersChanged, json!({"new": 2, "old": 3}))]
        );
        assert!(
            news.observe(0, 2, false).is_empty(),
            "a worker died: no news"
        );
    }

    #[test]
    fn a_stop_is_no_news() {
        let mut news = HookNews::default();
        news.observe(2, 2, false);
        assert!(news.observe(2, 0, true).is_empty());
        assert!(news.observe(0, 0, true).is_empty());
    }

    #[test]
    fn ttin_before_the_first_workers_are_ready_waits_for_all() {
        let mut news = HookNews::default();
        news.observe(0, 2, false);
        news.observe(1, 3, false);
        assert!(news.observe(2, 3, false).is_empty());
        assert_eq!(kinds(&news.observe(3, 3, false)), vec![Kind::WhenReady]);
    }
}
