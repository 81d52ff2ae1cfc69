//! The access log sink. [`AccessLog::log`] runs in the HTTP service: it
//! renders one line into a recycled buffer and hands it over a bounded channel
//! to a dedicated writer thread, so a request never waits on a disk. The
//! thread owns the file (or stdout), writes bursts through one buffer and
//! flushes whenever the channel runs dry, and reopens the file on request.
//! What the line says is `access_format.rs`'s job. The access log is its own
//! sink, not error-log events; only its own trouble (a full queue, a failed
//! write) is reported in the error log, under [`ACCESS_TARGET`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Version};

use super::access_format::AccessFormat;
use super::{open_append, LoggingError};

/// Tracing target of the access log's own warnings and errors.
pub const ACCESS_TARGET: &str = "ferrocorn::access";

/// Lines that may wait for the writer; past this, lines are dropped (and
/// counted) rather than stalling requests behind a slow disk.
const QUEUE_LINES: usize = 16 * 1024;
/// Spare line buffers kept for reuse; a burst beyond this allocates.
const SPARE_BUFFERS: usize = 256;
/// A buffer that grew past this (huge headers) is freed, not kept.
const MAX_SPARE_CAPACITY: usize = 16 * 1024;
/// Initial capacity of a line buffer: a combined-format line fits.
const LINE_CAPACITY: usize = 256;
/// Bytes the writer gathers before a write(2) during a burst.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long [`AccessLog::flush`] waits for the writer.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// What the HTTP service knows about a finished request.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// Peer address, `"127.0.0.1"`, or `"unix"` for a Unix socket.
    pub remote: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Path as sent, without the query.
    pub path: &'a str,
    /// Query string without the `?`, if the target had one.
    pub query: Option<&'a str>,
    /// HTTP version of the request.
    pub version: Version,
    /// Response status code.
    pub status: u16,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// When the request started (the `t` atom).
    pub started: SystemTime,
    /// Time from request start to the end of the response.
    pub elapsed: Duration,
    /// Request headers.
    pub request_headers: &'a HeaderMap,
    /// Response headers.
    pub response_headers: &'a HeaderMap,
}

/// Handle to the access log; clones are cheap and share one writer thread,
/// which stops once every clone is gone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    format: AccessFormat,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// State both sides touch: buffers going back for reuse, and lines dropped
/// because the queue was full (reported by the writer, which may log).
#[derive(Debug, Default)]
struct Shared {
    spare: Mutex<Vec<Vec<u8>>>,
    dropped_lines: AtomicU64,
}

#[derive(Debug)]
enum Msg {
    Line(Vec<u8>),
    Reopen(mpsc::Sender<Result<(), LoggingError>>),
    Flush(mpsc::Sender<()>),
}

impl AccessLog {
    /// Parses `format`, opens `spec` ("-" = stdout, else a path to append to)
    /// and starts the writer thread.
    pub(crate) fn open(spec: &str, format: &str) -> Result<Self, LoggingError> {
        let format = AccessFormat::parse(format)?;
        let sink = Sink::open(spec)?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let writer_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || run_writer(&rx, sink, &writer_shared))
            .map_err(LoggingError::StartAccessWriter)?;
        Ok(Self {
            inner: Arc::new(Inner { format, tx, shared }),
        })
    }

    /// Logs one request. Never blocks: if the writer is behind by
    /// `QUEUE_LINES` lines the line is dropped and counted, and the writer
    /// reports the count in the error log.
    pub fn log(&self, rec: &AccessRecord<'_>) {
        let inner = &*self.inner;
        let mut line = inner.shared.take_buffer();
        inner.format.render(rec, &mut line);
        line.push(b'\n');
        match inner.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                inner.shared.dropped_lines.fetch_add(1, Ordering::Relaxed);
            }
            // The writer only stops when every handle is gone, or if it
            // panicked, which the panic message already reported.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until every line logged so far is written and flushed.
    ///
    /// # Errors
    /// If the writer stopped, or did not catch up within a few seconds.
    pub fn flush(&self) -> Result<(), LoggingError> {
        let deadline = Instant::now() + FLUSH_WAIT;
        let (reply, done) = mpsc::channel();
        self.send_control(Msg::Flush(reply), deadline)?;
        wait_reply(&done, deadline)
    }

    /// Reopens the file at its path (after logrotate moved it); lines logged
    /// before this call go to the old file. On failure the old file stays.
    pub(crate) fn reopen(&self) -> Result<(), LoggingError> {
        let deadline = Instant::now() + FLUSH_WAIT;
        let (reply, done) = mpsc::channel();
        self.send_control(Msg::Reopen(reply), deadline)?;
        wait_reply(&done, deadline)?
    }

    /// Queues a control message behind the lines already sent, waiting for
    /// room until `deadline` (polling, as `SyncSender` has no timed send).
    fn send_control(&self, mut msg: Msg, deadline: Instant) -> Result<(), LoggingError> {
        loop {
            match self.inner.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(LoggingError::AccessWriterStopped)
                }
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => {
                    return Err(LoggingError::AccessWriterStalled(FLUSH_WAIT))
                }
            }
        }
    }
}

