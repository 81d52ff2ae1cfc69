//! The per-request service hyper calls: enforce the request limits, read a
//! body up to the buffering threshold (so slow uploaders never hold a
//! worker) within the body timeout and the bound on buffered bodies, forward
//! to a worker, and turn any failure into its status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::SERVER;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use tracing::{debug, warn};

use super::body::{OnFinish, ResponseBody};
use super::exchange::{forward, ExchangeCtx, PreparedBody};
use super::framing::{self, HeadNote, Verdicts, BAD_CHUNK_SIZE};
use super::pump::next_body_frame;
use super::status::RequestError;
use crate::logging::{AccessLog, AccessRecord};
use crate::protocol::environ::{BodyPlan, ConnInfo};

/// Request limits, gunicorn's `limit_request_*` plus ours.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line (method, target, version); 0 = unlimited.
    pub request_line: usize,
    /// Longest header line (name + value); 0 = unlimited.
    pub field_size: usize,
    /// Largest body.
    pub body: u64,
    /// Bodies up to this size are received whole before dispatch.
    pub buffer: u64,
    /// gunicorn's `permit_unconventional_http_method`: lower case, `#` and
    /// any length pass the method check.
    pub any_method: bool,
}

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct ServiceCtx {
    /// The worker side.
    pub exchange: ExchangeCtx,
    /// Request limits.
    pub limits: Limits,
    /// The access log, if one is configured.
    pub access: Option<AccessLog>,
    /// Request latency and status counts, with `--metrics-bind`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The same figures for statsd, with `--statsd-host`.
    pub statsd: Option<Arc<crate::metrics::statsd::Recorder>>,
    /// `--max-buffered-bodies`.
    pub bodies: BodyBound,
}

/// The bytes of request bodies the master holds for requests no worker has
/// answered yet (being received, queued, or kept for a resend), across all
/// connections, and their bound (`--max-buffered-bodies`; 0: none). Without
/// it, stalled uploads grew the master until the OOM killer came (issue 10,
/// item 7): a body that would pass it gets 503 at once rather than waiting,
/// because a waiting upload would hold its connection and socket buffers
/// all the same, and the bytes that block it may be stalled ones that only
/// the body timeout frees.
#[derive(Debug, Clone)]
pub struct BodyBound {
    held: Arc<AtomicU64>,
    max: u64,
}

