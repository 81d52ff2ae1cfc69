//! Many lanes over one socket, for a worker that serves many requests at
//! once (`-k gevent`: `--worker-connections` lanes per worker, where 1,000
//! socketpairs each would cost the master 1,000 descriptors, tasks and read
//! buffers per worker). docs/protocol.md, "Multiplexed lanes".
//!
//! Each lane is a *stream*: its frames carry the stream's number in the
//! header's reserved field. A [`MuxStream`] gives each lane the byte stream
//! of its own frames (the number cleared), so `lane.rs` reads and writes it
//! as it would a socket, and every rule of a lane (waiting requests, CANCEL,
//! timeouts, bodies both ways) holds unchanged.
//!
//! One slow reader must not stall the other streams on the shared socket,
//! nor make either side hold unbounded bytes: each direction of each stream
//! has a window of [`WINDOW`] bytes. A sender starts a frame only while its
//! window is open, and the receiver gives the bytes back (a CREDIT frame)
//! as the lane consumes them. A worker that sends past its window, names a
//! stream that does not exist or sends a frame longer than any frame may be
//! breaks the protocol: every stream of the socket fails with
//! [`Corrupt`], and the master replaces the worker.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::frame::{HEADER_LEN, MAX_PAYLOAD};
use super::ring::Corrupt;

/// Bytes a sender may have sent on one stream, in one direction, that the
/// other side has not given back yet. Both sides know it: it is part of
/// the protocol, not a setting.
pub const WINDOW: usize = 256 * 1024;
/// Consumed bytes are given back once this many have gathered, so a stream
/// of small responses costs a CREDIT frame every few hundred requests.
const CREDIT_AT: usize = WINDOW / 2;
/// The frame kind that gives bytes back; its payload is their count, u64
/// little-endian. It travels both ways and is never counted itself.
pub const CREDIT: u8 = 19;
/// Streams one socket can carry: the reserved field is 16 bits.
pub const MAX_STREAMS: usize = 1 << 16;
/// Frames the writer task gathers into one write.
const WRITE_BATCH: usize = 64;
const READ_CHUNK: usize = 64 * 1024;

/// Why every stream of a socket is over.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The worker closed the socket.
    Eof,
    /// The worker closed it with bytes of ours unread (a socket says so
    /// with a reset; `LaneError::Unread`).
    Reset,
    /// The socket failed.
    Failed(io::ErrorKind),
    /// The worker broke the protocol.
    Broken(Corrupt),
}

impl End {
    fn read_result(self) -> io::Result<()> {
        match self {
            End::Eof => Ok(()),
            End::Reset => Err(io::ErrorKind::ConnectionReset.into()),
            End::Failed(kind) => Err(kind.into()),
            End::Broken(corrupt) => Err(corrupt.into()),
        }
    }
}

/// One stream's state, shared by its lane's halves and the socket's tasks.
#[derive(Debug)]
struct Stream {
    /// Frames from the worker the lane has not read yet (numbers cleared).
    inbound: VecDeque<Bytes>,
    /// Bytes received and not given back yet: what the worker's window
    /// lacks, as far as the master knows.
    outstanding: usize,
    /// Bytes the lane read since the last CREDIT.
    consumed: usize,
    reader: Option<Waker>,
    /// Bytes the master may still send before the worker gives some back.
    window: i64,
    writer: Option<Waker>,
    /// The frame being written, until it is whole.
    frame: BytesMut,
    /// That frame's whole length, once its header is here (0: not yet).
    frame_len: usize,
    /// The lane is gone: frames for it are dropped (and given back).
    dropped: bool,
    end: Option<End>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            inbound: VecDeque::new(),
            outstanding: 0,
            consumed: 0,
            reader: None,
            window: WINDOW as i64,
            writer: None,
            frame: BytesMut::new(),
            frame_len: 0,
            dropped: false,
            end: None,
        }
    }

    /// Counts `n` bytes as consumed; the CREDIT frame to send, if one is due.
    fn consume(&mut self, n: usize, id: u16) -> Option<Bytes> {
        self.consumed += n;
        if self.consumed < CREDIT_AT {
            return None;
        }
        let given = std::mem::take(&mut self.consumed);
        self.outstanding = self.outstanding.saturating_sub(given);
        Some(credit_frame(id, given))
    }
}

#[derive(Debug)]
struct Shared {
    streams: Box<[Mutex<Stream>]>,
    /// Whole frames for the writer task; an empty `Bytes` tells it to shut
    /// the socket down (the last lane is gone).
    out: mpsc::UnboundedSender<Bytes>,
    /// Streams whose lane still exists.
    live: AtomicUsize,
}

