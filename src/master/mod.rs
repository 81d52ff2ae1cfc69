//! The master: binds nothing itself (main does, before any worker exists),
//! wires settings into the parts, and runs the loop every event goes
//! through: make an [`Event`], give it to the [`Arbiter`], apply its
//! [`Action`]s with the [`shell::Shell`]; after each event, tell systemd
//! what changed (`crate::systemd`: READY, RELOADING, STOPPING, STATUS).
//! USR2 starts a new master on the same listeners (`reexec.rs`).

pub mod action;
pub mod arbiter;
pub mod event;
pub mod hook_news;
mod launch;
pub mod policy;
pub mod reexec;
pub mod reload;
pub mod shell;
pub mod signals;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Loaded, Settings};
use crate::dispatch::{self, Dispatcher};
use crate::exit::ExitCode;
use crate::http::exchange::{ExchangeCtx, WorkerFault};
use crate::http::listener::Listener;
use crate::http::peer::PeerRules;
use crate::http::server::{self, ConnOptions};
use crate::http::service::{BodyBound, Limits, ServiceCtx};
use crate::logging::Logging;
use crate::metrics::{self, Metrics, Readiness};
use crate::worker::spawn::{Transport, WorkerSched};
use action::Action;
use arbiter::Arbiter;
use event::Event;
use reload::{Derived, Reloader};

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
    loaded: Loaded,
    listeners: Vec<Listener>,
    metrics_listener: Option<tokio::net::TcpListener>,
    logging: Logging,
    mut notifier: crate::systemd::Notifier,
    origin: reexec::Origin,
) -> std::io::Result<Outcome> {
    let settings = loaded.settings.clone();
    let metrics_fd = metrics_listener
        .as_ref()
        .map(std::os::fd::AsRawFd::as_raw_fd);
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (news_tx, mut news) = mpsc::unbounded_channel();
    let metrics = metrics_listener.map(|listener| {
        let metrics = Metrics::new();
        if let Ok(address) = listener.local_addr() {
            info!("Serving metrics at: http://{address} (/metrics, /healthz, /readyz)");
        }
        let endpoint = metrics::endpoint::serve(listener, metrics.clone(), std::future::pending());
        tokio::spawn(async move {
            if let Err(err) = endpoint.await {
                tracing::error!(error = %err, "the metrics endpoint stopped; serving goes on without it");
            }
        });
        metrics
    });
    let queue_wait = metrics
        .clone()
        .map(|m| Box::new(move |wait| m.observe_queue_wait(wait)) as dispatch::QueueWaitObserver);
    let dispatcher = Dispatcher::new(
        settings.backlog as usize,
        settings.queue_timeout,
        dispatch::Pipelining {
            below: settings.pipeline_below,
            depth: settings.pipeline_depth,
        },
        news_tx,
        queue_wait,
    );
    let transport = Transport::from_env().map_err(std::io::Error::other)?;
    WorkerSched::from_env().map_err(std::io::Error::other)?;
    if let Some(metrics) = &metrics {
        let stats = dispatcher.clone();
        let hub = transport.hub().cloned();
        metrics.set_load_source(Box::new(move || {
            let s = stats.stats();
            metrics::Load {
                in_flight: s.busy_lanes,
                queued: s.queued,
                waited_in_lane_total: s.pipelined_total,
                redispatched_total: s.redispatched_total,
                lost_wakeups_total: hub.as_ref().map_or((0, 0), |hub| hub.lost_wakeups()),
            }
        }));
    }
    let statsd = start_statsd(&settings, &listeners);
    // gunicorn's two lines, which people alert and wait on.
    let urls: Vec<String> = listeners.iter().map(Listener::url).collect();
    info!("Listening at: {} ({})", urls.join(","), std::process::id());
    info!("Using worker: {}", settings.effective_worker_class());
    info!("Master threads: {}", settings.effective_master_threads());
    let worker_cpus = worker_cpus(&settings);
    raise_file_limit(&settings);
    let ctx = Arc::new(ServiceCtx {
        exchange: ExchangeCtx {
            dispatcher: dispatcher.clone(),
            faults: worker_faults(events_tx.clone()),
            timeout: settings.timeout,
            limit_request_body: settings.limit_request_body.bytes(),
            body_timeout: settings.body_timeout,
        },
        limits: Limits {
            request_line: settings.effective_limit_request_line(),
            field_size: settings.effective_limit_request_field_size(),
            body: settings.limit_request_body.bytes(),
            buffer: settings.request_buffer_size.bytes(),
            any_method: settings.permit_unconventional_http_method,
        },
        access: logging.access(),
        metrics: metrics.clone(),
        statsd: statsd.as_ref().map(|s| s.recorder.clone()),
        bodies: BodyBound::new(settings.max_buffered_bodies.bytes()),
    });
    let listener_fds: Vec<std::os::fd::RawFd> = listeners.iter().map(Listener::raw_fd).collect();
    let closed_tx = events_tx.clone();
    let quiesced_tx = events_tx.clone();
    let http = server::start(
        listeners,
        ctx,
        ConnOptions {
            keep_alive: settings.keep_alive,
            header_timeout: settings.header_timeout,
            max_headers: settings.effective_limit_request_fields(),
            max_connections: settings.worker_connections.saturating_mul(settings.workers),
        },
        Arc::new(PeerRules::from_settings(
            &settings,
            std::env::var("SCRIPT_NAME").ok().as_deref(),
        )),
        move || {
            let _ = closed_tx.send(Event::ConnectionsClosed);
        },
        move || {
            let _ = quiesced_tx.send(Event::Quiesced);
        },
    );
    let mut signals = signals::listen().map_err(|e| named(e, "cannot listen for signals"))?;
    // Workers forked by the fork server are orphaned on purpose and must
    // become the master's children; the reaper collects every child.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
        named(
            e.into(),
            "cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER)",
        )
    })?;
    let reaper = crate::worker::reap::Reaper::start()
        .map_err(|e| named(e, "cannot start the child reaper"))?;
    let derived = Derived::from_loaded(&loaded);
    let mut shell = shell::Shell::new(
        shell::ShellParts {
            spawn: derived.spawn,
            reaper,
            boot_timeout: reload::boot_timeout(&settings),
            memory: derived.memory,
            reloader: Reloader::new(loaded),
            metrics: metrics.clone(),
            upgrader: reexec::Upgrader {
                start: origin.start,
                fds: listener_fds,
                metrics_fd,
                pidfile: origin.pidfile,
                pidfile_name: origin.pidfile_name,
            },
            transport,
            worker_cpus,
        },
        dispatcher,
        http,
        logging,
        events_tx,
    );
    let mut arbiter = Arbiter::new(derived.arbiter);
    let parent = origin.inheritance.parent;
    arbiter.set_origin(parent, settings.daemon);
    if let Some(parent) = parent {
        reexec::watch_parent(parent, shell.events.clone());
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(settings.memory_check_interval.max(TICK));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The watchdog pings come from this loop, so a stuck loop misses them.
    let mut watchdog = notifier.watchdog_period().map(tokio::time::interval);

    let mut event = Event::Start;
    let mut connections_closed = false;
    loop {
        connections_closed |= matches!(event, Event::ConnectionsClosed);
        for action in arbiter.on_event(event, Instant::now()) {
            if let Action::Exit { code, message } = action {
                notifier.update(systemd_view(&arbiter));
                if !connections_closed {
                    answer_the_waiting(&shell.dispatcher, &mut events).await;
                }
                shell.run_exit_hook(ON_EXIT_WAIT).await;
                log_shutdown(code, message.as_deref());
                return Ok(Outcome { code, message });
            }
            shell.apply(&action);
        }
        shell.observe_counts(arbiter.serving(), arbiter.desired(), arbiter.stopping());
        if let Some(metrics) = &metrics {
            publish(metrics, &arbiter);
        }
        if let Some(statsd) = &statsd {
            statsd.recorder.set_workers(arbiter.serving());
        }
        notifier.update(systemd_view(&arbiter));
        event = loop {
            tokio::select! {
                Some(sig) = signals.recv() => break Event::Signal(sig),
                Some(news) = news.recv() => break Event::Pool(news),
                Some(ev) = events.recv() => break ev,
                // The readings come back as an event; /proc reads may block.
                _ = sample.tick() => shell.start_sample(),
                _ = tick_if_some(&mut watchdog) => notifier.watchdog(),
                _ = tick.tick() => break Event::Tick,
            }
        };
    }
}