impl BodyBound {
    /// A bound of `max` bytes; 0 means unbounded.
    pub fn new(max: u64) -> BodyBound {
        BodyBound {
            held: Arc::new(AtomicU64::new(0)),
            max,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// A claim on none of it yet, for one request body.
    pub fn claim(&self) -> BodyClaim {
        BodyClaim {
            bound: self.clone(),
            bytes: 0,
        }
    }
}

/// One body's share of a [`BodyBound`], given back when dropped.
#[derive(Debug)]
pub struct BodyClaim {
    bound: BodyBound,
    bytes: u64,
}

impl BodyClaim {
    /// Claims `n` more bytes, unless that would pass the bound.
    fn grow(&mut self, n: u64) -> Result<(), RequestError> {
        let BodyBound { held, max } = &self.bound;
        if *max == 0 {
            return Ok(());
        }
        held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(n).filter(|&after| after <= *max)
        })
        .map_err(|_| RequestError::BodiesOverBound)?;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for BodyClaim {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.bound.held.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// The `Server` header the master adds when the app set none.
pub(super) static SERVER_NAME: HeaderValue = HeaderValue::from_static("ferrocorn");

/// Serves one request; never fails at the hyper level.
pub async fn handle(
    ctx: Arc<ServiceCtx>,
    conn: Arc<ConnInfo>,
    verdicts: Arc<Verdicts>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    // Clock reads only when a log line or a latency sample needs them.
    let timed = ctx.access.is_some() || ctx.metrics.is_some() || ctx.statsd.is_some();
    let started = timed.then(|| (Instant::now(), SystemTime::now()));
    let (head, body) = req.into_parts();
    // One note per request, taken whether or not it is needed.
    let note = verdicts.next();
    let result = match framing::refusal(note.verdict, &head, ctx.limits.any_method) {
        Some(why) => Err(RequestError::BadRequest(why)),
        None => serve(&ctx, &conn, &head, body, &note, &verdicts).await,
    };
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            if err.is_client_fault() {
                debug!(error = %err, "request refused");
            } else {
                warn!(method = %head.method, path = head.uri.path(), error = %err, "request failed");
            }
            err.into_response()
        }
    };
    if !response.headers().contains_key(SERVER) {
        response.headers_mut().insert(SERVER, SERVER_NAME.clone());
    }
    if let (Some(metrics), Some((at, _))) = (&ctx.metrics, started) {
        metrics.observe_request(at.elapsed(), response.status().as_u16());
    }
    if let (Some(statsd), Some((at, _))) = (&ctx.statsd, started) {
        statsd.observe_request(at.elapsed(), response.status().as_u16());
    }
    if let (Some(access), Some(started)) = (&ctx.access, started) {
        log_access(access, &conn, &head, &mut response, started);
    }
    Ok(response)
}

async fn serve(
    ctx: &ServiceCtx,
    conn: &ConnInfo,
    head: &http::request::Parts,
    body: Incoming,
    note: &HeadNote,
    verdicts: &Arc<Verdicts>,
) -> Result<Response<ResponseBody>, RequestError> {
    let raw_target = note.raw_target.as_deref();
    check_limits(&ctx.limits, head, raw_target)?;
    let mut body = prepare_body(ctx, body).await?;
    if body.rest.is_some() {
        body.framing = Some((verdicts.clone(), note.index));
    }
    // Only a body read whole can have broken the chunk rules by now (a
    // streamed one is judged at its end by the pump); most requests have
    // none and skip the lock.
    if matches!(body.plan, BodyPlan::Buffered(_)) && verdicts.body_refused(note.index) {
        return Err(RequestError::BadRequest(BAD_CHUNK_SIZE));
    }
    forward(&ctx.exchange, head, raw_target, conn, body).await
}

fn check_limits(
    limits: &Limits,
    head: &http::request::Parts,
    raw_target: Option<&[u8]>,
) -> Result<(), RequestError> {
    if head.method == Method::CONNECT {
        // A tunnel is no WSGI request. Answered here, with no 2xx, hyper
        // never hands the connection over as an upgrade (which closed it
        // without a byte once an app said 200).
        return Err(RequestError::MethodNotAllowed("CONNECT"));
    }
    if limits.request_line > 0 {
        // "METHOD SP target SP HTTP/1.1"
        let uri = &head.uri;
        let target = match raw_target {
            Some(raw) => raw.len(),
            None => {
                uri.path_and_query().map_or(1, |pq| pq.as_str().len())
                    + uri
                        .authority()
                        .map_or(0, |a| a.as_str().len() + "http://".len())
            }
        };
        let line = head.method.as_str().len() + target + " HTTP/1.1".len() + 1;
        if line > limits.request_line {
            return Err(RequestError::BadRequest("request line is too long"));
        }
    }
    if limits.field_size > 0 {
        for (name, value) in &head.headers {
            // "name: value" and its CRLF, as gunicorn counts the line.
            if name.as_str().len() + value.len() + 4 > limits.field_size {
                return Err(RequestError::HeaderTooLarge("a header line is too long"));
            }
        }
    }
    // hyper refuses a bad Content-Length and a Transfer-Encoding that does
    // not end in chunked; `framing.rs` refuses the rest of the framing cases.
    Ok(())
}

/// Reads the body up to the buffering threshold. A body that ends within it
/// is sent whole; a larger one streams to the worker as it arrives. A body
/// that sends nothing for `--body-timeout` gets 408 (gunicorn's sync worker
/// closes such a connection after `--timeout`; the 408 says why).
async fn prepare_body(ctx: &ServiceCtx, mut body: Incoming) -> Result<PreparedBody, RequestError> {
    let limits = &ctx.limits;
    if body.is_end_stream() {
        return Ok(PreparedBody {
            plan: BodyPlan::Empty,
            buffered: Bytes::new(),
            rest: None,
            held: None,
            framing: None,
        });
    }
    let mut held = ctx.bodies.claim();
    let declared = body.size_hint().exact();
    if declared.is_some_and(|len| len > limits.body) {
        return Err(RequestError::BodyTooLarge);
    }
    let mut buffered = BytesMut::new();
    while (buffered.len() as u64) <= limits.buffer {
        let next = next_body_frame(&mut body, ctx.exchange.body_timeout)
            .await
            .ok_or(RequestError::BodyTimeout)?;
        match next {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if (buffered.len() + data.len()) as u64 > limits.body {
                        return Err(RequestError::BodyTooLarge);
                    }
                    held.grow(data.len() as u64)?;
                    buffered.extend_from_slice(&data);
                }
                Err(frame) => {
                    if let Some(why) = frame.trailers_ref().and_then(framing::trailer_refusal) {
                        return Err(RequestError::BadRequest(why));
                    }
                }
            },
            Some(Err(err)) => return Err(RequestError::ClientBody(err.to_string())),
            None => {
                return Ok(PreparedBody {
                    plan: BodyPlan::Buffered(buffered.len() as u64),
                    buffered: buffered.freeze(),
                    rest: None,
                    held: Some(held),
                    framing: None,
                })
            }
        }
    }
    Ok(PreparedBody {
        plan: BodyPlan::Streamed(declared),
        buffered: buffered.freeze(),
        rest: Some(body),
        held: Some(held),
        framing: None,
    })
}

