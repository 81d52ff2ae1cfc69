//! A lane's socket: one request at a time between the master and one worker
//! thread. Reads whole frames into a reusable buffer and writes prepared
//! bytes. Split into a reader and a writer so a request body can stream to
//! the worker while its response streams back.

use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::environ::HeadCache;
use super::frame::{self, flags, DecodeError, Frame, Kind};

/// Why a lane cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The worker closed its end: it exited or died.
    #[error("worker closed the lane")]
    Closed,
    /// The socket failed.
    #[error("lane i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// The worker sent bytes that break the protocol.
    #[error("worker broke the protocol: {0}")]
    Decode(#[from] DecodeError),
}

const READ_CHUNK: usize = 64 * 1024;

/// The receiving half of a lane.
#[derive(Debug)]
pub struct LaneReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    /// A request was sent and its response has not ended yet.
    open: bool,
}

impl LaneReader {
    /// Reads the next whole frame.
    pub async fn read_frame(&mut self) -> Result<Frame, LaneError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(LaneError::Closed);
            }
        }
    }

    /// The socket half, for reuniting after a handshake.
    pub fn into_inner(self) -> OwnedReadHalf {
        self.half
    }

    /// The next frame if it is already buffered, without reading the socket.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, LaneError> {
        let frame = frame::decode(&mut self.buf)?;
        if let Some(frame) = &frame {
            if frame.kind == Kind::Error || (frame.kind == Kind::Body && frame.is_end()) {
                self.open = false;
            }
        }
        Ok(frame)
    }
}

/// The sending half of a lane.
#[derive(Debug)]
pub struct LaneWriter {
    half: OwnedWriteHalf,
    /// Outgoing bytes are prepared here, then written in one go.
    pub buf: BytesMut,
}

impl LaneWriter {
    /// The socket half, for reuniting after a handshake.
    pub fn into_inner(self) -> OwnedWriteHalf {
        self.half
    }

    /// Writes everything prepared in `buf` and clears it.
    pub async fn flush(&mut self) -> Result<(), LaneError> {
        self.half.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }
}

/// Splits a lane socket into its halves.
pub fn split(stream: UnixStream) -> (LaneReader, LaneWriter) {
    let (read, write) = stream.into_split();
    (
        LaneReader {
            half: read,
            buf: BytesMut::with_capacity(READ_CHUNK),
            open: false,
        },
        LaneWriter {
            half: write,
            buf: BytesMut::with_capacity(4096),
        },
    )
}

/// How a task that borrowed the writer to stream a request body should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPump {
    /// The response is complete: end the body with an empty BODY(END).
    Finish,
    /// The client is gone: send CANCEL instead of the rest of the body.
    Cancel,
}

/// The result of a body pump: the writer, back for the next request.
pub type PumpTask = JoinHandle<Result<LaneWriter, LaneError>>;

#[derive(Debug)]
enum WriterSlot {
    Here(LaneWriter),
    Lent {
        task: PumpTask,
        stop: oneshot::Sender<StopPump>,
    },
    Lost,
}

/// Both halves of a lane, and what state the exchange on it is in.
#[derive(Debug)]
pub struct Lane {
    /// Frames from the worker.
    pub reader: LaneReader,
    writer: WriterSlot,
    /// The response deadline, one timer kept for the lane's whole life.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Response heads from this lane's worker.
    pub heads: HeadCache,
}

impl Lane {
    /// Wraps a lane socket.
    pub fn new(stream: UnixStream) -> Lane {
        let (reader, writer) = split(stream);
        Lane {
            reader,
            writer: WriterSlot::Here(writer),
            deadline: None,
            heads: HeadCache::default(),
        }
    }

