//! The bytes hyper reads, watched on their way in. hyper's parse hides what
//! the smuggling guard (`framing.rs`) must judge: it accepts both
//! `Content-Length` and `Transfer-Encoding` (it drops the length and reads
//! chunked, as RFC 9112 §6.3 allows) without exposing the dropped header,
//! and it accepts bare-LF line endings. So the [`Scanner`] finds each
//! request head where hyper does (at the first empty line, CRLF or bare
//! LF), notes what it carries, and skips its body by the same framing rules
//! so the next head is found too. Every byte passes the scanner before
//! hyper, so a head's note is always queued before hyper hands its request
//! over.
//!
//! Two things gunicorn serves or refuses that hyper decides otherwise:
//! - A request target with a byte hyper's URI parser refuses though
//!   gunicorn serves it (a `"` or `<` in the query, a byte over 0x7F not in
//!   UTF-8): the scanner percent-encodes those bytes before hyper sees the
//!   head (PATH_INFO is percent-decoded, so it comes out the same) and
//!   notes the target as sent for RAW_URI and QUERY_STRING. A `#fragment`,
//!   which hyper drops, is noted the same way.
//! - A chunk-size line hyper's decoder takes and gunicorn refuses (`0 `,
//!   a space and no extension): noted for the request whose body it is.
//!
//! A head is handed to hyper only once it is complete (hyper cannot parse
//! part of one either), so a head split over reads is judged and rewritten
//! exactly as one read whole. If the scanner loses track (a head it cannot
//! frame), it hands over what it held and stops judging; hyper's own checks
//! stand.

use std::sync::Arc;

use super::framing::{trim, Verdict, Verdicts};

/// Longest head the scanner holds and follows, and the read buffer hyper
/// is given (`server.rs`), so that a head too long for hyper is handed to
/// hyper to refuse (431) rather than held here. hyper's own default
/// (8 KiB + 100 × 4 KiB): a connection costs at most about twice this.
pub(super) const MAX_HEAD: usize = 8192 + 4096 * 100;

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
    /// The head (or chunk line) read so far; a head's bytes are held back
    /// from hyper until it is complete.
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

    /// Feeds bytes as they are read. None: hand them to hyper as they are
    /// (almost always); otherwise hand over the returned bytes instead
    /// (a rewritten head, a head held from earlier reads, or fewer bytes
    /// while a head is incomplete).
    pub fn feed(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Output::new(input);
        let mut pos = 0;
        while pos < input.len() {
            let bytes = &input[pos..];
            match &mut self.state {
                State::Lost => break,
                State::Head => {
                    if self.line.is_empty() {
                        // Empty lines before a request line are allowed.
                        let skip = bytes
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        if skip > 0 {
                            pos += skip;
                            continue;
                        }
                    }
                    // Nearly every head arrives whole in one read and is
                    // judged where it lies; only a head split over reads is
                    // gathered in `line`.
                    let held = self.line.len();
                    if held > 0 {
                        self.line.extend_from_slice(bytes);
                    }
                    let buf: &[u8] = if held > 0 { &self.line } else { bytes };
                    match head_end(buf, held) {
                        Some(end) => {
                            let (state, rewritten) = judge_head(&buf[..end], &self.verdicts);
                            self.state = state;
                            let taken = end - held;
                            if held > 0 || rewritten.is_some() {
                                out.replace(pos, pos + taken);
                                out.emit(rewritten.as_deref().unwrap_or(&buf[..end]));
                            }
                            self.line.clear();
                            pos += taken;
                        }
                        None if held + bytes.len() > MAX_HEAD => {
                            // Give up: hyper gets everything, as read.
                            self.line.truncate(held);
                            out.replace(pos, pos);
                            out.emit(&self.line);
                            self.line.clear();
                            self.state = State::Lost;
                        }
                        None => {
                            if held == 0 {
                                self.line.extend_from_slice(bytes);
                            }
                            out.replace(pos, input.len());
                            pos = input.len();
                        }
                    }
                }
                State::Skip { left, then } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    pos += n as usize;
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
                        break;
                    };
                    self.line.extend_from_slice(&bytes[..nl]);
                    pos += nl + 1;
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => match chunk_size(line) {
                            Some(0) => State::Trailers,
                            // The data, then its CRLF.
                            Some(size) => State::Skip {
                                left: size.saturating_add(2),
                                then: Resume::ChunkSize,
                            },
                            None => {
                                self.verdicts.refuse_last_body();
                                State::Lost
                            }
                        },
                    };
                }
            }
        }
        out.finish()
    }

    /// The connection ended: the bytes of an incomplete head held back so
    /// far, for hyper to judge as it would have.
    pub fn take_held(&mut self) -> Option<Vec<u8>> {
        if !matches!(self.state, State::Head) || self.line.is_empty() {
            return None;
        }
        self.state = State::Lost;
        Some(std::mem::take(&mut self.line))
    }
}

