//! The load's HTTP/1.1 client: keep-alive connections over tokio's
//! `TcpStream` with hyper's `client::conn::http1`, a pool of idle ones, and
//! [`exchange`], which sends one request and tells how it ended. It counts
//! nothing (that is [`super::tally`]) and decides nothing about when to send
//! (that is the models, [`super::open`] and [`super::closed`]).

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tally::{Outcome, Transport};

/// One keep-alive connection's sending half; its driver runs in its own task
/// and ends when this is dropped or the connection fails.
pub(crate) type Conn = SendRequest<Full<Bytes>>;

/// Idle keep-alive connections to one target, shared by requests that do not
/// own a connection (the open model). Holds no more connections than were
/// ever in use at once, because only a finished request puts one back.
#[derive(Debug)]
pub(crate) struct Pool {
    target: SocketAddr,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// An empty pool for `target`.
    pub(crate) fn new(target: SocketAddr) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The target all connections go to.
    pub(crate) fn target(&self) -> SocketAddr {
        self.target
    }

    /// An idle connection that is still open, if any.
    pub(crate) fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Gives back a connection after a request; a closed one is dropped.
    pub(crate) fn put(&self, conn: Conn) {
        if !conn.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

/// Sends `req` to `target` on the connection in `slot`, opening a new one if
/// the slot is empty or its connection has closed, and reads the whole
/// response body. On success the connection is left in `slot` for the next
/// request; on any failure it is dropped, so the next request opens a new one.
///
/// A reused connection that turns out closed before the request was written
/// (the server ended keep-alive) is replaced once without counting a failure,
/// since nothing was sent on it. Latency runs from handing the request to the
/// connection to the end of the body; `timeout` bounds everything, including
/// the connect.
pub(crate) async fn exchange(
    slot: &mut Option<Conn>,
    target: SocketAddr,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout(timeout, send(slot, target, req)).await {
        Ok(Ok((status, latency))) => Outcome::Status(status, latency),
        Ok(Err(kind)) => Outcome::Transport(kind),
        Err(_elapsed) => {
            *slot = None;
            Outcome::Transport(Transport::Timeout)
        }
    }
}

async fn send(
    slot: &mut Option<Conn>,
    target: SocketAddr,
    mut req: Request<Full<Bytes>>,
) -> Result<(u16, Duration), Transport> {
    loop {
        // At most two turns: only a connection taken from the slot is retried,
        // and the slot is empty after the first turn.
        let (mut conn, reused) = match slot.take() {
            Some(conn) if !conn.is_closed() => (conn, true),
            _ => (connect(target).await?, false),
        };
        if conn.ready().await.is_err() {
            if reused {
                continue;
            }
            return Err(Transport::Reset);
        }
        let start = Instant::now();
        match conn.try_send_request(req).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.map_err(|e| classify(&e))?;
                }
                let latency = start.elapsed();
                *slot = Some(conn);
                return Ok((status, latency));
            }
            Err(mut err) => match err.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => return Err(classify(err.error())),
            },
        }
    }
}

/// Opens a connection and starts its driver task.
async fn connect(target: SocketAddr) -> Result<Conn, Transport> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|_| Transport::Connect)?;
    // Requests are small and written whole; Nagle would only add delay.
    stream.set_nodelay(true).map_err(|_| Transport::Connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Transport::Connect)?;
    tokio::spawn(async move {
        // Its error reaches the request that was using it; nothing to add here.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Maps a hyper error to a transport failure kind.
fn classify(err: &hyper::Error) -> Transport {
    if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        return Transport::BadResponse;
    }
    if err.is_incomplete_message()
        || err.is_closed()
        || err.is_canceled()
        || err.is_body_write_aborted()
    {
        return Transport::Reset;
    }
    let io = std::error::Error::source(err).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof,
        ) => Transport::Reset,
        _ => Transport::Io,
    }
}
