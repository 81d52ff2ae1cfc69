//! Request smuggling guard: the framing rules hyper does not enforce, each
//! a 400. From hyper's parsed head, [`refusal`] checks what hyper keeps:
//! one `Host` and one `Content-Type`, `chunked` as the only transfer coding
//! (hyper only wants it last), gunicorn's method and request-target rules;
//! [`trailer_refusal`] judges a buffered body's trailers. What hyper's parse hides needs the bytes: it accepts both
//! `Content-Length` and `Transfer-Encoding` (it drops the length and reads
//! chunked, as RFC 9112 §6.3 allows) without exposing the dropped header,
//! and it accepts bare-LF line endings. So this wrapper watches the bytes
//! hyper reads: it finds each request head where hyper does (at the first
//! empty line, CRLF or bare LF), notes whether it carries both headers or a
//! bare LF, and skips its body by the same framing rules so the next head
//! is found too. The service takes one verdict per request, in order; the
//! scanner sees every byte before hyper does, so a head's verdict is always
//! queued before hyper hands its request over.
//!
//! The scanner never rejects anything itself; if it loses track (a head it
//! cannot frame), it stops judging and hyper's own checks stand.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::Method;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head the scanner follows; hyper refuses longer ones anyway.
const MAX_HEAD: usize = 1024 * 1024;

/// What the scanner saw in one request head's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Nothing hyper's parse would hide (or the scanner lost track).
    #[default]
    Clear,
    /// Both `Content-Length` and `Transfer-Encoding`.
    BothLengths,
    /// A line of the head ends in LF alone (gunicorn refuses these too).
    BareLf,
}

/// Per-connection verdicts, one per request head, oldest first.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<VecDeque<Verdict>>);

impl Verdicts {
    /// The verdict on the next request's head.
    pub fn next(&self) -> Verdict {
        self.0
            .lock()
            .map(|mut q| q.pop_front().unwrap_or_default())
            .unwrap_or_default()
    }

    fn push(&self, verdict: Verdict) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(verdict);
        }
    }
}

/// Why this request must get 400, if it must: the scanner's verdict on its
/// bytes, then the rules hyper's parsed head shows.
pub fn refusal(verdict: Verdict, head: &http::request::Parts) -> Option<&'static str> {
    match verdict {
        Verdict::BothLengths => return Some("both Content-Length and Transfer-Encoding"),
        Verdict::BareLf => return Some("a request head line ends in a bare LF, not CRLF"),
        Verdict::Clear => {}
    }
    // RFC 9112 §3.2: a request with more than one Host line gets 400.
    if head.headers.get_all(HOST).iter().nth(1).is_some() {
        return Some("more than one Host header");
    }
    // RFC 9110 §5.3: Content-Type admits one member, so a repeat is
    // ambiguous (gunicorn's singleton fields: Host and Content-Type).
    if head.headers.get_all(CONTENT_TYPE).iter().nth(1).is_some() {
        return Some("more than one Content-Type header");
    }
    // hyper checks the method is a token; gunicorn also refuses lower case,
    // `#` and lengths outside 3..=20 unless `permit_unconventional_http_method`
    // is set (no such setting here): no registered method is like that.
    let method = head.method.as_str();
    if !(3..=20).contains(&method.len())
        || method.bytes().any(|b| b.is_ascii_lowercase() || b == b'#')
    {
        return Some("an unconventional request method");
    }
    // RFC 9112 §3.2.3-4: the asterisk form is for OPTIONS only and the
    // authority form for CONNECT only (which `service.rs` answers with 405).
    let uri = &head.uri;
    if uri == "*" && head.method != Method::OPTIONS {
        return Some("a `*` request target without OPTIONS");
    }
    if uri.scheme().is_none() && uri.authority().is_some() && head.method != Method::CONNECT {
        return Some("an authority-form request target without CONNECT");
    }
    // hyper refuses a Transfer-Encoding whose last coding is not chunked;
    // any other coding before it (`gzip, chunked`) would reach the app
    // still encoded, and `chunked, chunked` is not a framing either.
    let mut codings = head
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim);
    if let Some(first) = codings.next() {
        if !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some() {
            return Some("a Transfer-Encoding other than chunked");
        }
    }
    None
}