fn wait_reply<T>(done: &Receiver<T>, deadline: Instant) -> Result<T, LoggingError> {
    let left = deadline.saturating_duration_since(Instant::now());
    done.recv_timeout(left).map_err(|e| match e {
        RecvTimeoutError::Timeout => LoggingError::AccessWriterStalled(FLUSH_WAIT),
        RecvTimeoutError::Disconnected => LoggingError::AccessWriterStopped,
    })
}

impl Shared {
    fn take_buffer(&self) -> Vec<u8> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        spare.unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY))
    }

    fn give_back(&self, mut line: Vec<u8>) {
        if line.capacity() > MAX_SPARE_CAPACITY {
            return;
        }
        line.clear();
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_BUFFERS {
            spare.push(line);
        }
    }
}

/// The writer thread: drain what is queued, then flush once the channel is
/// momentarily empty, so a burst costs few syscalls while a quiet server
/// still gets each line out at once.
fn run_writer(rx: &Receiver<Msg>, mut sink: Sink, shared: &Shared) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    sink.write(&line);
                    shared.give_back(line);
                }
                Msg::Reopen(reply) => {
                    let _ = reply.send(sink.reopen());
                }
                Msg::Flush(reply) => {
                    sink.flush();
                    let _ = reply.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        sink.flush();
        let dropped = shared.dropped_lines.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(target: ACCESS_TARGET, dropped, "access log writer fell behind; lines dropped");
        }
    }
    sink.flush();
}

/// Where lines go. Write errors (disk full) are reported once, not per line,
/// and again only after the sink has recovered.
struct Sink {
    path: Option<String>,
    out: BufWriter<Box<dyn Write + Send>>,
    is_failing: bool,
}

impl Sink {
    fn open(spec: &str) -> Result<Self, LoggingError> {
        if spec == "-" {
            return Ok(Self::new(None, Box::new(io::stdout())));
        }
        let file = open_file(spec)?;
        Ok(Self::new(Some(spec.to_owned()), Box::new(file)))
    }

    fn new(path: Option<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            path,
            out: BufWriter::with_capacity(WRITE_BUFFER, out),
            is_failing: false,
        }
    }

    fn write(&mut self, line: &[u8]) {
        let result = self.out.write_all(line);
        self.note(result);
    }

    fn flush(&mut self) {
        let result = self.out.flush();
        self.note(result);
    }

    fn reopen(&mut self) -> Result<(), LoggingError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.flush();
        let file = open_file(&path)?;
        *self = Self::new(Some(path), Box::new(file));
        Ok(())
    }

    fn note(&mut self, result: io::Result<()>) {
        match (result, self.is_failing) {
            (Ok(()), true) => {
                self.is_failing = false;
                tracing::info!(target: ACCESS_TARGET, path = self.path_for_log(), "access log writable again");
            }
            (Err(error), false) => {
                self.is_failing = true;
                tracing::error!(target: ACCESS_TARGET, path = self.path_for_log(), %error, "cannot write access log; lines are lost until it recovers");
            }
            _ => {}
        }
    }

    fn path_for_log(&self) -> &str {
        self.path.as_deref().unwrap_or("-")
    }
}

