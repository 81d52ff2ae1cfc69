//! The `ferrocorn` command: parse the settings, bind, run the master, and
//! map how it ended to an exit code. Nothing else lives here.

use std::process::ExitCode;

use ferrocorn::config::{self, Loaded, Mode, Settings};
use ferrocorn::exit::ExitCode as Exit;
use ferrocorn::http::listener;
use ferrocorn::logging::{self, LogConfig, LogLevel};
use ferrocorn::master;
use ferrocorn::master::reexec::{Inheritance, Origin, StartContext};
use ferrocorn::metrics;
use ferrocorn::process;
use ferrocorn::process::pidfile::PidFile;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "sweep") {
        return ferrocorn::sweep::cli::main(args[1..].to_vec());
    }
    let loaded = match config::load(std::env::args_os(), &config::process_env) {
        Ok(loaded) => loaded,
        Err(config::ConfigError::Clap(err)) => {
            let _ = err.print();
            return ExitCode::from(err.exit_code() as u8);
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    match loaded.mode {
        Mode::PrintConfig => {
            print!("{}", config::render_effective(&loaded));
            return ExitCode::SUCCESS;
        }
        Mode::CheckConfig => return check(&loaded),
        Mode::Serve => {}
    }
    match serve(loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            code.into()
        }
    }
}

/// Runs the server; an error's message is empty when the error log on
/// stderr already ends with it (`Reason: ...`).
fn serve(loaded: Loaded) -> Result<(), (Exit, String)> {
    // What a USR2 re-exec repeats, before the environment changes.
    let start = StartContext::capture();
    // First, while the process has one thread: the workers must not see them.
    let systemd =
        ferrocorn::systemd::Environment::take().map_err(|e| (Exit::Usage, e.to_string()))?;
    // A USR2 parent's listeners (GUNICORN_FD), served beside systemd's.
    let inheritance = Inheritance::take().map_err(|e| (Exit::Usage, e))?;
    let inherited_fds: Vec<i32> = systemd
        .listen_fds
        .iter()
        .chain(&inheritance.fds)
        .copied()
        .collect();
    let settings = &loaded.settings.clone();
    let python = config::validate::absolute_if_relative_path(settings.python_interpreter_here());
    ferrocorn::worker::spawn::check_python(
        &python,
        settings.worker_class,
        settings.chdir.as_deref(),
        &settings.pythonpath,
    )
    .map_err(|e| (Exit::Usage, e))?;
    // A USR2 child master stays its parent's child, as gunicorn's daemonize
    // skips with GUNICORN_FD: the parent is detached already.
    if settings.daemon && inheritance.parent.is_none() {
        // Before the runtime, the log writers and any child: one thread only.
        process::daemon::daemonize(settings.enable_stdio_inheritance)
            .map_err(|e| (Exit::Runtime, format!("cannot daemonize: {e}")))?;
    }
    // Best effort, as gunicorn's setproctitle: a title that cannot be set
    // changes nothing else. Still one thread: claim_area may move the environment.
    let _ = process::title::claim_area();
    let _ = process::title::set(&process::title::title(
        "master",
        &master::reload::proc_name(settings),
    ));
    let logging = logging::init(&log_config(settings)).map_err(|e| (Exit::Usage, e.to_string()))?;
    tracing::info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    process::owner::give_log_files(settings);
    let threads = settings.effective_master_threads();
    let runtime = master_runtime(threads).map_err(|e| {
        (
            Exit::Runtime,
            format!("cannot start the async runtime ({threads} threads): {e}"),
        )
    })?;
    // gunicorn's: a USR2 child master writes FILE.2 until promoted.
    let pidfile = match &settings.pidfile {
        Some(path) if inheritance.parent.is_some() => Some(
            PidFile::create(&ferrocorn::process::pidfile::upgrade_path(path))
                .map_err(|e| (Exit::Usage, e))?,
        ),
        Some(path) => Some(PidFile::create(path).map_err(|e| (Exit::Usage, e))?),
        None => None,
    };
    let metrics_fd = inheritance.metrics_fd;
    let origin = Origin {
        start,
        inheritance,
        pidfile,
        pidfile_name: settings.pidfile.clone(),
    };
    let outcome = runtime.block_on(async {
        // Bind before any worker exists: the port stays open across worker restarts.
        let listeners = listener::open_all(
            &settings.bind,
            settings.backlog,
            settings.reuse_port,
            &inherited_fds,
        )
        .map_err(|e| (Exit::Runtime, e.to_string()))?;
        listener::set_unix_access(&listeners, settings.umask.0, settings.owner())
            .map_err(|e| (Exit::Runtime, e.to_string()))?;
        let inherited_metrics = match metrics_fd {
            Some(fd) => Some(
                master::reexec::adopt_metrics(fd).map_err(|e| (Exit::Runtime, e.to_string()))?,
            ),
            None => None,
        };
        let metrics = match (&settings.metrics_bind, inherited_metrics) {
            // A USR2 parent's metrics socket: the old master holds the address.
            (Some(_), Some(listener)) => Some(listener),
            (Some(address), None) => Some(
                metrics::endpoint::bind(address)
                    .await
                    .map_err(|e| (Exit::Runtime, e.to_string()))?,
            ),
            (None, _) => None,
        };
        let notifier = ferrocorn::systemd::Notifier::from_env(&systemd);
        master::run(loaded, listeners, metrics, logging, notifier, origin)
            .await
            .map_err(|e| (Exit::Runtime, e.to_string()))
    })?;
    // Workers die with the master (parent-death signal); don't wait for
    // tasks stuck on their sockets.
    runtime.shutdown_background();
    match (outcome.code, outcome.message) {
        (Exit::Clean, _) => Ok(()),
        // The master logged `Reason: ...`; repeat it on stderr only when
        // the error log is elsewhere.
        (code, _) if settings.error_logfile == "-" => Err((code, String::new())),
        (code, message) => Err((code, message.unwrap_or_else(|| "server stopped".into()))),
    }
}