impl Shared {
    fn stream(&self, id: u16) -> std::sync::MutexGuard<'_, Stream> {
        self.streams[id as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, frame: Bytes) {
        // The writer task is gone only once the socket is: nothing to tell.
        let _ = self.out.send(frame);
    }
}

/// One lane's end of the shared socket. Dropping the last one shuts the
/// socket down, as closing the last lane socket would.
#[derive(Debug)]
struct StreamRef {
    shared: Arc<Shared>,
    id: u16,
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        {
            let mut stream = self.shared.stream(self.id);
            stream.dropped = true;
            let queued: usize = stream.inbound.drain(..).map(|f| f.len()).sum();
            if let Some(credit) = stream.consume(queued, self.id) {
                self.shared.send(credit);
            }
        }
        if self.shared.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.send(Bytes::new());
        }
    }
}

/// A lane's byte stream over the shared socket; split it with
/// [`MuxStream::halves`].
#[derive(Debug)]
pub struct MuxStream {
    stream: Arc<StreamRef>,
}

impl MuxStream {
    /// The reading and the writing half; the stream lives while either does.
    pub fn halves(self) -> (MuxReader, MuxWriter) {
        (
            MuxReader {
                stream: self.stream.clone(),
            },
            MuxWriter {
                stream: self.stream,
            },
        )
    }
}

/// Starts carrying `streams` lanes over `socket`: a task that reads frames
/// and hands each to its stream, and one that writes what the streams send.
/// Must run inside a tokio runtime.
pub fn start(socket: UnixStream, streams: usize) -> Vec<MuxStream> {
    assert!(
        (1..=MAX_STREAMS).contains(&streams),
        "a socket carries 1 to {MAX_STREAMS} streams"
    );
    let (read, write) = socket.into_split();
    let (out, out_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        streams: (0..streams).map(|_| Mutex::new(Stream::new())).collect(),
        out,
        live: AtomicUsize::new(streams),
    });
    tokio::spawn(demux(read, shared.clone()));
    tokio::spawn(write_out(write, out_rx));
    (0..streams)
        .map(|id| MuxStream {
            stream: Arc::new(StreamRef {
                shared: shared.clone(),
                id: id as u16,
            }),
        })
        .collect()
}

fn credit_frame(id: u16, bytes: usize) -> Bytes {
    let mut frame = BytesMut::with_capacity(HEADER_LEN + 8);
    frame.extend_from_slice(&8u32.to_le_bytes());
    frame.extend_from_slice(&[CREDIT, 0]);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&(bytes as u64).to_le_bytes());
    frame.freeze()
}