    /// Reads the next whole frame, or `Ok(None)` if `timeout` passes first.
    ///
    /// The lane moves one timer forward for each request instead of making
    /// a new one: moving a tokio timer that has not fired yet only stores
    /// the new deadline, where a new timer is a timer-wheel insertion and
    /// removal per request.
    pub async fn read_frame_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Frame>, LaneError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.reader.read_frame().await.map(Some);
        };
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().reset(deadline);
        tokio::select! {
            biased;
            frame = self.reader.read_frame() => frame.map(Some),
            () = sleep.as_mut() => Ok(None),
        }
    }

    /// The writer, unless a body pump has it.
    pub fn writer(&mut self) -> Option<&mut LaneWriter> {
        match &mut self.writer {
            WriterSlot::Here(writer) => Some(writer),
            _ => None,
        }
    }

    /// Sends what the writer holds, then `request` (a REQUEST frame, maybe
    /// with its body), and marks the lane busy until the response ends.
    pub async fn send_request(&mut self, request: &[u8]) -> Result<(), LaneError> {
        let WriterSlot::Here(writer) = &mut self.writer else {
            return Err(LaneError::Closed);
        };
        self.reader.open = true;
        writer.flush().await?;
        writer.half.write_all(request).await?;
        Ok(())
    }

    /// Writes `request` without waiting: what the socket takes now goes out
    /// at once, the rest waits in the writer for [`Lane::send_request`].
    /// The lane is busy from here on.
    pub fn write_now(&mut self, request: &[u8]) {
        if let WriterSlot::Here(writer) = &mut self.writer {
            let written = if writer.buf.is_empty() {
                writer.half.try_write(request).unwrap_or(0)
            } else {
                0
            };
            writer.buf.extend_from_slice(&request[written..]);
            self.reader.open = true;
        }
    }

    /// Lends the writer to a task that streams a request body; `start` gets
    /// the writer and a receiver that says when and how to stop.
    pub fn lend_writer(
        &mut self,
        start: impl FnOnce(LaneWriter, oneshot::Receiver<StopPump>) -> PumpTask,
    ) {
        if let WriterSlot::Here(writer) = std::mem::replace(&mut self.writer, WriterSlot::Lost) {
            let (stop, stop_rx) = oneshot::channel();
            self.writer = WriterSlot::Lent {
                task: start(writer, stop_rx),
                stop,
            };
        }
    }

    /// Takes the writer back from a body pump, telling it how to stop.
    pub async fn reclaim_writer(&mut self, how: StopPump) -> Result<(), LaneError> {
        match std::mem::replace(&mut self.writer, WriterSlot::Lost) {
            WriterSlot::Here(writer) => {
                self.writer = WriterSlot::Here(writer);
                Ok(())
            }
            WriterSlot::Lent { task, stop } => {
                // The pump may have finished already and dropped its receiver.
                let _ = stop.send(how);
                let writer = task.await.map_err(|_| LaneError::Closed)??;
                self.writer = WriterSlot::Here(writer);
                Ok(())
            }
            WriterSlot::Lost => Err(LaneError::Closed),
        }
    }

    /// Whether the lane can take the next request as it is.
    pub fn is_settled(&self) -> bool {
        !self.reader.open && matches!(self.writer, WriterSlot::Here(_))
    }

    /// Brings an abandoned exchange to its end: stops the body pump, tells
    /// the worker the client is gone and discards the rest of the response.
    pub async fn cancel(&mut self) -> Result<(), LaneError> {
        self.reclaim_writer(StopPump::Cancel).await?;
        if !self.reader.open {
            return Ok(());
        }
        let writer = self.writer().ok_or(LaneError::Closed)?;
        frame::put_frame(&mut writer.buf, Kind::Cancel, 0, b"");
        writer.flush().await?;
        while self.reader.open {
            self.reader.read_frame().await?;
        }
        Ok(())
    }
}

/// Appends an empty BODY(END) frame: the request body is over.
pub fn put_body_end(out: &mut BytesMut) {
    frame::put_frame(out, Kind::Body, flags::END, b"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{flags, put_frame, Kind};

    #[tokio::test]
    async fn frames_cross_a_socketpair_in_pieces() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (mut reader, _writer) = split(ours);
        let mut bytes = BytesMut::new();
        put_frame(&mut bytes, Kind::Response, 0, b"200 OK");
        put_frame(&mut bytes, Kind::Body, flags::END, &vec![7u8; 200_000]);
        let sender = tokio::spawn(async move {
            let mut theirs = theirs;
            for piece in bytes.chunks(1000) {
                theirs.write_all(piece).await.unwrap();
            }
        });
        let head = reader.read_frame().await.unwrap();
        assert_eq!(head.kind, Kind::Response);
        let body = reader.read_frame().await.unwrap();
        assert!(body.is_end());
        assert_eq!(body.payload.len(), 200_000);
        sender.await.unwrap();
        assert!(matches!(reader.read_frame().await, Err(LaneError::Closed)));
    }

    #[tokio::test]
    async fn garbage_is_a_decode_error() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut reader, _writer) = split(ours);
        theirs
            .write_all(&[1, 0, 0, 0, 250, 0, 0, 0, 9])
            .await
            .unwrap();
        assert!(matches!(
            reader.read_frame().await,
            Err(LaneError::Decode(DecodeError::UnknownKind(250)))
        ));
    }
}