/// Judges a complete head: notes it in `verdicts`, and returns the state
/// for its body and the head rewritten if hyper would refuse its target as
/// sent.
fn judge_head(head: &[u8], verdicts: &Verdicts) -> (State, Option<Vec<u8>>) {
    let mut bare_lf = false;
    let mut length = None;
    let mut chunked = None;
    let mut bad_length = false;
    // Every line but the request line, each without its LF.
    let mut start = None;
    for nl in memchr::memchr_iter(b'\n', head) {
        bare_lf |= nl == 0 || head[nl - 1] != b'\r';
        let Some(from) = start.replace(nl + 1) else {
            continue;
        };
        let line = &head[from..nl];
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
    let verdict = if bare_lf {
        Verdict::BareLf
    } else if has_length && chunked.is_some() {
        Verdict::BothLengths
    } else {
        Verdict::Clear
    };
    let (raw_target, rewritten) = match request_target(head) {
        Some(range) => {
            let target = &head[range.clone()];
            let encode = target.iter().any(|&b| hyper_refuses(b));
            let keep = encode || target.contains(&b'#');
            let rewritten = encode.then(|| {
                let mut fixed = Vec::with_capacity(head.len() + 2 * target.len());
                fixed.extend_from_slice(&head[..range.start]);
                percent_encode(&mut fixed, target);
                fixed.extend_from_slice(&head[range.end..]);
                fixed
            });
            (keep.then(|| target.into()), rewritten)
        }
        None => (None, None),
    };
    verdicts.push(verdict, raw_target);
    let state = match (chunked, length, bad_length) {
        (Some(true), _, _) => State::ChunkSize,
        (Some(false), _, _) | (None, _, true) => State::Lost, // hyper refuses these
        (None, Some(n), false) if n > 0 => State::Skip {
            left: n,
            then: Resume::Head,
        },
        _ => State::Head,
    };
    (state, rewritten)
}

/// Which bytes of a scanner feed go to hyper: the input as read, except
/// ranges replaced by other bytes. Allocates only once something differs.
struct Output<'a> {
    input: &'a [u8],
    /// Input bytes before this are accounted for.
    passed: usize,
    bytes: Option<Vec<u8>>,
}

impl<'a> Output<'a> {
    fn new(input: &'a [u8]) -> Output<'a> {
        Output {
            input,
            passed: 0,
            bytes: None,
        }
    }

    /// Input up to `from` goes as read; `from..to` does not.
    fn replace(&mut self, from: usize, to: usize) {
        let input = self.input;
        let bytes = self
            .bytes
            .get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
        bytes.extend_from_slice(&input[self.passed..from]);
        self.passed = to;
    }

    /// Bytes to hand over at the point of the last [`Output::replace`].
    fn emit(&mut self, extra: &[u8]) {
        self.bytes
            .get_or_insert_with(Vec::new)
            .extend_from_slice(extra);
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut bytes = self.bytes?;
        bytes.extend_from_slice(&self.input[self.passed..]);
        Some(bytes)
    }
}

/// Where the origin-form target of the head's request line is (`/path?q`);
/// None for any other form, which hyper's parse judges alone.
fn request_target(head: &[u8]) -> Option<std::ops::Range<usize>> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = &head[..line_end];
    let start = line.iter().position(|&b| b == b' ')? + 1;
    let len = line[start..].iter().position(|&b| b == b' ')?;
    (line.get(start) == Some(&b'/')).then_some(start..start + len)
}

