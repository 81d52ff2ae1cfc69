//! Frames the master sends on a worker's control socket after its boot
//! (REOPEN_LOG with the new log's descriptor, DUMP_STACKS): one `sendmsg`
//! each, never blocking the master's loop.

use tokio::net::UnixStream;

use super::frame::{self, Kind};

/// One control frame, with `file`'s descriptor when given (SCM_RIGHTS). The
/// control socket carries little from the master, so its buffer has room.
pub fn send(control: &UnixStream, kind: Kind, file: Option<&std::fs::File>) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut frame = bytes::BytesMut::new();
    frame::put_header(&mut frame, kind, 0, 0);
    let fds = file.map(|f| [f.as_raw_fd()]);
    let rights = fds.as_ref().map(|fds| ControlMessage::ScmRights(fds));
    sendmsg::<()>(
        control.as_raw_fd(),
        &[std::io::IoSlice::new(&frame)],
        rights.as_slice(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}
