//! One fork server process as the master sees it: started as a fresh
//! interpreter, its boot on a `SOCK_SEQPACKET` control socket (HELLO, then
//! READY or BOOT_FAILED), then one FORK message per worker, answered by
//! FORKED with the worker's pid or FORK_FAILED. A seqpacket socket keeps
//! each FORK and the descriptors riding with it together, so the fork
//! server never has to find message boundaries. docs/protocol.md has the
//! messages and the failure rules.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;

use crate::protocol::frame::{self, flags, Frame, Kind, MAX_PAYLOAD, PROTOCOL_VERSION};
use crate::worker::reap::Reaper;
use crate::worker::spawn::{self, SpawnError, SpawnSpec, WorkerEnds};
use crate::worker::ExitStatus;
use crate::worker::WorkerId;

/// A message larger than this from the fork server breaks the protocol
/// (its largest is BOOT_FAILED with a traceback, cut to this size).
const RECV_LIMIT: usize = 64 * 1024;

/// Set once a fork server of this master got ready: only the first runs the
/// `on_starting` hook, as gunicorn runs it once per master (docs/hooks.md).
static ONE_WAS_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs no `on_starting` in the fork servers started from now on
/// (`--check-config`: gunicorn runs it only when it serves).
pub fn skip_on_starting() {
    ONE_WAS_READY.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// What the fork server says about itself.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ForkServerHello {
    /// Its pid.
    pub pid: u32,
    /// Its protocol version.
    pub protocol: u32,
    /// Its Python version.
    pub python: String,
    /// Whether it imports the app before forking.
    pub preload: bool,
    /// Its frame payload limit.
    pub max_payload: usize,
}

/// Why a fork server did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The interpreter could not be executed.
    #[error(transparent)]
    Exec(#[from] SpawnError),
    /// `--preload`: the app could not be imported; the text holds the Python error.
    #[error("app failed to load: {0}")]
    AppLoad(String),
    /// The server hooks config failed to run, or `on_starting` raised
    /// (BOOT_FAILED with CONFIG); the next try would fail the same way.
    #[error("{0}")]
    Config(String),
    /// It failed, died, broke the protocol or took too long.
    #[error("fork server failed to start: {0}")]
    Failed(String),
}

/// Why no worker came out of a FORK.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The fork server could not fork (it said why) and serves on.
    #[error("the fork server could not fork a worker: {0}")]
    Refused(String),
    /// The FORK never reached it: it is gone, and the descriptors are unused.
    #[error("the fork server is gone")]
    NotSent,
    /// It went away after the FORK was sent: a worker may or may not exist.
    #[error("the fork server died while forking a worker ({0})")]
    Lost(String),
}

/// A running, ready fork server.
#[derive(Debug)]
pub struct ForkServer {
    /// Its pid.
    pub pid: u32,
    socket: AsyncFd<OwnedFd>,
    exited: oneshot::Receiver<ExitStatus>,
}

