//! Request smuggling guard: the framing rules hyper does not enforce, each
//! a 400. From hyper's parsed head, [`refusal`] checks what hyper keeps:
//! one `Host` and one `Content-Type`, `chunked` as the only transfer coding
//! (hyper only wants it last), gunicorn's method and request-target rules;
//! [`trailer_refusal`] judges a buffered body's trailers. What hyper's parse
//! hides needs the bytes: `scanner.rs` watches them and leaves one
//! [`HeadNote`] per request head in the connection's [`Verdicts`], which the
//! service takes in order.

use std::collections::VecDeque;
use std::sync::Mutex;

use http::header::{CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::Method;

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

/// The 400's reason for a chunk-size line the scanner refused.
pub const BAD_CHUNK_SIZE: &str = "a chunk-size line with more than hex digits before its extension";

/// What the scanner noted about one request head.
#[derive(Debug, Default)]
pub struct HeadNote {
    /// What the head's bytes showed.
    pub verdict: Verdict,
    /// The request target as the client sent it, when hyper's parsed URI
    /// lost part of it: a `#fragment` (hyper drops it) or bytes the scanner
    /// percent-encoded so that hyper would take the target. None for almost
    /// every request. RAW_URI and QUERY_STRING come from it when set.
    pub raw_target: Option<Box<[u8]>>,
    /// The request's place on its connection (0 for the first), to ask
    /// [`Verdicts::body_refused`] about its body.
    pub index: u64,
}

/// Per-connection notes, one per request head, oldest first, and what the
/// scanner found in the bodies.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<Notes>);

#[derive(Debug, Default)]
struct Notes {
    heads: VecDeque<HeadNote>,
    taken: u64,
    pushed: u64,
    /// The request whose chunked body had a chunk-size line gunicorn
    /// refuses and hyper's decoder takes (`0 `); the scanner stops there,
    /// so there is at most one.
    body_refused: Option<u64>,
}

impl Verdicts {
    /// The note on the next request's head (a clear one if the scanner
    /// lost track of the connection).
    pub fn next(&self) -> HeadNote {
        let Ok(mut notes) = self.0.lock() else {
            return HeadNote::default();
        };
        let index = notes.taken;
        notes.taken += 1;
        let mut note = notes.heads.pop_front().unwrap_or_default();
        note.index = index;
        note
    }

    /// Whether request `index`'s body broke a chunked-framing rule that
    /// hyper's decoder does not check. Asked once the body has been read:
    /// the scanner sees every byte before hyper decodes it.
    pub fn body_refused(&self, index: u64) -> bool {
        self.0
            .lock()
            .is_ok_and(|notes| notes.body_refused == Some(index))
    }

    pub(super) fn push(&self, verdict: Verdict, raw_target: Option<Box<[u8]>>) {
        if let Ok(mut notes) = self.0.lock() {
            let index = notes.pushed;
            notes.pushed += 1;
            notes.heads.push_back(HeadNote {
                verdict,
                raw_target,
                index,
            });
        }
    }

    /// The body of the head pushed last is refused.
    pub(super) fn refuse_last_body(&self) {
        if let Ok(mut notes) = self.0.lock() {
            notes.body_refused = notes.pushed.checked_sub(1);
        }
    }

    #[cfg(test)]
    pub(super) fn pending(&self) -> Vec<(Verdict, Option<Vec<u8>>)> {
        let notes = self.0.lock().unwrap();
        let heads = notes.heads.iter();
        heads
            .map(|n| (n.verdict, n.raw_target.as_deref().map(<[u8]>::to_vec)))
            .collect()
    }
}

/// Why this request must get 400, if it must: the scanner's verdict on its
/// bytes, then the rules hyper's parsed head shows.
pub fn refusal(
    verdict: Verdict,
    head: &http::request::Parts,
    any_method: bool,
) -> Option<&'static str> {
    match verdict {
        Verdict::BothLengths => return Some("both Content-Length and Transfer-Encoding"),
        Verdict::BareLf => return Some("a request head line ends in a bare LF, not CRLF"),
        Verdict::Clear => {}
    }
    // One pass over the few headers a request has, not a hashed lookup
    // per rule.
    let (mut hosts, mut content_types, mut transfer_coded) = (0, 0, false);
    for name in head.headers.iter().map(|(name, _)| name) {
        if name == HOST {
            hosts += 1;
        } else if name == CONTENT_TYPE {
            content_types += 1;
        } else if name == TRANSFER_ENCODING {
            transfer_coded = true;
        }
    }
    // RFC 9112 §3.2: a request with more than one Host line gets 400.
    if hosts > 1 {
        return Some("more than one Host header");
    }
    // RFC 9110 §5.3: Content-Type admits one member, so a repeat is
    // ambiguous (gunicorn's singleton fields: Host and Content-Type).
    if content_types > 1 {
        return Some("more than one Content-Type header");
    }
    // hyper checks the method is a token; gunicorn also refuses lower case,
    // `#` and lengths outside 3..=20 unless `permit_unconventional_http_method`
    // is set (`any_method`): no registered method is like that.
    let method = head.method.as_str();
    let unconventional = !(3..=20).contains(&method.len())
        || method.bytes().any(|b| b.is_ascii_lowercase() || b == b'#');
    if unconventional && !any_method {
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
    if !transfer_coded {
        return None;
    }
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

/// `bytes` without leading and trailing ASCII whitespace.
pub(super) fn trim(bytes: &[u8]) -> &[u8] {
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

#[cfg(test)]
mod tests {
    use super::*;

    use Verdict::{BareLf, BothLengths, Clear};

    const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

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
                refusal(Clear, &head(req), false),
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
                refusal(Clear, &head(req), false).is_some(),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        let get = head(GET);
        assert!(refusal(BothLengths, &get, false).is_some());
        assert!(refusal(BareLf, &get, false).is_some());
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
                refusal(Clear, &head(req), false),
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
                refusal(Clear, &head(req), false).is_some(),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
    }
}
