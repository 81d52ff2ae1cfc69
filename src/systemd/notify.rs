//! sd_notify(3) written out: one datagram per message to NOTIFY_SOCKET (a
//! path, or `@name` in the abstract namespace). The master's loop calls
//! [`Notifier::update`] after each event and [`Notifier::watchdog`] on its
//! timer. A failure is logged once and never stops the server: systemd's
//! own sd_notify returns an error the caller may ignore.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::announce::{Announcer, View};
use super::Environment;

/// NOTIFY_SOCKET's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// An absolute path to a datagram socket.
    Path(PathBuf),
    /// `@name`: the abstract socket `\0name`.
    Abstract(Vec<u8>),
}

impl FromStr for NotifyAddr {
    type Err = &'static str;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.as_bytes() {
            [] => Err("it is empty"),
            [b'@', name @ ..] if !name.is_empty() => Ok(NotifyAddr::Abstract(name.to_vec())),
            [b'/', ..] => Ok(NotifyAddr::Path(PathBuf::from(text))),
            // systemd also knows vsock:CID:PORT (virtual machines).
            _ if text.starts_with("vsock:") => Err("vsock addresses are not supported"),
            _ => Err("expected an absolute path or @name"),
        }
    }
}

impl NotifyAddr {
    fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            NotifyAddr::Path(path) => SocketAddr::from_pathname(path),
            NotifyAddr::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
    }
}

/// Sends the master's state to systemd; does nothing without NOTIFY_SOCKET.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, NotifyAddr)>,
    announcer: Announcer,
    watchdog_period: Option<Duration>,
    /// A send failed and was logged: later failures are not.
    failed: bool,
}

impl Notifier {
    /// The notifier systemd's variables ask for; logs the ones it cannot use.
    pub fn from_env(env: &Environment) -> Notifier {
        for warning in &env.warnings {
            tracing::warn!("{warning}");
        }
        let mut notifier = Notifier::new(env.notify.clone());
        notifier.watchdog_period = env.watchdog_period();
        notifier
    }

    /// How often the loop must call [`Notifier::watchdog`], if at all.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog_period.filter(|_| self.is_enabled())
    }

    /// Connects nothing yet: a datagram socket is made once, and each
    /// message addressed to `addr`. Without `addr` every call is a no-op.
    pub fn new(addr: Option<NotifyAddr>) -> Notifier {
        let mut failed = false;
        let target = addr.and_then(|addr| {
            let made = UnixDatagram::unbound().and_then(|socket| {
                // A full queue at systemd must not block the master's loop.
                socket.set_nonblocking(true)?;
                Ok((socket, addr.socket_addr()?))
            });
            match made {
                Ok((socket, to)) => Some((socket, to, addr)),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot notify systemd at {addr:?}: {err}");
                    failed = true;
                    None
                }
            }
        });
        Notifier {
            target,
            announcer: Announcer::default(),
            watchdog_period: None,
            failed,
        }
    }

    /// Whether there is a socket to notify.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Tells systemd what changed in `view`, if anything did.
    pub fn update(&mut self, view: View) {
        if self.target.is_none() {
            return;
        }
        if let Some(message) = self
            .announcer
            .next(view, monotonic_usec(), std::process::id())
        {
            self.send(&message);
        }
    }

    /// `WATCHDOG=1`: the master's loop is alive.
    pub fn watchdog(&mut self) {
        self.send("WATCHDOG=1");
    }

    fn send(&mut self, message: &str) {
        let Some((socket, to, addr)) = &self.target else {
            return;
        };
        tracing::debug!(message, "notifying systemd");
        if let Err(err) = socket.send_to_addr(message.as_bytes(), to) {
            if !self.failed {
                self.failed = true;
                tracing::warn!(error = %err, "cannot notify systemd at {addr:?} ({err}); serving goes on, further failures are not logged");
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, systemd's clock for `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut now = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer;
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_addresses_are_absolute_paths_or_abstract_names() {
        assert_eq!(
            "/run/systemd/notify".parse(),
            Ok(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!("@sd".parse(), Ok(NotifyAddr::Abstract(b"sd".to_vec())));
        for bad in ["", "@", "run/notify", "vsock:2:999"] {
            assert!(bad.parse::<NotifyAddr>().is_err(), "{bad:?}");
        }
    }

    fn listening(addr: &NotifyAddr) -> UnixDatagram {
        let socket = match addr {
            NotifyAddr::Path(path) => UnixDatagram::bind(path).unwrap(),
            NotifyAddr::Abstract(name) => {
                UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap()
            }
        };
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("ferrocorn-test-{}", std::process::id());
        for addr in [
            NotifyAddr::Path(dir.path().join("notify")),
            NotifyAddr::Abstract(name.into_bytes()),
        ] {
            let systemd = listening(&addr);
            let mut notifier = Notifier::new(Some(addr));
            notifier.watchdog();
            assert_eq!(recv(&systemd), "WATCHDOG=1");
            notifier.update(View {
                serving: 1,
                desired: 1,
                reloading: false,
                stopping: false,
            });
            assert!(recv(&systemd).starts_with("READY=1\nMAINPID="));
        }
    }

    #[test]
    fn nobody_listening_is_logged_once_and_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut notifier = Notifier::new(Some(NotifyAddr::Path(dir.path().join("none"))));
        notifier.watchdog();
        notifier.watchdog();
        assert!(notifier.failed);
        let mut off = Notifier::new(None);
        off.watchdog();
        assert!(!off.is_enabled() && !off.failed);
    }
}
