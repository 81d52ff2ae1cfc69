//! USR2 and WINCH, as gunicorn's `reexec` and `handle_winch`: USR2 starts
//! a new master on the same listeners, once at a time (`reexec_pid`) and
//! never from a master that is itself a USR2 child (`master_pid`); WINCH
//! stops this master's workers gracefully and keeps the master, so the
//! new one serves alone while this one can still be rolled back to (HUP
//! starts workers again). The new master's exit only clears the child: as
//! in gunicorn, workers a WINCH stopped come back with HUP, not by
//! themselves.
//!
//! One difference comes from the master owning the listeners: gunicorn's
//! workers accept, so a master without workers accepts nothing; here the
//! master accepts, so WINCH first pauses accepting (the sockets stay open)
//! and lets open connections finish, then retires the workers, and
//! accepting resumes once workers serve again.
//!
//! gunicorn honours WINCH only when daemonized (in a terminal it comes with
//! every resize). Here it is honoured when daemonized, or while a USR2 new
//! master runs: the upgrade's next step, and harmless then, since the new
//! master serves.

use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::{Arbiter, Phase};
use crate::master::action::Action;
use crate::master::event::ExitStatus;
use crate::worker::state::RetireReason;
use crate::worker::WorkerId;

/// The new master started by USR2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Child {
    #[default]
    None,
    /// Asked for; the shell has not answered yet.
    Starting,
    Running(u32),
}

/// Where WINCH left the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Winch {
    #[default]
    Off,
    /// Accepting paused; connections finish until the deadline, then
    /// the workers retire.
    Quiescing { deadline: Instant },
    /// No workers, not accepting.
    Stopped,
}

/// The upgrade's state (gunicorn's `reexec_pid`, `master_pid`).
#[derive(Debug, Default)]
pub(super) struct Upgrade {
    pub(super) child: Child,
    /// The old master, while this master is its USR2 child.
    pub(super) parent: Option<u32>,
    /// `--daemon`: WINCH is honoured at any time (gunicorn's rule).
    pub(super) daemonized: bool,
    pub(super) winch: Winch,
}

impl Arbiter {
    /// How this master was started: as the USR2 child of `parent`, and
    /// whether it is daemonized.
    pub fn set_origin(&mut self, parent: Option<u32>, daemonized: bool) {
        self.upgrade.parent = parent;
        self.upgrade.daemonized = daemonized;
    }

    /// The pid of the USR2 new master, while it runs.
    pub fn child_master(&self) -> Option<u32> {
        match self.upgrade.child {
            Child::Running(pid) => Some(pid),
            _ => None,
        }
    }

    pub(super) fn on_usr2(&mut self, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        if self.upgrade.child != Child::None {
            warn!("USR2 signal ignored. Child exists.");
        } else if self.upgrade.parent.is_some() {
            warn!("USR2 signal ignored. Parent exists.");
        } else {
            self.upgrade.child = Child::Starting;
            actions.push(Action::Reexec);
        }
    }

    pub(super) fn on_reexeced(&mut self, pid: u32) {
        if self.upgrade.child == Child::Starting {
            info!(pid, "Started the new master (pid:{pid})");
            self.upgrade.child = Child::Running(pid);
        }
    }

    pub(super) fn on_reexec_failed(&mut self, message: &str) {
        self.upgrade.child = Child::None;
        error!("cannot start the new master, this one serves on: {message}");
    }

    pub(super) fn on_child_master_exit(&mut self, pid: u32, status: ExitStatus) {
        if self.upgrade.child != Child::Running(pid) {
            return;
        }
        self.upgrade.child = Child::None;
        warn!(pid, %status, "The new master (pid:{pid}) exited ({status}); this one stays the master");
        if self.upgrade.winch != Winch::Off && self.desired == 0 {
            warn!("This master has no workers since WINCH: send it HUP to start them again");
        }
    }

    pub(super) fn on_parent_gone(&mut self, actions: &mut Vec<Action>) {
        if self.upgrade.parent.take().is_some() {
            info!("Master has been promoted.");
            actions.push(Action::Promote);
        }
    }

    pub(super) fn on_winch(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let honoured = self.upgrade.daemonized || self.upgrade.child != Child::None;
        if self.phase != Phase::Running || self.upgrade.winch != Winch::Off {
            return;
        }
        if !honoured {
            debug!("SIGWINCH ignored. Not daemonized");
            return;
        }
        info!("graceful stop of workers");
        self.desired = 0;
        self.pending_spawns.clear();
        self.upgrade.winch = Winch::Quiescing {
            deadline: now + self.config.graceful_timeout,
        };
        actions.push(Action::PauseAccepting);
    }

