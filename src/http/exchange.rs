//! One request's trip to a worker and back: take a lane, send the head (and a
//! buffered body, or start the pump in `pump.rs` that streams a large one),
//! wait for the response head within `--timeout`, and hand hyper a body that
//! is either complete or streams from the lane.
//!
//! Failures become [`RequestError`]s; which status they get is `status.rs`'s
//! business. A worker that breaks the protocol or times out is reported to
//! the arbiter, which replaces it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::SERVER;
use http::{HeaderValue, Response};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use super::body::{BodyError, ResponseBody};
use super::framing::Verdicts;
use super::pump::{cut_off, pump, put_body, Pumped};
use super::service::{BodyClaim, SERVER_NAME};
use super::status::RequestError;
use crate::dispatch::{DispatchError, Dispatcher, LaneLease};
use crate::protocol::environ::{encode_request, BodyPlan, ConnInfo, EnvironError};
use crate::protocol::frame::{Frame, Kind};
use crate::protocol::lane::{LaneError, StopPump};
use crate::worker::WorkerId;

/// What the HTTP front found wrong with a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerFault {
    /// A request on it ran past `--timeout`.
    Timeout,
    /// It broke the protocol on a lane.
    ProtocolError,
}

/// Tells the arbiter of a worker at fault, at once, on the caller's thread:
/// the report is queued before the exchange lets go of the lane, and so
/// before the worker's exit (a worker whose lanes close exits). Through a
/// task of its own, a report could reach the arbiter after the exit, on a
/// master of several threads, and the worker would count as crashed.
#[derive(Clone)]
pub struct FaultSink(std::sync::Arc<dyn Fn(WorkerId, WorkerFault) + Send + Sync>);

impl FaultSink {
    /// Reports through `report`.
    pub fn new(report: impl Fn(WorkerId, WorkerFault) + Send + Sync + 'static) -> FaultSink {
        FaultSink(std::sync::Arc::new(report))
    }

    /// Reports `fault` of `worker`.
    pub fn report(&self, worker: WorkerId, fault: WorkerFault) {
        (self.0)(worker, fault)
    }
}

impl std::fmt::Debug for FaultSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultSink")
    }
}

/// What every exchange needs; shared by all connections.
#[derive(Debug, Clone)]
pub struct ExchangeCtx {
    /// Where lanes come from.
    pub dispatcher: Dispatcher,
    /// Workers the front found at fault (a timeout, a broken frame); the
    /// master turns each into an event for the arbiter, which replaces them.
    pub faults: FaultSink,
    /// `--timeout` for the response head; zero disables it.
    pub timeout: Duration,
    /// `--limit-request-body`.
    pub limit_request_body: u64,
    /// `--body-timeout`: the longest wait for the next bytes of a request
    /// body; zero disables it.
    pub body_timeout: Duration,
}

/// A request body as it reaches the exchange: what was buffered, and the
/// rest if it streams.
#[derive(Debug)]
pub struct PreparedBody {
    /// How the worker will receive it.
    pub plan: BodyPlan,
    /// Bytes already read (all of them unless streamed).
    pub buffered: Bytes,
    /// The rest, still arriving from the client.
    pub rest: Option<Incoming>,
    /// Where the scanner says whether the streamed rest broke chunked
    /// framing (`Verdicts::body_refused`), and the request's index there.
    pub framing: Option<(Arc<Verdicts>, u64)>,
    /// The share of `--max-buffered-bodies` the buffered bytes hold, given
    /// back once the worker has answered (until then a resend may need them).
    /// None for a request without a body: most requests, which then cost
    /// the bound nothing.
    pub held: Option<BodyClaim>,
}

