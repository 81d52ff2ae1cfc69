//! From merged raw strings to the typed [`Settings`], and checks across settings.
//!
//! The `Settings` struct and its conversion are generated from the settings
//! table (`table.rs`), so a field can never be missing from either.
//! [`SettingValue`] lifts each type's one parser (`types.rs`) to a whole
//! setting (single, optional or list); the table's integer range is checked
//! next; then the checks that involve several settings or the mode
//! run. Values that depend on other settings (the effective worker class,
//! the retirement cap, the interpreter) are methods here, so every caller
//! derives them the same way. Reading files and env is `layers.rs`'s job;
//! the one exception, `python_interpreter_here`, only gathers what the pure
//! interpreter default looks at.

use super::layers::{merge, RawValue};
use super::privileges::{Account, Umask};
use super::proxy::{FieldName, IpRange, ProxyProtocol, SchemeHeader};
use super::statsd::StatsdAddr;
use super::table::{Kind, SettingSpec, TomlKind, SETTINGS};
use super::types::{AppSpec, BindAddr, ByteSize, LogLevel, MemoryMetric, Scalar};
use super::types::{HeaderMapping, ReloadEngine, ValueError, WorkerClass, WorkerCpuAffinity};
use super::{ConfigError, Mode};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The type of a whole setting: a scalar, an optional scalar or a list.
pub trait SettingValue: Sized {
    /// How many values the setting holds.
    const KIND: Kind;
    /// Placeholder shown in `--help`.
    const VALUE_NAME: &'static str;
    /// What a valid value looks like, for error messages.
    const EXPECTED: &'static str;
    /// How the value is written in TOML.
    const TOML: TomlKind;
    /// Converts the raw strings of one layer; on failure returns the bad string.
    fn from_raw(values: &[String]) -> Result<Self, (String, ValueError)>;
    /// The canonical strings, which `from_raw` turns back into the same value.
    fn to_raw(&self) -> Vec<String>;
    /// The value as a number, for range checks of integer settings.
    fn as_number(&self) -> Option<u64>;
}

impl<T: Scalar> SettingValue for T {
    const KIND: Kind = Kind::One;
    const VALUE_NAME: &'static str = T::VALUE_NAME;
    const EXPECTED: &'static str = T::EXPECTED;
    const TOML: TomlKind = T::TOML;
    fn from_raw(values: &[String]) -> Result<Self, (String, ValueError)> {
        let text = values.last().map(String::as_str).unwrap_or_default();
        T::parse(text).map_err(|e| (text.to_string(), e))
    }
    fn to_raw(&self) -> Vec<String> {
        vec![self.render()]
    }
    fn as_number(&self) -> Option<u64> {
        Scalar::as_number(self)
    }
}

impl<T: Scalar> SettingValue for Option<T> {
    const KIND: Kind = Kind::Optional;
    const VALUE_NAME: &'static str = T::VALUE_NAME;
    const EXPECTED: &'static str = T::EXPECTED;
    const TOML: TomlKind = T::TOML;
    fn from_raw(values: &[String]) -> Result<Self, (String, ValueError)> {
        match values.last() {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => T::parse(text).map(Some).map_err(|e| (text.clone(), e)),
        }
    }
    fn to_raw(&self) -> Vec<String> {
        self.iter().map(Scalar::render).collect()
    }
    fn as_number(&self) -> Option<u64> {
        self.as_ref().and_then(Scalar::as_number)
    }
}

impl<T: Scalar> SettingValue for Vec<T> {
    const KIND: Kind = Kind::List {
        comma_separated: T::COMMA_SEPARATED,
    };
    const VALUE_NAME: &'static str = T::VALUE_NAME;
    const EXPECTED: &'static str = T::EXPECTED;
    const TOML: TomlKind = T::TOML;
    fn from_raw(values: &[String]) -> Result<Self, (String, ValueError)> {
        values
            .iter()
            .map(|text| T::parse(text).map_err(|e| (text.clone(), e)))
            .collect()
    }
    fn to_raw(&self) -> Vec<String> {
        self.iter().map(Scalar::render).collect()
    }
    fn as_number(&self) -> Option<u64> {
        None
    }
}

