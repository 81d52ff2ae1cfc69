//! gunicorn's `get_backlog`: the connections waiting in a TCP listen
//! socket's accept queue, which Linux reports as `tcpi_unacked` of
//! `TCP_INFO` on a listening socket. One getsockopt per listener per flush.
//! Unix listeners have no such figure and, as in gunicorn, are left out.

use std::os::fd::RawFd;

use nix::libc;

/// The kernel's TCP_LISTEN state (include/net/tcp_states.h).
const TCP_LISTEN: u8 = 10;

/// The accept-queue length of the listening socket `fd`; `None` when it
/// is not (or no longer) a listening TCP socket. The fd is borrowed, not
/// owned: a master that closed its listeners makes this `None`, and the
/// state check keeps a number reused by another socket from being read as
/// a listener.
pub fn accept_queue(fd: RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` outlive the call and `len` is `info`'s size;
    // a stale or foreign fd only makes the call fail.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then_some(u64::from(info.tcpi_unacked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn unaccepted_connections_are_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(accept_queue(listener.as_raw_fd()), Some(0));
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // The handshakes complete in the kernel before connect returns.
        assert_eq!(accept_queue(listener.as_raw_fd()), Some(3));
        let _first = listener.accept().unwrap();
        assert_eq!(accept_queue(listener.as_raw_fd()), Some(2));
        // A connected socket is not a listener.
        assert_eq!(accept_queue(clients[0].as_raw_fd()), None);
        drop(clients);
    }
}
