//! Listeners the master inherits already bound and listening, from systemd
//! socket activation (`LISTEN_FDS`) or `--bind fd://N`, as gunicorn's
//! `create_sockets`: the family comes from `getsockname`, not from the
//! configuration. Binding addresses is `listener.rs`'s job.
//!
//! As gunicorn's `BaseSocket.set_options`, an inherited socket gets
//! `listen(--backlog)` again: whoever bound it (a test, a supervisor,
//! Rust's std with its fixed 128) chose a backlog without knowing ours.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};
use tokio::net::{TcpListener, UnixListener};

use super::listener::{BindError, Listener, UnixPath};

/// Takes over the listening stream socket `fd`, with `backlog` as its
/// listen backlog from now on. Each fd must be given at most once: the
/// listener owns it and closes it when dropped.
pub fn inherit(fd: RawFd, backlog: u32) -> Result<Listener, BindError> {
    let fail = |reason: String| BindError {
        addr: format!("fd://{fd}"),
        reason,
    };
    if fd < 0 || fcntl(fd_ref(fd), FcntlArg::F_GETFD).is_err() {
        return Err(fail("no such open file descriptor".into()));
    }
    let borrowed = fd_ref(fd);
    let kind = getsockopt(&borrowed, sockopt::SockType)
        .map_err(|e| fail(format!("not a socket ({e})")))?;
    if kind != SockType::Stream {
        return Err(fail(format!("not a stream socket ({kind:?})")));
    }
    let listening = getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false);
    if !listening {
        return Err(fail(
            "the socket is not listening (call listen() on it first)".into(),
        ));
    }
    let address: SockaddrStorage =
        getsockname(fd).map_err(|e| fail(format!("cannot read its address ({e})")))?;
    super::listener::set_backlog(borrowed, backlog).map_err(|e| fail(e.to_string()))?;
    // As sd_listen_fds: the workers and the fork server must not inherit it.
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| fail(e.to_string()))?;
    // SAFETY: fd is an open socket (checked above) that nothing else in
    // this process owns: it was inherited, and callers pass each fd once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match address.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let listener = std::net::TcpListener::from(owned);
            listener
                .set_nonblocking(true)
                .map_err(|e| fail(e.to_string()))?;
            Ok(Listener::Tcp(
                TcpListener::from_std(listener).map_err(|e| fail(e.to_string()))?,
            ))
        }
        Some(AddressFamily::Unix) => {
            let unix = address.as_unix_addr();
            let path = match (
                unix.and_then(|u| u.path()),
                unix.and_then(|u| u.as_abstract()),
            ) {
                (Some(path), _) => path.to_path_buf(),
                (None, Some(name)) => PathBuf::from(format!("@{}", String::from_utf8_lossy(name))),
                (None, None) => PathBuf::from(format!("fd://{fd}")),
            };
            let listener = std::os::unix::net::UnixListener::from(owned);
            listener
                .set_nonblocking(true)
                .map_err(|e| fail(e.to_string()))?;
            // Not ours to remove at exit: whoever bound it (systemd) owns the file.
            Ok(Listener::Unix(
                UnixListener::from_std(listener).map_err(|e| fail(e.to_string()))?,
                UnixPath::borrowed(path),
            ))
        }
        family => Err(fail(format!("unsupported address family {family:?}"))),
    }
}

fn fd_ref(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only used for fcntl/getsockopt on an fd the caller names;
    // a closed fd makes those calls fail with EBADF, nothing worse.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[tokio::test]
    async fn a_listening_tcp_socket_is_taken_over_with_its_address() {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let listener = inherit(std.into_raw_fd(), 16).unwrap();
        assert_eq!(listener.url(), format!("http://{addr}"));
    }

    /// The bound of a listening TCP socket's accept queue, which Linux
    /// reports as `tcpi_sacked` of `TCP_INFO`.
    fn max_backlog(listener: &Listener) -> u32 {
        let Listener::Tcp(tcp) = listener else {
            unreachable!("a TCP listener")
        };
        // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
        let mut info: nix::libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<nix::libc::tcp_info>() as nix::libc::socklen_t;
        // SAFETY: `info` and `len` outlive the call and `len` is its size.
        let rc = unsafe {
            nix::libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(tcp),
                nix::libc::IPPROTO_TCP,
                nix::libc::TCP_INFO,
                (&mut info as *mut nix::libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO");
        info.tcpi_sacked
    }

    #[tokio::test]
    async fn an_inherited_socket_listens_with_our_backlog_not_its_binders() {
        // Rust's std listens with 128; 200 clients at once would overflow it.
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = inherit(std.into_raw_fd(), 1000).unwrap();
        assert_eq!(max_backlog(&listener), 1000);
    }

    #[tokio::test]
    async fn a_unix_socket_keeps_its_path_and_the_file_stays_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let std = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = inherit(std.into_raw_fd(), 16).unwrap();
        assert_eq!(listener.url(), format!("unix:{}", path.display()));
        drop(listener);
        assert!(
            path.exists(),
            "an inherited socket's file belongs to who bound it"
        );
    }

    #[test]
    fn anything_but_a_listening_stream_socket_is_refused_with_the_reason() {
        let file = tempfile::tempfile().unwrap();
        let err = inherit(std::os::fd::AsRawFd::as_raw_fd(&file), 16).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = inherit(std::os::fd::AsRawFd::as_raw_fd(&udp), 16).unwrap_err();
        assert!(err.to_string().contains("not a stream socket"), "{err}");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = inherit(std::os::fd::AsRawFd::as_raw_fd(&a), 16).unwrap_err();
        assert!(err.to_string().contains("not listening"), "{err}");
        let err = inherit(987_654, 16).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot listen on fd://987654: no such open file descriptor"
        );
    }
}