macro_rules! settings_struct {
    ($(
        $name:ident : $ty:ty = [$($default:literal),*] { doc: $doc:literal, $($rest:tt)* },
    )*) => {
        /// Every setting, validated and typed; the fields are the settings table's names.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $(#[doc = $doc] pub $name: $ty,)*
        }

        impl Settings {
            /// Converts merged raw values (indexed like `SETTINGS`) without cross-field checks.
            fn convert(raw: &[RawValue]) -> Result<Settings, ConfigError> {
                Ok(Settings { $($name: convert(stringify!($name), raw)?,)* })
            }

            /// Every setting's canonical strings, in table order, for rendering.
            pub fn to_raw(&self) -> Vec<(&'static str, Vec<String>)> {
                vec![$((stringify!($name), SettingValue::to_raw(&self.$name)),)*]
            }
        }
    };
}

with_settings!(settings_struct);

impl Default for Settings {
    /// Every setting at its default (no app).
    fn default() -> Self {
        Settings::convert(&merge(&[])).expect("defaults parse: checked by the table tests")
    }
}

impl Settings {
    /// The worker class that actually runs: as in gunicorn, `sync` with
    /// `threads > 1` behaves as `gthread`.
    pub fn effective_worker_class(&self) -> WorkerClass {
        match self.worker_class {
            WorkerClass::Sync if self.threads > 1 => WorkerClass::Gthread,
            class => class,
        }
    }

    /// Lanes per worker, as the dispatcher sees them: `threads`, or for
    /// gevent (which ignores `threads`, as gunicorn's does)
    /// `worker_connections`.
    pub fn lanes_per_worker(&self) -> usize {
        match self.worker_class {
            WorkerClass::Gevent => self.worker_connections,
            _ => self.threads,
        }
    }

    /// The request-line bound as gunicorn's parser applies the setting:
    /// 0 is no bound, and it is never above 8190.
    pub fn effective_limit_request_line(&self) -> usize {
        self.limit_request_line.min(MAX_REQUEST_LINE)
    }

    /// The header-count bound as gunicorn's parser applies the setting: 0
    /// and anything above 32768 are 32768.
    pub fn effective_limit_request_fields(&self) -> usize {
        match self.limit_request_fields {
            0 => MAX_HEADERS,
            n => n.min(MAX_HEADERS),
        }
    }

    /// The header-line bound as gunicorn's parser applies the setting: 0
    /// is its default, 8190 (gunicorn's docs say unlimited; its parser
    /// and its request corpus say otherwise).
    pub fn effective_limit_request_field_size(&self) -> usize {
        match self.limit_request_field_size {
            0 => DEFAULT_MAX_HEADER_FIELD_SIZE,
            n => n,
        }
    }

    /// How many workers may retire at once: the setting, else a quarter of
    /// the workers and at least 1, so recycling never empties the pool.
    pub fn effective_max_concurrent_retirements(&self) -> usize {
        max_concurrent_retirements(self.workers, self.max_concurrent_retirements)
    }

    /// The master's threads on this machine ([`master_threads`]).
    pub fn effective_master_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        master_threads(self.master_threads, cores)
    }

    /// The Python interpreter for workers: `python` if set, else
    /// `$VIRTUAL_ENV/bin/python` if `VIRTUAL_ENV` is set, else the `python`
    /// beside the running binary if that sits in a virtualenv's `bin/` (as
    /// `pip install ferrocorn` puts it), else `python3` (looked up on PATH
    /// when spawned).
    pub fn python_interpreter(&self, around: &Surroundings) -> PathBuf {
        if let Some(python) = &self.python {
            return python.clone();
        }
        if let Some(venv) = (around.env)("VIRTUAL_ENV").filter(|venv| !venv.is_empty()) {
            return PathBuf::from(venv).join("bin").join("python");
        }
        around
            .exe
            .and_then(|exe| virtualenv_python_beside(exe, around.is_file))
            .unwrap_or_else(|| PathBuf::from("python3"))
    }

    /// [`Settings::python_interpreter`] for this process: its environment,
    /// its executable and the real file system.
    pub fn python_interpreter_here(&self) -> PathBuf {
        let exe = std::env::current_exe().ok();
        self.python_interpreter(&Surroundings {
            env: &|key| std::env::var(key).ok(),
            exe: exe.as_deref(),
            is_file: &|path| path.is_file(),
        })
    }
}

