//! Starting one Python worker: socketpairs for its control channel and
//! lanes, the interpreter's argv and environment, a parent-death signal so it
//! never outlives the master, and the worker program on its stdin.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::script::WORKER_PROGRAM;
use super::WorkerId;

/// Everything a worker needs that is the same for every worker.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The Python interpreter.
    pub python: PathBuf,
    /// The app spec, `module:attr` or `module:factory(args)`.
    pub app: String,
    /// Directory the worker runs in (`--chdir`).
    pub chdir: Option<PathBuf>,
    /// Directories put first on `sys.path` (`--pythonpath`).
    pub pythonpath: Vec<PathBuf>,
    /// Extra environment (`-e KEY=VALUE`).
    pub env: Vec<(String, String)>,
    /// Lanes per worker (`--threads`).
    pub lanes: usize,
    /// Configured worker count, for `wsgi.multiprocess`.
    pub workers: usize,
    /// Python logging level name.
    pub log_level: String,
}

/// A started worker, before its handshake.
#[derive(Debug)]
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// The master's end of the control socket.
    pub control: UnixStream,
    /// The master's ends of the lane sockets.
    pub lanes: Vec<UnixStream>,
}

/// A worker that could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The interpreter could not be executed.
    #[error("cannot start python interpreter {python}: {source} (set --python or activate a virtualenv)")]
    Exec {
        /// The interpreter that failed.
        python: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Sockets could not be made.
    #[error("cannot create worker sockets: {0}")]
    Sockets(std::io::Error),
}

/// Starts worker `id`. The caller runs the handshake on `control`.
pub fn spawn(id: WorkerId, spec: &SpawnSpec, stderr: Stdio) -> Result<Spawned, SpawnError> {
    let (control_ours, control_theirs) = StdUnixStream::pair().map_err(SpawnError::Sockets)?;
    let mut lanes_ours = Vec::with_capacity(spec.lanes);
    let mut lanes_theirs = Vec::with_capacity(spec.lanes);
    for _ in 0..spec.lanes {
        let (ours, theirs) = StdUnixStream::pair().map_err(SpawnError::Sockets)?;
        lanes_ours.push(ours);
        lanes_theirs.push(theirs);
    }
    let inherited: Vec<RawFd> = std::iter::once(control_theirs.as_raw_fd())
        .chain(lanes_theirs.iter().map(|s| s.as_raw_fd()))
        .collect();
    let lane_fds = inherited[1..]
        .iter()
        .map(|fd| fd.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let pythonpath = std::env::join_paths(&spec.pythonpath)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut command = Command::new(&spec.python);
    command
        .arg("-")
        .arg("ferrocorn-worker")
        .arg(id.to_string())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PYTHONUNBUFFERED", "1")
        .env("FERROCORN_WORKER_CONTROL_FD", inherited[0].to_string())
        .env("FERROCORN_WORKER_LANE_FDS", lane_fds)
        .env("FERROCORN_WORKER_APP", &spec.app)
        .env("FERROCORN_WORKER_ID", id.to_string())
        .env(
            "FERROCORN_WORKER_MASTER_PID",
            std::process::id().to_string(),
        )
        .env("FERROCORN_WORKER_PYTHONPATH", pythonpath)
        .env("FERROCORN_WORKER_LOG_LEVEL", &spec.log_level)
        .env("FERROCORN_WORKER_COUNT", spec.workers.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(stderr);
    if let Some(dir) = &spec.chdir {
        command.current_dir(dir);
    }
    let master_pid = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (prctl, fcntl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            use nix::libc;
            // Die with the master, even if it is SIGKILLed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The master may have died between fork and prctl.
            if libc::getppid() != master_pid.as_raw() {
                libc::_exit(1);
            }
            for &fd in &inherited {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| SpawnError::Exec {
        python: spec.python.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    // The program is larger than a pipe buffer may be: write it from a task.
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            // A worker that dies before reading it is reported by its exit.
            let _ = stdin.write_all(WORKER_PROGRAM.as_bytes()).await;
        });
    }
    drop(control_theirs);
    drop(lanes_theirs);
    Ok(Spawned {
        child,
        pid,
        control: into_tokio(control_ours).map_err(SpawnError::Sockets)?,
        lanes: lanes_ours
            .into_iter()
            .map(into_tokio)
            .collect::<Result<_, _>>()
            .map_err(SpawnError::Sockets)?,
    })
}

fn into_tokio(stream: StdUnixStream) -> std::io::Result<UnixStream> {
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}
