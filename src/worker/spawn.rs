//! Starting Python processes: socketpairs for a worker's control channel
//! and lanes (with their shared-memory rings on ring lanes), and a fresh interpreter (argv, environment, a parent-death
//! signal so it never outlives the master, the embedded program on its
//! stdin) for the fork server, or for a worker when no fork server runs.
//!
//! Children are started with `std::process` and never waited for here: the
//! master's reaper (`reap.rs`) reaps every child.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::script::{BOOTSTRAP, WORKER_PROGRAM};
use super::WorkerId;
use crate::config::types::WorkerClass;
use crate::protocol::lane::Lane;
use crate::protocol::mux::{self, MuxStream};
use crate::protocol::ring::{Hub, Ring, WorkerRing};
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
    /// Lanes per worker (`--threads`; `--worker-connections` for gevent).
    pub lanes: usize,
    /// How a worker runs its lanes: threads, or greenlets over one
    /// multiplexed socket (gevent).
    pub worker_class: WorkerClass,
    /// `--worker-connections`, which a gevent worker reads.
    pub worker_connections: usize,
    /// Configured worker count, for `wsgi.multiprocess`.
    pub workers: usize,
    /// Python logging level name.
    pub log_level: String,
    /// Import the app once in the fork server, before forking (`--preload`).
    pub preload: bool,
    /// Master-side settings the server hooks' `cfg` shows (docs/hooks.md),
    /// a JSON object; the Python side reads nothing else from it.
    pub hook_settings: String,
    /// The NAME of the process titles (`--name`, default the app spec).
    pub proc_name: String,
    /// With `--reload`: the extra files and patterns to watch besides the
    /// imported modules, absolute (gunicorn: relative to where it started).
    pub reload: Option<Vec<String>>,
    /// Trace every executed line (`--spew`).
    pub spew: bool,
    /// Point the Python processes' stdout at their stderr, the error log
    /// file (`--capture-output` with an error log file).
    pub capture_output: bool,
    /// The user (name or uid) the Python processes switch to before they
    /// run config or app code (`--user`); `None` keeps the master's.
    pub user: Option<String>,
    /// The group (name or gid) they switch to (`--group`); `None` keeps the master's.
    pub group: Option<String>,
    /// Also set the user's supplementary groups (`--initgroups`).
    pub initgroups: bool,
    /// The workers' CPU scheduling policy (`FERROCORN_WORKER_SCHED`).
    pub sched: WorkerSched,
}

/// The master's ends of a new worker's sockets.
#[derive(Debug)]
pub struct WorkerSockets {
    /// The control socket: handshake, then REOPEN_LOG; closing it stops the worker.
    pub control: UnixStream,
    /// One per lane.
    pub lanes: Vec<LaneLink>,
}

/// The master's end of one lane.
#[derive(Debug)]
pub enum LaneLink {
    /// A lane socket that carries the lane's bytes.
    Socket(UnixStream),
    /// A ring lane: its socket (which carries only EOF) and its shared memory.
    Ring(UnixStream, Arc<Ring>),
    /// One stream of the worker's one multiplexed socket (`-k gevent`).
    Mux(MuxStream),
}

impl LaneLink {
    /// The lane the dispatcher hands out.
    pub fn into_lane(self) -> Lane {
        match self {
            LaneLink::Socket(socket) => Lane::new(socket),
            LaneLink::Ring(socket, ring) => Lane::over_ring(socket, ring),
            LaneLink::Mux(stream) => Lane::over_mux(stream),
        }
    }

    /// The lane's shared memory, on a ring lane.
    pub fn ring(&self) -> Option<&Arc<Ring>> {
        match self {
            LaneLink::Ring(_, ring) => Some(ring),
            _ => None,
        }
    }
}

/// How lanes carry their bytes.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Over the lane socket.
    Socket,
    /// Through shared-memory rings of `size` bytes, with `hub`'s doorbells.
    Ring {
        /// The master's doorbells.
        hub: Arc<Hub>,
        /// Bytes per ring.
        size: usize,
    },
}

/// Names the lane transport: `FERROCORN_LANE_TRANSPORT`.
pub const TRANSPORT_ENV: &str = "FERROCORN_LANE_TRANSPORT";

/// Names the longest nap of the master's pump on ring lanes:
/// `FERROCORN_MASTER_NAP` (docs/design/hop.md, "Naps").
pub const NAP_ENV: &str = "FERROCORN_MASTER_NAP";