/// The master's runtime: a single-threaded one for one thread (no
/// cross-thread wake-ups at all), else tokio's work-stealing one
/// (docs/design/hop.md, "The master on more cores").
fn master_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ferrocorn")
        .enable_all()
        .build()
}

/// `--check-config`, as gunicorn's: everything a start would refuse,
/// including an app that cannot be imported (in the configured interpreter).
fn check(loaded: &config::Loaded) -> ExitCode {
    let settings = &loaded.settings;
    let fail = |code: Exit, message: String| {
        eprintln!("error: {message}");
        code.into()
    };
    let spawn = master::reload::Derived::from_loaded(loaded).spawn;
    if let Err(message) = ferrocorn::worker::spawn::check_python(
        &spawn.python,
        settings.worker_class,
        settings.chdir.as_deref(),
        &settings.pythonpath,
    ) {
        return fail(Exit::Usage, message);
    }
    if let Err(err) = logging::check_access_format(&settings.access_log_format) {
        return fail(Exit::Usage, err.to_string());
    }
    if let Err(message) = ferrocorn::worker::spawn::check_tuning_env() {
        return fail(Exit::Usage, message);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(
                Exit::Runtime,
                format!("cannot start the async runtime: {e}"),
            )
        }
    };
    let timeout = master::reload::boot_timeout(settings);
    let checked = runtime.block_on(ferrocorn::forkserver::check_app(&spawn, timeout));
    runtime.shutdown_background();
    match checked {
        Ok(()) => {
            println!("configuration is valid; app {} imported", spawn.app);
            ExitCode::SUCCESS
        }
        Err(ferrocorn::forkserver::process::StartError::AppLoad(text)) => {
            let summary = text.lines().next().unwrap_or_default().to_string();
            fail(Exit::AppLoad, summary)
        }
        Err(err) => fail(Exit::WorkerBoot, err.to_string()),
    }
}

fn log_config(settings: &Settings) -> LogConfig {
    LogConfig {
        level: match settings.log_level {
            config::LogLevel::Debug => LogLevel::Debug,
            config::LogLevel::Info => LogLevel::Info,
            config::LogLevel::Warning => LogLevel::Warning,
            config::LogLevel::Error => LogLevel::Error,
            config::LogLevel::Critical => LogLevel::Critical,
        },
        error_logfile: settings.error_logfile.clone(),
        access_logfile: settings.access_logfile.clone(),
        access_log_format: settings.access_log_format.clone(),
    }
}
