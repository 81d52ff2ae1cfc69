//! Binding the listeners, before any worker starts, so the port is open for
//! the server's whole life and workers can be replaced behind it. Sockets
//! inherited already listening (systemd, `fd://N`) come from `inherited.rs`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

use tokio::net::{TcpListener, TcpSocket, UnixListener};

use crate::config::BindAddr;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP, v4 or v6.
    Tcp(TcpListener),
    /// A Unix socket and its path (removed at exit if we bound it).
    Unix(UnixListener, UnixPath),
}

/// A Unix listener's path, and whether its file is ours to remove at exit.
#[derive(Debug)]
pub struct UnixPath {
    path: PathBuf,
    owned: bool,
}

impl UnixPath {
    /// The path of a socket someone else bound (systemd): left in place at exit.
    pub fn borrowed(path: PathBuf) -> UnixPath {
        UnixPath { path, owned: false }
    }

    /// For printing.
    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

impl Listener {
    /// Its socket's fd (passed on to a USR2 new master).
    pub fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// The address clients connect to, e.g. `http://127.0.0.1:8000`.
    pub fn url(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("http://{addr}"),
                Err(_) => "http://?".to_string(),
            },
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// While a USR2 new master serves on our sockets, a Unix socket's file is
/// its too: ours must not be removed at exit (gunicorn's `unlink` rule in
/// `Arbiter.stop`).
static KEEP_SOCKET_FILES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether listeners dropped from now on leave their socket files.
pub fn keep_socket_files(keep: bool) {
    KEEP_SOCKET_FILES.store(keep, std::sync::atomic::Ordering::Relaxed);
}

impl Drop for Listener {
    fn drop(&mut self) {
        if KEEP_SOCKET_FILES.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Listener::Unix(_, UnixPath { path, owned: true }) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {reason}")]
pub struct BindError {
    /// The address as configured.
    pub addr: String,
    /// Why.
    pub reason: String,
}

/// The listeners to serve on. As gunicorn's `create_sockets`: when there
/// are inherited sockets (`fd://N` binds, systemd's `activated` fds), they
/// are the listeners and the address binds are not bound; otherwise every
/// address is bound with the given backlog.
pub fn open_all(
    addrs: &[BindAddr],
    backlog: u32,
    reuse_port: bool,
    activated: &[RawFd],
) -> Result<Vec<Listener>, BindError> {
    let mut fds: Vec<RawFd> = addrs
        .iter()
        .filter_map(|addr| match addr {
            BindAddr::Fd(fd) => Some(*fd),
            _ => None,
        })
        .chain(activated.iter().copied())
        .collect();
    if fds.is_empty() {
        return bind_all(addrs, backlog, reuse_port);
    }
    // An fd named twice (`-b fd://3` under socket activation) is one socket.
    let mut seen = std::collections::HashSet::new();
    fds.retain(|fd| seen.insert(*fd));
    let ignored: Vec<String> = addrs
        .iter()
        .filter(|addr| !matches!(addr, BindAddr::Fd(_)))
        .map(ToString::to_string)
        .collect();
    if !ignored.is_empty() {
        tracing::debug!(ignored = %ignored.join(","), "inherited sockets replace the bind addresses");
    }
    fds.into_iter()
        .map(|fd| super::inherited::inherit(fd, backlog))
        .collect()
}

/// Binds every configured address with the given listen backlog; with
/// `reuse_port` (gunicorn's `--reuse-port`), TCP sockets get SO_REUSEPORT.
pub fn bind_all(
    addrs: &[BindAddr],
    backlog: u32,
    reuse_port: bool,
) -> Result<Vec<Listener>, BindError> {
    addrs
        .iter()
        .map(|addr| bind(addr, backlog, reuse_port))
        .collect()
}

fn bind(addr: &BindAddr, backlog: u32, reuse_port: bool) -> Result<Listener, BindError> {
    let fail = |reason: String| BindError {
        addr: addr.to_string(),
        reason,
    };
    match addr {
        BindAddr::Tcp { host, port } => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let resolved: SocketAddr = (host, *port)
                .to_socket_addrs()
                .map_err(|e| fail(e.to_string()))?
                .next()
                .ok_or_else(|| fail("the host name has no address".into()))?;
            let socket = if resolved.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|e| fail(e.to_string()))?;
            // Restarting the server must not wait out TIME_WAIT.
            socket
                .set_reuseaddr(true)
                .map_err(|e| fail(e.to_string()))?;
            socket.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
            if reuse_port {
                socket
                    .set_reuseport(true)
                    .map_err(|e| fail(e.to_string()))?;
            }
            socket.bind(resolved).map_err(|e| fail(e.to_string()))?;
            let listener = socket.listen(backlog).map_err(|e| fail(e.to_string()))?;
            Ok(Listener::Tcp(listener))
        }
        BindAddr::Unix(path) => {
            // A stale socket file from a killed server would block the bind.
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
            // tokio listens with a fixed backlog; gunicorn's applies to Unix sockets too.
            set_backlog(listener.as_fd(), backlog).map_err(|e| fail(e.to_string()))?;
            Ok(Listener::Unix(
                listener,
                UnixPath {
                    path: path.clone(),
                    owned: true,
                },
            ))
        }
        BindAddr::Fd(fd) => super::inherited::inherit(*fd, backlog),
    }
}

/// Calls listen(2) on a socket that may already listen: on Linux that sets
/// the accept queue's bound to `backlog` (capped by `net.core.somaxconn`).
/// The value goes to the kernel unchanged, as `TcpSocket::listen` passes
/// it (nix's `Backlog` refuses more than the compiled-in SOMAXCONN, which a
/// raised sysctl allows).
pub fn set_backlog(socket: BorrowedFd<'_>, backlog: u32) -> nix::Result<()> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen(2) on a descriptor the borrow keeps open; no memory is passed.
    let rc = unsafe { nix::libc::listen(socket.as_raw_fd(), backlog) };
    nix::errno::Errno::result(rc).map(drop)
}

/// gunicorn's `UnixSocket.bind` for the Unix sockets ferrocorn bound (not
/// inherited ones): mode `0o777 & !umask` (gunicorn's umask defaults to 0,
/// so a proxy running as another user can connect) and owner `owner`
/// (`--user`, `--group`; `None` keeps that part). gunicorn sets its umask
/// around bind(2); a chmod after it gives the same mode without changing
/// the master's umask, which its other threads share, and no client can
/// connect in between: the socket is not yet accepting.
pub fn set_unix_access(
    listeners: &[Listener],
    umask: u32,
    owner: (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>),
) -> Result<(), BindError> {
    use std::os::unix::fs::PermissionsExt;
    for listener in listeners {
        let Listener::Unix(_, UnixPath { path, owned: true }) = listener else {
            continue;
        };
        let fail = |reason: String| BindError {
            addr: format!("unix:{}", path.display()),
            reason,
        };
        let mode = std::fs::Permissions::from_mode(0o777 & !umask);
        std::fs::set_permissions(path, mode)
            .map_err(|e| fail(format!("cannot set the socket's mode: {e}")))?;
        if owner.0.is_some() || owner.1.is_some() {
            nix::unistd::chown(path, owner.0, owner.1)
                .map_err(|e| fail(format!("cannot give the socket to --user/--group: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> BindAddr {
        BindAddr::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        }
    }

    fn port_of(listener: &Listener) -> u16 {
        match listener {
            Listener::Tcp(l) => l.local_addr().expect("bound").port(),
            Listener::Unix(..) => unreachable!("a TCP address was bound"),
        }
    }

    #[tokio::test]
    async fn a_bound_unix_socket_gets_0777_less_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        let mode = |path: &std::path::Path| {
            std::fs::metadata(path)
                .expect("socket")
                .permissions()
                .mode()
                & 0o777
        };
        let ours = bind_all(&[BindAddr::Unix(path.clone())], 16, false).expect("binds");
        set_unix_access(&ours, 0, (None, None)).expect("chmod");
        assert_eq!(mode(&path), 0o777);
        set_unix_access(&ours, 0o77, (None, None)).expect("chmod");
        assert_eq!(mode(&path), 0o700);
        // Someone else's socket (systemd's) keeps its mode.
        let theirs = [Listener::Unix(
            UnixListener::bind(dir.path().join("t.sock")).expect("binds"),
            UnixPath::borrowed(dir.path().join("t.sock")),
        )];
        let before = mode(&dir.path().join("t.sock"));
        set_unix_access(&theirs, 0o777, (None, None)).expect("nothing to do");
        assert_eq!(mode(&dir.path().join("t.sock")), before);
    }

    #[tokio::test]
    async fn a_bound_unix_socket_queues_only_its_backlog() {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sock");
        let _ours = bind_all(&[BindAddr::Unix(path.clone())], 1, false).expect("binds");
        let addr = UnixAddr::new(&path).expect("a short path");
        // Nothing accepts: a non-blocking connect past the backlog fails at
        // once (Linux queues backlog + 1), where tokio's own 1024 takes all.
        let queued = (0..10)
            .map(|_| {
                let fd = socket(
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK,
                    None,
                )
                .expect("socket");
                (connect(fd.as_raw_fd(), &addr).is_ok(), fd)
            })
            .filter(|(connected, _)| *connected)
            .count();
        assert!((1..=2).contains(&queued), "{queued} connections queued");
    }

    #[tokio::test]
    async fn reuse_port_lets_a_second_socket_bind_the_same_port() {
        let ours = bind_all(&[loopback()], 16, true).expect("binds");
        let port = port_of(&ours[0]);
        let other = TcpSocket::new_v4().expect("socket");
        other.set_reuseport(true).expect("SO_REUSEPORT");
        other
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("the port is shared");
    }

    #[tokio::test]
    async fn without_reuse_port_the_port_is_ours_alone() {
        let ours = bind_all(&[loopback()], 16, false).expect("binds");
        let port = port_of(&ours[0]);
        let other = TcpSocket::new_v4().expect("socket");
        other.set_reuseport(true).expect("SO_REUSEPORT");
        let bound = other.bind(SocketAddr::from(([127, 0, 0, 1], port)));
        let _ = bound.expect_err("the port is taken");
    }
}