impl ForkServer {
    /// Starts a fork server for `spec` and waits, up to `timeout`, until it
    /// is ready: with `spec.preload`, the app is imported by then.
    pub async fn start(
        spec: &SpawnSpec,
        timeout: Duration,
        stderr: Stdio,
        reaper: &Reaper,
    ) -> Result<ForkServer, StartError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| SpawnError::Sockets(e.into()))?;
        // The fork server blocks on its end.
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .map_err(|e| SpawnError::Sockets(e.into()))?;
        let mut env = spawn::shared_env(spec);
        env.push((
            "FERROCORN_FORKSERVER_CONTROL_FD".into(),
            theirs.as_raw_fd().to_string(),
        ));
        env.push((
            "FERROCORN_FORKSERVER_PRELOAD".into(),
            if spec.preload { "1" } else { "0" }.into(),
        ));
        if !ONE_WAS_READY.load(std::sync::atomic::Ordering::Relaxed) {
            env.push(("FERROCORN_FORKSERVER_FIRST".into(), "1".into()));
        }
        let pid = spawn::start_python(
            &spec.python,
            spec.chdir.as_deref(),
            &["ferrocorn-forkserver".to_string()],
            &env,
            &[theirs.as_raw_fd()],
            stderr,
        )?;
        drop(theirs);
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
        // and the same for its whole life.
        let socket = unsafe { AsyncFd::register(ours) }
            .map_err(|e| StartError::Failed(std::io::Error::from(e).to_string()))?;
        let mut server = ForkServer {
            pid,
            socket,
            exited: reaper.watch(pid),
        };
        match tokio::time::timeout(timeout, server.boot()).await {
            Ok(Ok(())) => {
                ONE_WAS_READY.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(server)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => {
                server.kill();
                Err(StartError::Failed(format!("not ready within {timeout:?}")))
            }
        }
    }

    async fn boot(&mut self) -> Result<(), StartError> {
        let hello = self.expect(Kind::Hello).await?;
        let hello = check_hello(&hello.payload)?;
        if hello.pid != self.pid {
            return Err(StartError::Failed(format!(
                "it says its pid is {}, but it was started as {}",
                hello.pid, self.pid
            )));
        }
        self.expect(Kind::Ready).await?;
        Ok(())
    }

    async fn expect(&mut self, kind: Kind) -> Result<Frame, StartError> {
        let frame = self
            .recv()
            .await
            .map_err(|e| StartError::Failed(e.to_string()))?;
        match frame.kind {
            k if k == kind => Ok(frame),
            Kind::BootFailed => {
                let text = String::from_utf8_lossy(&frame.payload).trim().to_string();
                if frame.flags & flags::APP_LOAD != 0 {
                    Err(StartError::AppLoad(text))
                } else if frame.flags & flags::CONFIG != 0 {
                    Err(StartError::Config(text))
                } else {
                    Err(StartError::Failed(text))
                }
            }
            other => Err(StartError::Failed(format!(
                "it sent {other:?} during its boot"
            ))),
        }
    }

    /// Forks worker `worker` onto `ends`; returns its pid. The worker is
    /// the master's child: the fork server forks it through a middle
    /// process that exits at once, and the master, a child subreaper,
    /// adopts it.
    pub async fn fork(&mut self, worker: WorkerId, ends: &WorkerEnds) -> Result<u32, ForkError> {
        let request = serde_json::json!({
            "worker": worker.0,
            "lanes": ends.lanes.len(),
            "ring_size": ends.ring_size(),
            "cpu": ends.cpu,
        });
        let mut message = BytesMut::new();
        frame::put_frame(&mut message, Kind::Fork, 0, request.to_string().as_bytes());
        self.send(&message, &ends.raw_fds())
            .await
            .map_err(|_| ForkError::NotSent)?;
        let reply = loop {
            let reply = self
                .recv()
                .await
                .map_err(|e| ForkError::Lost(e.to_string()))?;
            // A PRE_EXEC answer that came after the master stopped waiting.
            if reply.kind != Kind::PreExec {
                break reply;
            }
        };
        #[derive(Deserialize)]
        struct Reply {
            worker: u64,
            pid: Option<u32>,
            error: Option<String>,
        }
        let parsed: Reply = serde_json::from_slice(&reply.payload)
            .map_err(|e| ForkError::Lost(format!("unreadable answer: {e}")))?;
        if parsed.worker != worker.0 {
            return Err(ForkError::Lost(format!(
                "it answered for worker {} instead of {worker}",
                parsed.worker
            )));
        }
        match (reply.kind, parsed.pid, parsed.error) {
            (Kind::Forked, Some(pid), _) => Ok(pid),
            (Kind::ForkFailed, _, error) => Err(ForkError::Refused(error.unwrap_or_default())),
            (kind, _, _) => Err(ForkError::Lost(format!("it answered a FORK with {kind:?}"))),
        }
    }

    /// Hands it the reopened error log (USR1), so the workers it forks
    /// from now on write there.
    pub async fn reopen_log(&mut self, file: &std::fs::File) -> std::io::Result<()> {
        let mut message = BytesMut::new();
        frame::put_header(&mut message, Kind::ReopenLog, 0, 0);
        self.send(&message, &[file.as_raw_fd()]).await
    }

    /// Tells it to run a server hook on the master's behalf (WHEN_READY,
    /// CHILD_EXIT, NWORKERS_CHANGED, ON_RELOAD, ON_EXIT): one message, JSON
    /// payload, no answer (docs/hooks.md).
    pub async fn notify(&mut self, kind: Kind, payload: &serde_json::Value) -> std::io::Result<()> {
        let mut message = BytesMut::new();
        frame::put_frame(&mut message, kind, 0, payload.to_string().as_bytes());
        self.send(&message, &[]).await
    }

    /// Runs the `pre_exec` server hook there (USR2) and waits for its
    /// answer at most `wait`.
    ///
    /// # Errors
    /// The message cannot be sent, the fork server is gone, or the wait passed.
    pub async fn pre_exec(&mut self, wait: Duration) -> std::io::Result<()> {
        self.notify(Kind::PreExec, &serde_json::json!({})).await?;
        let answered = async {
            loop {
                if self.recv().await?.kind == Kind::PreExec {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(wait, answered)
            .await
            .map_err(|_| std::io::Error::other(format!("no answer within {wait:?}")))?
    }

    /// Resolves when the process exits.
    pub async fn exited(&mut self) -> ExitStatus {
        (&mut self.exited).await.unwrap_or(ExitStatus::Code(-1))
    }

    /// Ends it now; running workers are not affected.
    pub fn kill(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    async fn send(&self, message: &[u8], fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        self.socket
            .async_io(Interest::WRITABLE, |fd| {
                sendmsg::<()>(
                    fd.as_raw_fd(),
                    &[IoSlice::new(message)],
                    cmsgs,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            })
            .await
            .map(|_| ())
    }

    /// The next message as a frame; EOF (the fork server is gone) and a
    /// message that is not one whole valid frame are errors.
    async fn recv(&mut self) -> std::io::Result<Frame> {
        let mut buf = vec![0u8; RECV_LIMIT];
        let n = tokio::select! {
            n = self.socket.async_io(Interest::READABLE, |fd| {
                nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
                    .map_err(std::io::Error::from)
            }) => n?,
            status = &mut self.exited => {
                let status = status.map_or("unknown status".to_string(), |s| s.to_string());
                return Err(std::io::Error::other(format!("it exited ({status})")));
            }
        };
        if n == 0 {
            return Err(std::io::Error::other("it closed its control socket"));
        }
        let mut bytes = BytesMut::from(&buf[..n]);
        match frame::decode(&mut bytes) {
            Ok(Some(frame)) if bytes.is_empty() => Ok(frame),
            Ok(_) => Err(std::io::Error::other(
                "it sent a message that is not one whole frame",
            )),
            Err(err) => Err(std::io::Error::other(format!(
                "it broke the protocol: {err}"
            ))),
        }
    }
}

/// Parses a fork server's HELLO and checks it against this master.
pub fn check_hello(payload: &Bytes) -> Result<ForkServerHello, StartError> {
    let hello: ForkServerHello = serde_json::from_slice(payload)
        .map_err(|e| StartError::Failed(format!("unreadable hello: {e}")))?;
    if hello.protocol != PROTOCOL_VERSION {
        return Err(StartError::Failed(format!(
            "it speaks protocol {}, the master speaks {PROTOCOL_VERSION}: the worker program does not match this binary",
            hello.protocol
        )));
    }
    if hello.max_payload != MAX_PAYLOAD {
        return Err(StartError::Failed(format!(
            "its max_payload is {}, the master's is {MAX_PAYLOAD}",
            hello.max_payload
        )));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_must_match_this_master() {
        let hello = |protocol: u32, max: usize| {
            Bytes::from(format!(
                r#"{{"pid": 9, "protocol": {protocol}, "python": "3.11.7", "preload": true, "max_payload": {max}}}"#
            ))
        };
        let ok = check_hello(&hello(PROTOCOL_VERSION, MAX_PAYLOAD)).unwrap();
        assert!(ok.preload);
        assert_eq!(ok.pid, 9);
        let err = check_hello(&hello(1, MAX_PAYLOAD)).unwrap_err().to_string();
        assert!(err.contains("protocol 1"), "{err}");
        let err = check_hello(&hello(PROTOCOL_VERSION, 7))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_payload is 7"), "{err}");
        assert!(check_hello(&Bytes::from_static(b"{")).is_err());
    }
}
