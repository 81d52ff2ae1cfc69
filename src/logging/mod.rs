//! Logging for the master: the error log (tracing-subscriber, one gunicorn
//! line per event, drawn by `line.rs`, to stderr or a file) and the
//! gunicorn-format access log. This module
//! owns both sinks and their reopening; it doesn't decide *when* to reopen (the
//! master does, on SIGUSR1) nor what gets logged. [`init`] runs once in
//! `main`; the HTTP service gets an [`AccessLog`] from [`Logging::access`];
//! worker spawning asks [`Logging::worker_stderr`] so tracebacks land in the
//! error log. `counts.rs` counts the error log's lines by level, for statsd.

mod access;
mod access_format;
mod clf;
pub mod counts;
mod error_log;
mod line;

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use error_log::ErrorSink;

pub use access::{AccessLog, AccessRecord, ACCESS_TARGET};
pub use line::CRITICAL_FIELD;

/// Env var with `RUST_LOG`-style directives layered over [`LogConfig::level`],
/// e.g. `FERROCORN_LOG=ferrocorn::master=debug`.
pub const FILTER_ENV: &str = "FERROCORN_LOG";

/// Env var choosing the error log's line: `gunicorn` (the default) or
/// `tracing` (microsecond UTC times and every field, for benchmarks).
pub const FORMAT_ENV: &str = "FERROCORN_LOG_FORMAT";

/// gunicorn's default `access_log_format` (Apache combined log format).
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// Error-log verbosity, named as gunicorn's `--log-level`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    /// Per-request detail.
    Debug,
    /// Lifecycle: boot, ready, retire, exit, reload.
    #[default]
    Info,
    /// Degraded but handled.
    Warning,
    /// An operator must act.
    Error,
    /// Same as `Error` (tracing has no higher level); kept for gunicorn's spelling.
    Critical,
}

impl LogLevel {
    /// The tracing level this maps to; `Critical` becomes `ERROR`.
    pub fn as_level_filter(self) -> LevelFilter {
        match self {
            Self::Debug => LevelFilter::DEBUG,
            Self::Info => LevelFilter::INFO,
            Self::Warning => LevelFilter::WARN,
            Self::Error | Self::Critical => LevelFilter::ERROR,
        }
    }
}

/// What [`init`] needs: gunicorn's `loglevel`, `errorlog`, `accesslog` and
/// `access_log_format` settings, already validated by the config module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Error-log verbosity.
    pub level: LogLevel,
    /// `"-"` = stderr, else a path to append to.
    pub error_logfile: String,
    /// `None` = no access log, `Some("-")` = stdout, else a path to append to.
    pub access_logfile: Option<String>,
    /// gunicorn `%(atom)s` format, parsed once by [`init`].
    pub access_log_format: String,
}

impl Default for LogConfig {
    /// gunicorn's defaults: info to stderr, no access log.
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            error_logfile: "-".to_owned(),
            access_logfile: None,
            access_log_format: DEFAULT_ACCESS_LOG_FORMAT.to_owned(),
        }
    }
}

/// Why logging could not start, or a log could not be reopened.
///
/// The io error is part of the message (not a `source`), so the one line
/// printed at exit names both the path and the cause without repeating it.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The error log file could not be opened for appending.
    #[error("cannot open error log {path}: {err}")]
    OpenErrorLog {
        /// The configured path.
        path: String,
        /// What the OS said.
        err: io::Error,
    },
    /// `FERROCORN_LOG` is not a valid filter.
    #[error("invalid {FILTER_ENV}={value:?}: {reason} (use RUST_LOG syntax, e.g. info,ferrocorn::master=debug)")]
    BadFilter {
        /// The variable's value.
        value: String,
        /// What the filter parser said.
        reason: String,
    },
    /// `FERROCORN_LOG_FORMAT` names no line format.
    #[error("invalid {FORMAT_ENV}: {0}")]
    BadLineFormat(String),
    /// The access log file could not be opened for appending.
    #[error("cannot open access log {path}: {err}")]
    OpenAccessLog {
        /// The configured path.
        path: String,
        /// What the OS said.
        err: io::Error,
    },
    /// `access_log_format` names an atom gunicorn doesn't have.
    #[error("unknown access log atom %({atom})s in --access-logformat (known atoms: {known})")]
    UnknownAtom {
        /// The name between `%(` and `)s`.
        atom: String,
        /// The atoms we know, for the message.
        known: &'static str,
    },
    /// A `%({name}i)s` or `%({name}o)s` atom whose name is not a header name.
    #[error("access log atom %({atom})s in --access-logformat has an invalid header name")]
    BadHeaderAtom {
        /// The name between `%(` and `)s`.
        atom: String,
    },
    /// `access_log_format` is not a `%(name)s` format.
    #[error("invalid --access-logformat {format:?}: {reason}")]
    BadAccessFormat {
        /// The configured format.
        format: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// The OS refused a thread for the access log writer.
    #[error("cannot start the access log writer thread: {0}")]
    StartAccessWriter(io::Error),
    /// The access log writer thread is gone (it panicked).
    #[error("the access log writer thread has stopped")]
    AccessWriterStopped,
    /// The access log writer did not answer in time (output blocked?).
    #[error("the access log writer did not catch up within {0:?}; is its output blocked?")]
    AccessWriterStalled(Duration),
    /// Another subscriber was installed first.
    #[error("cannot install the logger: {0}")]
    AlreadyInitialized(String),
}