/// Sends the request to a worker and returns its response.
pub async fn forward(
    ctx: &ExchangeCtx,
    head: &http::request::Parts,
    raw_target: Option<&[u8]>,
    conn: &ConnInfo,
    body: PreparedBody,
) -> Result<Response<ResponseBody>, RequestError> {
    let mut request = BytesMut::with_capacity(512 + body.buffered.len());
    encode_request(&mut request, head, raw_target, conn, body.plan).map_err(|err| match err {
        EnvironError::SchemeConflict => RequestError::BadRequest("the scheme headers disagree"),
        EnvironError::OutsideScriptName => RequestError::OutsideScriptName,
        EnvironError::UnderscoreHeader => {
            RequestError::BadRequest("a header name has an underscore (--header-map refuse)")
        }
        EnvironError::NulInPath | EnvironError::TooLarge => {
            RequestError::BadRequest("the request path decodes to a NUL byte")
        }
    })?;
    match body.plan {
        BodyPlan::Empty => {}
        BodyPlan::Buffered(_) => put_body(&mut request, &body.buffered, true),
        BodyPlan::Streamed(_) => put_body(&mut request, &body.buffered, false),
    }
    let request = request.freeze();
    // A request the worker never read may go to another worker once: see
    // `never_read`. A body still streaming from the client cannot be sent again.
    let mut may_retry = body.rest.is_none();
    let mut rest = body.rest;
    // A pump that cuts the body off says why, so the client gets 413 or 408
    // rather than whatever the app makes of its failed `wsgi.input` read.
    let mut cut: Option<oneshot::Receiver<RequestError>> = None;
    let (lease, frame) = loop {
        let mut lease = ctx
            .dispatcher
            .acquire(request.clone())
            .await
            .map_err(|err| match err {
                DispatchError::WorkerLost => RequestError::Worker(err.to_string()),
                other => RequestError::Overloaded(other),
            })?;
        let worker = lease.worker();
        let first = match lease.send_request(&request).await {
            Ok(()) => {
                if let Some(rest) = rest.take() {
                    let (cut_tx, cut_rx) = oneshot::channel();
                    cut = Some(cut_rx);
                    let pumped = Pumped {
                        sent: body.buffered.len() as u64,
                        limit: ctx.limit_request_body,
                        idle: ctx.body_timeout,
                        request: lease.request(),
                        cut: cut_tx,
                        framing: body.framing.clone(),
                    };
                    lease
                        .lane()
                        .lend_writer(|writer, stop| tokio::spawn(pump(writer, rest, stop, pumped)));
                }
                let head = tokio::select! {
                    read = lease.lane().read_frame_within(ctx.timeout) => Ok(read),
                    why = cut_off(&mut cut) => Err(why),
                };
                match head {
                    Ok(read) => read.transpose(),
                    // No head went out yet: answer for the body. Dropping
                    // the lease cancels the request on the worker.
                    Err(why) => return Err(why),
                }
            }
            Err(err) => Some(Err(err)),
        };
        let frame = match first {
            Some(Ok(frame)) => frame,
            Some(Err(err)) if may_retry && never_read(&mut lease, &err, body.plan) => {
                warn!(worker = %worker, error = %err, "the worker died before it read the request; it goes to another worker");
                may_retry = false;
                lease.discard();
                continue;
            }
            Some(Err(err)) => return Err(worker_failed(ctx, lease, err)),
            None => {
                // The arbiter logs the worker's `WORKER TIMEOUT (pid:N)`.
                debug!(worker = %worker, timeout = ?ctx.timeout, "request timed out; the worker will be replaced");
                ctx.faults.report(worker, WorkerFault::Timeout);
                lease.discard();
                return Err(RequestError::Timeout);
            }
        };
        break (lease, frame);
    };
    drop(body.held);
    match frame.kind {
        Kind::Response => respond(ctx, lease, frame.payload, head.version, cut).await,
        Kind::Error => {
            // The worker logged the traceback; the lane is settled again.
            Err(RequestError::App(
                String::from_utf8_lossy(&frame.payload).into_owned(),
            ))
        }
        other => Err(protocol_error(
            ctx,
            lease,
            format!("unexpected {other:?} frame"),
        )),
    }
}