/// gunicorn's `MAX_REQUEST_LINE`, `MAX_HEADERS` and `DEFAULT_MAX_HEADERFIELD_SIZE`.
const MAX_REQUEST_LINE: usize = 8190;
const MAX_HEADERS: usize = 32768;
const DEFAULT_MAX_HEADER_FIELD_SIZE: usize = 8190;

/// What the interpreter default reads besides the settings, passed in so
/// the choice is a function of its inputs and testable without a virtualenv.
pub struct Surroundings<'a> {
    /// Reads an environment variable.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The running binary (`std::env::current_exe`), if known.
    pub exe: Option<&'a Path>,
    /// Whether a path is an existing file (following symlinks: a
    /// virtualenv's `python` is one).
    pub is_file: &'a dyn Fn(&Path) -> bool,
}

/// `BIN/python` if `exe` is `BIN/ferrocorn` and `BIN/..` is a virtualenv
/// (it holds `pyvenv.cfg`); the check keeps a binary in `/usr/bin` from
/// picking `/usr/bin/python` over `python3` on PATH.
fn virtualenv_python_beside(exe: &Path, is_file: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let bin = exe.parent()?;
    let python = bin.join("python");
    let is_venv = bin
        .parent()
        .is_some_and(|root| is_file(&root.join("pyvenv.cfg")));
    (is_venv && is_file(&python)).then_some(python)
}

/// The master's threads: the configured count, else [`auto_master_threads`].
pub fn master_threads(configured: Option<usize>, cores: usize) -> usize {
    configured.unwrap_or_else(|| auto_master_threads(cores))
}

/// The default master threads on a machine with `cores`: one up to 4
/// cores, where a second thread's cross-thread wake-ups cost what its
/// parallelism gains (docs/design/hop.md, "The master on more cores"), then
/// one per 4 cores: the master's share of a Flask request's CPU is about a
/// quarter, the workers take the rest.
pub fn auto_master_threads(cores: usize) -> usize {
    if cores <= 4 {
        1
    } else {
        cores / 4
    }
}

/// `max_concurrent_retirements` for a pool of `workers`: the configured
/// value, else a quarter of the workers, at least 1 (the setting's meaning;
/// the arbiter's stagger policy applies it as the pool grows and shrinks).
pub fn max_concurrent_retirements(workers: usize, configured: Option<usize>) -> usize {
    configured.unwrap_or(workers / 4).max(1)
}

/// `.venv/bin/python` means the master's directory, not `--chdir`'s, where
/// the worker starts; a bare `python3` is still looked up on PATH.
pub fn absolute_if_relative_path(path: PathBuf) -> PathBuf {
    if path.is_relative() && path.components().count() > 1 {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(path);
        }
    }
    path
}

/// Converts and checks merged raw values (indexed like `SETTINGS`) for `mode`.
pub fn settings(raw: &[RawValue], mode: Mode) -> Result<Settings, ConfigError> {
    let settings = Settings::convert(raw)?;
    check_raw_env(&settings, raw)?;
    check_metrics_bind(&settings, raw)?;
    check_memory_limits(&settings, raw)?;
    check_directories(&settings, raw)?;
    check_reload(&settings, raw)?;
    check_accounts(&settings, raw)?;
    check_gevent_connections(&settings, raw)?;
    if settings.wsgi_app.is_none() && mode != Mode::PrintConfig {
        return Err(ConfigError::NoApp);
    }
    Ok(settings)
}

/// The "expected ..." text for a bad value of `spec`, including its range.
pub fn expected(spec: &SettingSpec) -> String {
    match (spec.min, spec.max) {
        (Some(1), None) => "expected a positive whole number".to_string(),
        (Some(min), None) => format!("expected a whole number of at least {min}"),
        (min, Some(max)) => format!("expected a whole number from {} to {max}", min.unwrap_or(0)),
        (None, None) => spec.expected.to_string(),
    }
}

fn index_of(name: &str) -> usize {
    SETTINGS
        .iter()
        .position(|spec| spec.name == name)
        .expect("Settings fields and SETTINGS come from the same table")
}

fn invalid(name: &str, bad: &str, raw: &[RawValue], expected_text: Option<&str>) -> ConfigError {
    let index = index_of(name);
    let spec = &SETTINGS[index];
    ConfigError::InvalidValue {
        setting: spec.name,
        value: bad.to_string(),
        from: raw[index].origin.describe(spec),
        expected: expected_text.map_or_else(|| expected(spec), str::to_string),
    }
}

