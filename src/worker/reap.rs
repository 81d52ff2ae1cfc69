//! Reaping the master's children. The master is a child subreaper: workers
//! forked by the fork server are orphaned to it on purpose, so that every
//! worker is the master's direct child. It therefore reaps as an init does:
//! on SIGCHLD, `waitpid(-1, WNOHANG)` until nothing is left, and each status
//! goes to whoever watches that pid. Orphans nobody watches (processes an
//! app started and left behind) are reaped and forgotten, so none stays a
//! zombie.
//!
//! Nothing else in a serving master may wait for children: the fork server
//! and fresh workers are started with `std::process`, never tokio's, so no
//! second reaper competes for their statuses. The one exception, a child
//! run and waited for at once (HUP reads a Python config file with
//! `python`), holds a [`ForeignWait`] for as long: meanwhile the reaper
//! takes only the pids it watches, so on a master of several threads it
//! cannot take that child's status from under `std::process` (which then
//! fails with ECHILD). Once the last one is dropped, the reaper looks again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::unistd::Pid;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::worker::ExitStatus;

/// Statuses of processes reaped before anyone watched them: a worker can
/// exit before the fork server's answer with its pid has been read. Bounded,
/// because unwatched orphans land here too.
const UNCLAIMED_LIMIT: usize = 1024;

/// Children others wait for right now; `reap_all` holds this lock around
/// each `waitpid(-1)`, so none starts between its look and its wait.
static FOREIGN_WAITS: Mutex<usize> = Mutex::new(0);

/// Held while a child is run and waited for outside the reaper.
#[derive(Debug)]
#[must_use = "the reaper leaves other children alone only while this is held"]
pub struct ForeignWait(());

impl ForeignWait {
    /// Take it before the child is spawned.
    pub fn begin() -> ForeignWait {
        *foreign_waits() += 1;
        ForeignWait(())
    }
}

impl Drop for ForeignWait {
    fn drop(&mut self) {
        let mut waits = foreign_waits();
        *waits -= 1;
        if *waits == 0 {
            drop(waits);
            // Statuses left for later (orphans, a worker not yet watched):
            // the reaper's SIGCHLD task reaps them now.
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGCHLD);
        }
    }
}

fn foreign_waits() -> std::sync::MutexGuard<'static, usize> {
    FOREIGN_WAITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands out the exit status of each child the master reaps.
#[derive(Debug, Clone)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    watchers: HashMap<u32, oneshot::Sender<ExitStatus>>,
    unclaimed: VecDeque<(u32, ExitStatus)>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD. Call it inside the runtime, before the
    /// first child is started.
    pub fn start() -> std::io::Result<Reaper> {
        let mut children = signal(SignalKind::child())?;
        let reaper = Reaper {
            state: Arc::default(),
        };
        let state = reaper.state.clone();
        tokio::spawn(async move {
            while children.recv().await.is_some() {
                reap_all(&state);
            }
        });
        Ok(reaper)
    }

    /// The exit status of child `pid`, once it exits. The child may have
    /// exited (and been reaped) already: then it resolves at once.
    pub fn watch(&self, pid: u32) -> oneshot::Receiver<ExitStatus> {
        let rx = self.lock().watch(pid);
        // A SIGCHLD not yet read by the signal task: reap it now, so a
        // watch never waits for a signal that already came.
        reap_all(&self.state);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .expect("the reaper never panics holding its lock")
}

impl State {
    fn watch(&mut self, pid: u32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        match self.unclaimed.iter().position(|&(p, _)| p == pid) {
            Some(at) => {
                let (_, status) = self.unclaimed.remove(at).expect("position is in range");
                let _ = tx.send(status);
            }
            None => {
                self.watchers.insert(pid, tx);
            }
        }
        rx
    }

    fn deliver(&mut self, pid: u32, status: ExitStatus) {
        match self.watchers.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None => {
                if self.unclaimed.len() == UNCLAIMED_LIMIT {
                    self.unclaimed.pop_front();
                }
                self.unclaimed.push_back((pid, status));
            }
        }
    }
}

fn reap_all(state: &Mutex<State>) {
    loop {
        let waits = foreign_waits();
        if *waits > 0 {
            drop(waits);
            reap_watched(state);
            return;
        }
        let reaped = waitpid(None, Some(WaitPidFlag::WNOHANG));
        drop(waits);
        let (pid, status) = match reaped {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) => continue,
            // Stopped or continued children stay ours; nothing to hand out.
            Ok(_) => continue,
            Err(_) => return,
        };
        lock(state).deliver(pid.as_raw() as u32, status);
    }
}

/// While another waits for a child of its own: only the watched pids.
fn reap_watched(state: &Mutex<State>) {
    let watched: Vec<u32> = lock(state).watchers.keys().copied().collect();
    for pid in watched {
        let status = loop {
            match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break Some(ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => break Some(ExitStatus::Signal(sig as i32)),
                Err(Errno::EINTR) => continue,
                _ => break None,
            }
        };
        if let Some(status) = status {
            lock(state).deliver(pid, status);
        }
    }
}

// The waitpid loop is exercised by the integration tests (every worker's
// exit goes through it); a unit test would reap the other tests' children.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reaches_its_watcher_whether_it_came_before_or_after_the_watch() {
        let mut state = State::default();
        state.deliver(10, ExitStatus::Code(7));
        let mut late = state.watch(10);
        assert_eq!(late.try_recv().unwrap(), ExitStatus::Code(7));
        let mut early = state.watch(11);
        assert!(early.try_recv().is_err());
        state.deliver(11, ExitStatus::Signal(9));
        assert_eq!(early.try_recv().unwrap(), ExitStatus::Signal(9));
        assert!(state.watchers.is_empty() && state.unclaimed.is_empty());
    }

    #[test]
    fn unwatched_orphans_are_forgotten_past_the_bound() {
        let mut state = State::default();
        for pid in 0..UNCLAIMED_LIMIT as u32 + 10 {
            state.deliver(pid, ExitStatus::Code(0));
        }
        assert_eq!(state.unclaimed.len(), UNCLAIMED_LIMIT);
        assert_eq!(state.unclaimed.front().map(|&(pid, _)| pid), Some(10));
    }
}
