//! The response head a worker sends back (worker -> master), in the
//! NUL-separated latin-1 form of docs/protocol.md: the status line as the
//! app gave it and the headers, checked and turned into hyper's types, with
//! a cache for the heads an app repeats.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::StatusCode;

/// A response head from the worker that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The status is not three digits in 100..=999 followed by a space or the end.
    #[error("invalid status line {0:?} from the app")]
    Status(String),
    /// A header name or value HTTP cannot carry.
    #[error("invalid response header {0:?} from the app")]
    Header(String),
    /// The fields do not pair up.
    #[error("response head has an odd number of fields")]
    Unpaired,
    /// A `Content-Length` that is not digits, or several that disagree.
    #[error("invalid Content-Length {0:?} from the app (one decimal number of bytes)")]
    ContentLength(String),
}

/// A decoded response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// Headers as the app gave them, minus hop-by-hop ones.
    pub headers: HeaderMap,
    /// The app asked to close the connection after this response.
    pub close: bool,
    /// The app's `Content-Length`, checked and left as one canonical header;
    /// `None` when it set none or the status allows no body (1xx, 204, 304:
    /// the header is dropped then, RFC 9110 §8.6).
    pub content_length: Option<u64>,
    /// The app's reason phrase when the standard one would not be the same
    /// bytes (`200 Everything Fine`), or `Unknown` for a code without a
    /// standard phrase that came with none; `None`: the standard phrase.
    pub reason: Option<Bytes>,
}

/// The last response head a lane decoded, to answer the next identical one
/// with a clone: most apps send a few distinct heads, and cloning a decoded
/// head is much cheaper than decoding it again (header name lookups, value
/// checks and copies, hashing into a new map).
#[derive(Debug, Default)]
pub struct HeadCache {
    last: Option<(Vec<u8>, ResponseHead)>,
}

impl HeadCache {
    /// [`decode_response_head`] then `finish` (e.g. default headers the
    /// master adds), from the cache when `payload` is the same bytes as last
    /// time: a header added to a cloned map would grow it again each time.
    pub fn decode(
        &mut self,
        payload: &[u8],
        finish: impl FnOnce(&mut ResponseHead),
    ) -> Result<ResponseHead, HeadError> {
        if let Some((bytes, head)) = &self.last {
            if bytes.as_slice() == payload {
                return Ok(head.clone());
            }
        }
        let mut head = decode_response_head(payload)?;
        finish(&mut head);
        // A copy, not the payload's `Bytes`: that would pin the lane's read buffer.
        self.last = Some((payload.to_vec(), head.clone()));
        Ok(head)
    }
}

/// Decodes the payload of a RESPONSE frame.
///
/// The master checks `Content-Length` although the worker does too: hyper
/// frames the client's response by it (and writes it verbatim next to a
/// body of known size), so what the master hands hyper must be one valid
/// number whatever a worker sends. A lane decodes a head once (`HeadCache`),
/// so the check costs nothing per request.
pub fn decode_response_head(payload: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut fields = payload.split(|&b| b == 0);
    let status_line = fields.next().unwrap_or_default();
    let status = parse_status(status_line)
        .ok_or_else(|| HeadError::Status(String::from_utf8_lossy(status_line).into_owned()))?;
    let mut headers = HeaderMap::new();
    let mut close = false;
    let mut content_length = None;
    while let Some(name) = fields.next() {
        let value = fields.next().ok_or(HeadError::Unpaired)?;
        let bad = || HeadError::Header(String::from_utf8_lossy(name).into_owned());
        let name = HeaderName::from_bytes(name).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
        if name == TRANSFER_ENCODING || name == "keep-alive" {
            continue;
        }
        if name == http::header::CONNECTION {
            close |= value.as_bytes().eq_ignore_ascii_case(b"close");
            continue;
        }
        if name == CONTENT_LENGTH {
            let bad = || HeadError::ContentLength(String::from_utf8_lossy(value.as_bytes()).into());
            let len = parse_content_length(value.as_bytes()).ok_or_else(bad)?;
            if content_length.is_some_and(|seen| seen != len) {
                return Err(bad());
            }
            content_length = Some(len);
            continue;
        }
        headers.append(name, value);
    }
    let has_body = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let content_length = content_length.filter(|_| has_body);
    if let Some(len) = content_length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(ResponseHead {
        status,
        headers,
        close,
        content_length,
        reason: reason_phrase(status, status_line),
    })
}

fn parse_status(line: &[u8]) -> Option<StatusCode> {
    if line.len() < 3 || (line.len() > 3 && line[3] != b' ') {
        return None;
    }
    StatusCode::from_bytes(&line[..3]).ok()
}

/// Digits only, with optional spaces or tabs around them (RFC 9110 §8.6):
/// no sign, no list, nothing that overflows.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What `ResponseHead::reason` says for this status line: PEP 3333 has the
/// app give the whole status, so its phrase goes out as given; gunicorn
/// sends `599 UNKNOWN`-style text when there is none, we the standard
/// phrase or `Unknown`.
fn reason_phrase(status: StatusCode, line: &[u8]) -> Option<Bytes> {
    let given = line.get(4..).unwrap_or_default();
    match status.canonical_reason() {
        Some(standard) if given.is_empty() || given == standard.as_bytes() => None,
        None if given.is_empty() => Some(Bytes::from_static(b"Unknown")),
        _ => Some(Bytes::copy_from_slice(given)),
    }
}
