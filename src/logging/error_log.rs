//! The error log's sink: stderr, or a file opened in append mode that
//! [`ErrorSink::reopen`] can swap under a running subscriber (SIGUSR1 after
//! logrotate moved it). It owns the open file and nothing else: `mod.rs` plugs
//! it into tracing-subscriber as a [`MakeWriter`], and the master asks it for
//! the stderr of each Python worker it spawns.

use std::fs::File;
use std::io::{self, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

use super::{open_append, LoggingError};

/// Where error-log lines go. Clones share the same file, so a reopen through
/// one is seen by the subscriber holding another.
#[derive(Clone, Debug)]
pub(crate) enum ErrorSink {
    /// `--error-logfile -`: the master's own stderr.
    Stderr,
    /// A path, opened for appending; the `Mutex` lets `reopen` swap the file
    /// while events are being written.
    File {
        path: Arc<str>,
        file: Arc<Mutex<File>>,
    },
}

impl ErrorSink {
    /// Opens `spec` ("-" = stderr) for appending, creating the file if needed.
    pub(crate) fn open(spec: &str) -> Result<Self, LoggingError> {
        if spec == "-" {
            return Ok(Self::Stderr);
        }
        let file = open_append(spec).map_err(|err| LoggingError::OpenErrorLog {
            path: spec.to_owned(),
            err,
        })?;
        Ok(Self::File {
            path: spec.into(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Opens the path again and swaps it in; the old file is closed once the
    /// event being written (if any) is done. On failure the old file stays.
    pub(crate) fn reopen(&self) -> Result<(), LoggingError> {
        let Self::File { path, file } = self else {
            return Ok(());
        };
        let fresh = open_append(path).map_err(|err| LoggingError::OpenErrorLog {
            path: path.to_string(),
            err,
        })?;
        *lock(file) = fresh;
        Ok(())
    }

    /// What a worker's stderr should be so its tracebacks land in this log.
    ///
    /// A worker gets a dup of the file descriptor, so after a reopen it keeps
    /// writing to the old (rotated) file until it is replaced; only the
    /// master's own lines move at once.
    pub(crate) fn worker_stderr(&self) -> io::Result<Stdio> {
        Ok(self.worker_file()?.map_or_else(Stdio::inherit, Stdio::from))
    }

    /// A dup of the log file for a worker, or `None` when the log is the
    /// master's stderr (which workers inherit and which never moves).
    pub(crate) fn worker_file(&self) -> io::Result<Option<File>> {
        match self {
            Self::Stderr => Ok(None),
            Self::File { file, .. } => Ok(Some(lock(file).try_clone()?)),
        }
    }
}

/// Locks the file, ignoring poisoning: a panic elsewhere while the lock was
/// held cannot leave a `File` in a bad state, and logging must keep working.
fn lock(file: &Mutex<File>) -> MutexGuard<'_, File> {
    file.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> MakeWriter<'a> for ErrorSink {
    type Writer = ErrorWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Self::Stderr => ErrorWriter::Stderr(io::stderr().lock()),
            Self::File { file, .. } => ErrorWriter::File(lock(file)),
        }
    }
}

/// One event's writer. The fmt layer formats an event into a buffer and writes
/// it in one call, so holding the lock for that call keeps lines whole.
pub(crate) enum ErrorWriter<'a> {
    Stderr(io::StderrLock<'static>),
    File(MutexGuard<'a, File>),
}

impl Write for ErrorWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stderr(w) => w.write(buf),
            Self::File(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Stderr(w) => w.write_all(buf),
            Self::File(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stderr(w) => w.flush(),
            Self::File(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn writes_append_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        fs::write(&path, "old\n").unwrap();
        let sink = ErrorSink::open(path.to_str().unwrap()).unwrap();
        sink.make_writer().write_all(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\nnew\n");
    }

    #[test]
    fn reopen_after_rename_writes_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let rotated = dir.path().join("error.log.1");
        let sink = ErrorSink::open(path.to_str().unwrap()).unwrap();
        sink.make_writer().write_all(b"before\n").unwrap();
        fs::rename(&path, &rotated).unwrap();
        sink.make_writer().write_all(b"still old\n").unwrap();
        sink.reopen().unwrap();
        sink.make_writer().write_all(b"after\n").unwrap();
        assert_eq!(fs::read_to_string(&rotated).unwrap(), "before\nstill old\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn reopen_failure_names_the_path_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("error.log");
        let sink = ErrorSink::open(path.to_str().unwrap()).unwrap();
        fs::rename(&path, dir.path().join("moved.log")).unwrap();
        fs::remove_dir(&sub).unwrap();
        let err = sink.reopen().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot open error log {}: No such file or directory (os error 2)",
                path.display()
            )
        );
        sink.make_writer().write_all(b"kept\n").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "kept\n"
        );
    }

    #[test]
    fn worker_stderr_shares_the_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let sink = ErrorSink::open(path.to_str().unwrap()).unwrap();
        sink.make_writer().write_all(b"master\n").unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", "echo worker >&2"])
            .stderr(sink.worker_stderr().unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        sink.make_writer().write_all(b"master again\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "master\nworker\nmaster again\n"
        );
    }
}
