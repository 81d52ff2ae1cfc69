//! gunicorn's statsd instrumentation (`--statsd-host`), from the master.
//!
//! The HTTP front records each finished request into a [`Recorder`]
//! (atomic adds only) and the master's loop sets its workers gauge; a
//! thread of its own wakes every [`FLUSH_INTERVAL`], takes what gathered,
//! writes gunicorn's lines (`format.rs`), packs them into datagrams of at
//! most 1432 bytes and sends them without blocking (`sink.rs`). So a slow,
//! full or absent collector never reaches the request path, and requests
//! cost no syscall. Unlike gunicorn, which sends one datagram per event
//! from each worker, counters arrive summed per second; each duration is
//! still its own timer line, up to [`recorder::SAMPLE_CAP`] a second, and
//! sampled with `|@rate` past that. The master's exit drops [`Statsd`],
//! which sends what the last second gathered.

pub mod backlog;
pub mod format;
pub mod recorder;
pub mod sink;

pub use recorder::Recorder;

use std::os::fd::RawFd;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tracing::error;

use crate::config::statsd::StatsdAddr;
use crate::logging::counts;
use format::Style;
use sink::Sink;

/// How often the gathered figures go out.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What the flush thread needs to know.
#[derive(Debug, Clone)]
pub struct StatsdConfig {
    /// The collector.
    pub addr: StatsdAddr,
    /// `statsd_prefix`, as given.
    pub prefix: String,
    /// `dogstatsd_tags`, as given.
    pub tags: String,
    /// TCP listening sockets to read the accept queue of
    /// (`enable_backlog_metric`); empty when off.
    pub backlog_fds: Vec<RawFd>,
    /// Whether `gunicorn.backlog` is sent.
    pub backlog: bool,
}

/// The running statsd flush: its recorder, and on drop a last flush (so
/// the requests of a stopping server's last second are sent too).
#[derive(Debug)]
pub struct Statsd {
    /// For the request path and the master's loop.
    pub recorder: Arc<Recorder>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Statsd {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Bounded: the last flush only sends without blocking.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the flush thread. `None` (logged) if the thread cannot start.
pub fn start(config: StatsdConfig) -> Option<Statsd> {
    let recorder = Arc::new(Recorder::default());
    let shared = recorder.clone();
    let (stop, stopped) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("statsd".into())
        .spawn(move || flush_until_dropped(&shared, config, &stopped));
    match spawned {
        Ok(thread) => Some(Statsd {
            recorder,
            stop: Some(stop),
            thread: Some(thread),
        }),
        Err(err) => {
            error!(error = %err, "cannot start the statsd thread: {err}; serving goes on without statsd");
            None
        }
    }
}

/// The thread's loop: a flush every interval, and a last one when the
/// [`Statsd`] is dropped.
fn flush_until_dropped(recorder: &Recorder, config: StatsdConfig, stopped: &mpsc::Receiver<()>) {
    let style = Style::new(&config.prefix, &config.tags);
    let mut sink = Sink::new(config.addr.clone());
    let mut logged = counts::totals();
    loop {
        let last = !matches!(
            stopped.recv_timeout(FLUSH_INTERVAL),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let mut snapshot = recorder.take();
        let now = counts::totals();
        snapshot.log_lines = counts::LEVELS
            .iter()
            .zip(now.iter().zip(logged))
            .map(|(&level, (&now, before))| (level, now.saturating_sub(before)))
            .collect();
        logged = now;
        if config.backlog {
            snapshot.backlog = config
                .backlog_fds
                .iter()
                .filter_map(|&fd| backlog::accept_queue(fd))
                .reduce(|a, b| a + b);
        }
        let datagrams = format::pack(&style.lines(&snapshot), format::MAX_DATAGRAM);
        sink.send_all(&datagrams);
        if last {
            return;
        }
    }
}
