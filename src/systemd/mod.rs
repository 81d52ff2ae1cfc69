//! systemd integration, as gunicorn's `systemd.py` and systemd's
//! `sd_listen_fds(3)` / `sd_notify(3)`: what the service manager says in
//! the environment ([`Environment`]), the state messages it wants
//! (`announce.rs`, pure: when to say what) and the datagrams that carry them
//! (`notify.rs`). The listeners made from inherited fds are the HTTP
//! front's (`http/inherited.rs`); the master loop asks for the messages.

pub mod announce;
pub mod notify;

use std::os::fd::RawFd;
use std::time::Duration;

pub use notify::{Notifier, NotifyAddr};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Every variable systemd sets for its service; removed from the master's
/// environment once read, so the fork server and workers do not see them
/// (they must not notify, nor take the listeners for theirs).
pub const VARIABLES: [&str; 6] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What systemd told this process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Listening sockets from socket activation (LISTEN_FDS, when
    /// LISTEN_PID is this process).
    pub listen_fds: Vec<RawFd>,
    /// Where to send state messages (NOTIFY_SOCKET).
    pub notify: Option<NotifyAddr>,
    /// How often systemd wants `WATCHDOG=1` at the latest (WATCHDOG_USEC,
    /// when WATCHDOG_PID is unset or this process).
    pub watchdog: Option<Duration>,
    /// Values that could not be used, to log once logging is up.
    pub warnings: Vec<String>,
}

/// A variable that makes the start impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} from the environment is not valid: expected {expected}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

impl Environment {
    /// Reads systemd's variables through `get`, for the process `pid`.
    ///
    /// # Errors
    /// A LISTEN_PID or LISTEN_FDS that is not a number: the sockets meant
    /// for us cannot be found, so serving would listen on the wrong ones.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        pid: u32,
    ) -> Result<Environment, EnvError> {
        let mut env = Environment::default();
        if let Some(listen_pid) = get("LISTEN_PID") {
            let listen_pid = parse_number::<u32>("LISTEN_PID", &listen_pid, "a process id")?;
            // As sd_listen_fds: the fds are for the process systemd started,
            // not for whatever it exec'd or forked later.
            if listen_pid == pid {
                let count = get("LISTEN_FDS").unwrap_or_default();
                let count = parse_number::<RawFd>("LISTEN_FDS", &count, "a number of sockets")?;
                env.listen_fds =
                    (LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count)).collect();
            }
        }
        if let Some(text) = get("NOTIFY_SOCKET") {
            match text.parse::<NotifyAddr>() {
                Ok(addr) => env.notify = Some(addr),
                Err(why) => env.warnings.push(format!(
                    "NOTIFY_SOCKET={text:?} is not used ({why}); systemd is not told the state"
                )),
            }
        }
        let watchdog_pid = get("WATCHDOG_PID");
        let for_us = watchdog_pid
            .as_deref()
            .is_none_or(|p| p.trim() == pid.to_string());
        if let (Some(text), true) = (get("WATCHDOG_USEC"), for_us) {
            match text.trim().parse::<u64>() {
                Ok(usec) if usec > 0 => env.watchdog = Some(Duration::from_micros(usec)),
                _ => env.warnings.push(format!(
                    "WATCHDOG_USEC={text:?} is not a positive number of microseconds; no watchdog pings"
                )),
            }
        }
        Ok(env)
    }

    /// Reads the process environment, then removes systemd's variables from
    /// it. Call before any thread starts (changing the environment is not
    /// thread-safe) and before any child is spawned.
    ///
    /// # Errors
    /// As [`Environment::from_vars`].
    pub fn take() -> Result<Environment, EnvError> {
        let env = Environment::from_vars(|name| std::env::var(name).ok(), std::process::id());
        // sd_listen_fds(unset_environment=1) unsets them whether or not they were ours.
        for name in VARIABLES {
            std::env::remove_var(name);
        }
        env
    }

    /// The period of the `WATCHDOG=1` pings: half systemd's timeout, as
    /// sd_watchdog_enabled(3) advises. None without a notify socket.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.notify.as_ref()?;
        self.watchdog.map(|timeout| timeout / 2)
    }
}

