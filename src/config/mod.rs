//! Configuration: from command line, `FERROCORN_*` env, TOML file and defaults
//! to one validated [`Settings`], with the origin of every value.
//!
//! `table.rs` declares every setting once; `types.rs` parses each value type
//! (`proxy.rs` and `privileges.rs` those of the proxy and user settings);
//! `layers.rs` collects raw strings per source; `validate.rs` turns them into
//! `Settings`; `render.rs` prints them (`--print-config`, README table,
//! example TOML). `main` calls [`load`] once and [`reload`] on SIGHUP; the
//! rest of the server only reads `Settings`. The clap surface is `crate::cli`.

#[macro_use]
pub mod table;
pub mod gunicorn;
pub mod layers;
pub mod privileges;
pub mod proxy;
pub mod python_file;
pub mod render;
pub mod statsd;
pub mod types;
pub mod validate;

pub use layers::Origin;
pub use render::render_effective;
pub use table::{Section, SettingSpec, SETTINGS};
pub use types::{
    AppSpec, BindAddr, ByteSize, HeaderMapping, LogLevel, MemoryMetric, ReloadEngine, WorkerClass,
    WorkerCpuAffinity,
};
pub use validate::Settings;

use layers::{merge, Layer};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What the user asked ferrocorn to do with the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the server.
    Serve,
    /// `--print-config`: print the effective settings and exit.
    PrintConfig,
    /// `--check-config`: validate and exit.
    CheckConfig,
}

/// Where each setting's value came from, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins(Vec<Origin>);

impl Origins {
    /// The origin of the setting called `name`, or `None` if there is no such setting.
    pub fn get(&self, name: &str) -> Option<&Origin> {
        let index = SETTINGS.iter().position(|spec| spec.name == name)?;
        self.0.get(index)
    }

    /// Every setting with its origin, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static SettingSpec, &Origin)> {
        SETTINGS.iter().zip(&self.0)
    }
}

/// The result of [`load`]: settings, their origins, and what is needed to reload.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    /// Where each value came from.
    pub origins: Origins,
    /// Serve, print or check.
    pub mode: Mode,
    /// The config file from `-c` (or `GUNICORN_CMD_ARGS`'s), as given, or
    /// `gunicorn.conf.py` when it was read by default.
    pub config_file: Option<PathBuf>,
    /// The config, if it is Python: the fork server and workers run it
    /// again for its server hooks.
    pub python_config: Option<python_file::PythonConfig>,
    /// The original command line, program name first; [`reload`] parses it again.
    pub args: Vec<OsString>,
    /// The working directory at the first load: a relative `-c` path is read
    /// from here on reload too, even if the server changed directory since.
    pub base_dir: Option<PathBuf>,
}

/// Every configuration problem; each message names the setting, the value,
/// where it came from and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap's own errors, and `--help`/`--version` output (exit code 0). The text
    /// carries its own `error:` prefix and usage: print it with `clap::Error::print`.
    #[error("{0}")]
    Clap(clap::Error),
    /// A gunicorn option ferrocorn does not have yet.
    #[error("gunicorn option {option} is not supported by ferrocorn yet")]
    UnsupportedGunicornOption {
        /// The option as written, e.g. `--paste` or `-D`.
        option: String,
    },
    /// A value that does not parse or is out of range.
    #[error("invalid value {value:?} for {setting} (from {from}): {expected}")]
    InvalidValue {
        /// The setting's name.
        setting: &'static str,
        /// The bad value as given.
        value: String,
        /// Where it came from: `--workers`, `FERROCORN_WORKERS` or a file path.
        from: String,
        /// What would be valid.
        expected: String,
    },
    /// `user` or `group` names no one in the user or group database.
    #[error("{problem}: {value:?} for {setting} (from {from}); give a name that `getent {db} {value}` finds, or a numeric id", db = if *setting == "user" { "passwd" } else { "group" })]
    NoSuchAccount {
        /// `user` or `group`.
        setting: &'static str,
        /// The name as given.
        value: String,
        /// Where it came from.
        from: String,
        /// `no such user`, `no such group`, or why the database could not be read.
        problem: String,
    },
    /// A gunicorn worker class ferrocorn does not have yet.
    #[error("worker class {value:?} (from {from}) is not supported by ferrocorn yet: the supported classes are sync (also gunicorn.workers.sync.SyncWorker, egg:gunicorn#sync), gthread (gunicorn.workers.gthread.ThreadWorker, egg:gunicorn#gthread) and gevent (gunicorn.workers.ggevent.GeventWorker, egg:gunicorn#gevent)")]
    UnsupportedWorkerClass {
        /// The class as given.
        value: String,
        /// Where it came from.
        from: String,
    },
    /// A TOML key that is not a setting.
    #[error("unknown setting {key:?} in {}: {}", path.display(), match suggestion {
        Some(name) => format!("did you mean {name:?}?"),
        None => "run ferrocorn --print-config to list the settings".to_string(),
    })]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// The closest setting name, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A Python config file cannot run, or raised.
    #[error("cannot read the Python config {}: {problem}", path.display())]
    PythonConfig {
        /// The config as named (`-c`, or `gunicorn.conf.py`).
        path: PathBuf,
        /// What went wrong, with the traceback if it raised.
        problem: String,
    },
    /// A name in a Python config file that ferrocorn refuses.
    #[error("`{name}` in {} {problem}", path.display())]
    PythonName {
        /// The config as named.
        path: PathBuf,
        /// The name as the file spells it.
        name: String,
        /// Why it is refused, e.g. "is a gunicorn setting ferrocorn does not support yet".
        problem: String,
    },
    /// `GUNICORN_CMD_ARGS` does not split as a shell would.
    #[error("GUNICORN_CMD_ARGS cannot be split into arguments (an unclosed quote?): {value:?}")]
    CmdArgsEnv {
        /// The variable's value.
        value: String,
    },
    /// The `-c` file cannot be read.
    #[error("cannot read config file {} (from -c/--config): {problem}: check the path", path.display())]
    ConfigFile {
        /// The path as given.
        path: PathBuf,
        /// Why it cannot be read.
        problem: String,
    },
    /// The `-c` file is not valid TOML.
    #[error("invalid TOML in {}{}: {message}", path.display(), line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Toml {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// The TOML parser's message.
        message: String,
    },
    /// A TOML value of the wrong shape (a table, a list for a single value, or
    /// anything but a TOML boolean for a switch).
    #[error("invalid value for {setting} in {}: {problem}", path.display())]
    TomlType {
        /// The config file.
        path: PathBuf,
        /// The setting's name.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `max_memory_hard` is not above `max_memory`.
    #[error("max_memory_hard ({hard} from {hard_source}) must be larger than max_memory ({soft} from {soft_source}): raise max_memory_hard or lower max_memory")]
    MemoryLimits {
        /// The soft limit.
        soft: ByteSize,
        /// Where the soft limit came from.
        soft_source: String,
        /// The hard limit.
        hard: ByteSize,
        /// Where the hard limit came from.
        hard_source: String,
    },
    /// Two settings that cannot be combined.
    #[error("{first} (from {first_source}) cannot be combined with {second} (from {second_source}): {why}")]
    Conflict {
        /// The first setting's name.
        first: &'static str,
        /// Where it came from.
        first_source: String,
        /// The second setting's name.
        second: &'static str,
        /// Where it came from.
        second_source: String,
        /// Why, and the fix.
        why: &'static str,
    },
    /// Serving (or checking) without an app.
    #[error("no app given: pass MODULE:APP, e.g. ferrocorn examples.flask_app:app")]
    NoApp,
}