/// Exiting with connections still open (the graceful timeout passed, or
/// every worker is gone): the requests still waiting for a worker get 503
/// (nothing was sent for them), not a closed connection. Waits, bounded,
/// until the HTTP front has written those answers and closed.
async fn answer_the_waiting(
    dispatcher: &crate::dispatch::Dispatcher,
    events: &mut mpsc::UnboundedReceiver<Event>,
) {
    dispatcher.close();
    let closed = async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::ConnectionsClosed) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(ANSWER_THE_WAITING, closed).await;
}

/// How long an exiting master waits for the `on_exit` server hook.
const ON_EXIT_WAIT: Duration = Duration::from_secs(2);

/// How long an exiting master waits for its last answers to go out.
const ANSWER_THE_WAITING: Duration = Duration::from_millis(500);

/// gunicorn's `halt`: `Shutting down: Master`, then `Reason: ...` when
/// there is one, at info for a clean stop and at error otherwise.
fn log_shutdown(code: ExitCode, reason: Option<&str>) {
    if code == ExitCode::Clean {
        info!("Shutting down: Master");
        if let Some(reason) = reason {
            info!("Reason: {reason}");
        }
    } else {
        tracing::error!("Shutting down: Master");
        tracing::error!("Reason: {}", reason.unwrap_or("server stopped"));
    }
}

