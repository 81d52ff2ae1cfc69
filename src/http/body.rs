//! The response body hyper sends: either whole (the common case: the app's
//! response arrived in one read) or streamed from a task that reads the
//! lane chunk by chunk, so a generator's first chunk reaches the client
//! before the generator ends.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A failure mid-body: hyper aborts the connection so the client sees an
/// incomplete response rather than a silently truncated one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Runs once a streamed body is over (sent, failed or dropped) with the
/// number of bytes handed to hyper: the access log line of a streamed
/// response is written then, with its real size.
pub struct OnFinish(pub Box<dyn FnOnce(u64) + Send>);

impl std::fmt::Debug for OnFinish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnFinish")
    }
}

/// A response body.
#[derive(Debug)]
pub enum ResponseBody {
    /// All of it, sent at once.
    Full(Option<Bytes>),
    /// Chunks as the worker produces them.
    Stream {
        /// The chunks.
        chunks: mpsc::Receiver<Result<Bytes, BodyError>>,
        /// Bytes handed to hyper so far.
        sent: u64,
        /// What to do when the body is over.
        on_finish: Option<OnFinish>,
        /// A failure held back for one poll (see `poll_frame`).
        failed: Option<BodyError>,
    },
}

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody::Full(Some(bytes))
    }

    /// A body streamed from `chunks`.
    pub fn stream(chunks: mpsc::Receiver<Result<Bytes, BodyError>>) -> ResponseBody {
        ResponseBody::Stream {
            chunks,
            sent: 0,
            on_finish: None,
            failed: None,
        }
    }

    /// `bytes`, then `why`: a body that ended short of its `Content-Length`.
    /// Its size is unknown to hyper, which frames it by the header and closes
    /// the connection at the failure.
    pub fn short(bytes: Bytes, why: BodyError) -> ResponseBody {
        let (tx, rx) = mpsc::channel(2);
        for item in [Ok(bytes), Err(why)] {
            // Two items into a fresh channel of two: there is room.
            let _ = tx.try_send(item);
        }
        ResponseBody::stream(rx)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Stream {
            sent, on_finish, ..
        } = self
        {
            if let Some(OnFinish(finish)) = on_finish.take() {
                finish(*sent);
            }
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream {
                chunks,
                sent,
                failed,
                ..
            } => {
                if let Some(err) = failed.take() {
                    return Poll::Ready(Some(Err(err)));
                }
                match ready!(chunks.poll_recv(cx)) {
                    Some(Ok(data)) => {
                        *sent += data.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    // hyper drops what it has buffered when a body fails:
                    // one Pending first lets it flush the bytes before it
                    // closes, so the client gets all that was sent.
                    Some(Err(err)) => {
                        *failed = Some(err);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream { .. } => SizeHint::default(),
        }
    }
}
