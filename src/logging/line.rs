//! The error log's line: gunicorn's `[%Y-%m-%d %H:%M:%S %z] [pid] [LEVEL]
//! message`, written for every tracing event of the master, so master and
//! Python workers (whose `logging` formatter prints the same) read as one log.
//! [`GunicornLine`] is the `FormatEvent` that `mod.rs` plugs into the fmt
//! layer; it owns the time stamp, the level names and how fields are shown,
//! not which events are logged or their wording (the callers' job).
//!
//! Fields stay in the event for tests and tooling; the line shows one as
//! `key=value` only where it adds to the message: a field whose value already
//! appears in the message as a whole word is left out, and so are worker ids
//! (`worker`, `replaces`: ferrocorn's slot numbers; the pid names the worker,
//! as in gunicorn).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Field that turns an `error!` event into gunicorn's `CRITICAL` (tracing has
/// no higher level): `error!(critical = true, "WORKER TIMEOUT (pid:{pid})")`.
pub const CRITICAL_FIELD: &str = "critical";

/// Fields never shown on the line: ids for machines that the message already
/// names another way.
const HIDDEN_FIELDS: &[&str] = &["worker", "replaces", CRITICAL_FIELD];

/// Which line the error log writes: gunicorn's (the default), or
/// tracing-subscriber's full one (`FERROCORN_LOG_FORMAT=tracing`: RFC 3339
/// time in UTC to the microsecond, target, every field), for tools that time
/// the master's events on its own clock, such as `benches/`.
#[derive(Clone, Debug)]
pub(crate) enum Line {
    /// `[time] [pid] [LEVEL] message`.
    Gunicorn(GunicornLine),
    /// tracing-subscriber's default format, without colours.
    Tracing(tracing_subscriber::fmt::format::Format),
}

impl Line {
    /// The line named by `FERROCORN_LOG_FORMAT` (`gunicorn` when unset).
    pub(crate) fn parse(name: Option<&str>) -> Result<Self, String> {
        match name.map(str::trim) {
            None | Some("") | Some("gunicorn") => Ok(Self::Gunicorn(GunicornLine::new())),
            Some("tracing") => Ok(Self::Tracing(
                tracing_subscriber::fmt::format().with_ansi(false),
            )),
            Some(other) => Err(format!(
                "unknown format {other:?} (use gunicorn or tracing)"
            )),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self {
            Self::Gunicorn(line) => line.format_event(ctx, writer, event),
            Self::Tracing(format) => format.format_event(ctx, writer, event),
        }
    }
}

/// gunicorn's error-log line for one process (the pid is fixed at build).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GunicornLine {
    pid: u32,
}

impl GunicornLine {
    /// Lines carrying this process's pid.
    pub(crate) fn new() -> Self {
        Self {
            pid: std::process::id(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for GunicornLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = level_name(*event.metadata().level(), fields.is_critical);
        write_stamp(&mut writer, &LocalTime::now())?;
        write!(writer, " [{}] [{level}] {}", self.pid, fields.message)?;
        for (name, value) in &fields.others {
            if !HIDDEN_FIELDS.contains(&name.as_str()) && !contains_word(&fields.message, value) {
                write!(writer, " {name}={}", quote_if_spaced(value))?;
            }
        }
        writeln!(writer)
    }
}

/// gunicorn's (Python `logging`'s) level names; tracing's TRACE has no
/// counterpart there and shows as DEBUG.
fn level_name(level: Level, is_critical: bool) -> &'static str {
    match level {
        Level::ERROR if is_critical => "CRITICAL",
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// The message and the other fields of one event, rendered.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(String, String)>,
    is_critical: bool,
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD {
            self.is_critical = value;
        }
        self.record_debug(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others
                .push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

/// Whether `word` occurs in `text` with no letter, digit or `_` either side
/// (so `pid=42` is dropped from `... (pid:42)` but not from `... 420`).
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn quote_if_spaced(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(char::is_whitespace) {
        format!("{value:?}").into()
    } else {
        value.into()
    }
}

/// Broken-down local time, as `time.strftime` sees it in gunicorn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LocalTime {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Seconds east of UTC.
    offset_s: i64,
}

impl LocalTime {
    /// Now in the local zone (`TZ`, else /etc/localtime), via `localtime_r`:
    /// std has no time zones and the crates we have offer none either.
    fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as nix::libc::time_t;
        // SAFETY: `localtime_r` only writes the `tm` we own; on failure it
        // returns null and we fall back to UTC.
        let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !nix::libc::localtime_r(&secs, &mut tm).is_null() };
        if !ok {
            return Self::utc(secs as i64);
        }
        Self {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
            offset_s: tm.tm_gmtoff as i64,
        }
    }

    /// `secs` since the epoch in UTC (days-to-civil after Howard Hinnant).
    fn utc(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            offset_s: 0,
        }
    }
}

