//! When to tell systemd what: a pure function of the arbiter's state (as
//! `/readyz` decides readiness), so it is tested without a socket or a
//! clock. `READY=1` once every configured worker serves, `RELOADING=1`
//! (with `MONOTONIC_USEC`, which systemd 253 wants) from a HUP until its
//! roll is done, then `READY=1` again, `STOPPING=1` once a stop begins,
//! and a `STATUS=` line whenever the worker count it shows changes.
//!
//! gunicorn sends `READY=1` once at boot, before any worker is up; we wait
//! for the workers, so systemd's "started" means "serving".

/// What the arbiter says about the pool, read after each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Workers ready and admitted.
    pub serving: usize,
    /// Workers configured.
    pub desired: usize,
    /// A HUP is being carried out (re-read, then the roll).
    pub reloading: bool,
    /// A stop has begun.
    pub stopping: bool,
}

/// The last state systemd was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Told {
    #[default]
    Starting,
    Ready,
    Reloading,
    Stopping,
}

/// Remembers what systemd was told, to say only what changed.
#[derive(Debug, Default)]
pub struct Announcer {
    told: Told,
    ever_ready: bool,
    status: String,
}

impl Announcer {
    /// The message to send for `view`, if any (lines joined by `\n`).
    /// `monotonic_usec` is CLOCK_MONOTONIC now, for `RELOADING=1`; `pid`
    /// is the master's, sent as `MAINPID` with the first `READY=1` (a
    /// daemonized master is not the process systemd started).
    pub fn next(&mut self, view: View, monotonic_usec: u64, pid: u32) -> Option<String> {
        let mut lines = Vec::new();
        match self.told {
            Told::Stopping => {}
            _ if view.stopping => {
                lines.push("STOPPING=1".to_string());
                self.told = Told::Stopping;
            }
            Told::Ready if view.reloading => {
                lines.push("RELOADING=1".to_string());
                lines.push(format!("MONOTONIC_USEC={monotonic_usec}"));
                self.told = Told::Reloading;
            }
            Told::Starting | Told::Reloading if !view.reloading && view.serving >= view.desired => {
                lines.push("READY=1".to_string());
                if !self.ever_ready {
                    lines.push(format!("MAINPID={pid}"));
                    self.ever_ready = true;
                }
                self.told = Told::Ready;
            }
            _ => {}
        }
        let status = status_line(view);
        if status != self.status {
            lines.push(format!("STATUS={status}"));
            self.status = status;
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// What `systemctl status` shows.
fn status_line(view: View) -> String {
    if view.stopping {
        return "stopping".to_string();
    }
    let count = format!("{} of {} workers serving", view.serving, view.desired);
    if view.reloading {
        format!("reloading, {count}")
    } else {
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(serving: usize, desired: usize) -> View {
        View {
            serving,
            desired,
            reloading: false,
            stopping: false,
        }
    }

    #[test]
    fn ready_comes_once_every_worker_serves_with_the_main_pid_then_only_status_changes() {
        let mut a = Announcer::default();
        assert_eq!(
            a.next(view(0, 3), 1, 9).as_deref(),
            Some("STATUS=0 of 3 workers serving")
        );
        assert_eq!(a.next(view(0, 3), 1, 9), None);
        assert_eq!(
            a.next(view(2, 3), 1, 9).as_deref(),
            Some("STATUS=2 of 3 workers serving")
        );
        assert_eq!(
            a.next(view(3, 3), 1, 9).as_deref(),
            Some("READY=1\nMAINPID=9\nSTATUS=3 of 3 workers serving")
        );
        assert_eq!(a.next(view(3, 3), 1, 9), None);
        // A worker dies and is replaced: the status says so, READY stays.
        assert_eq!(
            a.next(view(2, 3), 1, 9).as_deref(),
            Some("STATUS=2 of 3 workers serving")
        );
        assert_eq!(
            a.next(view(3, 3), 1, 9).as_deref(),
            Some("STATUS=3 of 3 workers serving")
        );
    }

    #[test]
    fn a_reload_is_reloading_with_the_clock_then_ready_again_without_the_pid() {
        let mut a = Announcer::default();
        a.next(view(1, 1), 1, 9);
        let reloading = View {
            reloading: true,
            ..view(1, 1)
        };
        assert_eq!(
            a.next(reloading, 1234, 9).as_deref(),
            Some("RELOADING=1\nMONOTONIC_USEC=1234\nSTATUS=reloading, 1 of 1 workers serving")
        );
        let rolling = View {
            serving: 2,
            ..reloading
        };
        assert_eq!(
            a.next(rolling, 1300, 9).as_deref(),
            Some("STATUS=reloading, 2 of 1 workers serving")
        );
        assert_eq!(
            a.next(view(1, 1), 1400, 9).as_deref(),
            Some("READY=1\nSTATUS=1 of 1 workers serving")
        );
    }

    #[test]
    fn a_reload_before_the_first_ready_only_delays_it() {
        let mut a = Announcer::default();
        let reloading = View {
            reloading: true,
            ..view(1, 1)
        };
        assert_eq!(
            a.next(reloading, 1, 9).as_deref(),
            Some("STATUS=reloading, 1 of 1 workers serving")
        );
        assert!(a
            .next(view(1, 1), 1, 9)
            .unwrap()
            .starts_with("READY=1\nMAINPID=9"));
    }

    #[test]
    fn stopping_is_said_once_from_any_state_and_is_the_last_word() {
        for before in [view(0, 2), view(2, 2)] {
            let mut a = Announcer::default();
            a.next(before, 1, 9);
            let stopping = View {
                stopping: true,
                ..before
            };
            assert_eq!(
                a.next(stopping, 1, 9).as_deref(),
                Some("STOPPING=1\nSTATUS=stopping")
            );
            assert_eq!(
                a.next(
                    View {
                        serving: 0,
                        ..stopping
                    },
                    1,
                    9
                ),
                None
            );
        }
    }
}