    /// Connections closed after WINCH paused accepting (or the deadline
    /// passed): the workers go, unless the count went up meanwhile.
    pub(super) fn on_quiesced(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !matches!(self.upgrade.winch, Winch::Quiescing { .. }) || self.phase != Phase::Running {
            return;
        }
        if self.desired > 0 {
            self.upgrade.winch = Winch::Stopped;
            self.resume_when_serving(actions);
            return;
        }
        self.upgrade.winch = Winch::Stopped;
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for worker in ids {
            self.retire(worker, RetireReason::ScaleDown, now, actions);
        }
        self.fill(now, actions);
    }

    pub(super) fn winch_deadline(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Winch::Quiescing { deadline } = self.upgrade.winch {
            if now >= deadline {
                self.on_quiesced(now, actions);
            }
        }
    }

    /// After WINCH: HUP's reload, or TTIN, asked for workers again, and
    /// one serves: accept again.
    pub(super) fn resume_when_serving(&mut self, actions: &mut Vec<Action>) {
        if self.upgrade.winch == Winch::Stopped
            && self.phase == Phase::Running
            && self.desired > 0
            && self.serving() > 0
        {
            self.upgrade.winch = Winch::Off;
            info!("Workers serve again; accepting connections");
            actions.push(Action::ResumeAccepting);
        }
    }

    /// HUP after WINCH whose config cannot be read: the workers come back
    /// anyway, as in gunicorn, whose HUP always restores `workers`.
    pub(super) fn restore_count_after_winch(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.upgrade.winch != Winch::Off && self.desired == 0 {
            self.desired = self.config.workers;
            self.fill(now, actions);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::super::ArbiterConfig;
    use super::*;
    use crate::master::event::{Event, Sig};

    const GRACE: Duration = Duration::from_secs(10);

    /// An arbiter with `n` serving workers, started as `parent`'s child or not.
    fn serving(n: usize, parent: Option<u32>, daemonized: bool) -> (Arbiter, Instant) {
        let mut arb = Arbiter::with_rng(ArbiterConfig::basic(n, GRACE), StdRng::seed_from_u64(7));
        arb.set_origin(parent, daemonized);
        let now = Instant::now();
        let ids = super::super::tests::spawned(&arb.on_event(Event::Start, now));
        for worker in ids {
            arb.on_event(
                Event::Spawned {
                    worker,
                    pid: 100 + worker.0 as u32,
                },
                now,
            );
            arb.on_event(Event::Ready { worker }, now);
        }
        assert_eq!(arb.serving(), n);
        (arb, now)
    }

    fn usr2(arb: &mut Arbiter, now: Instant) -> Vec<Action> {
        arb.on_event(Event::Signal(Sig::Usr2), now)
    }

    fn retired(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Retire { .. }))
            .count()
    }

    #[test]
    fn usr2_reexecs_once_and_again_only_after_the_child_master_is_gone() {
        let (mut arb, now) = serving(2, None, false);
        assert_eq!(usr2(&mut arb, now), [Action::Reexec]);
        // Asked, not answered yet: a second USR2 is ignored.
        assert!(usr2(&mut arb, now).is_empty());
        arb.on_event(Event::Reexeced { pid: 900 }, now);
        assert_eq!(arb.child_master(), Some(900));
        assert!(usr2(&mut arb, now).is_empty(), "gunicorn: Child exists");
        // Another child's exit changes nothing.
        arb.on_event(
            Event::ChildMasterExited {
                pid: 901,
                status: ExitStatus::Code(0),
            },
            now,
        );
        assert_eq!(arb.child_master(), Some(900));
        let back = arb.on_event(
            Event::ChildMasterExited {
                pid: 900,
                status: ExitStatus::Code(1),
            },
            now,
        );
        assert!(back.is_empty(), "the workers serve on: {back:?}");
        assert_eq!(arb.child_master(), None);
        assert_eq!(arb.serving(), 2);
        assert_eq!(usr2(&mut arb, now), [Action::Reexec]);
    }

    #[test]
    fn a_failed_reexec_allows_the_next_usr2() {
        let (mut arb, now) = serving(1, None, false);
        assert_eq!(usr2(&mut arb, now), [Action::Reexec]);
        arb.on_event(
            Event::ReexecFailed {
                error: "no such file".into(),
            },
            now,
        );
        assert_eq!(arb.child_master(), None);
        assert_eq!(usr2(&mut arb, now), [Action::Reexec]);
    }

    #[test]
    fn a_child_master_refuses_usr2_until_promoted() {
        let (mut arb, now) = serving(1, Some(50), false);
        assert!(usr2(&mut arb, now).is_empty(), "gunicorn: Parent exists");
        assert_eq!(
            arb.on_event(Event::ParentMasterGone, now),
            [Action::Promote]
        );
        assert!(arb.on_event(Event::ParentMasterGone, now).is_empty());
        assert_eq!(usr2(&mut arb, now), [Action::Reexec]);
    }