fn convert<T: SettingValue>(name: &str, raw: &[RawValue]) -> Result<T, ConfigError> {
    let index = index_of(name);
    let (spec, given) = (&SETTINGS[index], &raw[index]);
    let value = T::from_raw(&given.values).map_err(|(bad, err)| match err {
        ValueError::Invalid => invalid(name, &bad, raw, None),
        ValueError::UnsupportedWorkerClass => ConfigError::UnsupportedWorkerClass {
            value: bad,
            from: given.origin.describe(spec),
        },
    })?;
    if let Some(number) = value.as_number() {
        if spec.min.is_some_and(|min| number < min) || spec.max.is_some_and(|max| number > max) {
            let text = given.values.last().map(String::as_str).unwrap_or_default();
            return Err(invalid(name, text, raw, None));
        }
    }
    Ok(value)
}

fn check_raw_env(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    let bad = settings
        .raw_env
        .iter()
        .find(|pair| !matches!(pair.split_once('='), Some((key, _)) if !key.trim().is_empty()));
    match bad {
        Some(pair) => Err(invalid(
            "raw_env",
            pair,
            raw,
            Some("expected KEY=VALUE with a non-empty KEY"),
        )),
        None => Ok(()),
    }
}

fn check_metrics_bind(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    let Some(text) = &settings.metrics_bind else {
        return Ok(());
    };
    // Unlike --bind, the port is required: defaulting to 8000 would collide with the app.
    match text.parse::<BindAddr>() {
        // `:PORT` (every interface, for --bind) is not taken here: name the host.
        Ok(BindAddr::Tcp { port, .. })
            if text.trim_end().ends_with(&format!(":{port}")) && !text.trim().starts_with(':') =>
        {
            Ok(())
        }
        _ => Err(invalid(
            "metrics_bind",
            text,
            raw,
            Some("expected HOST:PORT or [IPV6]:PORT"),
        )),
    }
}

fn check_memory_limits(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    let (Some(soft), Some(hard)) = (settings.max_memory, settings.max_memory_hard) else {
        return Ok(());
    };
    if hard > soft {
        return Ok(());
    }
    let source = |name: &str| {
        let index = index_of(name);
        raw[index].origin.describe(&SETTINGS[index])
    };
    Err(ConfigError::MemoryLimits {
        soft,
        soft_source: source("max_memory"),
        hard,
        hard_source: source("max_memory_hard"),
    })
}

/// A gevent worker's lanes are streams of one socket, numbered in 16 bits
/// (docs/protocol.md, "Multiplexed lanes").
fn check_gevent_connections(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    let most = crate::protocol::mux::MAX_STREAMS;
    if settings.worker_class != WorkerClass::Gevent || settings.worker_connections <= most {
        return Ok(());
    }
    Err(invalid(
        "worker_connections",
        &settings.worker_connections.to_string(),
        raw,
        Some(&format!("expected at most {most} with worker class gevent")),
    ))
}

/// `worker_tmp_dir` and `tmp_upload_dir` are accepted for gunicorn's config
/// files and never written to; a path that is not a directory is still a
/// mistake worth stopping for, as it would be under gunicorn.
fn check_directories(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    for (name, dir) in [
        ("worker_tmp_dir", &settings.worker_tmp_dir),
        ("tmp_upload_dir", &settings.tmp_upload_dir),
    ] {
        if let Some(dir) = dir.as_ref().filter(|dir| !dir.is_dir()) {
            let text = dir.display().to_string();
            return Err(invalid(
                name,
                &text,
                raw,
                Some("expected an existing directory"),
            ));
        }
    }
    Ok(())
}

/// gunicorn's docs: "The reloader is incompatible with application
/// preloading": preloaded code is imported once, before the fork, so a
/// restarted worker would run the old code again.
fn check_reload(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    if !(settings.reload && settings.preload_app) {
        return Ok(());
    }
    let source = |name: &str| {
        let index = index_of(name);
        raw[index].origin.describe(&SETTINGS[index])
    };
    Err(ConfigError::Conflict {
        first: "reload",
        first_source: source("reload"),
        second: "preload_app",
        second_source: source("preload_app"),
        why: "preloaded code is imported once, before the workers fork, so a restarted worker would run the old code (gunicorn: the reloader is incompatible with application preloading); drop --preload while developing",
    })
}

