//! A worker's boot, as the master sees it on the control socket: HELLO
//! (checked against this binary), then READY or BOOT_FAILED, all within the
//! boot timeout.

use std::time::Duration;

use tokio::net::UnixStream;

use crate::protocol::frame::{flags, Kind};
use crate::protocol::handshake::{check_hello, HandshakeError, Hello};
use crate::protocol::lane::{split, LaneError};

/// Why a worker did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The app could not be imported or found; the text holds the Python error.
    #[error("app failed to load: {0}")]
    AppLoad(String),
    /// The worker reported a failure of its own.
    #[error("worker failed to start: {0}")]
    Worker(String),
    /// The HELLO did not match this master.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The worker exited or broke the control socket before it was ready.
    #[error("worker exited before it was ready ({0})")]
    Died(LaneError),
    /// The worker sent a frame that does not belong in a boot.
    #[error("worker sent {0:?} during its boot")]
    Unexpected(Kind),
    /// Nothing within the boot timeout.
    #[error("worker was not ready within {0:?}")]
    Timeout(Duration),
}

impl BootError {
    /// Whether the fault is the app's (exit 4) rather than the worker's (exit 3).
    pub fn is_app_load(&self) -> bool {
        matches!(self, BootError::AppLoad(_))
    }
}

/// Runs the handshake on the control socket. The socket is returned so the
/// master can keep it open: closing it later tells the worker to stop.
pub async fn handshake(
    control: UnixStream,
    lanes: usize,
    timeout: Duration,
) -> (UnixStream, Result<Hello, BootError>) {
    let (mut reader, writer) = split(control);
    let result = tokio::time::timeout(timeout, async {
        let hello = next_frame(&mut reader, Kind::Hello).await?;
        let hello = check_hello(&hello, lanes)?;
        next_frame(&mut reader, Kind::Ready).await?;
        Ok(hello)
    })
    .await
    .unwrap_or(Err(BootError::Timeout(timeout)));
    let control = reader
        .into_inner()
        .zip(writer.into_inner())
        .and_then(|(read, write)| read.reunite(write).ok())
        .expect("both halves come from the same control socket");
    (control, result)
}

async fn next_frame(
    reader: &mut crate::protocol::lane::LaneReader,
    expected: Kind,
) -> Result<bytes::Bytes, BootError> {
    let frame = reader.read_frame().await.map_err(BootError::Died)?;
    match frame.kind {
        kind if kind == expected => Ok(frame.payload),
        Kind::BootFailed => {
            let text = String::from_utf8_lossy(&frame.payload).trim().to_string();
            if frame.flags & flags::APP_LOAD != 0 {
                Err(BootError::AppLoad(text))
            } else {
                Err(BootError::Worker(text))
            }
        }
        other => Err(BootError::Unexpected(other)),
    }
}