/// The HTTP front's findings about workers, as the arbiter's events.
fn worker_faults(events: mpsc::UnboundedSender<Event>) -> crate::http::exchange::FaultSink {
    crate::http::exchange::FaultSink::new(move |worker, fault| {
        let event = match fault {
            WorkerFault::Timeout => Event::RequestTimeout { worker },
            WorkerFault::ProtocolError => Event::ProtocolError { worker },
        };
        let _ = events.send(event);
    })
}

/// What systemd is told about (see `systemd/announce.rs`): the figures
/// `/readyz` decides on, and whether a HUP is under way.
fn systemd_view(arbiter: &Arbiter) -> crate::systemd::announce::View {
    crate::systemd::announce::View {
        serving: arbiter.serving(),
        desired: arbiter.desired(),
        reloading: arbiter.reloading(),
        stopping: arbiter.stopping(),
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick_if_some(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn publish(metrics: &Metrics, arbiter: &Arbiter) {
    metrics.set_workers(
        arbiter.facts(Instant::now()),
        Readiness {
            ready_workers: arbiter.serving(),
            desired_workers: arbiter.desired(),
            stopping: arbiter.stopping(),
        },
    );
}

/// Starts gunicorn's statsd metrics when `statsd_host` is set; dropped
/// when `run` returns, it sends the last second's figures.
fn start_statsd(
    settings: &crate::config::Settings,
    listeners: &[Listener],
) -> Option<metrics::statsd::Statsd> {
    use std::os::fd::AsRawFd;
    let addr = settings.statsd_host.clone()?;
    let backlog_fds = listeners
        .iter()
        .filter_map(|listener| match listener {
            Listener::Tcp(tcp) => Some(tcp.as_raw_fd()),
            Listener::Unix(..) => None,
        })
        .collect();
    metrics::statsd::start(metrics::statsd::StatsdConfig {
        addr,
        prefix: settings.statsd_prefix.clone().unwrap_or_default(),
        tags: settings.dogstatsd_tags.clone().unwrap_or_default(),
        backlog_fds,
        backlog: settings.enable_backlog_metric,
    })
}

/// The CPUs to pin workers to (`worker_cpu_affinity`), logged when there
/// are any; empty: the workers are not pinned.
fn worker_cpus(settings: &Settings) -> Vec<usize> {
    let allowed = crate::worker::cpu::allowed_cpus();
    if !crate::worker::cpu::spreads(
        settings.worker_cpu_affinity,
        settings.workers,
        allowed.len(),
    ) {
        return Vec::new();
    }
    let list: Vec<String> = allowed.iter().map(usize::to_string).collect();
    info!("Pinning each worker to one of CPUs {}", list.join(","));
    allowed
}

/// Raises the open-file limit to what `--workers` x `--worker-connections`
/// client connections and the workers' sockets need, and warns when the
/// hard limit does not allow it.
fn raise_file_limit(settings: &Settings) {
    use crate::process::files;
    let connections = settings.worker_connections.saturating_mul(settings.workers);
    let per_worker = match settings.worker_class {
        // The control socket and the one multiplexed lane socket.
        crate::config::WorkerClass::Gevent => 2,
        // The control socket, and per lane its socket and (ring lanes) its doorbell.
        _ => 1 + 2 * settings.threads,
    };
    let needed = files::needed(connections, settings.workers, per_worker);
    match files::raise_to(needed) {
        Ok(files::Outcome::Enough) => {}
        Ok(files::Outcome::Raised(from, to)) => {
            debug!(from, to, "raised the open-file limit");
        }
        Ok(files::Outcome::Short { limit }) => warn!(
            limit,
            needed,
            "Open-file limit {limit} is below the {needed} descriptors that {} workers x {} worker connections need: connections past it are refused; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower --worker-connections",
            settings.workers,
            settings.worker_connections
        ),
        Err(err) => warn!(error = %err, "cannot read or raise the open-file limit"),
    }
}

/// `err` with what the master was doing when it failed, so the message at
/// exit names the step (they are all one `io::Error` to main).
fn named(err: std::io::Error, doing: &str) -> std::io::Error {
    std::io::Error::new(err.kind(), format!("{doing}: {err}"))
}