/// The running logs. Keep it alive for the life of the process: it holds the
/// open files that [`Logging::reopen`] swaps. Dropping it flushes the access
/// log (waiting a few seconds at most).
#[derive(Debug)]
pub struct Logging {
    error: ErrorSink,
    access: Option<AccessLog>,
}

impl Logging {
    /// The access log for the HTTP service, if `access_logfile` was set.
    pub fn access(&self) -> Option<AccessLog> {
        self.access.clone()
    }

    /// What a Python worker's stderr should be: the master's stderr, or a dup
    /// of the error log file (append mode), so its tracebacks land in the
    /// error log. After a reopen, running workers get the new file through
    /// [`Logging::worker_log_file`].
    pub fn worker_stderr(&self) -> io::Result<Stdio> {
        self.error.worker_stderr()
    }

    /// The error log file to hand running workers after [`Logging::reopen`]
    /// (sent over their control sockets), or `None` when it is stderr.
    pub fn worker_log_file(&self) -> io::Result<Option<std::fs::File>> {
        self.error.worker_file()
    }

    /// Reopens the error and access log files (gunicorn's SIGUSR1, after
    /// logrotate moved them); stderr and stdout need nothing. A log that
    /// fails to reopen keeps its old file. Blocks until the access log writer
    /// has switched, so call it from a blocking context.
    pub fn reopen(&self) -> Result<(), LoggingError> {
        let error = self.error.reopen();
        let access = self.access.as_ref().map_or(Ok(()), AccessLog::reopen);
        error.and(access)
    }

    /// Waits until every access-log line logged so far is written (the error
    /// log is written as each event happens).
    pub fn flush(&self) -> Result<(), LoggingError> {
        self.access.as_ref().map_or(Ok(()), AccessLog::flush)
    }
}

impl Drop for Logging {
    fn drop(&mut self) {
        // Best effort at exit: a stalled writer must not hang shutdown, and
        // there is no error log left to report to once logging is going away.
        let _ = self.flush();
    }
}

/// Builds the error-log subscriber without installing it, so tests can run it
/// under `tracing::subscriber::with_default`; [`init`] installs it.
/// Reads [`FILTER_ENV`].
pub fn build(
    cfg: &LogConfig,
) -> Result<(impl Subscriber + Send + Sync + 'static, Logging), LoggingError> {
    let env = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    build_from(cfg, env(FILTER_ENV).as_deref(), env(FORMAT_ENV).as_deref())
}

/// Checks `access_log_format` as [`init`] would (`--check-config`).
pub fn check_access_format(format: &str) -> Result<(), LoggingError> {
    access_format::AccessFormat::parse(format).map(|_| ())
}

/// Builds the logs and installs the error log as the global subscriber (also
/// capturing `log` crate records). Call once, early in `main`.
pub fn init(cfg: &LogConfig) -> Result<Logging, LoggingError> {
    let (subscriber, logging) = build(cfg)?;
    subscriber
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialized(e.to_string()))?;
    Ok(logging)
}