/// The longest nap `FERROCORN_MASTER_NAP` asks for: a duration up to the
/// lost-wake-up bound (2ms), 0 for none; default 1ms.
pub fn master_nap(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(text) = value.filter(|v| !v.is_empty()) else {
        return Ok(Some(crate::protocol::ring::DEFAULT_MAX_NAP));
    };
    match crate::config::types::parse_duration(text) {
        Some(nap) if nap.is_zero() => Ok(None),
        Some(nap) if nap <= crate::protocol::ring::LOST_WAKEUP_BOUND => Ok(Some(nap)),
        _ => Err(format!(
            "invalid {NAP_ENV}: {text:?} (a duration up to 2ms, e.g. 0.5ms, or 0 for none)"
        )),
    }
}

/// Names the workers' CPU scheduling policy: `FERROCORN_WORKER_SCHED`.
pub const SCHED_ENV: &str = "FERROCORN_WORKER_SCHED";

/// The CPU scheduling policy a worker puts itself (and so every thread it
/// starts) under at boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkerSched {
    /// Linux's `SCHED_BATCH`: the same share of the CPU as `SCHED_OTHER`
    /// (nice values keep their meaning), but a worker that wakes does not
    /// preempt the task running on its core; it waits for that task to
    /// sleep or for its slice to end, or runs at once on an idle core. The
    /// task it would preempt is usually the master, which has just rung it
    /// and is the only process that moves every request: kept on its core,
    /// the master is preempted a quarter as often (docs/design/hop.md,
    /// "Session 10").
    #[default]
    Batch,
    /// `SCHED_OTHER`, the processes' policy as started (what gunicorn's
    /// workers run under).
    Normal,
}

impl WorkerSched {
    /// The policy `value` (`FERROCORN_WORKER_SCHED`) names: `batch`, the
    /// default, or `normal`.
    pub fn parse(value: Option<&str>) -> Result<WorkerSched, String> {
        match value.unwrap_or_default() {
            "" | "batch" => Ok(WorkerSched::Batch),
            "normal" => Ok(WorkerSched::Normal),
            other => Err(format!(
                "invalid {SCHED_ENV}: unknown scheduling policy {other:?} (use batch or normal)"
            )),
        }
    }

    /// The policy the master's environment names.
    pub fn from_env() -> Result<WorkerSched, String> {
        WorkerSched::parse(std::env::var(SCHED_ENV).ok().as_deref())
    }

    /// The name a worker reads in its environment.
    pub fn name(self) -> &'static str {
        match self {
            WorkerSched::Batch => "batch",
            WorkerSched::Normal => "normal",
        }
    }
}

/// Whether `FERROCORN_LANE_TRANSPORT` asks for ring lanes (`ring`, the
/// default) rather than socket lanes (`socket`).
fn rings_wanted() -> Result<bool, String> {
    match std::env::var(TRANSPORT_ENV).as_deref() {
        Err(_) | Ok("" | "ring") => Ok(true),
        Ok("socket") => Ok(false),
        Ok(other) => Err(format!(
            "invalid {TRANSPORT_ENV}: unknown transport {other:?} (use ring or socket)"
        )),
    }
}

/// Checks the variables that tune the lanes and the workers
/// (`FERROCORN_LANE_TRANSPORT`, `FERROCORN_MASTER_NAP` on ring lanes,
/// `FERROCORN_WORKER_SCHED`) as a start would, without starting anything:
/// for `--check-config`.
pub fn check_tuning_env() -> Result<(), String> {
    if rings_wanted()? {
        master_nap(std::env::var(NAP_ENV).ok().as_deref())?;
    }
    WorkerSched::from_env().map(|_| ())
}

impl Transport {
    /// The transport `FERROCORN_LANE_TRANSPORT` asks for: `ring`, the
    /// default (shared-memory rings, docs/design/hop.md), or `socket`
    /// (the lanes' bytes on their sockets, for comparison and for a kernel
    /// without memfd); ring lanes start their doorbells' pump on the
    /// current runtime.
    pub fn from_env() -> Result<Transport, String> {
        if !rings_wanted()? {
            return Ok(Transport::Socket);
        }
        Hub::start(master_nap(std::env::var(NAP_ENV).ok().as_deref())?)
            .map(|hub| Transport::Ring {
                hub,
                size: crate::protocol::ring::DEFAULT_RING_SIZE,
            })
            .map_err(|err| {
                format!("cannot create the lanes' doorbell: {err} (set {TRANSPORT_ENV}=socket)")
            })
    }