impl ConfigError {
    /// The process exit code: 0 for `--help`/`--version`, 2 for every real problem.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Clap(err) => err.exit_code(),
            _ => 2,
        }
    }
}

/// Loads the configuration, each layer over the one before: defaults,
/// `PORT` and `WEB_CONCURRENCY` (gunicorn's defaults from the environment),
/// the config file (`-c`, TOML or Python, or `./gunicorn.conf.py`),
/// `FERROCORN_*` variables, `GUNICORN_CMD_ARGS`, the command line.
///
/// `args` is the whole command line, program name first (`std::env::args_os()`);
/// `env` reads an environment variable (use [`process_env`] outside tests).
///
/// # Errors
/// Any [`ConfigError`]; `--help` and `--version` are [`ConfigError::Clap`] with exit code 0.
pub fn load<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    load_from(args, env, std::env::current_dir().ok())
}

/// Loads again from the same command line, config file and (current) env, for SIGHUP.
///
/// # Errors
/// As [`load`]; on error the caller keeps running with `loaded`.
pub fn reload(
    loaded: &Loaded,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    load_from(loaded.args.clone(), env, loaded.base_dir.clone())
}

/// Reads a variable of this process's environment; the `env` argument of [`load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn load_from(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<PathBuf>,
) -> Result<Loaded, ConfigError> {
    let cli = crate::cli::parse(&args)?;
    let env_args = match env(CMD_ARGS_ENV) {
        Some(text) => {
            let split = shlex::split(&text).ok_or(ConfigError::CmdArgsEnv {
                value: text.clone(),
            })?;
            let argv = std::iter::once(OsString::from("ferrocorn"))
                .chain(split.into_iter().map(OsString::from));
            let mut parsed = crate::cli::parse(&argv.collect::<Vec<_>>())?;
            parsed.layer.relabel(Origin::CmdArgsEnv);
            Some(parsed)
        }
        None => None,
    };
    let env_layer = Layer::from_env(env);
    let platform = Layer::from_platform_env(env);
    // gunicorn: `-c` on the command line, else GUNICORN_CMD_ARGS's, else
    // ./gunicorn.conf.py if there is one.
    let given = cli
        .config_file
        .clone()
        .or_else(|| env_args.as_ref().and_then(|a| a.config_file.clone()));
    let resolve = |path: &Path| match &base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let config_file = given.or_else(|| {
        let default = Path::new(python_file::DEFAULT_FILE);
        resolve(default).is_file().then(|| default.to_path_buf())
    });
    let mut python_config = None;
    let file = match &config_file {
        Some(path) => {
            let full = resolve(path);
            match python_file::python_config(path, &full) {
                Some(config) => {
                    // The interpreter as the other layers choose it: the
                    // file cannot pick the interpreter that reads it.
                    let above: Vec<&Layer> = std::iter::once(&env_layer)
                        .chain(env_args.as_ref().map(|a| &a.layer))
                        .chain(std::iter::once(&cli.layer))
                        .collect();
                    let python = validate::settings(&merge(&above), Mode::PrintConfig)
                        .map(|s| s.python_interpreter_here())
                        .unwrap_or_else(|_| PathBuf::from("python3"));
                    let layer = python_file::read(&python, &config, path, base_dir.as_deref())?;
                    python_config = Some(config);
                    layer
                }
                None => Layer::from_toml_file(&full, path)?,
            }
        }
        None => Layer::default(),
    };
    let mut layers = vec![&platform, &file, &env_layer];
    layers.extend(env_args.as_ref().map(|a| &a.layer));
    layers.push(&cli.layer);
    let raw = merge(&layers);
    let settings = validate::settings(&raw, cli.mode)?;
    Ok(Loaded {
        settings,
        origins: Origins(raw.into_iter().map(|value| value.origin).collect()),
        mode: cli.mode,
        config_file,
        python_config,
        args,
        base_dir,
    })
}

