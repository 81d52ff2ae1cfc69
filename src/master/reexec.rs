//! USR2's binary upgrade, the shell's half, as gunicorn's `reexec`: start
//! the (possibly replaced) program again at the path it was started by,
//! with the same arguments, working directory and environment, and the
//! listening sockets inherited; tell it their fd numbers in `GUNICORN_FD`
//! and our pid in `GUNICORN_PID`. The new master is our child: the reaper
//! sees it exit. The decision (when to re-exec, when not) is the
//! arbiter's (`arbiter/upgrade.rs`); the new master's side of the
//! variables is [`Inheritance`], read in `main.rs` beside systemd's.
//!
//! One break with gunicorn: a socket-activated master passes its sockets
//! in `GUNICORN_FD` too, not in `LISTEN_FDS`/`LISTEN_PID`. `LISTEN_PID`
//! must be the child's pid, which exists only after the fork, and setting
//! a variable between fork and exec is not async-signal-safe in a
//! threaded process. Nothing is lost: ferrocorn treats every inherited
//! socket alike (it never unlinks one), which is all gunicorn's
//! `systemd` flag changes for the new master.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::event::{Event, ExitStatus};
use crate::forkserver::Launcher;
use crate::process::pidfile::PidFile;
use crate::worker::reap::Reaper;

/// The old master's pid, in the new master's environment (gunicorn's name).
pub const PARENT_VAR: &str = "GUNICORN_PID";
/// The inherited listeners' fd numbers, comma-separated (gunicorn's name).
pub const FDS_VAR: &str = "GUNICORN_FD";
/// The `--metrics-bind` listener's fd (ours: gunicorn has no such socket),
/// so the new master serves metrics on the address the old one holds.
pub const METRICS_FD_VAR: &str = "FERROCORN_METRICS_FD";

/// How this process was started: what a re-exec repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContext {
    /// The program to run.
    pub program: PathBuf,
    /// Every argument, `argv[0]` included.
    pub args: Vec<OsString>,
    /// The working directory at start.
    pub cwd: PathBuf,
    /// The environment at start, before systemd's variables were taken out.
    pub env: Vec<(OsString, OsString)>,
}

impl StartContext {
    /// Captures the start: call it first, before the environment changes
    /// (systemd's variables are removed, the title may move the strings).
    pub fn capture() -> StartContext {
        let args: Vec<OsString> = std::env::args_os().collect();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let argv0 = args.first().cloned().unwrap_or_default();
        StartContext {
            program: program_path(&argv0, &cwd, std::env::current_exe().ok()),
            args,
            cwd,
            env: std::env::vars_os().collect(),
        }
    }
}

/// The program a re-exec runs. `argv[0]` when it names a path (made
/// absolute against the start directory): a binary replaced at that path,
/// or a symlink moved to a new release, is what runs next, as gunicorn's
/// `sys.argv`. A bare name was found on PATH: then the executable the
/// kernel ran (`current_exe`, resolved at start, so still the path even
/// once the file is replaced).
pub fn program_path(argv0: &OsStr, cwd: &Path, current_exe: Option<PathBuf>) -> PathBuf {
    let named = Path::new(argv0);
    if argv0.as_encoded_bytes().contains(&b'/') {
        return cwd.join(named);
    }
    current_exe.unwrap_or_else(|| named.to_path_buf())
}

/// What a USR2 parent told this process (`GUNICORN_PID`, `GUNICORN_FD`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inheritance {
    /// The old master, while it runs: this process is its child master.
    pub parent: Option<u32>,
    /// Listening sockets passed on, to serve on instead of binding.
    pub fds: Vec<RawFd>,
    /// The metrics listener passed on.
    pub metrics_fd: Option<RawFd>,
}