/// [`build`] with `FERROCORN_LOG` and the default line, for tests.
#[cfg(test)]
fn build_with_filter(
    cfg: &LogConfig,
    overrides: Option<&str>,
) -> Result<(impl Subscriber + Send + Sync + 'static, Logging), LoggingError> {
    build_from(cfg, overrides, None)
}

/// [`build`] with the `FERROCORN_LOG` and `FERROCORN_LOG_FORMAT` values
/// passed in, so tests don't touch the process environment.
fn build_from(
    cfg: &LogConfig,
    overrides: Option<&str>,
    format: Option<&str>,
) -> Result<(impl Subscriber + Send + Sync + 'static, Logging), LoggingError> {
    let filter = filter(cfg.level, overrides)?;
    let line = line::Line::parse(format).map_err(LoggingError::BadLineFormat)?;
    let error = ErrorSink::open(&cfg.error_logfile)?;
    let access = match &cfg.access_logfile {
        Some(spec) => Some(AccessLog::open(spec, &cfg.access_log_format)?),
        // Still parsed, so a broken format fails at start even while off.
        None => access_format::AccessFormat::parse(&cfg.access_log_format).map(|_| None)?,
    };
    // gunicorn's line, never coloured (gunicorn's isn't, and the workers'
    // lines share the stream).
    let subscriber = tracing_subscriber::fmt()
        .with_writer(error.clone())
        .with_ansi(false)
        .event_format(line)
        .with_env_filter(filter)
        .finish()
        .with(counts::LineCounts);
    Ok((subscriber, Logging { error, access }))
}

/// The configured level first, then the overrides: a later directive for the
/// same target replaces an earlier one, so `FERROCORN_LOG=debug` wins over
/// `--log-level info` while `FERROCORN_LOG=hyper=warn` keeps it.
fn filter(level: LogLevel, overrides: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let base = level.as_level_filter().to_string();
    let directives = match overrides.map(str::trim) {
        Some(extra) if !extra.is_empty() => format!("{base},{extra}"),
        _ => base,
    };
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LoggingError::BadFilter {
            value: overrides.unwrap_or_default().to_owned(),
            reason: e.to_string(),
        })
}