/// Why a chunked body's trailers must get 400, if they must: RFC 9110
/// §6.5.1 fields that change framing, routing or authentication are not
/// allowed there (gunicorn's `RFC9110_6_5_1_FORBIDDEN_TRAILER`). Checked
/// while the body is buffered; a body streaming to the worker has its
/// trailers dropped, so they reach nobody.
pub fn trailer_refusal(trailers: &http::HeaderMap) -> Option<&'static str> {
    const FORBIDDEN: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "trailer",
        "authorization",
        "te",
    ];
    FORBIDDEN
        .iter()
        .any(|name| trailers.contains_key(*name))
        .then_some("a trailer field that is not allowed in trailers")
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
                    let searched_from = self.line.len();
                    self.line.extend_from_slice(bytes);
                    match head_end(&self.line, searched_from) {
                        Some(end) => {
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
        let head = &self.line[..end];
        let bare_lf = head
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
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
        self.verdicts.push(if bare_lf {
            Verdict::BareLf
        } else if has_length && chunked.is_some() {
            Verdict::BothLengths
        } else {
            Verdict::Clear
        });
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

/// Where the head in `buf` ends (just past its empty line), looking at the
/// line ends from `from` on. As in httparse, which hyper uses, a line ends
/// in LF with or without a CR before it, so the scanner splits heads exactly
/// where hyper does; `buf` starts at the request line.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len())
        .filter(|&i| buf[i] == b'\n')
        .find(|&i| buf[..i].ends_with(b"\n") || buf[..i].ends_with(b"\n\r"))
        .map(|i| i + 1)
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

    use Verdict::{BareLf, BothLengths, Clear};

    fn verdicts_for(pieces: &[&[u8]]) -> Vec<Verdict> {
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
        assert_eq!(whole, vec![Clear, BothLengths, Clear, Clear, Clear]);
        // The same bytes one at a time: boundaries never matter.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(verdicts_for(&bytes), whole);
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_skipped() {
        // LENGTH's 20-byte body contains a request line and headers.
        assert_eq!(verdicts_for(&[LENGTH, GET]), vec![Clear, Clear]);
    }

    #[test]
    fn header_names_are_case_insensitive_and_either_order() {
        let req =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts_for(&[req]), vec![BothLengths]);
    }

    #[test]
    fn a_huge_chunk_size_does_not_overflow() {
        let req: &[u8] =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert_eq!(verdicts_for(&[req]), vec![Clear]);
    }

    #[test]
    fn gives_up_quietly_on_what_hyper_refuses() {
        let req: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(verdicts_for(&[req, GET]), vec![Clear]);
    }

    // Issue 10, item 10: hyper ends a head at a bare-LF empty line too; the
    // scanner used to wait for CRLF CRLF and judged nothing meanwhile.
    #[test]
    fn bare_lf_heads_end_where_hyper_ends_them_and_are_flagged() {
        let bare: &[u8] =
            b"POST / HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n";
        assert_eq!(verdicts_for(&[bare]), vec![BareLf]);
        let mixed: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\n";
        let lf_cr_lf: &[u8] = b"GET / HTTP/1.1\nHost: x\n\r\n";
        assert_eq!(verdicts_for(&[mixed, lf_cr_lf]), vec![BareLf, BareLf]);
        // Its chunked body is followed, so the next head is judged too.
        let mut stream = bare.to_vec();
        stream.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        stream.extend_from_slice(GET);
        let whole = verdicts_for(&[&stream]);
        assert_eq!(whole, vec![BareLf, Clear]);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(verdicts_for(&bytes), whole);
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line_however_it_is_fed() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        // A line end split across reads: only the new bytes are searched.
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 17), Some(18));
    }

    /// A parsed head, as hyper would hand it over (CRLF heads only).
    fn head(request: &[u8]) -> http::request::Parts {
        let text = std::str::from_utf8(request).unwrap();
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap();
        let target = request_line.next().unwrap();
        let mut builder = http::Request::builder().method(method).uri(target);
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap();
            builder = builder.header(name, value.trim());
        }
        builder.body(()).unwrap().into_parts().0
    }

    // Issue 10, item 11.
    #[test]
    fn one_host_and_chunked_alone_pass_the_rest_is_refused() {
        let fine: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n",
        ];
        for req in fine {
            assert_eq!(
                refusal(Clear, &head(req)),
                None,
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        let refused: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
        ];
        for req in refused {
            assert!(
                refusal(Clear, &head(req)).is_some(),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        let get = head(GET);
        assert!(refusal(BothLengths, &get).is_some());
        assert!(refusal(BareLf, &get).is_some());
    }

    // Issue 10, item 13: gunicorn's corpus cases invalid/003c, 041 and the
    // rfc9112_target_* ones.
    #[test]
    fn methods_targets_and_singletons_as_gunicorn_checks_them() {
        let fine: &[&[u8]] = &[
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"MKCALENDAR /x HTTP/1.1\r\n\r\n",
            b"GET http://example.com/x HTTP/1.1\r\nContent-Type: a\r\n\r\n",
        ];
        for req in fine {
            assert_eq!(
                refusal(Clear, &head(req)),
                None,
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        let refused: &[&[u8]] = &[
            b"-bl /foo HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GE / HTTP/1.1\r\n\r\n",
            b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET example.com:443 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
        ];
        for req in refused {
            assert!(
                refusal(Clear, &head(req)).is_some(),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
    }
}