/// gunicorn's environment variable of extra command-line arguments.
pub const CMD_ARGS_ENV: &str = "GUNICORN_CMD_ARGS";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::privileges::{Account, Umask};
    use std::path::Path;

    /// A non-default value in canonical form for every setting.
    const SAMPLES: &[(&str, &str)] = &[
        ("bind", "0.0.0.0:9000"),
        ("backlog", "64"),
        ("reuse_port", "true"),
        ("master_threads", "3"),
        ("daemon", "true"),
        ("sendfile", "false"),
        ("user", "root"),
        ("group", "0"),
        ("initgroups", "true"),
        ("umask", "0o77"),
        ("workers", "4"),
        ("threads", "8"),
        ("worker_connections", "50"),
        ("pipeline_below", "5ms"),
        ("pipeline_depth", "4"),
        ("worker_cpu_affinity", "spread"),
        ("worker_class", "gthread"),
        ("python", "/usr/bin/python3.12"),
        ("worker_tmp_dir", "/tmp"),
        ("timeout", "1m"),
        ("graceful_timeout", "5s"),
        ("keep_alive", "500ms"),
        ("header_timeout", "3s"),
        ("body_timeout", "5s"),
        ("queue_timeout", "2h"),
        ("limit_request_line", "0"),
        ("limit_request_fields", "50"),
        ("limit_request_field_size", "0"),
        ("limit_request_body", "10MB"),
        ("request_buffer_size", "64KiB"),
        ("max_buffered_bodies", "64MiB"),
        ("permit_unconventional_http_method", "true"),
        ("casefold_http_method", "true"),
        ("forwarded_allow_ips", "10.0.0.0/8"),
        ("secure_scheme_headers", "X-SCHEME=https"),
        ("forwarder_headers", "REMOTE_USER"),
        ("header_map", "refuse"),
        ("proxy_protocol", "v2"),
        ("proxy_allow_ips", "*"),
        ("wsgi_app", "pkg.mod:create_app(debug=True)"),
        ("chdir", "/srv/app"),
        ("preload_app", "true"),
        ("pythonpath", "/opt/lib"),
        ("raw_env", "A=1"),
        ("proc_name", "shop"),
        ("reload", "true"),
        ("reload_engine", "poll"),
        ("reload_extra_files", "conf/app.ini"),
        ("spew", "true"),
        ("tmp_upload_dir", "/tmp"),
        ("log_level", "debug"),
        ("capture_output", "true"),
        ("enable_stdio_inheritance", "true"),
        ("error_logfile", "/var/log/ferrocorn.log"),
        ("access_logfile", "-"),
        ("access_log_format", "%(h)s %(r)s"),
        ("pidfile", "/run/ferrocorn.pid"),
        ("max_requests", "1000"),
        ("max_requests_jitter", "50"),
        ("max_memory", "512MiB"),
        ("max_memory_hard", "1GiB"),
        ("max_memory_total", "4GiB"),
        ("memory_metric", "pss"),
        ("memory_check_interval", "250ms"),
        ("spare_workers", "2"),
        ("max_concurrent_retirements", "2"),
        ("metrics_bind", "127.0.0.1:9100"),
        ("statsd_host", "127.0.0.1:8125"),
        ("statsd_prefix", "app"),
        ("dogstatsd_tags", "env:prod,region:eu"),
        ("enable_backlog_metric", "true"),
    ];

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn rendered(loaded: &Loaded, name: &str) -> Vec<String> {
        let raw = loaded.settings.to_raw();
        raw.into_iter()
            .find(|(n, _)| *n == name)
            .expect("known setting")
            .1
    }

    fn write_toml(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("ferrocorn.toml");
        std::fs::write(&path, text).expect("temp dir is writable");
        path
    }

    fn error(args: &[&str], env: &dyn Fn(&str) -> Option<String>) -> String {
        load(args, env).expect_err("should fail").to_string()
    }

    /// Issue 12: as gunicorn's `validate_user` and `validate_group`, a name
    /// that is not in the database stops the server at start (exit 2).
    #[test]
    fn unknown_user_and_group_names_stop_the_server_naming_them() {
        let err = load(["ferrocorn", "app:app", "--user", "no-such-user"], &no_env)
            .expect_err("unknown user");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "no such user: \"no-such-user\" for user (from --user); give a name that `getent passwd no-such-user` finds, or a numeric id"
        );
        let env = env_of(&[("FERROCORN_GROUP", "no-such-group")]);
        assert_eq!(
            error(&["ferrocorn", "app:app"], &env),
            "no such group: \"no-such-group\" for group (from FERROCORN_GROUP); give a name that `getent group no-such-group` finds, or a numeric id"
        );
        // Numbers are ids and are taken as they are, as in gunicorn.
        let loaded = load(
            [
                "ferrocorn",
                "app:app",
                "-u",
                "123456",
                "-g",
                "123456",
                "--initgroups",
            ],
            &no_env,
        )
        .expect("numeric ids");
        let s = &loaded.settings;
        assert_eq!(
            (s.user.clone(), s.group.clone(), s.initgroups),
            (Some(Account::Id(123456)), Some(Account::Id(123456)), true)
        );
    }

    #[test]
    fn umask_user_and_group_default_and_parse_as_in_gunicorn() {
        let defaults = load(["ferrocorn", "app:app"], &no_env).expect("defaults");
        let s = &defaults.settings;
        assert_eq!(
            (s.umask, &s.user, &s.group, s.initgroups),
            (Umask(0), &None, &None, false)
        );
        for (given, mask) in [("022", 0o22), ("0o22", 0o22), ("18", 18), ("0x12", 18)] {
            let loaded = load(["ferrocorn", "app:app", "-m", given], &no_env).expect(given);
            assert_eq!(loaded.settings.umask, Umask(mask), "{given}");
        }
        let err = error(&["ferrocorn", "app:app", "--umask", "-1"], &no_env);
        assert!(err.starts_with("invalid value \"-1\" for umask (from --umask): expected a non-negative whole number"), "{err}");
        let loaded = load(["ferrocorn", "app:app", "-uroot", "-groot"], &no_env).expect("names");
        assert_eq!(loaded.settings.user, Some(Account::Name("root".into())));
    }

    #[test]
    fn every_setting_has_a_sample() {
        let names: Vec<&str> = SAMPLES.iter().map(|(name, _)| *name).collect();
        let table: Vec<&str> = SETTINGS.iter().map(|spec| spec.name).collect();
        assert_eq!(names, table);
        for (name, sample) in SAMPLES {
            assert_ne!(
                table::spec(name).map(|s| s.default),
                Some(&[*sample][..]),
                "{name}"
            );
        }
    }

    #[test]
    fn every_setting_can_be_given_on_the_command_line() {
        for (spec, (_, sample)) in SETTINGS.iter().zip(SAMPLES) {
            let mut spellings: Vec<Vec<String>> = Vec::new();
            if spec.positional.is_some() {
                spellings.push(vec![sample.to_string()]);
            }
            let longs = spec.long.into_iter().chain(spec.aliases.iter().copied());
            for long in longs {
                if spec.is_switch() {
                    // A switch's sample is "true": giving the flag is the whole value.
                    spellings.push(vec![format!("--{long}")]);
                    continue;
                }
                spellings.push(vec![format!("--{long}"), sample.to_string()]);
                spellings.push(vec![format!("--{long}={sample}")]);
            }
            if let Some(short) = spec.short {
                spellings.push(vec![format!("-{short}"), sample.to_string()]);
            }
            for spelling in spellings {
                let args = ["ferrocorn", "--print-config"]
                    .map(String::from)
                    .into_iter()
                    .chain(spelling.clone());
                let loaded = load(args, &no_env).unwrap_or_else(|e| panic!("{spelling:?}: {e}"));
                assert_eq!(rendered(&loaded, spec.name), [*sample], "{spelling:?}");
                assert_eq!(
                    loaded.origins.get(spec.name),
                    Some(&Origin::Cli),
                    "{spelling:?}"
                );
            }
        }
    }

    #[test]
    fn every_setting_can_be_given_in_toml_and_env() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (spec, (_, sample)) in SETTINGS.iter().zip(SAMPLES) {
            let quoted = toml::Value::String(sample.to_string()).to_string();
            let mut tomls = vec![format!("{} = {quoted}", spec.name)];
            match spec.kind {
                table::Kind::List { .. } => tomls.push(format!("{} = [{quoted}]", spec.name)),
                _ if spec.toml == table::TomlKind::Integer => {
                    tomls.push(format!("{} = {sample}", spec.name))
                }
                // A switch takes only a bare TOML boolean, never a quoted one.
                _ if spec.is_switch() => tomls = vec![format!("{} = {sample}", spec.name)],
                _ => {}
            }
            for text in tomls {
                let path = write_toml(dir.path(), &text);
                let args = [
                    "ferrocorn".as_ref(),
                    "--print-config".as_ref(),
                    "-c".as_ref(),
                    path.as_os_str(),
                ];
                let loaded = load(args, &no_env).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(rendered(&loaded, spec.name), [*sample], "{text}");
                assert_eq!(
                    loaded.origins.get(spec.name),
                    Some(&Origin::File(path)),
                    "{text}"
                );
            }
            let var = spec.env_var();
            let loaded =
                load(["ferrocorn", "--print-config"], &env_of(&[(&var, sample)])).expect(&var);
            assert_eq!(rendered(&loaded, spec.name), [*sample], "{var}");
            assert_eq!(loaded.origins.get(spec.name), Some(&Origin::Env(var)));
        }
    }

    #[test]
    fn command_line_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_toml(
            dir.path(),
            "workers = 2\nthreads = 2\ntimeout = 5\nbind = [\"a:1\", \"b:2\"]\n",
        );
        let path_arg = path.to_str().expect("utf-8 temp path");
        let env = env_of(&[("FERROCORN_WORKERS", "3"), ("FERROCORN_THREADS", "3")]);
        let loaded =
            load(["ferrocorn", "-c", path_arg, "-w", "4", "app:app"], &env).expect("valid");
        let s = &loaded.settings;
        assert_eq!(
            (s.workers, s.threads, s.timeout.as_secs(), s.backlog),
            (4, 3, 5, 2048)
        );
        assert_eq!(s.bind.len(), 2);
        let origin = |name| loaded.origins.get(name).cloned();
        assert_eq!(origin("workers"), Some(Origin::Cli));
        assert_eq!(
            origin("threads"),
            Some(Origin::Env("FERROCORN_THREADS".into()))
        );
        assert_eq!(origin("timeout"), Some(Origin::File(path.clone())));
        assert_eq!(origin("backlog"), Some(Origin::Default));
        assert_eq!((loaded.mode, loaded.config_file), (Mode::Serve, Some(path)));
    }

    /// gunicorn's order: defaults (with PORT and WEB_CONCURRENCY) < config
    /// file < GUNICORN_CMD_ARGS < command line; FERROCORN_* sit under
    /// GUNICORN_CMD_ARGS.
    #[test]
    fn gunicorn_environment_layers_in_gunicorns_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_toml(dir.path(), "threads = 2\ntimeout = 5\n");
        let path_arg = path.to_str().expect("utf-8 temp path");
        let env = env_of(&[
            ("PORT", "5000"),
            ("WEB_CONCURRENCY", "3"),
            ("GUNICORN_CMD_ARGS", "--threads 4 --timeout '7' -k gthread"),
            ("FERROCORN_TIMEOUT", "6"),
        ]);
        let loaded = load(
            ["ferrocorn", "-c", path_arg, "--threads", "8", "app:app"],
            &env,
        )
        .expect("valid");
        let s = &loaded.settings;
        assert_eq!((s.workers, s.threads, s.timeout.as_secs()), (3, 8, 7));
        assert_eq!(s.bind[0].to_string(), "0.0.0.0:5000");
        let origin = |name| loaded.origins.get(name).cloned();
        assert_eq!(
            origin("workers"),
            Some(Origin::Env("WEB_CONCURRENCY".into()))
        );
        assert_eq!(origin("bind"), Some(Origin::Env("PORT".into())));
        assert_eq!(origin("timeout"), Some(Origin::CmdArgsEnv));
        assert_eq!(origin("threads"), Some(Origin::Cli));
        // A file beats the platform's defaults.
        let path = write_toml(dir.path(), "workers = 2\nbind = [\"127.0.0.1:1\"]\n");
        let path_arg = path.to_str().expect("utf-8 temp path");
        let loaded = load(["ferrocorn", "-c", path_arg, "app:app"], &env).expect("valid");
        assert_eq!(loaded.settings.workers, 2);
        assert_eq!(loaded.settings.bind[0].to_string(), "127.0.0.1:1");
        // An unclosed quote is named.
        let bad = env_of(&[("GUNICORN_CMD_ARGS", "--name 'x")]);
        let err = load(["ferrocorn", "app:app"], &bad).expect_err("bad quoting");
        assert!(err.to_string().contains("GUNICORN_CMD_ARGS"), "{err}");
        // Its unsupported options are refused like the command line's.
        let bad = env_of(&[("GUNICORN_CMD_ARGS", "--certfile c.pem")]);
        let err = load(["ferrocorn", "app:app"], &bad).expect_err("unsupported");
        assert!(err.to_string().contains("--certfile"), "{err}");
    }

    #[test]
    fn gunicorn_conf_py_is_read_by_default_and_with_c() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("gunicorn.conf.py"),
            "workers = 3\nwsgi_app = 'pkg:app'\ndef post_fork(server, worker):\n    pass\n",
        )
        .unwrap();
        let loaded = load_from(
            vec!["ferrocorn".into()],
            &no_env,
            Some(dir.path().to_path_buf()),
        )
        .expect("valid");
        assert_eq!(loaded.settings.workers, 3);
        assert_eq!(loaded.config_file, Some(PathBuf::from("gunicorn.conf.py")));
        let expected = python_file::PythonConfig::File(dir.path().join("gunicorn.conf.py"));
        assert_eq!(loaded.python_config, Some(expected));
        assert_eq!(
            loaded.origins.get("workers"),
            Some(&Origin::File("gunicorn.conf.py".into()))
        );
        // An explicit -c wins over the default file; the command line over both.
        let other = dir.path().join("other.py");
        std::fs::write(&other, "workers = 5\n").unwrap();
        let args = ["ferrocorn", "-c", "other.py", "-w", "6", "pkg:app"];
        let loaded = load_from(
            args.iter().map(OsString::from).collect(),
            &no_env,
            Some(dir.path().to_path_buf()),
        )
        .expect("valid");
        assert_eq!(loaded.settings.workers, 6);
        assert_eq!(loaded.config_file, Some(PathBuf::from("other.py")));
    }

    #[test]
    fn lists_are_replaced_by_a_higher_layer_and_repeat_within_one() {
        let env = env_of(&[
            ("FERROCORN_BIND", "a:1, unix:/s"),
            ("FERROCORN_PYTHONPATH", "x,y"),
        ]);
        let loaded = load(["ferrocorn", "app:app"], &env).expect("valid");
        let binds: Vec<String> = loaded.settings.bind.iter().map(|b| b.to_string()).collect();
        assert_eq!(binds, ["a:1", "unix:/s"]);
        assert_eq!(
            loaded.settings.pythonpath,
            [PathBuf::from("x"), PathBuf::from("y")]
        );
        let loaded = load(
            [
                "ferrocorn",
                "-b",
                "c:3",
                "--bind",
                "[::1]:4",
                "-e",
                "A=1,2",
                "-e",
                "B=",
                "app:app",
            ],
            &env,
        )
        .expect("valid");
        let binds: Vec<String> = loaded.settings.bind.iter().map(|b| b.to_string()).collect();
        assert_eq!(binds, ["c:3", "[::1]:4"]);
        assert_eq!(loaded.settings.raw_env, ["A=1,2", "B="]);
    }

    #[test]
    fn proxy_settings_take_gunicorns_shapes() {
        let args = ["ferrocorn", "--print-config"];
        // FORWARDED_ALLOW_IPS is gunicorn's default; the flag beats it.
        let env = env_of(&[("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 10.1.2.3")]);
        let loaded = load(args, &env).unwrap();
        assert_eq!(
            rendered(&loaded, "forwarded_allow_ips"),
            ["10.0.0.0/8", "10.1.2.3"]
        );
        assert_eq!(
            loaded.origins.get("forwarded_allow_ips"),
            Some(&Origin::Env("FORWARDED_ALLOW_IPS".into()))
        );
        let flagged = load(
            ["ferrocorn", "--print-config", "--forwarded-allow-ips", "*"],
            &env,
        )
        .unwrap();
        assert_eq!(rendered(&flagged, "forwarded_allow_ips"), ["*"]);
        // `--proxy-protocol` alone is auto, as gunicorn's nargs="?".
        let bare = load(["ferrocorn", "--proxy-protocol", "--print-config"], &no_env).unwrap();
        assert_eq!(bare.settings.proxy_protocol, proxy::ProxyProtocol::Auto);
        // A TOML table, the shape of gunicorn's dict.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_toml(
            dir.path(),
            "secure_scheme_headers = { X-Forwarded-Proto = \"https\", X-Ssl = \"on\" }\n",
        );
        let path = path.to_string_lossy().into_owned();
        let loaded = load(["ferrocorn", "--print-config", "-c", &path], &no_env).unwrap();
        assert_eq!(
            rendered(&loaded, "secure_scheme_headers"),
            ["X-FORWARDED-PROTO=https", "X-SSL=on"]
        );
        let bad = error(
            &[
                "ferrocorn",
                "--print-config",
                "--forwarded-allow-ips",
                "10.0.0.1/8",
            ],
            &no_env,
        );
        assert!(
            bad.contains("forwarded_allow_ips") && bad.contains("host bits"),
            "{bad}"
        );
    }

    #[test]
    fn a_repeated_single_value_flag_keeps_the_last_as_gunicorn_does() {
        let loaded = load(["ferrocorn", "-w", "2", "-w", "5", "app:app"], &no_env).expect("valid");
        assert_eq!(loaded.settings.workers, 5);
    }

    #[test]
    fn bad_values_name_the_setting_the_value_the_source_and_the_fix() {
        let env = env_of(&[("FERROCORN_WORKERS", "abc")]);
        assert_eq!(
            error(&["ferrocorn", "app:app"], &env),
            r#"invalid value "abc" for workers (from FERROCORN_WORKERS): expected a positive whole number"#
        );
        assert_eq!(
            error(&["ferrocorn", "-t", "5 minutes", "app:app"], &no_env),
            r#"invalid value "5 minutes" for timeout (from --timeout): expected a duration such as 30, 1.5, 500ms, 2s, 2m or 1h"#
        );
        assert_eq!(
            error(&["ferrocorn", "--max-memory", "1XB", "app:app"], &no_env),
            r#"invalid value "1XB" for max_memory (from --max-memory): expected a size such as 512, 200MB, 512MiB or 1GiB"#
        );
        assert_eq!(
            error(&["ferrocorn", "-b", "127.0.0.1:http", "app:app"], &no_env),
            r#"invalid value "127.0.0.1:http" for bind (from --bind): expected HOST:PORT, :PORT, [IPV6]:PORT, HOST, unix:PATH or fd://N"#
        );
        assert_eq!(
            error(&["ferrocorn", "my-app:app"], &no_env),
            r#"invalid value "my-app:app" for wsgi_app (from argument APP): expected MODULE:APP such as examples.flask_app:app or app:create_app()"#
        );
        assert_eq!(
            error(&["ferrocorn", "-k", "eventlet", "app:app"], &no_env),
            r#"worker class "eventlet" (from --worker-class) is not supported by ferrocorn yet: the supported classes are sync (also gunicorn.workers.sync.SyncWorker, egg:gunicorn#sync), gthread (gunicorn.workers.gthread.ThreadWorker, egg:gunicorn#gthread) and gevent (gunicorn.workers.ggevent.GeventWorker, egg:gunicorn#gevent)"#
        );
        assert_eq!(
            error(
                &["ferrocorn", "--limit-request-line", "-1", "app:app"],
                &no_env
            ),
            r#"invalid value "-1" for limit_request_line (from --limit-request-line): expected a whole number"#
        );
        assert_eq!(
            error(&["ferrocorn", "--threads", "0", "app:app"], &no_env),
            r#"invalid value "0" for threads (from --threads): expected a positive whole number"#
        );
        assert_eq!(
            error(&["ferrocorn", "-e", "=x", "app:app"], &no_env),
            r#"invalid value "=x" for raw_env (from --env): expected KEY=VALUE with a non-empty KEY"#
        );
        assert_eq!(
            error(
                &["ferrocorn", "--metrics-bind", "localhost", "app:app"],
                &no_env
            ),
            r#"invalid value "localhost" for metrics_bind (from --metrics-bind): expected HOST:PORT or [IPV6]:PORT"#
        );
        for not_metrics in [":9100", "fd://3"] {
            assert_eq!(
                error(&["ferrocorn", "--metrics-bind", not_metrics, "app:app"], &no_env),
                format!("invalid value \"{not_metrics}\" for metrics_bind (from --metrics-bind): expected HOST:PORT or [IPV6]:PORT")
            );
        }
    }

    #[test]
    fn preload_is_a_switch_on_the_command_line_a_boolean_in_toml_and_yes_no_in_env() {
        let loaded = load(["ferrocorn", "app:app"], &no_env).expect("valid");
        assert!(!loaded.settings.preload_app);
        assert_eq!(loaded.origins.get("preload_app"), Some(&Origin::Default));

        let loaded = load(["ferrocorn", "--preload", "app:app"], &no_env).expect("valid");
        assert!(loaded.settings.preload_app);
        assert_eq!(loaded.origins.get("preload_app"), Some(&Origin::Cli));

        let dir = tempfile::tempdir().expect("temp dir");
        for (text, value) in [
            ("preload_app = true\n", true),
            ("preload_app = false\n", false),
        ] {
            let path = write_toml(dir.path(), text);
            let path_arg = path.to_str().expect("utf-8 temp path");
            let loaded = load(["ferrocorn", "-c", path_arg, "app:app"], &no_env).expect(text);
            assert_eq!(loaded.settings.preload_app, value, "{text}");
            assert_eq!(loaded.origins.get("preload_app"), Some(&Origin::File(path)));
        }

        let var = "FERROCORN_PRELOAD_APP";
        for (text, value) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("False", false),
            ("0", false),
            ("NO", false),
        ] {
            let loaded = load(["ferrocorn", "app:app"], &env_of(&[(var, text)])).expect(text);
            assert_eq!(loaded.settings.preload_app, value, "{var}={text}");
            assert_eq!(
                loaded.origins.get("preload_app"),
                Some(&Origin::Env(var.into()))
            );
        }
    }

    #[test]
    fn preload_from_the_command_line_beats_env_beats_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_toml(dir.path(), "preload_app = true\n");
        let path_arg = path.to_str().expect("utf-8 temp path");
        let file_only = load(["ferrocorn", "-c", path_arg, "app:app"], &no_env).expect("valid");
        assert!(file_only.settings.preload_app);

        let env = env_of(&[("FERROCORN_PRELOAD_APP", "no")]);
        let loaded = load(["ferrocorn", "-c", path_arg, "app:app"], &env).expect("valid");
        assert!(!loaded.settings.preload_app, "env beats the file");
        assert_eq!(
            loaded.origins.get("preload_app"),
            Some(&Origin::Env("FERROCORN_PRELOAD_APP".into()))
        );

        let args = ["ferrocorn", "-c", path_arg, "--preload", "app:app"];
        let loaded = load(args, &env).expect("valid");
        assert!(loaded.settings.preload_app, "the flag beats env");
        assert_eq!(loaded.origins.get("preload_app"), Some(&Origin::Cli));

        let printed = render_effective(
            &load(["ferrocorn", "--print-config", "--preload"], &no_env).expect("valid"),
        );
        let line = printed
            .lines()
            .find(|l| l.starts_with("preload_app "))
            .expect("print-config lists preload_app");
        assert!(
            line.contains("= true ") && line.ends_with("# --preload"),
            "{line}"
        );
    }

    #[test]
    fn bad_preload_values_name_the_source_and_the_accepted_values() {
        let env = env_of(&[("FERROCORN_PRELOAD_APP", "maybe")]);
        assert_eq!(
            error(&["ferrocorn", "app:app"], &env),
            r#"invalid value "maybe" for preload_app (from FERROCORN_PRELOAD_APP): expected true, false, 1, 0, yes or no"#
        );
        let env = env_of(&[("FERROCORN_PRELOAD_APP", "")]);
        assert_eq!(
            error(&["ferrocorn", "app:app"], &env),
            r#"invalid value "" for preload_app (from FERROCORN_PRELOAD_APP): expected true, false, 1, 0, yes or no"#
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferrocorn.toml");
        let path_arg = path.to_str().expect("utf-8 temp path");
        for (value, shown) in [
            (r#""maybe""#, r#""maybe""#),
            (r#""true""#, r#""true""#),
            ("3", "3"),
            ("1", "1"),
            ("[true]", "[true]"),
            ("{ on = true }", "{ on = true }"),
        ] {
            write_toml(dir.path(), &format!("preload_app = {value}\n"));
            assert_eq!(
                error(&["ferrocorn", "-c", path_arg, "app:app"], &no_env),
                format!(
                    "invalid value for preload_app in {path_arg}: expected true or false (a TOML boolean, without quotes), not {shown}"
                ),
                "{value}"
            );
        }
        let err = load(["ferrocorn", "--preload=true", "app:app"], &no_env).expect_err("no value");
        assert!(matches!(err, ConfigError::Clap(_)), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn cross_field_and_missing_app_errors() {
        let env = env_of(&[("FERROCORN_MAX_MEMORY", "1GiB")]);
        assert_eq!(
            error(&["ferrocorn", "--max-memory-hard", "512MiB", "app:app"], &env),
            "max_memory_hard (512MiB from --max-memory-hard) must be larger than max_memory (1GiB from FERROCORN_MAX_MEMORY): raise max_memory_hard or lower max_memory"
        );
        let message = "no app given: pass MODULE:APP, e.g. ferrocorn examples.flask_app:app";
        assert_eq!(error(&["ferrocorn"], &no_env), message);
        assert_eq!(error(&["ferrocorn", "--check-config"], &no_env), message);
        let loaded =
            load(["ferrocorn", "--print-config"], &no_env).expect("print-config needs no app");
        assert_eq!(
            (loaded.mode, loaded.settings.wsgi_app),
            (Mode::PrintConfig, None)
        );
        let loaded = load(["ferrocorn", "--check-config", "app:app"], &no_env).expect("valid");
        assert_eq!(loaded.mode, Mode::CheckConfig);
    }

    #[test]
    fn toml_file_errors_name_the_file_the_key_and_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_toml(dir.path(), "workers = 2\nwrokers = 4\n");
        let shown = path.display();
        let args = |p: &Path| {
            vec![
                "ferrocorn".into(),
                "-c".into(),
                p.as_os_str().to_owned(),
                "app:app".into(),
            ]
        };
        let err = |p: &Path| load(args(p), &no_env).expect_err("should fail").to_string();
        assert_eq!(
            err(&path),
            format!(r#"unknown setting "wrokers" in {shown}: did you mean "workers"?"#)
        );
        write_toml(dir.path(), "max-requests = 4\n");
        assert_eq!(
            err(&path),
            format!(r#"unknown setting "max-requests" in {shown}: did you mean "max_requests"?"#)
        );
        write_toml(dir.path(), "syslog = true\n");
        assert_eq!(
            err(&path),
            format!(
                r#"unknown setting "syslog" in {shown}: run ferrocorn --print-config to list the settings"#
            )
        );
        write_toml(dir.path(), "workers = 2\nthreads = \n");
        assert_eq!(
            err(&path),
            format!("invalid TOML in {shown} at line 2: invalid string; expected `\"`, `'`")
        );
        write_toml(dir.path(), "workers = [1, 2]\n");
        assert_eq!(
            err(&path),
            format!("invalid value for workers in {shown}: expected a single value, not a list")
        );
        write_toml(dir.path(), "timeout = \"soon\"\n");
        assert_eq!(
            err(&path),
            format!(
                r#"invalid value "soon" for timeout (from {shown}): expected a duration such as 30, 1.5, 500ms, 2s, 2m or 1h"#
            )
        );
        let missing = dir.path().join("missing.toml");
        assert_eq!(
            err(&missing),
            format!(
                "cannot read config file {} (from -c/--config): file not found: check the path",
                missing.display()
            )
        );
    }

    #[test]
    fn help_and_version_are_clap_errors_with_exit_code_zero() {
        for (program, flag) in [
            ("ferrocorn", "-v"),
            ("/usr/local/bin/fc-renamed", "--version"),
        ] {
            let err = load([program, flag], &no_env).expect_err("version exits");
            assert_eq!(err.exit_code(), 0);
            assert_eq!(
                err.to_string(),
                format!("ferrocorn {}\n", env!("CARGO_PKG_VERSION"))
            );
        }
        let err = load(["ferrocorn", "--help"], &no_env).expect_err("help exits");
        assert_eq!(err.exit_code(), 0);
        assert!(err.to_string().contains("--limit-request-field_size"));
        let err = load(["ferrocorn", "--no-such-flag"], &no_env).expect_err("unknown flag");
        assert!(matches!(err, ConfigError::Clap(_)));
        assert_eq!(err.exit_code(), 2);
        assert_eq!(ConfigError::NoApp.exit_code(), 2);
    }

    #[test]
    fn reload_rereads_the_same_file_env_and_arguments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_toml(dir.path(), "workers = 2\n");
        let args = [
            "ferrocorn".as_ref(),
            "-c".as_ref(),
            path.as_os_str(),
            "-t".as_ref(),
            "9".as_ref(),
            "app:app".as_ref(),
        ];
        let first = load(args, &no_env).expect("valid");
        write_toml(dir.path(), "workers = 6\n");
        let second = reload(&first, &env_of(&[("FERROCORN_THREADS", "2")])).expect("still valid");
        let s = &second.settings;
        assert_eq!((s.workers, s.threads, s.timeout.as_secs()), (6, 2, 9));
        assert_eq!(second.args, first.args);
        write_toml(dir.path(), "workers = 0\n");
        assert!(reload(&first, &no_env).is_err());
    }

    #[test]
    fn no_sendfile_turns_sendfile_off_and_sendfile_is_on_by_default() {
        let on = load(["ferrocorn", "app:app"], &no_env).expect("valid");
        assert!(on.settings.sendfile);
        let off = load(["ferrocorn", "--no-sendfile", "app:app"], &no_env).expect("valid");
        assert!(!off.settings.sendfile);
        assert_eq!(rendered(&off, "sendfile"), ["false"]);
    }

    #[test]
    fn reload_with_preload_is_refused_naming_both_and_the_fix() {
        let err =
            load(["ferrocorn", "--reload", "--preload", "app:app"], &no_env).expect_err("conflict");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "reload (from --reload) cannot be combined with preload_app (from --preload): \
             preloaded code is imported once, before the workers fork, so a restarted worker \
             would run the old code (gunicorn: the reloader is incompatible with application \
             preloading); drop --preload while developing"
        );
        let ok = load(["ferrocorn", "--reload", "app:app"], &no_env).expect("valid");
        assert!(ok.settings.reload);
    }

    #[test]
    fn reload_engine_takes_auto_and_poll_and_refuses_inotify_saying_why() {
        for engine in ["auto", "poll"] {
            let args = ["ferrocorn", "--reload-engine", engine, "app:app"];
            let loaded = load(args, &no_env).expect("valid");
            assert_eq!(loaded.settings.reload_engine.to_string(), engine);
        }
        let err = load(
            ["ferrocorn", "--reload-engine", "inotify", "app:app"],
            &no_env,
        )
        .expect_err("inotify");
        let text = err.to_string();
        assert!(text.starts_with("invalid value \"inotify\" for reload_engine (from --reload-engine): expected auto or poll"), "{text}");
        assert!(text.contains("inotify package"), "{text}");
    }

    #[test]
    fn worker_tmp_dir_and_tmp_upload_dir_must_be_existing_directories() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = write_toml(dir.path(), "");
        let existing = dir.path().to_str().expect("utf-8 temp dir");
        for flag in ["--worker-tmp-dir", "--tmp-upload-dir"] {
            load(["ferrocorn", flag, existing, "app:app"], &no_env).expect("a directory");
            let missing = dir.path().join("missing");
            for bad in [
                missing.to_str().expect("utf-8"),
                file.to_str().expect("utf-8"),
            ] {
                let err = load(["ferrocorn", flag, bad, "app:app"], &no_env).expect_err(bad);
                assert!(
                    err.to_string().ends_with("expected an existing directory"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn reload_extra_files_repeat_and_keep_commas() {
        let args = [
            "ferrocorn",
            "--reload-extra-file",
            "a,b.txt",
            "--reload-extra-file",
            "t/*.html",
            "app:app",
        ];
        let loaded = load(args, &no_env).expect("valid");
        assert_eq!(loaded.settings.reload_extra_files, ["a,b.txt", "t/*.html"]);
    }
}