/// `[%Y-%m-%d %H:%M:%S %z]`: `%z` is `+HHMM`/`-HHMM`, as strftime prints it.
fn write_stamp(out: &mut impl fmt::Write, t: &LocalTime) -> fmt::Result {
    let sign = if t.offset_s < 0 { '-' } else { '+' };
    let minutes = t.offset_s.abs() / 60;
    write!(
        out,
        "[{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}{:02}]",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        minutes / 60,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(emit: impl FnOnce()) -> String {
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::TRACE)
            .event_format(GunicornLine::new())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The brief's regex, by hand: `^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d
    /// [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] .+$`.
    fn is_gunicorn_line(line: &str) -> bool {
        let shape = |s: &str, pattern: &str| {
            s.len() == pattern.len()
                && s.chars().zip(pattern.chars()).all(|(c, p)| match p {
                    'd' => c.is_ascii_digit(),
                    's' => c == '+' || c == '-',
                    _ => c == p,
                })
        };
        let Some(stamp) = line.get(..27) else {
            return false;
        };
        let Some(rest) = line[27..].strip_prefix(" [") else {
            return false;
        };
        let Some((pid, rest)) = rest.split_once("] [") else {
            return false;
        };
        let Some((level, message)) = rest.split_once("] ") else {
            return false;
        };
        shape(stamp, "[dddd-dd-dd dd:dd:dd sdddd]")
            && !pid.is_empty()
            && pid.chars().all(|c| c.is_ascii_digit())
            && ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level)
            && !message.is_empty()
            && !message.contains('\n')
    }

    #[test]
    fn every_level_is_a_gunicorn_line() {
        let text = capture(|| {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("Booting worker with pid: 42");
            tracing::warn!("w");
            tracing::error!("e");
            tracing::error!(critical = true, "WORKER TIMEOUT (pid:42)");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        for line in &lines {
            assert!(is_gunicorn_line(line), "{line:?}");
        }
        let levels: Vec<&str> = lines
            .iter()
            .map(|l| l.split("] [").nth(2).unwrap().split(']').next().unwrap())
            .collect();
        assert_eq!(
            levels,
            ["DEBUG", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
        );
        let pid = std::process::id();
        assert!(
            lines[2].ends_with(&format!("] [{pid}] [INFO] Booting worker with pid: 42")),
            "{text}"
        );
        assert!(
            lines[5].ends_with("[CRITICAL] WORKER TIMEOUT (pid:42)"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn fields_show_only_what_the_message_lacks() {
        let text = capture(|| {
            tracing::info!(worker = 3, pid = 42, requests = 17, reason = "max_requests",
                error = %"broken pipe (os error 32)", "Worker (pid:42) reached max requests (17), restarting");
            tracing::info!(pid = 42, "Worker (pid:420) exited");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with(
                "Worker (pid:42) reached max requests (17), restarting reason=max_requests error=\"broken pipe (os error 32)\""
            ),
            "{text}"
        );
        assert!(
            lines[1].ends_with("Worker (pid:420) exited pid=42"),
            "{text}"
        );
    }

    #[test]
    fn stamp_is_strftime_with_a_numeric_offset() {
        let mut s = String::new();
        write_stamp(&mut s, &LocalTime::utc(1_796_106_218)).unwrap();
        assert_eq!(s, "[2026-12-01 06:23:38 +0000]");
        let t = LocalTime {
            offset_s: -(3 * 3600 + 30 * 60),
            ..LocalTime::utc(0)
        };
        s.clear();
        write_stamp(&mut s, &t).unwrap();
        assert_eq!(s, "[1970-01-01 00:00:00 -0330]");
        assert_eq!(LocalTime::utc(951_782_400).day, 29, "2000-02-29");
        // The machine runs in UTC unless TZ says otherwise.
        if std::env::var_os("TZ").is_none() {
            let now = LocalTime::now();
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let utc = LocalTime::utc(secs + now.offset_s);
            assert_eq!(
                (now.year, now.month, now.day),
                (utc.year, utc.month, utc.day)
            );
        }
    }

    #[test]
    fn words_are_whole() {
        assert!(contains_word("(pid:42)", "42"));
        assert!(!contains_word("(pid:420)", "42"));
        assert!(!contains_word("x", ""));
        assert!(contains_word("reason max_requests", "max_requests"));
    }
}
