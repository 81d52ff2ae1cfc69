//! A ring lane's two halves as byte streams, so the lane's frame reader and
//! writer (`lane.rs`) work on them as they do on a socket.
//!
//! The reader copies response bytes out and reports the lane socket's EOF
//! once the ring is empty: as a reset when the worker left request bytes
//! unconsumed (a socket says the same; `LaneError::Unread`), else as EOF.
//! The writer copies what fits and publishes it; with the ring full it
//! waits for the worker to make room.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use super::{lock, Corrupt, Ring};

/// Reads the response ring; owns the lane socket, whose EOF ends the stream.
#[derive(Debug)]
pub struct RingReader {
    ring: Arc<Ring>,
    socket: UnixStream,
    eof: bool,
}

/// Writes the request ring.
#[derive(Debug)]
pub struct RingWriter {
    ring: Arc<Ring>,
}

/// Splits a ring lane into its halves.
pub fn halves(ring: Arc<Ring>, socket: UnixStream) -> (RingReader, RingWriter) {
    (
        RingReader {
            ring: ring.clone(),
            socket,
            eof: false,
        },
        RingWriter { ring },
    )
}

impl RingReader {
    /// Copies what the ring holds into `buf`; `Ok(0)` if nothing.
    fn take(&self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        let ready = self.ring.response_ready()?;
        let n = ready.min(buf.remaining());
        if n == 0 {
            return Ok(0);
        }
        let taken = self.ring.taken.load(Ordering::Relaxed);
        let out = buf.initialize_unfilled_to(n);
        self.ring.copy_out(taken, &mut out[..n]);
        buf.advance(n);
        self.ring.release(taken + n as u64);
        Ok(n)
    }

    /// Whether the lane socket reached EOF (the worker is gone); registers
    /// for its readiness if not.
    fn poll_socket_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.socket.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {}
            }
            let mut byte = [0u8; 1];
            match self.socket.try_read(&mut byte) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => return Poll::Ready(Err(Corrupt::SocketBytes.into())),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {
                    return Poll::Ready(Ok(()))
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncRead for RingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.take(buf)? > 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.eof {
            *lock(&this.ring.reader) = Some(cx.waker().clone());
            // Bytes published since the look above, before the pump could
            // see our waker: take them now.
            if this.take(buf)? > 0 {
                lock(&this.ring.reader).take();
                return Poll::Ready(Ok(()));
            }
            match this.poll_socket_closed(cx) {
                Poll::Pending => {
                    this.ring.hub.waiting();
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {
                    this.eof = true;
                    lock(&this.ring.reader).take();
                    this.ring.close();
                }
            }
            // The worker may have published its last bytes just before it died.
            if this.take(buf)? > 0 {
                return Poll::Ready(Ok(()));
            }
        }
        if this.ring.unread() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Poll::Ready(Ok(()))
    }
}

impl RingWriter {
    /// Copies what fits of `parts` into the request ring and publishes it;
    /// `Ok(0)` if the ring is full.
    fn put(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.ring.closed.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = self.ring.request_room()?;
        let mut at = self.ring.sent.load(Ordering::Relaxed);
        let mut written = 0;
        for part in parts {
            let n = part.len().min(room - written);
            self.ring.copy_in(at, &part[..n]);
            at += n as u64;
            written += n;
            if written == room {
                break;
            }
        }
        if written > 0 {
            self.ring.publish(at);
        }
        Ok(written)
    }

    /// Writes what fits now, without waiting: a socket's `try_write_vectored`.
    pub fn try_write_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.put(parts)? {
            0 if parts.iter().any(|p| !p.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn poll_put(&self, cx: &mut Context<'_>, parts: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if parts.iter().all(|p| p.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let n = self.put(parts)?;
        if n > 0 {
            self.ring.set_space_wait(false);
            return Poll::Ready(Ok(n));
        }
        // Full: say so (the worker rings us when it frees space), then
        // look again, since it may have freed some before it saw our word.
        *lock(&self.ring.writer) = Some(cx.waker().clone());
        self.ring.set_space_wait(true);
        let n = self.put(parts)?;
        if n > 0 {
            lock(&self.ring.writer).take();
            self.ring.set_space_wait(false);
            return Poll::Ready(Ok(n));
        }
        self.ring.hub.waiting();
        Poll::Pending
    }
}

impl AsyncWrite for RingWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_put(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        parts: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_put(cx, parts)
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
