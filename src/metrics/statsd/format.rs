//! The statsd wire format, as gunicorn's `instrument/statsd.py` writes it:
//! `PREFIX.gunicorn.NAME:VALUE|TYPE[|@RATE][|#TAGS]`, and the packing of
//! those lines into datagrams. Pure functions over a [`Snapshot`]; the
//! socket is `sink.rs`'s.

use std::fmt::Write as _;

/// Requests served (counter).
pub const REQUESTS: &str = "gunicorn.requests";
/// Time to the response head, per request (timer, milliseconds).
pub const REQUEST_DURATION: &str = "gunicorn.request.duration";
/// Responses with one status code: this plus `.CODE` (counter).
pub const REQUEST_STATUS: &str = "gunicorn.request.status";
/// Workers serving (gauge).
pub const WORKERS: &str = "gunicorn.workers";
/// Connections waiting in the listen sockets' accept queues (histogram).
pub const BACKLOG: &str = "gunicorn.backlog";
/// Error-log lines of each level: this plus `.critical`, `.error`, `.warning` (counter).
pub const LOG: &str = "gunicorn.log";

/// The largest datagram: 1500 bytes of Ethernet MTU less IP and UDP headers
/// with room to spare (the size dogstatsd and etsy's docs recommend).
pub const MAX_DATAGRAM: usize = 1432;

/// What one flush sends: the figures gathered since the last one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Requests finished.
    pub requests: u64,
    /// `(status, responses)` for each status seen, in status order.
    pub statuses: Vec<(u16, u64)>,
    /// Durations kept, in microseconds.
    pub durations_us: Vec<u32>,
    /// Durations offered (requests in the sampled window); more than
    /// `durations_us.len()` means the rest were left out and the kept ones
    /// carry `|@rate`.
    pub durations_offered: u64,
    /// Workers serving now.
    pub workers: u64,
    /// `(level, new lines)` of the error log: critical, error, warning.
    pub log_lines: Vec<(&'static str, u64)>,
    /// Connections in the accept queues, when the backlog metric is on.
    pub backlog: Option<u64>,
}

/// The prefix and tags every line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Style {
    /// Empty, or the user's prefix with one trailing dot.
    prefix: String,
    /// Empty, or `|#` and the tags.
    tags: String,
}

impl Style {
    /// gunicorn's `sub(r"^(.+[^.]+)\.*$", "\g<1>.", prefix)`: trailing dots
    /// become one dot, so `app` and `app.` both give `app.gunicorn.requests`.
    /// (gunicorn's pattern needs two characters and leaves a one-letter
    /// prefix undotted, `agunicorn.requests`; here `a` gives `a.gunicorn.requests`.)
    /// Tags are passed on as given, as gunicorn does, after trimming.
    pub fn new(prefix: &str, tags: &str) -> Style {
        let stem = prefix.trim().trim_end_matches('.');
        let tags = tags.trim();
        Style {
            prefix: if stem.is_empty() {
                String::new()
            } else {
                format!("{stem}.")
            },
            tags: if tags.is_empty() {
                String::new()
            } else {
                format!("|#{tags}")
            },
        }
    }

    /// One line, no newline: `prefix.name:value|kind[|@rate][|#tags]`.
    pub fn line(&self, name: &str, value: &str, kind: &str, rate: Option<&str>) -> String {
        let mut line = String::with_capacity(self.prefix.len() + name.len() + 24 + self.tags.len());
        line.push_str(&self.prefix);
        line.push_str(name);
        line.push(':');
        line.push_str(value);
        line.push('|');
        line.push_str(kind);
        if let Some(rate) = rate {
            line.push_str("|@");
            line.push_str(rate);
        }
        line.push_str(&self.tags);
        line
    }

