//! Request smuggling guard: a request with both `Content-Length` and
//! `Transfer-Encoding` must get 400. hyper accepts it (it drops the length
//! and reads chunked, as RFC 9112 §6.3 allows) and does not expose the
//! dropped header, so this wrapper watches the bytes hyper reads: it finds
//! each request head, notes whether it carries both headers, and skips its
//! body by the same framing rules so the next head is found too. The
//! service takes one verdict per request, in order.
//!
//! The scanner never rejects anything itself; if it loses track (a head it
//! cannot frame), it stops judging and hyper's own checks stand.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head the scanner follows; hyper refuses longer ones anyway.
const MAX_HEAD: usize = 1024 * 1024;

/// Per-connection verdicts, one per request head, oldest first.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<VecDeque<bool>>);

impl Verdicts {
    /// Whether the next request carried both framing headers.
    pub fn next_is_ambiguous(&self) -> bool {
        self.0
            .lock()
            .map(|mut q| q.pop_front().unwrap_or(false))
            .unwrap_or(false)
    }

    fn push(&self, ambiguous: bool) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(ambiguous);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    /// Body bytes to pass over (a length body, chunk data and its CRLF).
    Skip {
        left: u64,
        then: Resume,
    },
    ChunkSize,
    Trailers,
    Lost,
}

#[derive(Debug, Clone, Copy)]
enum Resume {
    Head,
    ChunkSize,
}

/// Follows request framing over the bytes of one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    verdicts: Arc<Verdicts>,
}

impl Scanner {
    /// A scanner at the start of a connection.
    pub fn new(verdicts: Arc<Verdicts>) -> Scanner {
        Scanner {
            state: State::Head,
            line: Vec::new(),
            verdicts,
        }
    }

    /// Feeds bytes as they are read.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Head => {
                    if self.line.is_empty() {
                        // Empty lines before a request line are allowed.
                        let skip = bytes
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return;
                        }
                    }
                    let searched_from = self.line.len().saturating_sub(3);
                    self.line.extend_from_slice(bytes);
                    match find(&self.line[searched_from..], b"\r\n\r\n") {
                        Some(at) => {
                            let end = searched_from + at + 4;
                            let rest = self.line.len() - end;
                            self.on_head(end);
                            let consumed = bytes.len() - rest;
                            bytes = &bytes[consumed..];
                        }
                        None => {
                            if self.line.len() > MAX_HEAD {
                                self.state = State::Lost;
                            }
                            return;
                        }
                    }
                }
                State::Skip { left, then } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = match then {
                            Resume::Head => State::Head,
                            Resume::ChunkSize => State::ChunkSize,
                        };
                    }
                }
                State::ChunkSize | State::Trailers => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > MAX_HEAD {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => match parse_chunk_size(line) {
                            Some(0) => State::Trailers,
                            // The data, then its CRLF.
                            Some(size) => State::Skip {
                                left: size.saturating_add(2),
                                then: Resume::ChunkSize,
                            },
                            None => State::Lost,
                        },
                    };
                }
            }
        }
    }

    /// A complete head is in `line[..end]`.
    fn on_head(&mut self, end: usize) {
        let mut length = None;
        let mut chunked = None;
        let mut bad_length = false;
        for line in self.line[..end].split(|&b| b == b'\n').skip(1) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = &line[..colon];
            let value = trim(&line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"content-length") {
                match std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    Some(n) => length = Some(n),
                    None => bad_length = true,
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .map(trim)
                    .unwrap_or_default();
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        }
        let has_length = length.is_some() || bad_length;
        self.verdicts.push(has_length && chunked.is_some());
        self.state = match (chunked, length, bad_length) {
            (Some(true), _, _) => State::ChunkSize,
            (Some(false), _, _) | (None, _, true) => State::Lost, // hyper refuses these
            (None, Some(n), false) if n > 0 => State::Skip {
                left: n,
                then: Resume::Head,
            },
            _ => State::Head,
        };
        // The bytes after the head are still in the caller's slice.
        self.line.clear();
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next().map(trim)?;
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A connection whose incoming bytes pass through a [`Scanner`].
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
}

impl<IO> Guarded<IO> {
    /// Wraps `io`; verdicts go to `verdicts`.
    pub fn new(io: IO, verdicts: Arc<Verdicts>) -> Guarded<IO> {
        Guarded {
            io,
            scanner: Scanner::new(verdicts),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.scanner.feed(&buf.filled()[before..]);
        }
        poll
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_for(pieces: &[&[u8]]) -> Vec<bool> {
        let verdicts = Arc::new(Verdicts::default());
        let mut scanner = Scanner::new(verdicts.clone());
        for piece in pieces {
            scanner.feed(piece);
        }
        let q = verdicts.0.lock().unwrap();
        q.iter().copied().collect()
    }

    const BOTH: &[u8] = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const LENGTH: &[u8] =
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nGET / HTTP/1.1\r\n\r\nxx";
    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

    #[test]
    fn flags_both_headers_and_follows_every_framing() {
        let mut stream = Vec::new();
        for part in [GET, BOTH, LENGTH, CHUNKED, GET] {
            stream.extend_from_slice(part);
        }
        let whole = verdicts_for(&[&stream]);
        assert_eq!(whole, vec![false, true, false, false, false]);
        // The same bytes one at a time: boundaries never matter.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(verdicts_for(&bytes), whole);
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_skipped() {
        // LENGTH's 20-byte body contains a request line and headers.
        assert_eq!(verdicts_for(&[LENGTH, GET]), vec![false, false]);
    }

    #[test]
    fn header_names_are_case_insensitive_and_either_order() {
        let req =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts_for(&[req]), vec![true]);
    }

    #[test]
    fn a_huge_chunk_size_does_not_overflow() {
        let req: &[u8] =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert_eq!(verdicts_for(&[req]), vec![false]);
    }

    #[test]
    fn gives_up_quietly_on_what_hyper_refuses() {
        let req: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(verdicts_for(&[req, GET]), vec![false]);
    }
}