/// Bytes httparse takes in a target and the `http` crate's URI parser
/// refuses (its path and query maps; bytes over 0x7F only in valid UTF-8),
/// all of which gunicorn serves. Encoding every byte over 0x7F keeps the
/// check to one byte at a time.
fn hyper_refuses(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`' | 0x7f..=0xff)
}

fn percent_encode(out: &mut Vec<u8>, target: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in target {
        if hyper_refuses(b) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
}

/// A chunk-size line's size as gunicorn reads it: hex digits, then
/// optionally blanks and a `;` extension. hyper's decoder also takes blanks
/// with no extension after them, which gunicorn refuses.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = match line.iter().position(|&b| b == b';') {
        Some(semicolon) => {
            let size = &line[..semicolon];
            let blanks = size
                .iter()
                .rev()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            &size[..size.len() - blanks]
        }
        None => line,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Where the head in `buf` ends (just past its empty line), looking at the
/// line ends from `from` on. As in httparse, which hyper uses, a line ends
/// in LF with or without a CR before it, so the scanner splits heads exactly
/// where hyper does; `buf` starts at the request line.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    // A line end split across reads: look back one byte for its LF.
    memchr::memchr_iter(b'\n', &buf[from..])
        .map(|i| i + from)
        .find(|&i| buf[..i].ends_with(b"\n") || buf[..i].ends_with(b"\n\r"))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use Verdict::{BareLf, BothLengths, Clear};

    /// What hyper would be handed and the notes left, for `pieces` read
    /// one after the other and then the end of input.
    /// A head's verdict and the raw target noted with it.
    type Noted = (Verdict, Option<Vec<u8>>);

    fn scan(pieces: &[&[u8]]) -> (Vec<u8>, Vec<Noted>, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::default());
        let mut scanner = Scanner::new(verdicts.clone());
        let mut handed = Vec::new();
        for piece in pieces {
            match scanner.feed(piece) {
                None => handed.extend_from_slice(piece),
                Some(bytes) => handed.extend_from_slice(&bytes),
            }
        }
        handed.extend(scanner.take_held().unwrap_or_default());
        let notes = verdicts.pending();
        (handed, notes, verdicts)
    }

    fn verdicts_for(pieces: &[&[u8]]) -> Vec<Verdict> {
        scan(pieces).1.into_iter().map(|(v, _)| v).collect()
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
        let (handed, notes, _) = scan(&[&stream]);
        let whole: Vec<Verdict> = notes.iter().map(|(v, _)| *v).collect();
        assert_eq!(whole, vec![Clear, BothLengths, Clear, Clear, Clear]);
        assert_eq!(
            handed, stream,
            "nothing to rewrite: hyper gets the bytes as read"
        );
        // The same bytes one at a time: boundaries never matter.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (handed, notes_by_byte, _) = scan(&bytes);
        assert_eq!(notes_by_byte, notes);
        assert_eq!(handed, stream);
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
        let (handed, notes, _) = scan(&[req, GET]);
        assert_eq!(notes.len(), 1);
        assert_eq!(handed, [req, GET].concat());
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

    // Issue 10, item 13: gunicorn's corpus cases valid/014 and valid/005.
    #[test]
    fn targets_hyper_refuses_are_encoded_and_kept_as_sent() {
        let quoted: &[u8] = b"GET /with_\"quotes\"?foo=\"bar\" HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut stream = quoted.to_vec();
        stream.extend_from_slice(LENGTH);
        let expected_notes = vec![
            (Clear, Some(b"/with_\"quotes\"?foo=\"bar\"".to_vec())),
            (Clear, None),
        ];
        let mut expected =
            b"GET /with_%22quotes%22?foo=%22bar%22 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        expected.extend_from_slice(LENGTH);
        let (handed, notes, _) = scan(&[&stream]);
        assert_eq!(
            String::from_utf8_lossy(&handed),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(notes, expected_notes);
        // Read a byte at a time, the held head goes over whole, rewritten.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (handed, notes, _) = scan(&bytes);
        assert_eq!(handed, expected);
        assert_eq!(notes, expected_notes);
        // What hyper now takes is a URI the http crate parses.
        let target = std::str::from_utf8(&handed[4..35]).unwrap();
        assert!(target.parse::<http::Uri>().is_ok(), "{target}");

        let fragment: &[u8] = b"GET /forums/2375?page=1#posts-17408 HTTP/1.1\r\n\r\n";
        let (handed, notes, _) = scan(&[fragment]);
        assert_eq!(handed, fragment, "hyper takes a fragment as sent");
        assert_eq!(
            notes,
            vec![(Clear, Some(b"/forums/2375?page=1#posts-17408".to_vec()))]
        );

        let high: &[u8] = b"GET /caf\xe9?q=\xff HTTP/1.1\r\n\r\n";
        let (handed, _, _) = scan(&[high]);
        assert_eq!(handed, b"GET /caf%E9?q=%FF HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn an_incomplete_head_is_held_and_handed_over_at_the_end() {
        let part: &[u8] = b"GET /x HTTP/1.1\r\nHost:";
        let verdicts = Arc::new(Verdicts::default());
        let mut scanner = Scanner::new(verdicts);
        assert_eq!(scanner.feed(part), Some(Vec::new()));
        assert_eq!(scanner.take_held().as_deref(), Some(part));
        // A head past the scanner's limit is handed over and not followed.
        let mut scanner = Scanner::new(Arc::new(Verdicts::default()));
        let big = vec![b'a'; MAX_HEAD];
        assert_eq!(scanner.feed(b"GET /"), Some(Vec::new()));
        assert_eq!(scanner.feed(&big), Some([b"GET /", &big[..]].concat()));
        assert_eq!(scanner.feed(b"\r\n\r\n"), None);
    }

    // Issue 10, item 13: gunicorn's corpus case invalid/chunked_09.
    #[test]
    fn chunk_sizes_are_read_as_gunicorn_reads_them() {
        assert_eq!(chunk_size(b"5"), Some(5));
        assert_eq!(chunk_size(b"1aF"), Some(0x1af));
        assert_eq!(chunk_size(b"5 ;ext=1"), Some(5));
        assert_eq!(chunk_size(b"5\t;"), Some(5));
        for bad in [&b"0 "[..], b" 5", b"", b"5x", b"+5", b"0x5", b";ext"] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let first =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let second =
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0 \r\n\r\n";
        let (_, notes, verdicts) = scan(&[first, second]);
        assert_eq!(notes.len(), 2);
        assert!(!verdicts.body_refused(0));
        assert!(verdicts.body_refused(1));
    }
}