/// Opens `path` for appending, creating it if needed (both logs use this, as
/// gunicorn's `FileHandler` does).
fn open_append(path: &str) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn file_config(path: &std::path::Path) -> LogConfig {
        LogConfig {
            error_logfile: path.to_str().unwrap().to_owned(),
            ..LogConfig::default()
        }
    }

    #[test]
    fn levels_map_to_tracing() {
        assert_eq!(LogLevel::Debug.as_level_filter(), LevelFilter::DEBUG);
        assert_eq!(LogLevel::Info.as_level_filter(), LevelFilter::INFO);
        assert_eq!(LogLevel::Warning.as_level_filter(), LevelFilter::WARN);
        assert_eq!(LogLevel::Error.as_level_filter(), LevelFilter::ERROR);
        assert_eq!(LogLevel::Critical.as_level_filter(), LevelFilter::ERROR);
    }

    #[test]
    fn events_become_lines_in_the_error_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let (sub, _logging) = build_with_filter(&file_config(&path), None).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "ferrocorn::master", worker = 3, pid = 42, "ready");
            tracing::debug!("hidden at info");
        });
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let pid = std::process::id();
        assert!(
            lines[0].ends_with(&format!("] [{pid}] [INFO] ready pid=42")),
            "{text}"
        );
        assert!(lines[0].starts_with("[20"), "timestamp first: {text}");
        assert!(!text.contains('\x1b'), "no colours in a file: {text:?}");
    }

    #[test]
    fn the_tracing_line_is_there_for_tools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let (sub, _logging) = build_from(&file_config(&path), None, Some("tracing")).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "ferrocorn::master", worker = 3, pid = 42, "Worker (pid:42) is ready");
        });
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(" INFO ferrocorn::master: Worker (pid:42) is ready worker=3 pid=42"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
        let err = build_from(&file_config(&path), None, Some("json"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "invalid FERROCORN_LOG_FORMAT: unknown format \"json\" (use gunicorn or tracing)"
        );
    }

    #[test]
    fn overrides_layer_over_the_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let cfg = LogConfig {
            level: LogLevel::Warning,
            ..file_config(&path)
        };
        let (sub, _logging) = build_with_filter(&cfg, Some("ferrocorn::master=debug")).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::debug!(target: "ferrocorn::master", "master detail");
            tracing::info!(target: "ferrocorn::http", "http info");
            tracing::warn!(target: "ferrocorn::http", "http warning");
        });
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("master detail"), "{text}");
        assert!(!text.contains("http info"), "{text}");
        assert!(text.contains("http warning"), "{text}");

        let (sub, _logging) = build_with_filter(&cfg, Some("debug")).unwrap();
        tracing::subscriber::with_default(sub, || tracing::debug!("now visible"));
        assert!(fs::read_to_string(&path).unwrap().contains("now visible"));
    }

    #[test]
    fn bad_filter_names_the_variable() {
        let err = filter(LogLevel::Info, Some("ferrocorn=loud")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid FERROCORN_LOG=\"ferrocorn=loud\": "),
            "{msg}"
        );
    }

    #[test]
    fn bad_error_log_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("y.log");
        let err = build_with_filter(&file_config(&path), None)
            .err()
            .expect("missing directory must fail");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot open error log {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }

    #[test]
    fn reopen_moves_events_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let rotated = dir.path().join("error.log.1");
        let (sub, logging) = build_with_filter(&file_config(&path), None).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!("first");
            fs::rename(&path, &rotated).unwrap();
            logging.reopen().unwrap();
            tracing::info!("second");
        });
        assert!(fs::read_to_string(&rotated).unwrap().contains("first"));
        let fresh = fs::read_to_string(&path).unwrap();
        assert!(
            fresh.contains("second") && !fresh.contains("first"),
            "{fresh}"
        );
    }

    #[test]
    fn access_log_only_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let (_sub, logging) =
            build_with_filter(&file_config(&dir.path().join("e.log")), None).unwrap();
        assert!(logging.access().is_none());
        logging.flush().unwrap();

        let cfg = LogConfig {
            access_log_format: "%(z)s".to_owned(),
            ..file_config(&dir.path().join("e.log"))
        };
        let err = build_with_filter(&cfg, None)
            .err()
            .expect("bad format even with no access log");
        assert!(
            err.to_string().starts_with("unknown access log atom %(z)s"),
            "{err}"
        );
    }

    #[test]
    fn reopen_covers_both_logs() {
        let dir = tempfile::tempdir().unwrap();
        let error_path = dir.path().join("error.log");
        let access_path = dir.path().join("access.log");
        let cfg = LogConfig {
            access_logfile: Some(access_path.to_str().unwrap().to_owned()),
            access_log_format: "%(m)s %(U)s".to_owned(),
            ..file_config(&error_path)
        };
        let (sub, logging) = build_with_filter(&cfg, None).unwrap();
        let access = logging.access().expect("access log configured");
        let headers = http::HeaderMap::new();
        let rec = |path| AccessRecord {
            remote: "unix",
            method: "GET",
            path,
            query: None,
            version: http::Version::HTTP_11,
            status: 200,
            response_bytes: 0,
            started: std::time::SystemTime::now(),
            elapsed: Duration::ZERO,
            request_headers: &headers,
            response_headers: &headers,
        };
        tracing::subscriber::with_default(sub, || {
            tracing::info!("error before");
            access.log(&rec("/before"));
            logging.flush().unwrap();
            fs::rename(&error_path, dir.path().join("error.log.1")).unwrap();
            fs::rename(&access_path, dir.path().join("access.log.1")).unwrap();
            logging.reopen().unwrap();
            tracing::info!("error after");
            access.log(&rec("/after"));
        });
        drop(logging);
        assert_eq!(fs::read_to_string(&access_path).unwrap(), "GET /after\n");
        let error_text = fs::read_to_string(&error_path).unwrap();
        assert!(error_text.contains("error after") && !error_text.contains("error before"));
        let rotated = fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        assert_eq!(rotated, "GET /before\n");
    }

    /// The only test that installs a global subscriber: every other test
    /// scopes its own with `with_default`, so this one doesn't disturb them.
    #[test]
    fn init_installs_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = file_config(&dir.path().join("error.log"));
        let _logging = init(&cfg).unwrap();
        let err = init(&cfg).expect_err("a second global subscriber is refused");
        assert!(
            err.to_string().starts_with("cannot install the logger: "),
            "{err}"
        );
    }
}
