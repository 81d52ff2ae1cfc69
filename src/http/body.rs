//! The response body hyper sends: either whole (the common case: the app's
//! response arrived in one read) or streamed from a task that reads the
//! lane chunk by chunk, so a generator's first chunk reaches the client
//! before the generator ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A failure mid-body: hyper aborts the connection so the client sees an
/// incomplete response rather than a silently truncated one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// A response body.
#[derive(Debug)]
pub enum ResponseBody {
    /// All of it, sent at once.
    Full(Option<Bytes>),
    /// Chunks as the worker produces them.
    Stream(mpsc::Receiver<Result<Bytes, BodyError>>),
}

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody::Full(Some(bytes))
    }

    /// No body.
    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
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
            ResponseBody::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}