impl Inheritance {
    /// Reads the variables through `get`.
    ///
    /// # Errors
    /// A value that is not a pid or a list of fd numbers.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Inheritance, String> {
        let bad = |name: &str, value: &str, expected: &str| {
            format!("{name}={value:?} from the environment is not valid: expected {expected}")
        };
        let parent = match get(PARENT_VAR) {
            Some(text) => Some(
                text.trim()
                    .parse::<u32>()
                    .map_err(|_| bad(PARENT_VAR, &text, "a process id"))?,
            ),
            None => None,
        };
        let fds = match get(FDS_VAR) {
            Some(text) if !text.trim().is_empty() => text
                .split(',')
                .map(|fd| fd.trim().parse::<RawFd>().ok().filter(|&fd| fd >= 0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(FDS_VAR, &text, "comma-separated fd numbers"))?,
            _ => Vec::new(),
        };
        let metrics_fd = match get(METRICS_FD_VAR) {
            Some(text) => Some(
                text.trim()
                    .parse::<RawFd>()
                    .ok()
                    .filter(|&fd| fd >= 0)
                    .ok_or_else(|| bad(METRICS_FD_VAR, &text, "an fd number"))?,
            ),
            None => None,
        };
        Ok(Inheritance {
            parent,
            fds,
            metrics_fd,
        })
    }

    /// Reads the process environment, then removes both variables, so
    /// workers and a later re-exec do not see them. Call while the process
    /// has one thread, as `systemd::Environment::take`.
    ///
    /// # Errors
    /// As [`Inheritance::from_vars`].
    pub fn take() -> Result<Inheritance, String> {
        let mut found = Inheritance::from_vars(|name| std::env::var(name).ok());
        std::env::remove_var(PARENT_VAR);
        std::env::remove_var(FDS_VAR);
        std::env::remove_var(METRICS_FD_VAR);
        // A stale GUNICORN_PID (inherited from further up) names no parent
        // of ours: this is a plain start, not a USR2 child.
        let ppid = nix::unistd::getppid().as_raw() as u32;
        if let Ok(found) = found.as_mut() {
            found.parent = found.parent.filter(|&parent| parent == ppid);
        }
        found
    }
}

/// The new master's environment: the start's, without what described this
/// process's own start (an earlier upgrade's variables, systemd's socket
/// activation), plus our pid and the listeners' fds.
pub fn child_env(
    start: &[(OsString, OsString)],
    master_pid: u32,
    fds: &[RawFd],
    metrics_fd: Option<RawFd>,
) -> Vec<(OsString, OsString)> {
    let drop = [
        PARENT_VAR,
        FDS_VAR,
        METRICS_FD_VAR,
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ];
    let mut env: Vec<(OsString, OsString)> = start
        .iter()
        .filter(|(key, _)| !drop.iter().any(|d| key == d))
        .cloned()
        .collect();
    env.push((PARENT_VAR.into(), master_pid.to_string().into()));
    let list: Vec<String> = fds.iter().map(ToString::to_string).collect();
    env.push((FDS_VAR.into(), list.join(",").into()));
    if let Some(fd) = metrics_fd {
        env.push((METRICS_FD_VAR.into(), fd.to_string().into()));
    }
    env
}

/// Starts the new master; returns its pid. Its exit reaches the reaper
/// like any child's (std's `Child` is never waited on).
///
/// # Errors
/// The program could not be executed (missing, not executable): std
/// reports the exec's failure from the child.
pub fn spawn(
    start: &StartContext,
    fds: &[RawFd],
    metrics_fd: Option<RawFd>,
) -> std::io::Result<u32> {
    let mut cmd = std::process::Command::new(&start.program);
    if let Some(argv0) = start.args.first() {
        cmd.arg0(argv0);
    }
    cmd.args(start.args.iter().skip(1))
        .current_dir(&start.cwd)
        .env_clear()
        .envs(child_env(&start.env, std::process::id(), fds, metrics_fd));
    let keep: Vec<RawFd> = fds.iter().copied().chain(metrics_fd).collect();
    // SAFETY: between fork and exec the closure only calls fcntl, which is
    // async-signal-safe, on fds open in the parent; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                if flags < 0
                    || nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping a Child neither waits nor kills: the reaper collects it.
    Ok(child.id())
}