/// Writes the access log line now for a whole body, or when a streamed
/// body is over, with the bytes really sent.
fn log_access(
    access: &AccessLog,
    conn: &Arc<ConnInfo>,
    head: &http::request::Parts,
    response: &mut Response<ResponseBody>,
    (started, started_at): (Instant, SystemTime),
) {
    let status = response.status().as_u16();
    if let ResponseBody::Full(body) = response.body() {
        let size = body.as_ref().map_or(0, |b| b.len() as u64);
        let record = access_record(
            conn,
            head,
            status,
            size,
            started_at,
            started,
            response.headers(),
        );
        access.log(&record);
        return;
    }
    // Streamed: the line waits for the end of the body. Owned copies only here.
    let (access, conn, head) = (access.clone(), conn.clone(), head.clone());
    let response_headers = response.headers().clone();
    if let ResponseBody::Stream { on_finish, .. } = response.body_mut() {
        *on_finish = Some(OnFinish(Box::new(move |sent| {
            let record = access_record(
                &conn,
                &head,
                status,
                sent,
                started_at,
                started,
                &response_headers,
            );
            access.log(&record);
        })));
    }
}

fn access_record<'a>(
    conn: &'a ConnInfo,
    head: &'a http::request::Parts,
    status: u16,
    response_bytes: u64,
    started_at: SystemTime,
    started: Instant,
    response_headers: &'a http::HeaderMap,
) -> AccessRecord<'a> {
    AccessRecord {
        remote: &conn.remote_addr,
        method: head.method.as_str(),
        path: head.uri.path(),
        query: head.uri.query(),
        version: head.version,
        status,
        response_bytes,
        started: started_at,
        elapsed: started.elapsed(),
        request_headers: &head.headers,
        response_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_claims_stay_within_the_bound_and_give_back_on_drop() {
        let bound = BodyBound::new(100);
        let mut first = bound.claim();
        first.grow(60).unwrap();
        let mut second = bound.claim();
        assert!(matches!(
            second.grow(41),
            Err(RequestError::BodiesOverBound)
        ));
        second.grow(40).unwrap();
        assert_eq!(bound.held(), 100);
        drop(first);
        assert_eq!(bound.held(), 40);
        second.grow(60).unwrap();
        drop(second);
        assert_eq!(bound.held(), 0);
    }

    #[test]
    fn a_zero_bound_is_no_bound() {
        let bound = BodyBound::new(0);
        let mut claim = bound.claim();
        claim.grow(u64::MAX).unwrap();
        claim.grow(u64::MAX).unwrap();
        drop(claim);
        assert_eq!(bound.held(), 0);
    }
}
