//! What each signal to the master means, as in gunicorn's arbiter: TERM
//! drains, INT and QUIT stop at once, TTIN and TTOU change the worker
//! count, HUP reloads, USR1 reopens the logs, USR2 starts a new master
//! and WINCH stops the workers (`upgrade.rs`).

use std::time::Instant;

use tracing::{debug, info};

use super::{Arbiter, Phase};
use crate::master::action::Action;
use crate::master::event::Sig;
use crate::worker::state::RetireReason;

impl Arbiter {
    pub(super) fn on_signal(&mut self, sig: Sig, now: Instant, actions: &mut Vec<Action>) {
        // gunicorn's one line per signal; what it leads to is logged where
        // it happens (a worker booting, retiring, ..).
        info!("Handling signal: {}", sig.name());
        match sig {
            Sig::Term => self.begin_graceful_stop(now, actions),
            Sig::Int | Sig::Quit => self.quick_stop(actions),
            Sig::Ttin if self.phase == Phase::Running => {
                self.desired += 1;
                debug!(workers = self.desired, "one worker more");
                self.fill(now, actions);
            }
            Sig::Ttou if self.phase == Phase::Running && self.desired > 1 => {
                self.desired -= 1;
                debug!(workers = self.desired, "one worker less");
                let newest = self
                    .workers
                    .iter()
                    .rev()
                    .find(|(_, e)| e.counts_toward_capacity())
                    .map(|(&id, _)| id);
                if let Some(worker) = newest {
                    self.retire(worker, RetireReason::ScaleDown, now, actions);
                }
                self.fill(now, actions);
            }
            Sig::Hup if self.phase == Phase::Running => {
                info!("Hang up: Master");
                self.reload_asked = true;
                actions.push(Action::ReloadConfig);
            }
            Sig::Usr1 => actions.push(Action::ReopenLogs),
            Sig::Usr2 => self.on_usr2(actions),
            Sig::Winch => self.on_winch(now, actions),
            Sig::Ttin | Sig::Ttou | Sig::Hup => {}
        }
    }
}
