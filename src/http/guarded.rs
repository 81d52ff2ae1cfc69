//! A connection whose incoming bytes pass through a [`Scanner`] before
//! hyper reads them: what the scanner hands over (the bytes as read, almost
//! always) goes into hyper's buffer, the rest waits for the next read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::Verdicts;
use super::scanner::Scanner;

/// A connection whose incoming bytes pass through a [`Scanner`].
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    /// Bytes for hyper that did not fit its buffer at the last read.
    pending: Vec<u8>,
}

impl<IO> Guarded<IO> {
    /// Wraps `io`; notes go to `verdicts`.
    pub fn new(io: IO, verdicts: Arc<Verdicts>) -> Guarded<IO> {
        Guarded {
            io,
            scanner: Scanner::new(verdicts),
            pending: Vec::new(),
        }
    }
}

/// Puts as much of `bytes` into `buf` as fits; keeps the rest in `pending`.
fn hand_over(buf: &mut ReadBuf<'_>, bytes: &[u8], pending: &mut Vec<u8>) {
    let n = bytes.len().min(buf.remaining());
    buf.put_slice(&bytes[..n]);
    pending.extend_from_slice(&bytes[n..]);
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let pending = std::mem::take(&mut this.pending);
            hand_over(buf, &pending, &mut this.pending);
            return Poll::Ready(Ok(()));
        }
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if buf.filled().len() == before {
                // End of input: what was held goes to hyper, then the end.
                if let Some(held) = this.scanner.take_held() {
                    hand_over(buf, &held, &mut this.pending);
                }
                return Poll::Ready(Ok(()));
            }
            let Some(bytes) = this.scanner.feed(&buf.filled()[before..]) else {
                return Poll::Ready(Ok(()));
            };
            buf.set_filled(before);
            if bytes.is_empty() {
                // All of it held back (a head still incomplete): read on,
                // which also registers for the next wake-up. An empty
                // ready read would mean the end of input to hyper.
                continue;
            }
            hand_over(buf, &bytes, &mut this.pending);
            return Poll::Ready(Ok(()));
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
