//! Settings -> the parts the master runs with (spawn spec, memory probing,
//! arbiter parameters), derived once at start and again on SIGHUP, when
//! the command line, `-c` file and environment are read anew.
//!
//! Settings the running master owns (the settings table marks them
//! `restart`: listeners, HTTP limits and timeouts, logging, the metrics
//! address, the dispatcher's and sampler's timings) cannot change on a
//! reload: one that changes them says so in the log, and they take effect
//! at the next start.

use std::time::Duration;

use tracing::warn;

use super::arbiter::ArbiterConfig;
use super::policy::memory::{MemoryLimits, DEFAULT_CONSECUTIVE};
use super::shell::MemoryProbing;
use crate::config::types::Scalar;
use crate::config::validate::absolute_if_relative_path;
use crate::config::{self, Loaded, MemoryMetric, Settings};
use crate::worker::spawn::{SpawnSpec, WorkerSched};

/// What the master derives from settings.
#[derive(Debug, Clone)]
pub struct Derived {
    /// How to start workers.
    pub spawn: SpawnSpec,
    /// How to measure their memory.
    pub memory: MemoryProbing,
    /// The arbiter's parameters.
    pub arbiter: ArbiterConfig,
}

impl Derived {
    /// Derives every part from the loaded configuration.
    pub fn from_loaded(loaded: &config::Loaded) -> Derived {
        let settings = &loaded.settings;
        let mut spawn = spawn_spec(settings);
        if let Some(python_config) = &loaded.python_config {
            // The fork server and the workers run it again for its hooks.
            spawn
                .env
                .push((HOOKS_ENV.to_string(), python_config.spec()));
        }
        Derived {
            spawn,
            memory: memory_probing(settings),
            arbiter: arbiter_config(settings),
        }
    }
}

/// Holds the loaded config so HUP can read it again.
#[derive(Debug)]
pub struct Reloader {
    loaded: Loaded,
}

impl Reloader {
    /// Starts from the config the master was started with.
    pub fn new(loaded: Loaded) -> Reloader {
        Reloader { loaded }
    }

    /// Reads the config again; on error the running one stays.
    pub fn reload(&mut self) -> Result<Derived, config::ConfigError> {
        let fresh = config::reload(&self.loaded, &config::process_env)?;
        let (old, new) = (self.loaded.settings.to_raw(), fresh.settings.to_raw());
        for ((name, before), (_, after)) in old.iter().zip(&new) {
            let needs_restart = config::table::spec(name).is_some_and(|spec| spec.needs_restart);
            if before != after && needs_restart {
                warn!(
                    setting = name,
                    "{name} changed, but it applies only from the next start"
                );
            }
        }
        let (before, after) = (proc_name(&self.loaded.settings), proc_name(&fresh.settings));
        if before != after {
            // As gunicorn's reload: the master's title follows; the new
            // fork server and workers get the new name from the spawn spec.
            let _ = crate::process::title::set(&crate::process::title::title("master", &after));
        }
        let derived = Derived::from_loaded(&fresh);
        self.loaded = fresh;
        Ok(derived)
    }
}

/// Where the fork server and the workers find a Python config's server
/// hooks: its absolute path or `python:module` (see docs/hooks.md).
pub const HOOKS_ENV: &str = "FERROCORN_HOOKS_FROM";

fn arbiter_config(settings: &Settings) -> ArbiterConfig {
    ArbiterConfig {
        workers: settings.workers,
        graceful_timeout: settings.graceful_timeout,
        max_requests: settings.max_requests,
        max_requests_jitter: settings.max_requests_jitter,
        max_concurrent_retirements: settings.max_concurrent_retirements,
        spare_workers: settings.spare_workers,
        lanes: settings.lanes_per_worker(),
        memory: MemoryLimits {
            soft: settings.max_memory.map(|b| b.bytes()),
            hard: settings.max_memory_hard.map(|b| b.bytes()),
            total: settings.max_memory_total.map(|b| b.bytes()),
            consecutive: DEFAULT_CONSECUTIVE,
        },
    }
}

fn memory_probing(settings: &Settings) -> MemoryProbing {
    let limits = [settings.max_memory, settings.max_memory_hard];
    let lowest = limits.iter().flatten().map(|b| b.bytes()).min();
    MemoryProbing {
        metric: settings.memory_metric,
        rss_threshold: lowest.filter(|_| settings.memory_metric == MemoryMetric::Rss),
    }
}

fn spawn_spec(settings: &Settings) -> SpawnSpec {
    SpawnSpec {
        python: absolute_if_relative_path(settings.python_interpreter_here()),
        app: settings
            .wsgi_app
            .as_ref()
            .map(|app| app.to_string())
            .unwrap_or_default(),
        chdir: settings.chdir.clone(),
        pythonpath: settings.pythonpath.clone(),
        env: settings
            .raw_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        lanes: settings.lanes_per_worker(),
        worker_class: settings.effective_worker_class(),
        worker_connections: settings.worker_connections,
        workers: settings.workers,
        log_level: settings.log_level.to_string(),
        preload: settings.preload_app,
        hook_settings: hook_settings(settings),
        proc_name: proc_name(settings),
        reload: settings.reload.then(|| {
            settings
                .reload_extra_files
                .iter()
                .map(|file| match std::env::current_dir() {
                    Ok(cwd) if !file.starts_with('/') => {
                        cwd.join(file).to_string_lossy().into_owned()
                    }
                    _ => file.clone(),
                })
                .collect()
        }),
        spew: settings.spew,
        // gunicorn captures only into an error log file, never stderr itself.
        capture_output: settings.capture_output && settings.error_logfile != "-",
        user: settings.user.as_ref().map(Scalar::render),
        group: settings.group.as_ref().map(Scalar::render),
        initgroups: settings.initgroups,
        // A bad value stopped the start (`master::run`).
        sched: WorkerSched::from_env().unwrap_or_default(),
    }
}

/// The settings the server hooks see as `cfg.<name>`, in gunicorn's names
/// and units (seconds as numbers; `max_requests` 0 when off).
fn hook_settings(settings: &Settings) -> String {
    let (uid, gid) = settings.owner();
    serde_json::json!({
        "bind": settings.bind.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        "backlog": settings.backlog,
        "worker_class": settings.effective_worker_class().to_string(),
        "timeout": settings.timeout.as_secs_f64(),
        "graceful_timeout": settings.graceful_timeout.as_secs_f64(),
        "keepalive": settings.keep_alive.as_secs_f64(),
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests_jitter,
        "limit_request_line": settings.limit_request_line,
        "umask": settings.umask.0,
        "initgroups": settings.initgroups,
        // gunicorn's defaults: the master's effective ids.
        "uid": uid.map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.as_raw()),
        "gid": gid.map_or_else(|| nix::unistd::getegid().as_raw(), |g| g.as_raw()),
    })
    .to_string()
}

/// gunicorn's `proc_name`: the setting, else `default_proc_name`, the app spec.
pub fn proc_name(settings: &Settings) -> String {
    settings.proc_name.clone().unwrap_or_else(|| {
        settings
            .wsgi_app
            .as_ref()
            .map(|app| app.to_string())
            .unwrap_or_default()
    })
}

/// Importing a big app can take a while: boot gets the request timeout, but
/// at least 30 s even when `--timeout 0` turns request timeouts off.
pub fn boot_timeout(settings: &Settings) -> Duration {
    settings.timeout.max(Duration::from_secs(30))
}