    /// Every line of one flush: counters and gauges first, so they go out
    /// in the first datagram, then one timer line per kept duration.
    pub fn lines(&self, snapshot: &Snapshot) -> Vec<String> {
        let mut lines =
            Vec::with_capacity(4 + snapshot.statuses.len() + snapshot.durations_us.len());
        if snapshot.requests > 0 {
            lines.push(self.line(REQUESTS, &snapshot.requests.to_string(), "c", None));
        }
        for &(status, count) in &snapshot.statuses {
            let name = format!("{REQUEST_STATUS}.{status}");
            lines.push(self.line(&name, &count.to_string(), "c", None));
        }
        lines.push(self.line(WORKERS, &snapshot.workers.to_string(), "g", None));
        for &(level, count) in &snapshot.log_lines {
            if count > 0 {
                let name = format!("{LOG}.{level}");
                lines.push(self.line(&name, &count.to_string(), "c", None));
            }
        }
        if let Some(backlog) = snapshot.backlog {
            lines.push(self.line(BACKLOG, &backlog.to_string(), "h", None));
        }
        let kept = snapshot.durations_us.len() as u64;
        let rate = (kept > 0 && snapshot.durations_offered > kept)
            .then(|| sample_rate(kept, snapshot.durations_offered));
        for &us in &snapshot.durations_us {
            lines.push(self.line(REQUEST_DURATION, &millis(us), "ms", rate.as_deref()));
        }
        lines
    }
}

/// Microseconds as gunicorn's float milliseconds: `12.345`, `0.08`, `3`.
pub fn millis(us: u32) -> String {
    let mut text = format!("{}.{:03}", us / 1000, us % 1000);
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    text
}