fn open_file(path: &str) -> Result<File, LoggingError> {
    open_append(path).map_err(|err| LoggingError::OpenAccessLog {
        path: path.to_owned(),
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;
    use std::time::UNIX_EPOCH;

    const FORMAT: &str = "%(m)s %(U)s %(s)s";

    fn record<'a>(path: &'a str, headers: &'a HeaderMap) -> AccessRecord<'a> {
        AccessRecord {
            remote: "127.0.0.1",
            method: "GET",
            path,
            query: None,
            version: Version::HTTP_11,
            status: 200,
            response_bytes: 2,
            started: UNIX_EPOCH,
            elapsed: Duration::ZERO,
            request_headers: headers,
            response_headers: headers,
        }
    }

    fn open(path: &Path) -> AccessLog {
        AccessLog::open(path.to_str().unwrap(), FORMAT).unwrap()
    }

    /// Polls `path` until it holds `want`, failing with what it held instead.
    fn wait_for_contents(path: &Path, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = fs::read_to_string(path).unwrap_or_default();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} holds {got:?}, want {want:?}",
                path.display()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_quiet_server_gets_each_line_flushed_without_asking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = open(&path);
        let headers = HeaderMap::new();
        log.log(&record("/one", &headers));
        wait_for_contents(&path, "GET /one 200\n");
        log.log(&record("/two", &headers));
        wait_for_contents(&path, "GET /one 200\nGET /two 200\n");
    }

    #[test]
    fn a_burst_arrives_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = open(&path);
        let headers = HeaderMap::new();
        let paths: Vec<String> = (0..2000).map(|i| format!("/{i}")).collect();
        for p in &paths {
            log.log(&record(p, &headers));
        }
        log.flush().unwrap();
        let want: String = paths.iter().map(|p| format!("GET {p} 200\n")).collect();
        assert_eq!(fs::read_to_string(&path).unwrap(), want);
        let spare = log.inner.shared.spare.lock().unwrap().len();
        assert!(
            spare > 0 && spare <= SPARE_BUFFERS,
            "buffers are recycled: {spare}"
        );
    }

    #[test]
    fn clones_share_the_writer_which_stops_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = open(&path);
        let other = log.clone();
        let headers = HeaderMap::new();
        let worker = thread::spawn(move || other.log(&record("/from-thread", &headers)));
        worker.join().unwrap();
        let headers = HeaderMap::new();
        log.log(&record("/last", &headers));
        drop(log);
        // Dropping the last handle lets the writer drain and flush.
        wait_for_contents(&path, "GET /from-thread 200\nGET /last 200\n");
    }

    #[test]
    fn reopen_after_rename_writes_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let log = open(&path);
        let headers = HeaderMap::new();
        log.log(&record("/before", &headers));
        log.flush().unwrap();
        fs::rename(&path, &rotated).unwrap();
        log.log(&record("/queued-before-reopen", &headers));
        log.reopen().unwrap();
        log.log(&record("/after", &headers));
        log.flush().unwrap();
        assert_eq!(
            fs::read_to_string(&rotated).unwrap(),
            "GET /before 200\nGET /queued-before-reopen 200\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "GET /after 200\n");
    }

    #[test]
    fn failed_reopen_names_the_path_and_keeps_logging() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("access.log");
        let log = open(&path);
        let moved = dir.path().join("moved.log");
        fs::rename(&path, &moved).unwrap();
        fs::remove_dir(&sub).unwrap();
        let err = log.reopen().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot open access log {}: No such file or directory (os error 2)",
                path.display()
            )
        );
        let headers = HeaderMap::new();
        log.log(&record("/kept", &headers));
        log.flush().unwrap();
        assert_eq!(fs::read_to_string(&moved).unwrap(), "GET /kept 200\n");
    }

    #[test]
    fn bad_access_log_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("access.log");
        let err = AccessLog::open(path.to_str().unwrap(), FORMAT)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "cannot open access log {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }

    #[test]
    fn stdout_needs_no_reopen() {
        let log = AccessLog::open("-", FORMAT).unwrap();
        log.reopen().unwrap();
        log.flush().unwrap();
    }
}