    /// The doorbells, on ring lanes.
    pub fn hub(&self) -> Option<&Arc<Hub>> {
        match self {
            Transport::Ring { hub, .. } => Some(hub),
            Transport::Socket => None,
        }
    }
}

/// The worker's ends of its ring lanes.
#[derive(Debug)]
pub struct WorkerRings {
    /// Bytes per ring.
    pub size: usize,
    /// The master's doorbell, which the worker rings.
    pub master_bell: OwnedFd,
    /// One per lane, in lane order.
    pub lanes: Vec<WorkerRing>,
}

/// The worker's ends of its sockets, to hand to the fork server or to a
/// fresh interpreter; the master closes its copies once the worker has them.
#[derive(Debug)]
pub struct WorkerEnds {
    /// Its control socket.
    pub control: OwnedFd,
    /// Its lanes.
    pub lanes: Vec<OwnedFd>,
    /// Its rings, on ring lanes.
    pub rings: Option<WorkerRings>,
    /// The CPU it pins itself to before it starts a thread (`worker::cpu`).
    pub cpu: Option<usize>,
}

impl WorkerEnds {
    /// The control socket's descriptor, then the lanes'; on ring lanes then
    /// the master's doorbell and each lane's memfd and doorbell
    /// (docs/protocol.md, "Ring lanes").
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = std::iter::once(self.control.as_raw_fd())
            .chain(self.lanes.iter().map(|fd| fd.as_raw_fd()))
            .collect();
        if let Some(rings) = &self.rings {
            fds.push(rings.master_bell.as_raw_fd());
            for lane in &rings.lanes {
                fds.push(lane.memfd.as_raw_fd());
                fds.push(lane.bell.as_raw_fd());
            }
        }
        fds
    }

    /// Bytes per ring; zero on socket lanes.
    pub fn ring_size(&self) -> usize {
        self.rings.as_ref().map_or(0, |rings| rings.size)
    }

    /// The environment that tells a worker its descriptors (the fork server
    /// sets the same from what it received).
    fn fd_env(&self) -> Vec<(&'static str, String)> {
        let fds = self.raw_fds();
        let lanes = self.lanes.len();
        let join = |fds: &[RawFd]| fds.iter().map(|fd| fd.to_string()).collect::<Vec<_>>();
        let mut env = vec![
            ("FERROCORN_WORKER_CONTROL_FD", fds[0].to_string()),
            ("FERROCORN_WORKER_LANE_FDS", join(&fds[1..=lanes]).join(",")),
        ];
        if let Some(rings) = &self.rings {
            let pairs = fds[lanes + 2..]
                .chunks(2)
                .map(|pair| join(pair).join(":"))
                .collect::<Vec<_>>();
            env.push(("FERROCORN_WORKER_RING_SIZE", rings.size.to_string()));
            env.push((
                "FERROCORN_WORKER_MASTER_BELL_FD",
                fds[lanes + 1].to_string(),
            ));
            env.push(("FERROCORN_WORKER_RING_FDS", pairs.join(",")));
        }
        if let Some(cpu) = self.cpu {
            env.push(("FERROCORN_WORKER_CPU", cpu.to_string()));
        }
        env
    }
}

/// A process that could not be started at all.
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
    /// A lane's shared memory or doorbell could not be made.
    #[error("cannot create a lane's shared-memory rings: {0}")]
    Rings(std::io::Error),
}

/// Checks at start that `python` can be executed: a path must be an
/// executable file, a bare name must be found on `PATH`. A missing
/// interpreter is a configuration error, not a worker that failed to boot.
pub fn check_interpreter(python: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if python.components().count() > 1 {
        executable(python)
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| executable(&dir.join(python)))
        })
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "python interpreter {} not found or not executable (set --python or activate a virtualenv)",
            python.display()
        ))
    }
}

/// What a start (and `--check-config`) checks of the workers' interpreter:
/// that it can be executed, and for `-k gevent` that it has gevent.
pub fn check_python(
    python: &Path,
    class: WorkerClass,
    chdir: Option<&Path>,
    pythonpath: &[PathBuf],
) -> Result<(), String> {
    check_interpreter(python)?;
    if class == WorkerClass::Gevent {
        check_gevent(python, chdir, pythonpath)?;
    }
    Ok(())
}