/// `kept / offered` with six decimals at most, never `0`.
pub fn sample_rate(kept: u64, offered: u64) -> String {
    let rate = (kept as f64 / offered.max(1) as f64).clamp(0.000_001, 1.0);
    let mut text = String::new();
    let _ = write!(text, "{rate:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Joins lines with `\n` into datagrams of at most `max` bytes. A line
/// longer than `max` on its own (only a very long prefix or tag list makes
/// one) goes alone in its own datagram rather than being cut.
pub fn pack(lines: &[String], max: usize) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut current: Vec<u8> = Vec::with_capacity(max);
    for line in lines {
        let needed = if current.is_empty() {
            line.len()
        } else {
            current.len() + 1 + line.len()
        };
        if needed > max && !current.is_empty() {
            datagrams.push(std::mem::replace(&mut current, Vec::with_capacity(max)));
        }
        if !current.is_empty() {
            current.push(b'\n');
        }
        current.extend_from_slice(line.as_bytes());
    }
    if !current.is_empty() {
        datagrams.push(current);
    }
    datagrams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            requests: 5,
            statuses: vec![(200, 4), (404, 1)],
            durations_us: vec![12_345, 80, 3000],
            durations_offered: 3,
            workers: 2,
            log_lines: vec![("critical", 0), ("error", 1), ("warning", 0)],
            backlog: None,
        }
    }

    #[test]
    fn the_prefix_joins_gunicorns_names_with_one_dot() {
        for prefix in ["app", "app.", "app...", " app "] {
            let style = Style::new(prefix, "");
            assert_eq!(
                style.line(REQUESTS, "1", "c", None),
                "app.gunicorn.requests:1|c",
                "{prefix:?}"
            );
        }
        assert_eq!(
            Style::new("", "").line(REQUESTS, "1", "c", None),
            "gunicorn.requests:1|c"
        );
        assert_eq!(
            Style::new("my.app", "").line(WORKERS, "3", "g", None),
            "my.app.gunicorn.workers:3|g"
        );
    }

    #[test]
    fn tags_follow_the_type_and_the_rate_as_dogstatsd_has_them() {
        let style = Style::new("app", "env:test,region:eu");
        assert_eq!(
            style.line(REQUESTS, "2", "c", None),
            "app.gunicorn.requests:2|c|#env:test,region:eu"
        );
        assert_eq!(
            style.line(REQUEST_DURATION, "1.5", "ms", Some("0.25")),
            "app.gunicorn.request.duration:1.5|ms|@0.25|#env:test,region:eu"
        );
    }

    #[test]
    fn a_flush_names_every_figure_as_gunicorn_does() {
        let lines = Style::new("app", "env:test").lines(&snapshot());
        assert_eq!(
            lines,
            [
                "app.gunicorn.requests:5|c|#env:test",
                "app.gunicorn.request.status.200:4|c|#env:test",
                "app.gunicorn.request.status.404:1|c|#env:test",
                "app.gunicorn.workers:2|g|#env:test",
                "app.gunicorn.log.error:1|c|#env:test",
                "app.gunicorn.request.duration:12.345|ms|#env:test",
                "app.gunicorn.request.duration:0.08|ms|#env:test",
                "app.gunicorn.request.duration:3|ms|#env:test",
            ]
        );
    }

    #[test]
    fn an_idle_flush_sends_the_workers_gauge_only() {
        let idle = Snapshot {
            workers: 4,
            log_lines: vec![("critical", 0), ("error", 0), ("warning", 0)],
            ..Snapshot::default()
        };
        assert_eq!(Style::new("", "").lines(&idle), ["gunicorn.workers:4|g"]);
        let with_backlog = Snapshot {
            backlog: Some(0),
            ..idle
        };
        assert_eq!(
            Style::new("", "").lines(&with_backlog),
            ["gunicorn.workers:4|g", "gunicorn.backlog:0|h"]
        );
    }

    #[test]
    fn sampled_durations_carry_the_rate() {
        let sampled = Snapshot {
            durations_us: vec![1000; 4],
            durations_offered: 16,
            ..Snapshot::default()
        };
        let lines = Style::new("", "").lines(&sampled);
        let timers: Vec<_> = lines.iter().filter(|l| l.contains("|ms")).collect();
        assert_eq!(timers.len(), 4);
        assert!(
            timers
                .iter()
                .all(|l| *l == "gunicorn.request.duration:1|ms|@0.25"),
            "{lines:?}"
        );
        assert_eq!(sample_rate(1000, 3000), "0.333333");
        assert_eq!(sample_rate(1, 10_000_000_000), "0.000001");
        assert_eq!(sample_rate(5, 5), "1");
    }

    #[test]
    fn millis_are_gunicorns_float_milliseconds() {
        assert_eq!(millis(0), "0");
        assert_eq!(millis(1), "0.001");
        assert_eq!(millis(1500), "1.5");
        assert_eq!(millis(2_000_000), "2000");
        assert_eq!(millis(u32::MAX), "4294967.295");
    }

    #[test]
    fn lines_are_packed_into_datagrams_that_fit() {
        let lines: Vec<String> = (0..100)
            .map(|i| {
                Style::new("app", "env:test").line(REQUEST_DURATION, &millis(i * 1013), "ms", None)
            })
            .collect();
        let datagrams = pack(&lines, MAX_DATAGRAM);
        assert!(datagrams.len() > 1, "100 lines need several datagrams");
        assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        // Nothing lost or reordered, and no datagram could have taken the
        // next line.
        let rejoined: Vec<String> = datagrams
            .iter()
            .flat_map(|d| {
                std::str::from_utf8(d)
                    .unwrap()
                    .split('\n')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rejoined, lines);
        let mut next = 0;
        for datagram in &datagrams[..datagrams.len() - 1] {
            next += std::str::from_utf8(datagram).unwrap().split('\n').count();
            assert!(datagram.len() + 1 + lines[next].len() > MAX_DATAGRAM);
        }
    }

    #[test]
    fn an_oversized_line_goes_alone() {
        let long = "x".repeat(40);
        let lines = vec!["a:1|c".to_string(), long.clone(), "b:1|c".to_string()];
        let datagrams = pack(&lines, 16);
        assert_eq!(
            datagrams,
            [b"a:1|c".to_vec(), long.into_bytes(), b"b:1|c".to_vec()]
        );
        assert!(pack(&[], MAX_DATAGRAM).is_empty());
        assert_eq!(
            pack(&["a:1|c".into(), "b:1|c".into()], 11),
            [b"a:1|c\nb:1|c".to_vec()]
        );
    }
}