/// gunicorn's `validate_user` and `validate_group`: a name must be in the
/// user (group) database when the configuration is read, so a typo stops
/// the server at start instead of every worker failing to boot.
fn check_accounts(settings: &Settings, raw: &[RawValue]) -> Result<(), ConfigError> {
    let user = settings.user.as_ref().map(|u| ("user", u, u.uid()));
    let group = settings.group.as_ref().map(|g| ("group", g, g.gid()));
    for (name, account, resolved) in user.into_iter().chain(group) {
        if let Err(problem) = resolved {
            let index = index_of(name);
            return Err(ConfigError::NoSuchAccount {
                setting: SETTINGS[index].name,
                value: account.render(),
                from: raw[index].origin.describe(&SETTINGS[index]),
                problem,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_with_threads_runs_as_gthread_as_in_gunicorn() {
        let mut settings = Settings::default();
        assert_eq!(settings.effective_worker_class(), WorkerClass::Sync);
        settings.threads = 4;
        assert_eq!(settings.effective_worker_class(), WorkerClass::Gthread);
        settings.worker_class = WorkerClass::Gthread;
        settings.threads = 1;
        assert_eq!(settings.effective_worker_class(), WorkerClass::Gthread);
    }

    #[test]
    fn retirement_cap_defaults_to_a_quarter_of_the_workers_and_at_least_one() {
        let mut settings = Settings::default();
        for (workers, cap) in [(1, 1), (4, 1), (7, 1), (8, 2), (17, 4)] {
            settings.workers = workers;
            assert_eq!(
                settings.effective_max_concurrent_retirements(),
                cap,
                "{workers} workers"
            );
        }
        settings.max_concurrent_retirements = Some(3);
        assert_eq!(settings.effective_max_concurrent_retirements(), 3);
    }

    #[test]
    fn master_threads_default_to_one_up_to_4_cores_then_one_per_4_cores() {
        for (cores, threads) in [(1, 1), (2, 1), (4, 1), (5, 1), (8, 2), (16, 4), (64, 16)] {
            assert_eq!(master_threads(None, cores), threads, "{cores} cores");
        }
        assert_eq!(master_threads(Some(3), 2), 3);
        assert_eq!(master_threads(Some(1), 64), 1);
    }

    /// `settings`' interpreter with `VIRTUAL_ENV` set to `venv` (if given),
    /// the binary at `exe` and exactly `files` on disk.
    fn interpreter(settings: &Settings, venv: Option<&str>, exe: &str, files: &[&str]) -> PathBuf {
        settings.python_interpreter(&Surroundings {
            env: &|name| venv.filter(|_| name == "VIRTUAL_ENV").map(str::to_string),
            exe: Some(Path::new(exe)),
            is_file: &|path| files.iter().any(|file| Path::new(file) == path),
        })
    }

    #[test]
    fn interpreter_is_the_setting_then_the_virtualenv_then_python3() {
        let mut settings = Settings::default();
        let exe = "/usr/local/bin/ferrocorn";
        assert_eq!(
            interpreter(&settings, Some("/home/u/.venv"), exe, &[]),
            PathBuf::from("/home/u/.venv/bin/python")
        );
        assert_eq!(
            interpreter(&settings, Some(""), exe, &[]),
            PathBuf::from("python3")
        );
        assert_eq!(
            interpreter(&settings, None, exe, &[]),
            PathBuf::from("python3")
        );
        settings.python = Some("/usr/bin/python3.12".into());
        assert_eq!(
            interpreter(&settings, Some("/home/u/.venv"), exe, &[]),
            PathBuf::from("/usr/bin/python3.12")
        );
    }

    #[test]
    fn a_binary_in_a_virtualenvs_bin_uses_that_virtualenvs_python() {
        let mut settings = Settings::default();
        let exe = "/srv/app/venv/bin/ferrocorn";
        let venv = ["/srv/app/venv/pyvenv.cfg", "/srv/app/venv/bin/python"];
        assert_eq!(
            interpreter(&settings, None, exe, &venv),
            PathBuf::from("/srv/app/venv/bin/python")
        );
        // An activated virtualenv and --python still come first.
        assert_eq!(
            interpreter(&settings, Some("/home/u/.venv"), exe, &venv),
            PathBuf::from("/home/u/.venv/bin/python")
        );
        settings.python = Some("/usr/bin/python3.12".into());
        assert_eq!(
            interpreter(&settings, None, exe, &venv),
            PathBuf::from("/usr/bin/python3.12")
        );
    }

    #[test]
    fn a_python_beside_the_binary_outside_a_virtualenv_is_not_used() {
        let settings = Settings::default();
        let no_cfg = ["/usr/bin/python"];
        assert_eq!(
            interpreter(&settings, None, "/usr/bin/ferrocorn", &no_cfg),
            PathBuf::from("python3")
        );
        let no_python = ["/srv/app/venv/pyvenv.cfg"];
        assert_eq!(
            interpreter(&settings, None, "/srv/app/venv/bin/ferrocorn", &no_python),
            PathBuf::from("python3")
        );
        assert_eq!(
            interpreter(&settings, None, "ferrocorn", &["python", "../pyvenv.cfg"]),
            PathBuf::from("python3")
        );
        let unknown_exe = settings.python_interpreter(&Surroundings {
            env: &|_| None,
            exe: None,
            is_file: &|_| true,
        });
        assert_eq!(unknown_exe, PathBuf::from("python3"));
    }

    #[test]
    fn defaults_match_gunicorn_where_gunicorn_has_the_setting() {
        let s = Settings::default();
        assert_eq!(
            s.bind,
            [BindAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 8000
            }]
        );
        assert_eq!(
            (s.backlog, s.workers, s.threads, s.worker_class),
            (2048, 1, 1, WorkerClass::Sync)
        );
        assert_eq!(
            (s.timeout, s.graceful_timeout, s.keep_alive),
            (
                Duration::from_secs(30),
                Duration::from_secs(30),
                Duration::from_secs(2)
            )
        );
        assert_eq!(
            (
                s.limit_request_line,
                s.limit_request_fields,
                s.limit_request_field_size
            ),
            (4094, 100, 8190)
        );
        let clamped = Settings {
            limit_request_line: 9000,
            limit_request_fields: 0,
            limit_request_field_size: 0,
            ..Settings::default()
        };
        assert_eq!(
            (
                clamped.effective_limit_request_line(),
                clamped.effective_limit_request_fields(),
                clamped.effective_limit_request_field_size()
            ),
            (8190, 32768, 8190)
        );
        assert_eq!(
            (
                s.log_level,
                s.error_logfile.as_str(),
                s.access_logfile.as_deref()
            ),
            (LogLevel::Info, "-", None)
        );
        assert_eq!(
            s.access_log_format,
            r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#
        );
        assert_eq!((s.max_requests, s.max_requests_jitter), (0, 0));
        assert_eq!(
            (s.limit_request_body, s.request_buffer_size),
            (ByteSize(1 << 30), ByteSize(1 << 20))
        );
        assert_eq!(
            (s.memory_metric, s.memory_check_interval),
            (MemoryMetric::Rss, Duration::from_secs(1))
        );
        assert_eq!(s.wsgi_app, None::<AppSpec>);
    }

    #[test]
    fn equal_memory_limits_are_rejected() {
        let raw: Vec<RawValue> = merge(&[]);
        let mut settings = Settings {
            max_memory: Some(ByteSize(100)),
            max_memory_hard: Some(ByteSize(100)),
            ..Settings::default()
        };
        assert!(matches!(
            check_memory_limits(&settings, &raw),
            Err(ConfigError::MemoryLimits { .. })
        ));
        settings.max_memory_hard = Some(ByteSize(101));
        assert!(check_memory_limits(&settings, &raw).is_ok());
    }

    #[test]
    fn setting_values_convert_lists_and_optionals() {
        let raw = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(<Option<ByteSize>>::from_raw(&raw(&[])), Ok(None));
        assert_eq!(<Option<ByteSize>>::from_raw(&raw(&[""])), Ok(None));
        assert_eq!(
            <Option<usize>>::from_raw(&raw(&["x"])),
            Err(("x".to_string(), ValueError::Invalid))
        );
        assert_eq!(
            <Vec<PathBuf>>::from_raw(&raw(&["a", "b"])).unwrap().len(),
            2
        );
        assert_eq!(
            <usize>::from_raw(&raw(&["+4"])),
            Err(("+4".to_string(), ValueError::Invalid))
        );
        assert_eq!(
            <u32>::from_raw(&raw(&["4294967296"])).map_err(|e| e.1),
            Err(ValueError::Invalid)
        );
    }
}
