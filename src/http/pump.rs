//! The request body's pump: streams a body too large to buffer from the
//! client to the worker, frame by frame, under `--limit-request-body` and
//! `--body-timeout`, and says why when it has to cut the body off. The
//! exchange (`exchange.rs`) starts it and stops it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::framing::{Verdicts, BAD_CHUNK_SIZE};
use super::status::RequestError;
use crate::protocol::frame::{self, flags, Kind, MAX_BODY_PAYLOAD};
use crate::protocol::lane::{put_cancel, LaneError, LaneWriter, StopPump};

/// The next frame of a request body, or `None` if `idle` (zero: no limit)
/// passes without one: a stalled upload (issue 10, item 7).
pub(super) async fn next_body_frame(
    body: &mut Incoming,
    idle: Duration,
) -> Option<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
    if idle.is_zero() {
        return Some(body.frame().await);
    }
    tokio::time::timeout(idle, body.frame()).await.ok()
}

/// Waits for a body pump to say why it cut the body off; never ends if it
/// did not (or there is no pump).
pub(super) async fn cut_off(cut: &mut Option<oneshot::Receiver<RequestError>>) -> RequestError {
    if let Some(why) = cut {
        if let Ok(why) = why.await {
            return why;
        }
    }
    std::future::pending().await
}

/// What a body pump needs besides the writer and the body.
pub(super) struct Pumped {
    /// Body bytes already sent with the request.
    pub(super) sent: u64,
    /// `--limit-request-body`.
    pub(super) limit: u64,
    /// `--body-timeout`.
    pub(super) idle: Duration,
    /// The request's number on its lane, for its CANCEL.
    pub(super) request: u64,
    /// Where to say why the body was cut off.
    pub(super) cut: oneshot::Sender<RequestError>,
    /// The scanner's word on the body's chunked framing, read at its end.
    pub(super) framing: Option<(Arc<Verdicts>, u64)>,
}

/// Streams the rest of a large request body to the worker until the body
/// ends, the client fails, the body passes the limit or stalls past the body
/// timeout (then the worker gets CANCEL, as for a client that left, and the
/// exchange hears why), or the exchange says stop.
pub(super) async fn pump(
    mut writer: LaneWriter,
    mut body: Incoming,
    mut stop: oneshot::Receiver<StopPump>,
    pumped: Pumped,
) -> Result<LaneWriter, LaneError> {
    let Pumped {
        mut sent,
        limit,
        idle,
        request,
        cut,
        framing,
    } = pumped;
    let mut cut = Some(cut);
    let mut cut_off = |why: RequestError| {
        if let Some(cut) = cut.take() {
            let _ = cut.send(why);
        }
    };
    loop {
        let next = tokio::select! {
            how = &mut stop => {
                match how {
                    Ok(StopPump::Finish) => put_body(&mut writer.buf, b"", true),
                    Ok(StopPump::Cancel) | Err(_) => put_cancel(&mut writer.buf, request),
                }
                writer.flush().await?;
                return Ok(writer);
            }
            next = next_body_frame(&mut body, idle) => next,
        };
        let Some(next) = next else {
            // Said before the worker can see the CANCEL, so the exchange
            // knows why the response ends (see `stream`).
            cut_off(RequestError::BodyTimeout);
            put_cancel(&mut writer.buf, request);
            writer.flush().await?;
            return Ok(writer);
        };
        let done = match next {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not part of WSGI
                };
                sent += data.len() as u64;
                if sent > limit {
                    put_cancel(&mut writer.buf, request);
                    cut_off(RequestError::BodyTooLarge);
                    true
                } else {
                    put_body(&mut writer.buf, &data, false);
                    false
                }
            }
            None if framing
                .as_ref()
                .is_some_and(|(v, index)| v.body_refused(*index)) =>
            {
                put_cancel(&mut writer.buf, request);
                cut_off(RequestError::BadRequest(BAD_CHUNK_SIZE));
                true
            }
            None => {
                put_body(&mut writer.buf, b"", true);
                true
            }
            Some(Err(_)) => {
                put_cancel(&mut writer.buf, request);
                true
            }
        };
        writer.flush().await?;
        if done {
            return Ok(writer);
        }
    }
}

/// Appends `data` as BODY frames (split to the frame limit), the last with
/// END if `end`.
pub(super) fn put_body(out: &mut BytesMut, data: &[u8], end: bool) {
    let mut chunks = data.chunks(MAX_BODY_PAYLOAD).peekable();
    if chunks.peek().is_none() {
        if end {
            frame::put_frame(out, Kind::Body, flags::END, b"");
        }
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flag_bits = if end && last { flags::END } else { 0 };
        frame::put_frame(out, Kind::Body, flag_bits, chunk);
    }
}
