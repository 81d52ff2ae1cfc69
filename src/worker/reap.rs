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
//! second reaper competes for their statuses.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::worker::ExitStatus;

/// Statuses of processes reaped before anyone watched them: a worker can
/// exit before the fork server's answer with its pid has been read. Bounded,
/// because unwatched orphans land here too.
const UNCLAIMED_LIMIT: usize = 1024;

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
        let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
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