/// How the master was started, from `main.rs`: what a re-exec repeats,
/// whose USR2 child it is, and its pid file.
#[derive(Debug)]
pub struct Origin {
    /// The start, captured first thing.
    pub start: StartContext,
    /// What a USR2 parent told us.
    pub inheritance: Inheritance,
    /// `--pid`, written (`FILE.2` in a USR2 child master).
    pub pidfile: Option<PidFile>,
    /// The configured `--pid FILE`.
    pub pidfile_name: Option<PathBuf>,
}

/// Takes over the metrics listener a USR2 parent passed on. Call inside
/// the runtime, once per fd.
///
/// # Errors
/// The fd is not an open TCP listening socket.
pub fn adopt_metrics(fd: RawFd) -> std::io::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let fail = |err: std::io::Error| {
        std::io::Error::new(
            err.kind(),
            format!("cannot take over the metrics socket {METRICS_FD_VAR}={fd}: {err}"),
        )
    };
    let flags = nix::fcntl::fcntl(
        // SAFETY: only fcntl on an fd the parent named; a closed one is EBADF.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(|e| fail(e.into()))?;
    let flags = nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
    // SAFETY: as above.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(flags))
        .map_err(|e| fail(e.into()))?;
    // SAFETY: fd is open (checked above), inherited, and owned by nothing
    // else in this process: main adopts it once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(listener).map_err(fail)
}

/// What the shell needs to carry out `Reexec` and `Promote`.
#[derive(Debug)]
pub struct Upgrader {
    /// How this process was started.
    pub start: StartContext,
    /// The listeners' fds, passed on to the new master.
    pub fds: Vec<RawFd>,
    /// The metrics listener's fd, passed on too.
    pub metrics_fd: Option<RawFd>,
    /// `--pid`, as written at start (`FILE.2` in a USR2 child master).
    pub pidfile: Option<PidFile>,
    /// The configured `--pid FILE`: the name a promoted master takes.
    pub pidfile_name: Option<PathBuf>,
}

impl Upgrader {
    /// `Reexec`: runs the `pre_exec` hook in the fork server (bounded),
    /// then starts the new master; its start, its failure and later its
    /// exit come back as events.
    pub fn reexec(
        &self,
        launcher: &Launcher,
        reaper: &Reaper,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let (start, fds, metrics_fd) = (self.start.clone(), self.fds.clone(), self.metrics_fd);
        let (launcher, reaper, events) = (launcher.clone(), reaper.clone(), events.clone());
        tokio::spawn(async move {
            // gunicorn calls it in the forked child before exec; here it
            // runs where the master-side hooks run, before the fork.
            launcher.pre_exec(PRE_EXEC_WAIT).await;
            start_new_master(&start, &fds, metrics_fd, &reaper, &events);
        });
    }

    /// `Promote`: the old master is gone; `FILE.2` becomes `FILE`.
    pub fn promote(&mut self) {
        if let (Some(file), Some(name)) = (self.pidfile.as_mut(), self.pidfile_name.as_ref()) {
            if file.path() != name {
                if let Err(err) = file.rename(name) {
                    tracing::error!("{err}");
                }
            }
        }
    }
}

/// How long USR2 waits for the `pre_exec` hook before starting the new
/// master anyway (a hook that hangs must not block the upgrade).
const PRE_EXEC_WAIT: Duration = Duration::from_secs(5);

fn start_new_master(
    start: &StartContext,
    fds: &[RawFd],
    metrics_fd: Option<RawFd>,
    reaper: &Reaper,
    events: &mpsc::UnboundedSender<Event>,
) {
    // Invariant: the reaper runs on this same single-threaded runtime, so
    // it cannot reap the child between std's fork and its own wait for a
    // failed exec (which would make std panic on ECHILD).
    let pid = match spawn(start, fds, metrics_fd) {
        Ok(pid) => pid,
        Err(err) => {
            let error = format!("{}: {err}", start.program.display());
            let _ = events.send(Event::ReexecFailed { error });
            return;
        }
    };
    // While it runs, our exit must not remove socket files it serves on.
    crate::http::listener::keep_socket_files(true);
    let _ = events.send(Event::Reexeced { pid });
    let exited = reaper.watch(pid);
    let events = events.clone();
    tokio::spawn(async move {
        let status = exited.await.unwrap_or(ExitStatus::Code(-1));
        crate::http::listener::keep_socket_files(false);
        let _ = events.send(Event::ChildMasterExited { pid, status });
    });
}