    #[test]
    fn usr2_while_stopping_does_nothing() {
        let (mut arb, now) = serving(1, None, false);
        arb.on_event(Event::Signal(Sig::Term), now);
        assert!(usr2(&mut arb, now).is_empty());
    }

    #[test]
    fn winch_without_daemon_or_child_master_is_ignored_as_in_gunicorn() {
        let (mut arb, now) = serving(2, None, false);
        assert!(arb.on_event(Event::Signal(Sig::Winch), now).is_empty());
        assert_eq!(arb.desired(), 2);
    }

    #[test]
    fn winch_pauses_accepting_then_retires_every_worker_once_connections_closed() {
        let (mut arb, now) = serving(2, None, false);
        usr2(&mut arb, now);
        arb.on_event(Event::Reexeced { pid: 900 }, now);
        let actions = arb.on_event(Event::Signal(Sig::Winch), now);
        assert_eq!(actions, [Action::PauseAccepting]);
        assert_eq!(arb.desired(), 0);
        // Workers keep serving what the open connections still send.
        assert_eq!(arb.serving(), 2);
        assert!(arb.on_event(Event::Signal(Sig::Winch), now).is_empty());
        let actions = arb.on_event(Event::Quiesced, now);
        assert_eq!(retired(&actions), 2, "{actions:?}");
        assert!(spawned_none(&actions));
        assert_eq!(arb.serving(), 0);
        assert!(!arb.finished(), "the old master stays, without workers");
    }

    fn spawned_none(actions: &[Action]) -> bool {
        !actions.iter().any(|a| matches!(a, Action::Spawn { .. }))
    }

    #[test]
    fn winch_retires_at_the_graceful_deadline_if_connections_linger() {
        let (mut arb, now) = serving(2, None, true);
        assert_eq!(
            arb.on_event(Event::Signal(Sig::Winch), now),
            [Action::PauseAccepting]
        );
        assert_eq!(retired(&arb.on_event(Event::Tick, now + GRACE / 2)), 0);
        assert_eq!(retired(&arb.on_event(Event::Tick, now + GRACE)), 2);
        // Connections closing later changes nothing more.
        assert!(arb.on_event(Event::Quiesced, now + GRACE).is_empty());
    }

    #[test]
    fn hup_after_winch_brings_workers_back_and_accepting_resumes_when_one_serves() {
        let (mut arb, now) = serving(2, None, true);
        arb.on_event(Event::Signal(Sig::Winch), now);
        arb.on_event(Event::Quiesced, now);
        assert_eq!(
            arb.on_event(Event::Signal(Sig::Hup), now),
            [Action::ReloadConfig]
        );
        let actions = arb.on_event(Event::Reloaded(ArbiterConfig::basic(2, GRACE)), now);
        let new = super::super::tests::spawned(&actions);
        assert_eq!(new.len(), 2);
        arb.on_event(
            Event::Spawned {
                worker: new[0],
                pid: 300,
            },
            now,
        );
        let actions = arb.on_event(Event::Ready { worker: new[0] }, now);
        assert!(actions.contains(&Action::ResumeAccepting), "{actions:?}");
        arb.on_event(
            Event::Spawned {
                worker: new[1],
                pid: 301,
            },
            now,
        );
        let actions = arb.on_event(Event::Ready { worker: new[1] }, now);
        assert!(!actions.contains(&Action::ResumeAccepting));
    }

    #[test]
    fn a_refused_reload_after_winch_still_restores_the_workers() {
        let (mut arb, now) = serving(3, None, true);
        arb.on_event(Event::Signal(Sig::Winch), now);
        arb.on_event(Event::Quiesced, now);
        arb.on_event(Event::Signal(Sig::Hup), now);
        let actions = arb.on_event(Event::ReloadRefused, now);
        assert_eq!(super::super::tests::spawned(&actions).len(), 3);
        assert_eq!(arb.desired(), 3);
    }

    #[test]
    fn the_child_masters_exit_after_winch_leaves_the_count_to_hup_as_gunicorn() {
        let (mut arb, now) = serving(2, None, false);
        usr2(&mut arb, now);
        arb.on_event(Event::Reexeced { pid: 900 }, now);
        arb.on_event(Event::Signal(Sig::Winch), now);
        arb.on_event(Event::Quiesced, now);
        let actions = arb.on_event(
            Event::ChildMasterExited {
                pid: 900,
                status: ExitStatus::Signal(9),
            },
            now,
        );
        assert!(actions.is_empty());
        assert_eq!(arb.desired(), 0);
    }
}