/// Checks at start that `python` can import gevent, which `-k gevent`
/// needs and ferrocorn does not bring (it is the user's dependency, as
/// with gunicorn). Runs in `chdir` with `pythonpath` first, as a worker would.
fn check_gevent(python: &Path, chdir: Option<&Path>, pythonpath: &[PathBuf]) -> Result<(), String> {
    let mut command = std::process::Command::new(python);
    command
        .args(["-c", "import gevent, gevent.monkey"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = chdir {
        command.current_dir(dir);
    }
    if !pythonpath.is_empty() {
        let mut paths = pythonpath.to_vec();
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            paths.extend(std::env::split_paths(&existing));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            command.env("PYTHONPATH", joined);
        }
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run python interpreter {}: {err}", python.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("it exited with an error");
    Err(format!(
        "worker class gevent needs the gevent package, which {} cannot import ({}); install it into that environment ({} -m pip install gevent) or choose another --worker-class",
        python.display(),
        reason.trim(),
        python.display()
    ))
}

/// Socketpairs (and rings, for `Transport::Ring`) for a worker with `lanes`
/// lanes; for a gevent worker (`muxed`), one socket that carries them all,
/// whatever the transport. Must run inside the tokio runtime.
pub fn sockets(
    lanes: usize,
    transport: &Transport,
    muxed: bool,
) -> Result<(WorkerSockets, WorkerEnds), SpawnError> {
    let pair = || -> Result<(UnixStream, OwnedFd), SpawnError> {
        let (ours, theirs) = StdUnixStream::pair().map_err(SpawnError::Sockets)?;
        Ok((
            into_tokio(ours).map_err(SpawnError::Sockets)?,
            theirs.into(),
        ))
    };
    let (control, control_end) = pair()?;
    if muxed {
        let (socket, end) = pair()?;
        let links = mux::start(socket, lanes)
            .into_iter()
            .map(LaneLink::Mux)
            .collect();
        return Ok((
            WorkerSockets {
                control,
                lanes: links,
            },
            WorkerEnds {
                control: control_end,
                lanes: vec![end],
                rings: None,
                cpu: None,
            },
        ));
    }
    let (sockets, lane_ends): (Vec<_>, Vec<_>) = (0..lanes)
        .map(|_| pair())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let (links, rings) = match transport {
        Transport::Socket => (sockets.into_iter().map(LaneLink::Socket).collect(), None),
        Transport::Ring { hub, size } => {
            let mut links = Vec::with_capacity(lanes);
            let mut ends = Vec::with_capacity(lanes);
            for socket in sockets {
                let (ring, end) = Ring::create(hub, *size).map_err(SpawnError::Rings)?;
                links.push(LaneLink::Ring(socket, ring));
                ends.push(end);
            }
            let rings = WorkerRings {
                size: *size,
                master_bell: hub.worker_bell().map_err(SpawnError::Rings)?,
                lanes: ends,
            };
            (links, Some(rings))
        }
    };
    Ok((
        WorkerSockets {
            control,
            lanes: links,
        },
        WorkerEnds {
            control: control_end,
            lanes: lane_ends,
            rings,
            cpu: None,
        },
    ))
}

/// The environment every worker and the fork server share
/// (docs/protocol.md, "Processes and sockets").
pub fn shared_env(spec: &SpawnSpec) -> Vec<(String, String)> {
    let pythonpath = std::env::join_paths(&spec.pythonpath)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut env = spec.env.clone();
    env.extend(
        [
            ("PYTHONUNBUFFERED", "1".to_string()),
            ("FERROCORN_WORKER_APP", spec.app.clone()),
            (
                "FERROCORN_WORKER_MASTER_PID",
                std::process::id().to_string(),
            ),
            ("FERROCORN_WORKER_PYTHONPATH", pythonpath),
            ("FERROCORN_WORKER_LOG_LEVEL", spec.log_level.clone()),
            ("FERROCORN_WORKER_COUNT", spec.workers.to_string()),
            ("FERROCORN_WORKER_SETTINGS", spec.hook_settings.clone()),
            ("FERROCORN_WORKER_PROC_NAME", spec.proc_name.clone()),
            ("FERROCORN_WORKER_RELOAD", flag(spec.reload.is_some())),
            (
                "FERROCORN_WORKER_RELOAD_EXTRA_FILES",
                spec.reload.as_deref().unwrap_or_default().join("\n"),
            ),
            ("FERROCORN_WORKER_SPEW", flag(spec.spew)),
            ("FERROCORN_WORKER_CAPTURE_OUTPUT", flag(spec.capture_output)),
            (
                "FERROCORN_WORKER_USER",
                spec.user.clone().unwrap_or_default(),
            ),
            (
                "FERROCORN_WORKER_GROUP",
                spec.group.clone().unwrap_or_default(),
            ),
            ("FERROCORN_WORKER_INITGROUPS", flag(spec.initgroups)),
            ("FERROCORN_WORKER_MODEL", spec.worker_class.to_string()),
            (
                "FERROCORN_WORKER_MUX_LANES",
                spec.worker_connections.to_string(),
            ),
            (SCHED_ENV, spec.sched.name().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// Starts worker `id` as a fresh interpreter on `ends`; returns its pid.
/// The caller runs the handshake on the control socket.
pub fn start_worker(
    id: WorkerId,
    spec: &SpawnSpec,
    ends: &WorkerEnds,
    stderr: Stdio,
) -> Result<u32, SpawnError> {
    let fds = ends.raw_fds();
    let mut env = shared_env(spec);
    env.extend(
        ends.fd_env()
            .into_iter()
            .chain([("FERROCORN_WORKER_ID", id.to_string())])
            .map(|(k, v)| (k.to_string(), v)),
    );
    let args = ["ferrocorn-worker".to_string(), id.to_string()];
    start_python(
        &spec.python,
        spec.chdir.as_deref(),
        &args,
        &env,
        &fds,
        stderr,
    )
}

/// Runs `python -c BOOTSTRAP ARGS...` with the embedded program on its stdin, `env`
/// added, the `inherited` descriptors left open across exec, and a
/// parent-death signal; returns its pid.
pub fn start_python(
    python: &Path,
    chdir: Option<&Path>,
    args: &[String],
    env: &[(String, String)],
    inherited: &[RawFd],
    stderr: Stdio,
) -> Result<u32, SpawnError> {
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(BOOTSTRAP)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(stderr);
    if let Some(dir) = chdir {
        command.current_dir(dir);
    }
    let master_pid = nix::unistd::getpid();
    let inherited = inherited.to_vec();
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
        python: python.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    // The program is larger than a pipe buffer may be: write it from a task.
    if let Some(stdin) = child.stdin.take() {
        if let Ok(mut stdin) = tokio::process::ChildStdin::from_std(stdin) {
            tokio::spawn(async move {
                // A process that dies before reading it is reported by its exit.
                let _ = stdin.write_all(WORKER_PROGRAM.as_bytes()).await;
            });
        }
    }
    // Dropping a std Child neither waits nor kills: the reaper has it.
    drop(child);
    Ok(pid)
}

fn into_tokio(stream: StdUnixStream) -> std::io::Result<UnixStream> {
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_nap_is_a_millisecond_unless_set_to_at_most_the_lost_wakeup_bound() {
        let us = Duration::from_micros;
        assert_eq!(master_nap(None), Ok(Some(us(1000))));
        assert_eq!(master_nap(Some("")), Ok(Some(us(1000))));
        assert_eq!(master_nap(Some("0")), Ok(None));
        assert_eq!(master_nap(Some("0.2ms")), Ok(Some(us(200))));
        assert_eq!(master_nap(Some("2ms")), Ok(Some(us(2000))));
        for bad in ["2.5ms", "1s", "soon", "-1"] {
            let err = master_nap(Some(bad)).unwrap_err();
            assert!(err.contains(NAP_ENV) && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn workers_run_as_batch_unless_asked_for_the_normal_policy_by_name() {
        assert_eq!(WorkerSched::parse(None), Ok(WorkerSched::Batch));
        assert_eq!(WorkerSched::parse(Some("")), Ok(WorkerSched::Batch));
        assert_eq!(WorkerSched::parse(Some("batch")), Ok(WorkerSched::Batch));
        assert_eq!(WorkerSched::parse(Some("normal")), Ok(WorkerSched::Normal));
        for bad in ["fifo", "BATCH", "idle", "other"] {
            let err = WorkerSched::parse(Some(bad)).unwrap_err();
            assert!(err.contains(SCHED_ENV) && err.contains(bad), "{err}");
        }
    }
}