/// Reads the socket until it ends or the worker breaks the protocol, then
/// ends every stream.
async fn demux(mut read: OwnedReadHalf, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let end = loop {
        if let Err(corrupt) = route(&mut buf, &shared) {
            break End::Broken(corrupt);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match read.read_buf(&mut buf).await {
            Ok(0) => break End::Eof,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => break End::Reset,
            Err(err) => break End::Failed(err.kind()),
        }
    };
    for id in 0..shared.streams.len() {
        let mut stream = shared.stream(id as u16);
        stream.end.get_or_insert(end);
        if let Some(waker) = stream.reader.take() {
            waker.wake();
        }
        if let Some(waker) = stream.writer.take() {
            waker.wake();
        }
    }
}

/// Hands every whole frame in `buf` to its stream.
fn route(buf: &mut BytesMut, shared: &Shared) -> Result<(), Corrupt> {
    while buf.len() >= HEADER_LEN {
        let length = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = buf[4];
        let id = u16::from_le_bytes([buf[6], buf[7]]);
        if length > MAX_PAYLOAD {
            return Err(Corrupt::MuxFrame { length });
        }
        if id as usize >= shared.streams.len() {
            return Err(Corrupt::MuxStream {
                stream: id,
                streams: shared.streams.len(),
            });
        }
        if buf.len() < HEADER_LEN + length {
            buf.reserve(HEADER_LEN + length - buf.len());
            return Ok(());
        }
        let mut frame = buf.split_to(HEADER_LEN + length);
        let mut stream = shared.stream(id);
        if kind == CREDIT {
            if length != 8 {
                return Err(Corrupt::MuxCredit { length });
            }
            let given = u64::from_le_bytes(frame[HEADER_LEN..].try_into().unwrap_or_default());
            stream.window = stream
                .window
                .saturating_add(given.min(i64::MAX as u64) as i64);
            if let Some(waker) = stream.writer.take() {
                waker.wake();
            }
            continue;
        }
        if stream.outstanding >= WINDOW {
            return Err(Corrupt::MuxWindow {
                stream: id,
                outstanding: stream.outstanding,
            });
        }
        stream.outstanding += frame.len();
        if stream.dropped {
            if let Some(credit) = stream.consume(frame.len(), id) {
                shared.send(credit);
            }
            continue;
        }
        frame[6] = 0;
        frame[7] = 0;
        stream.inbound.push_back(frame.freeze());
        if let Some(waker) = stream.reader.take() {
            waker.wake();
        }
    }
    Ok(())
}

/// Writes the streams' frames, gathered, until the last lane is gone.
async fn write_out(mut write: OwnedWriteHalf, mut frames: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
    'frames: while let Some(first) = frames.recv().await {
        let mut last = first.is_empty();
        if !last {
            batch.push(first);
        }
        while !last && batch.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) if frame.is_empty() => last = true,
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if write_all(&mut write, &mut batch).await.is_err() {
            // The worker is gone; the demux task sees it and ends the streams.
            break 'frames;
        }
        if last {
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn write_all(write: &mut OwnedWriteHalf, batch: &mut Vec<Bytes>) -> io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        let parts: Vec<IoSlice<'_>> = batch[first..].iter().map(|b| IoSlice::new(b)).collect();
        let mut n = write.write_vectored(&parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while first < batch.len() && n >= batch[first].len() {
            n -= batch[first].len();
            first += 1;
        }
        if n > 0 {
            batch[first].advance(n);
        }
    }
    batch.clear();
    Ok(())
}

/// A lane's frames from the worker, as bytes.
#[derive(Debug)]
pub struct MuxReader {
    stream: Arc<StreamRef>,
}

impl AsyncRead for MuxReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let StreamRef { shared, id } = &*self.stream;
        let mut stream = shared.stream(*id);
        let mut taken = 0;
        while buf.remaining() > 0 {
            let Some(front) = stream.inbound.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                stream.inbound.pop_front();
            }
            taken += n;
        }
        if taken > 0 {
            if let Some(credit) = stream.consume(taken, *id) {
                shared.send(credit);
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(end) = stream.end {
            return Poll::Ready(end.read_result());
        }
        stream.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A lane's frames to the worker: bytes in, each whole frame stamped with
/// the stream's number and handed to the writer task.
#[derive(Debug)]
pub struct MuxWriter {
    stream: Arc<StreamRef>,
}

impl MuxWriter {
    /// Takes what it can of `parts` now; `None` if the window is shut (the
    /// caller waits for a CREDIT).
    fn take(
        &self,
        parts: &[IoSlice<'_>],
        cx: Option<&mut Context<'_>>,
    ) -> io::Result<Option<usize>> {
        let StreamRef { shared, id } = &*self.stream;
        let mut stream = shared.stream(*id);
        if stream.end.is_some() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut taken = 0;
        for part in parts {
            let mut data: &[u8] = part;
            while !data.is_empty() {
                if stream.frame.is_empty() && stream.window <= 0 {
                    // Frames start only in an open window; a frame already
                    // started always finishes, so the worker can read it
                    // whole and give its bytes back.
                    if taken == 0 {
                        if let Some(cx) = cx {
                            stream.writer = Some(cx.waker().clone());
                        }
                        return Ok(None);
                    }
                    return Ok(Some(taken));
                }
                let n = if stream.frame_len == 0 {
                    let n = (HEADER_LEN - stream.frame.len()).min(data.len());
                    stream.frame.extend_from_slice(&data[..n]);
                    if stream.frame.len() == HEADER_LEN {
                        let head = &stream.frame;
                        let length =
                            u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                        stream.frame_len = HEADER_LEN + length;
                        stream.frame[6..8].copy_from_slice(&id.to_le_bytes());
                        let more = stream.frame_len - HEADER_LEN;
                        stream.frame.reserve(more);
                    }
                    n
                } else {
                    let n = (stream.frame_len - stream.frame.len()).min(data.len());
                    stream.frame.extend_from_slice(&data[..n]);
                    n
                };
                data = &data[n..];
                taken += n;
                if stream.frame_len > 0 && stream.frame.len() == stream.frame_len {
                    stream.window -= stream.frame_len as i64;
                    stream.frame_len = 0;
                    let frame = stream.frame.split().freeze();
                    shared.send(frame);
                }
            }
        }
        Ok(Some(taken))
    }

    /// Takes what the window allows now, without waiting.
    pub fn try_write_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.take(parts, None)? {
            Some(n) => Ok(n),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncWrite for MuxWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        parts: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.take(parts, Some(cx)) {
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Ok(None) => Poll::Pending,
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