async fn respond(
    ctx: &ExchangeCtx,
    mut lease: LaneLease,
    head: Bytes,
    version: http::Version,
    cut: Option<oneshot::Receiver<RequestError>>,
) -> Result<Response<ResponseBody>, RequestError> {
    // A bad head is the app's fault (the worker checks what it can); dropping
    // the lease cancels the rest of the response.
    let head = lease
        .lane()
        .heads
        .decode(&head, |head| {
            if !head.headers.contains_key(SERVER) {
                head.headers.insert(SERVER, SERVER_NAME.clone());
            }
        })
        .map_err(|err| RequestError::App(err.to_string()))?;
    let declared = head.content_length;
    let mut close = head.close;
    let body = match lease.lane().reader.buffered_frame() {
        // Fast path: the whole response arrived with its head.
        Ok(Some(frame)) if frame.kind == Kind::Body && frame.is_end() => {
            if let Err(err) = lease.lane().reclaim_writer(StopPump::Finish).await {
                return Err(worker_failed(ctx, lease, err));
            }
            drop(lease);
            whole_body(frame.payload, declared, &mut close)
        }
        Ok(first) => stream(ctx, lease, first, declared, cut),
        Err(err) => return Err(protocol_error(ctx, lease, err.to_string())),
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    if let Some(reason) = head.reason {
        // PEP 3333: the app's status line goes out as it gave it.
        if let Ok(reason) = ReasonPhrase::try_from(reason) {
            response.extensions_mut().insert(reason);
        }
    }
    if close {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        // An HTTP/1.0 response: hyper then adds no `keep-alive` to our close
        // for a client that asked for keep-alive.
        if version == http::Version::HTTP_10 {
            *response.version_mut() = version;
        }
    }
    Ok(response)
}

/// A body that arrived whole, framed by the app's `Content-Length`.
///
/// The master, not the worker, guards the client connection's framing:
/// hyper writes the app's `Content-Length` verbatim next to a body of known
/// size, so a shorter body would leave the client waiting for bytes that
/// the next response then supplies (issue 10, item 8). A body shorter than
/// declared goes out as a stream that fails after its last byte, which makes
/// hyper close the connection (the client sees an incomplete message); hyper
/// never polls it for HEAD, whose empty body keeps the app's length as
/// gunicorn does. A longer one (the worker cuts it, so only a broken worker
/// sends it) is cut here too, and the connection closed.
fn whole_body(payload: Bytes, declared: Option<u64>, close: &mut bool) -> ResponseBody {
    let len = payload.len() as u64;
    match declared {
        Some(declared) if len < declared => {
            ResponseBody::short(payload, BodyError(short_body(len, declared)))
        }
        Some(declared) if len > declared => {
            *close = true;
            ResponseBody::full(payload.slice(..declared as usize))
        }
        _ => ResponseBody::full(payload),
    }
}

fn short_body(sent: u64, declared: u64) -> String {
    format!("the app's body ended after {sent} of its Content-Length of {declared} bytes")
}

/// Streams the rest of the response from a task that owns the lease. The
/// client leaving closes the channel; the task then drops the lease
/// mid-exchange, which cancels the request on the worker. A body that ends
/// short of `declared` ends with an error, so hyper closes the connection
/// after it (see `whole_body`). So does a response whose request body the
/// pump cut off after the head went out (`cut`): the app's response then
/// ended early because its `wsgi.input` failed, and must not look complete.
fn stream(
    ctx: &ExchangeCtx,
    mut lease: LaneLease,
    first: Option<Frame>,
    declared: Option<u64>,
    mut cut: Option<oneshot::Receiver<RequestError>>,
) -> ResponseBody {
    let (tx, rx) = mpsc::channel(2);
    let faults = ctx.faults.clone();
    tokio::spawn(async move {
        let mut next = first;
        let mut received = 0u64;
        loop {
            let frame = match next.take() {
                Some(frame) => frame,
                None => {
                    let read = tokio::select! {
                        read = lease.lane().reader.read_frame() => read,
                        () = tx.closed() => return, // client gone: drop cancels
                    };
                    match read {
                        Ok(frame) => frame,
                        Err(err) => {
                            let _ = tx.send(Err(BodyError(err.to_string()))).await;
                            if err.is_protocol_fault() {
                                faults.report(lease.worker(), WorkerFault::ProtocolError);
                            }
                            lease.discard();
                            return;
                        }
                    }
                }
            };
            match frame.kind {
                Kind::Body => {
                    let end = frame.is_end();
                    received += frame.payload.len() as u64;
                    if !frame.payload.is_empty() && tx.send(Ok(frame.payload)).await.is_err() {
                        return;
                    }
                    if end {
                        if lease.lane().reclaim_writer(StopPump::Finish).await.is_err() {
                            lease.discard();
                        }
                        if let Some(Ok(why)) = cut.as_mut().map(|cut| cut.try_recv()) {
                            let _ = tx
                                .send(Err(BodyError(format!("{why}; the response is cut short"))))
                                .await;
                        } else if let Some(declared) = declared.filter(|&d| received < d) {
                            let _ = tx
                                .send(Err(BodyError(short_body(received, declared))))
                                .await;
                        }
                        return;
                    }
                }
                Kind::Error => {
                    warn!(worker = %lease.worker(), "app failed after its response started");
                    let _ = tx
                        .send(Err(BodyError("app failed mid-response".into())))
                        .await;
                    return;
                }
                other => {
                    let _ = tx
                        .send(Err(BodyError(format!("unexpected {other:?} frame"))))
                        .await;
                    faults.report(lease.worker(), WorkerFault::ProtocolError);
                    lease.discard();
                    return;
                }
            }
        }
    });
    ResponseBody::stream(rx)
}

/// Whether the worker surely never started the app on this request, so
/// another worker may serve it: the write found the worker's end closed,
/// or (for a request without a body, the last one written to the lane) the
/// worker exited with it unread. A request with a body is never resent after
/// it was written whole: the worker starts the app once it has the head, and
/// the app reads the body as it goes.
fn never_read(lease: &mut LaneLease, err: &LaneError, plan: BodyPlan) -> bool {
    let last_written = lease.request() != 0 && lease.lane().written() == lease.request();
    match err {
        LaneError::Io(io) => {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) && !lease.request_written()
        }
        LaneError::Unread => last_written && matches!(plan, BodyPlan::Empty),
        LaneError::Closed | LaneError::Decode(_) | LaneError::Corrupt(_) => false,
    }
}

fn worker_failed(ctx: &ExchangeCtx, lease: LaneLease, err: LaneError) -> RequestError {
    if err.is_protocol_fault() {
        return protocol_error(ctx, lease, err.to_string());
    }
    // Died or closed: the arbiter learns of it from the process exit.
    lease.discard();
    RequestError::Worker(err.to_string())
}

fn protocol_error(ctx: &ExchangeCtx, lease: LaneLease, why: String) -> RequestError {
    let worker = lease.worker();
    error!(worker = %worker, "worker broke the protocol: {why}");
    ctx.faults.report(worker, WorkerFault::ProtocolError);
    lease.discard();
    RequestError::Worker(why)
}