/// How often a child master looks whether its parent is still there.
const PARENT_POLL: Duration = Duration::from_secs(1);

/// In a child master: sends [`Event::ParentMasterGone`] once the old
/// master `parent` is no longer our parent (it exited and we were
/// reparented), as gunicorn's `maybe_promote_master` checks each loop.
pub fn watch_parent(parent: u32, events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(PARENT_POLL);
        loop {
            poll.tick().await;
            if nix::unistd::getppid().as_raw() as u32 != parent {
                let _ = events.send(Event::ParentMasterGone);
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_path_in_argv0_is_kept_and_a_bare_name_uses_the_executable() {
        let cwd = Path::new("/srv");
        let exe = Some(PathBuf::from("/opt/ferrocorn-1.0/ferrocorn"));
        assert_eq!(
            program_path(OsStr::new("/usr/bin/ferrocorn"), cwd, exe.clone()),
            PathBuf::from("/usr/bin/ferrocorn")
        );
        assert_eq!(
            program_path(OsStr::new("bin/ferrocorn"), cwd, exe.clone()),
            PathBuf::from("/srv/bin/ferrocorn")
        );
        assert_eq!(
            program_path(OsStr::new("ferrocorn"), cwd, exe),
            PathBuf::from("/opt/ferrocorn-1.0/ferrocorn")
        );
    }

    #[test]
    fn the_parent_and_fds_are_read_and_bad_values_named() {
        let found = Inheritance::from_vars(vars(&[("GUNICORN_PID", "42"), ("GUNICORN_FD", "3,4")]))
            .unwrap();
        assert_eq!(
            found,
            Inheritance {
                parent: Some(42),
                fds: vec![3, 4],
                metrics_fd: None,
            }
        );
        assert_eq!(
            Inheritance::from_vars(vars(&[])).unwrap(),
            Inheritance::default()
        );
        let err = Inheritance::from_vars(vars(&[("GUNICORN_FD", "3,x")])).unwrap_err();
        assert_eq!(
            err,
            "GUNICORN_FD=\"3,x\" from the environment is not valid: expected comma-separated fd numbers"
        );
        assert!(Inheritance::from_vars(vars(&[("GUNICORN_PID", "me")])).is_err());
        let metrics = Inheritance::from_vars(vars(&[("FERROCORN_METRICS_FD", "7")])).unwrap();
        assert_eq!(metrics.metrics_fd, Some(7));
        assert!(Inheritance::from_vars(vars(&[("FERROCORN_METRICS_FD", "-1")])).is_err());
    }

    #[test]
    fn the_child_gets_the_start_environment_with_our_pid_and_fds_only() {
        let start: Vec<(OsString, OsString)> = [
            ("PATH", "/bin"),
            ("GUNICORN_PID", "1"),
            ("GUNICORN_FD", "9"),
            ("FERROCORN_METRICS_FD", "8"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDS", "2"),
            ("NOTIFY_SOCKET", "/run/n"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        let env = child_env(&start, 77, &[3, 4], Some(5));
        let get = |name: &str| {
            env.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("PATH"), ["/bin"]);
        assert_eq!(get("GUNICORN_PID"), ["77"]);
        assert_eq!(get("GUNICORN_FD"), ["3,4"]);
        assert_eq!(get("FERROCORN_METRICS_FD"), ["5"]);
        assert!(get("LISTEN_PID").is_empty() && get("LISTEN_FDS").is_empty());
        // As gunicorn (env_orig): systemd's notify socket is passed on.
        assert_eq!(get("NOTIFY_SOCKET"), ["/run/n"]);
    }
}