fn parse_number<T: std::str::FromStr>(
    name: &'static str,
    text: &str,
    expected: &'static str,
) -> Result<T, EnvError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EnvError {
            name,
            value: text.to_string(),
            expected,
        });
    }
    trimmed.parse().map_err(|_| EnvError {
        name,
        value: text.to_string(),
        expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)], pid: u32) -> Result<Environment, EnvError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Environment::from_vars(
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            pid,
        )
    }

    #[test]
    fn listen_fds_count_from_3_only_when_listen_pid_is_ours() {
        let ours = env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "2")], 42).unwrap();
        assert_eq!(ours.listen_fds, [3, 4]);
        let theirs = env(&[("LISTEN_PID", "41"), ("LISTEN_FDS", "2")], 42).unwrap();
        assert_eq!(theirs.listen_fds, Vec::<RawFd>::new());
        let no_pid = env(&[("LISTEN_FDS", "2")], 42).unwrap();
        assert_eq!(no_pid.listen_fds, Vec::<RawFd>::new());
        assert_eq!(
            env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "0")], 42)
                .unwrap()
                .listen_fds,
            Vec::<RawFd>::new()
        );
        assert_eq!(env(&[], 42), Ok(Environment::default()));
    }

    #[test]
    fn a_listen_variable_that_is_not_a_number_stops_the_start_naming_it() {
        let err = env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "two")], 42).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LISTEN_FDS=\"two\" from the environment is not valid: expected a number of sockets"
        );
        assert_eq!(
            env(&[("LISTEN_PID", "-1")], 42).unwrap_err().name,
            "LISTEN_PID"
        );
        assert_eq!(
            env(&[("LISTEN_PID", "42")], 42).unwrap_err().name,
            "LISTEN_FDS"
        );
    }

    #[test]
    fn the_watchdog_is_ours_when_watchdog_pid_is_unset_or_ours_and_pings_at_half_the_timeout() {
        let notify = ("NOTIFY_SOCKET", "/run/systemd/notify");
        let unset = env(&[notify, ("WATCHDOG_USEC", "200000")], 42).unwrap();
        assert_eq!(unset.watchdog, Some(Duration::from_millis(200)));
        assert_eq!(unset.watchdog_period(), Some(Duration::from_millis(100)));
        let ours = env(
            &[notify, ("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "42")],
            42,
        )
        .unwrap();
        assert_eq!(ours.watchdog, Some(Duration::from_millis(200)));
        let theirs = env(
            &[notify, ("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "7")],
            42,
        )
        .unwrap();
        assert_eq!(theirs.watchdog, None);
        let no_socket = env(&[("WATCHDOG_USEC", "200000")], 42).unwrap();
        assert_eq!(no_socket.watchdog_period(), None);
        let bad = env(&[notify, ("WATCHDOG_USEC", "0")], 42).unwrap();
        assert_eq!((bad.watchdog, bad.warnings.len()), (None, 1));
    }

    #[test]
    fn an_unusable_notify_socket_is_a_warning_not_an_error() {
        let bad = env(&[("NOTIFY_SOCKET", "relative/path")], 42).unwrap();
        assert_eq!(bad.notify, None);
        assert!(
            bad.warnings[0].starts_with("NOTIFY_SOCKET=\"relative/path\" is not used"),
            "{:?}",
            bad.warnings
        );
        let good = env(&[("NOTIFY_SOCKET", "@ferrocorn")], 42).unwrap();
        assert_eq!(
            good.notify,
            Some(NotifyAddr::Abstract(b"ferrocorn".to_vec()))
        );
    }
}
