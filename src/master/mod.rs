//! The master: binds nothing itself (main does, before any worker exists),
//! wires settings into the parts, and runs the loop every event goes
//! through: make an [`Event`], give it to the [`Arbiter`], apply its
//! [`Action`]s with the [`shell::Shell`].

pub mod action;
pub mod arbiter;
pub mod event;
pub mod policy;
pub mod shell;
pub mod signals;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::info;

use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::exit::ExitCode;
use crate::http::exchange::ExchangeCtx;
use crate::http::listener::Listener;
use crate::http::server::{self, ConnOptions};
use crate::http::service::{Limits, ServiceCtx};
use crate::logging::Logging;
use crate::worker::spawn::SpawnSpec;
use action::Action;
use arbiter::{Arbiter, ArbiterConfig};
use event::Event;

/// How often the arbiter hears the clock (deadlines, back-offs).
const TICK: Duration = Duration::from_millis(100);

/// How the master ended.
#[derive(Debug)]
pub struct Outcome {
    /// The process exit code.
    pub code: ExitCode,
    /// A fatal message for the user, if any.
    pub message: Option<String>,
}

/// Runs the server until it stops.
pub async fn run(
    settings: &Settings,
    listeners: Vec<Listener>,
    logging: Logging,
) -> std::io::Result<Outcome> {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (drained_tx, mut drained) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(
        settings.backlog as usize,
        settings.queue_timeout,
        drained_tx,
    );
    for listener in &listeners {
        info!(address = %listener.url(), "listening");
    }
    let ctx = Arc::new(ServiceCtx {
        exchange: ExchangeCtx {
            dispatcher: dispatcher.clone(),
            events: events_tx.clone(),
            timeout: settings.timeout,
            limit_request_body: settings.limit_request_body.bytes(),
        },
        limits: Limits {
            request_line: settings.limit_request_line,
            field_size: settings.limit_request_field_size,
            body: settings.limit_request_body.bytes(),
            buffer: settings.request_buffer_size.bytes(),
        },
        access: logging.access(),
    });
    let closed_tx = events_tx.clone();
    let http = server::start(
        listeners,
        ctx,
        ConnOptions {
            keep_alive: settings.keep_alive,
            header_timeout: settings.header_timeout,
            max_headers: settings.limit_request_fields,
        },
        move || {
            let _ = closed_tx.send(Event::ConnectionsClosed);
        },
    );
    let mut signals = signals::listen()?;
    let mut shell = shell::Shell::new(
        spawn_spec(settings),
        boot_timeout(settings),
        dispatcher,
        http,
        logging,
        events_tx,
    );
    let mut arbiter = Arbiter::new(ArbiterConfig {
        workers: settings.workers,
        graceful_timeout: settings.graceful_timeout,
    });
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut event = Event::Start;
    loop {
        for action in arbiter.on_event(event, Instant::now()) {
            if let Action::Exit { code, message } = action {
                return Ok(Outcome { code, message });
            }
            shell.apply(&action);
        }
        event = tokio::select! {
            Some(sig) = signals.recv() => Event::Signal(sig),
            Some(worker) = drained.recv() => Event::Drained { worker },
            Some(ev) = events.recv() => ev,
            _ = tick.tick() => Event::Tick,
        };
    }
}

fn spawn_spec(settings: &Settings) -> SpawnSpec {
    SpawnSpec {
        python: absolute_if_relative_path(
            settings.python_interpreter(&|key| std::env::var(key).ok()),
        ),
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
        lanes: settings.threads,
        workers: settings.workers,
        log_level: settings.log_level.to_string(),
    }
}

/// `.venv/bin/python` means the master's directory, not `--chdir`'s, where
/// the worker starts; a bare `python3` is still looked up on PATH.
fn absolute_if_relative_path(python: std::path::PathBuf) -> std::path::PathBuf {
    if python.is_relative() && python.components().count() > 1 {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(python);
        }
    }
    python
}

/// Importing a big app can take a while: boot gets the request timeout, but
/// at least 30 s even when `--timeout 0` turns request timeouts off.
fn boot_timeout(settings: &Settings) -> Duration {
    settings.timeout.max(Duration::from_secs(30))
}
