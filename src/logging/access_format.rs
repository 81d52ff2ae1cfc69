//! The access-log format: gunicorn's `access_log_format` (`%(h)s %(l)s ..`)
//! parsed once at start into literal and atom parts, then rendered per
//! request into a caller's buffer. It owns the atom table and what each atom
//! prints; `access.rs` owns the buffer and where the line goes.

use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, Version};

use super::access::AccessRecord;
use super::{clf, LoggingError};

/// A parsed format: render it with [`AccessFormat::render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessFormat {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Text copied as is: format literals, `%%`, and atoms fixed at start
    /// (`l`, `p`, `{variable}e` from the process environment).
    Literal(Box<[u8]>),
    Atom(Atom),
}

/// A per-request value. Text values are escaped by `clf::push_escaped`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    /// `h`
    RemoteAddr,
    /// `u`: the Basic-auth user name.
    User,
    /// `t`: request start, `[10/Oct/2000:13:55:36 +0000]`.
    Time,
    /// `r`: `GET /path?x=1 HTTP/1.1`.
    RequestLine,
    /// `m`
    Method,
    /// `U`: path without the query.
    UrlPath,
    /// `q`: query string, empty if none (gunicorn's `QUERY_STRING`).
    Query,
    /// `{RAW_URI}e`: path and query as sent.
    RawUri,
    /// `H`
    Protocol,
    /// `s`
    Status,
    /// `B`
    Bytes,
    /// `b`: as `B`, but `-` for an empty body (common log format).
    BytesOrDash,
    /// `T`: whole seconds.
    Seconds,
    /// `M`
    Millis,
    /// `D`
    Micros,
    /// `L`: seconds with six decimals.
    DecimalSeconds,
    /// `{name}i`, `f` (referer), `a` (user agent).
    RequestHeader(HeaderName),
    /// `{name}o`
    ResponseHeader(HeaderName),
}

const KNOWN_ATOMS: &str = "h l u t r m U q H s B b f a T M D L p {header}i {header}o {variable}e";

impl AccessFormat {
    /// Parses `format`. gunicorn prints `-` for an unknown atom; we refuse it
    /// at start instead, because a typo in the format should not silently
    /// blank a column in every line.
    pub(crate) fn parse(format: &str) -> Result<Self, LoggingError> {
        let bad = |reason: String| LoggingError::BadAccessFormat {
            format: format.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            literal.extend_from_slice(&rest.as_bytes()[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push(b'%');
                rest = tail;
                continue;
            }
            let inner = after.strip_prefix('(').ok_or_else(|| {
                bad(format!(
                    "a % at byte {} must start %(name)s or be doubled as %%",
                    format.len() - after.len() - 1
                ))
            })?;
            let close = inner
                .find(')')
                .ok_or_else(|| bad("unclosed %( in the format".to_owned()))?;
            let name = &inner[..close];
            rest = inner[close + 1..]
                .strip_prefix('s')
                .ok_or_else(|| bad(format!("%({name}) must be followed by s, as in %({name})s")))?;
            match resolve(name)? {
                Part::Literal(text) => literal.extend_from_slice(&text),
                atom => {
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal).into()));
                    }
                    parts.push(atom);
                }
            }
        }
        literal.extend_from_slice(rest.as_bytes());
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into()));
        }
        Ok(Self { parts })
    }

    /// Appends one line (without the newline) for `rec` to `out`.
    pub(crate) fn render(&self, rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text),
                Part::Atom(atom) => atom.render(rec, out),
            }
        }
    }
}

/// Maps an atom name to what it prints, or the error naming it.
fn resolve(name: &str) -> Result<Part, LoggingError> {
    let atom = match name {
        "h" => Atom::RemoteAddr,
        "l" => return Ok(literal("-")),
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::UrlPath,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "B" => Atom::Bytes,
        "b" => Atom::BytesOrDash,
        "f" => Atom::RequestHeader(header::REFERER),
        "a" => Atom::RequestHeader(header::USER_AGENT),
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => return Ok(literal(&format!("<{}>", std::process::id()))),
        _ => return resolve_braced(name),
    };
    Ok(Part::Atom(atom))
}

/// `{name}i`, `{name}o` and `{name}e`; names are case-insensitive, as
/// gunicorn lower-cases both sides.
fn resolve_braced(name: &str) -> Result<Part, LoggingError> {
    let unknown = || LoggingError::UnknownAtom {
        atom: name.to_owned(),
        known: KNOWN_ATOMS,
    };
    let (inner, kind) = name
        .strip_prefix('{')
        .and_then(|n| n.rsplit_once('}'))
        .ok_or_else(unknown)?;
    let header = || {
        HeaderName::from_bytes(inner.as_bytes()).map_err(|_| LoggingError::BadHeaderAtom {
            atom: name.to_owned(),
        })
    };
    match kind {
        "i" => Ok(Part::Atom(Atom::RequestHeader(header()?))),
        "o" => Ok(Part::Atom(Atom::ResponseHeader(header()?))),
        "e" => Ok(environ(inner)),
        _ => Err(unknown()),
    }
}

/// `{variable}e`. In gunicorn this reads the WSGI environ, which the master
/// never sees; the CGI keys we can derive from the request map to the same
/// values, and any other name is the master's environment variable, read once
/// at start (`-` if unset).
fn environ(variable: &str) -> Part {
    let upper = variable.to_ascii_uppercase();
    let atom = match upper.as_str() {
        "REMOTE_ADDR" => Atom::RemoteAddr,
        "REQUEST_METHOD" => Atom::Method,
        "PATH_INFO" => Atom::UrlPath,
        "QUERY_STRING" => Atom::Query,
        "RAW_URI" | "REQUEST_URI" => Atom::RawUri,
        "SERVER_PROTOCOL" => Atom::Protocol,
        "CONTENT_TYPE" => Atom::RequestHeader(header::CONTENT_TYPE),
        "CONTENT_LENGTH" => Atom::RequestHeader(header::CONTENT_LENGTH),
        _ => {
            let from_header = upper
                .strip_prefix("HTTP_")
                .and_then(|h| HeaderName::from_bytes(h.replace('_', "-").as_bytes()).ok());
            match from_header {
                Some(name) => Atom::RequestHeader(name),
                None => {
                    let value = std::env::var_os(variable).unwrap_or_default();
                    let mut text = Vec::new();
                    clf::push_or_dash(&mut text, value.as_encoded_bytes());
                    return Part::Literal(text.into());
                }
            }
        }
    };
    Part::Atom(atom)
}

fn literal(text: &str) -> Part {
    Part::Literal(text.as_bytes().into())
}

impl Atom {
    fn render(&self, rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
        match self {
            Self::RemoteAddr => clf::push_or_dash(out, rec.remote.as_bytes()),
            Self::User => {
                let auth = rec.request_headers.get(header::AUTHORIZATION);
                clf::push_basic_auth_user(out, auth.map(|v| v.as_bytes()));
            }
            Self::Time => clf::push_clf_date(out, rec.started),
            Self::RequestLine => {
                clf::push_escaped(out, rec.method.as_bytes());
                out.push(b' ');
                push_raw_uri(out, rec);
                out.push(b' ');
                out.extend_from_slice(protocol(rec.version));
            }
            Self::Method => clf::push_escaped(out, rec.method.as_bytes()),
            Self::UrlPath => clf::push_escaped(out, rec.path.as_bytes()),
            Self::Query => clf::push_escaped(out, rec.query.unwrap_or_default().as_bytes()),
            Self::RawUri => push_raw_uri(out, rec),
            Self::Protocol => out.extend_from_slice(protocol(rec.version)),
            Self::Status => clf::push_u64(out, rec.status.into()),
            Self::Bytes => clf::push_u64(out, rec.response_bytes),
            Self::BytesOrDash if rec.response_bytes == 0 => out.push(b'-'),
            Self::BytesOrDash => clf::push_u64(out, rec.response_bytes),
            Self::Seconds => clf::push_u64(out, rec.elapsed.as_secs()),
            Self::Millis => clf::push_u64(out, saturate(rec.elapsed.as_millis())),
            Self::Micros => clf::push_u64(out, saturate(rec.elapsed.as_micros())),
            Self::DecimalSeconds => push_decimal_seconds(out, rec.elapsed),
            Self::RequestHeader(name) => push_header(out, rec.request_headers, name),
            Self::ResponseHeader(name) => push_header(out, rec.response_headers, name),
        }
    }
}

fn push_raw_uri(out: &mut Vec<u8>, rec: &AccessRecord<'_>) {
    clf::push_escaped(out, rec.path.as_bytes());
    if let Some(query) = rec.query {
        out.push(b'?');
        clf::push_escaped(out, query.as_bytes());
    }
}

/// The last value wins when a header repeats, as in gunicorn's atoms dict.
fn push_header(out: &mut Vec<u8>, headers: &HeaderMap, name: &HeaderName) {
    match headers.get_all(name).iter().next_back() {
        Some(value) => clf::push_or_dash(out, value.as_bytes()),
        None => out.push(b'-'),
    }
}

fn push_decimal_seconds(out: &mut Vec<u8>, elapsed: Duration) {
    clf::push_u64(out, elapsed.as_secs());
    out.push(b'.');
    clf::push_padded(out, elapsed.subsec_micros().into(), 6);
}

fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// gunicorn's `SERVER_PROTOCOL` spelling.
fn protocol(version: Version) -> &'static [u8] {
    match version {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_11 => b"HTTP/1.1",
        Version::HTTP_2 => b"HTTP/2.0",
        Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    struct Request {
        req: HeaderMap,
        resp: HeaderMap,
    }

    impl Request {
        fn new() -> Self {
            let mut req = HeaderMap::new();
            req.insert(
                header::REFERER,
                HeaderValue::from_static("http://example.com/from"),
            );
            req.insert(header::USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
            req.insert("x-request-id", HeaderValue::from_static("abc-123"));
            req.insert(
                header::AUTHORIZATION,
                HeaderValue::from_static("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            );
            let mut resp = HeaderMap::new();
            resp.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Self { req, resp }
        }

        fn record(&self) -> AccessRecord<'_> {
            AccessRecord {
                remote: "127.0.0.1",
                method: "GET",
                path: "/path",
                query: Some("x=1"),
                version: Version::HTTP_11,
                status: 200,
                response_bytes: 1234,
                started: UNIX_EPOCH + Duration::from_secs(971_211_336),
                elapsed: Duration::from_micros(2_003_456),
                request_headers: &self.req,
                response_headers: &self.resp,
            }
        }
    }

    fn render(format: &str, rec: &AccessRecord<'_>) -> String {
        let mut out = Vec::new();
        AccessFormat::parse(format).unwrap().render(rec, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_atom() {
        let request = Request::new();
        let rec = request.record();
        let pid = format!("<{}>", std::process::id());
        let cases = [
            ("h", "127.0.0.1"),
            ("l", "-"),
            ("u", "aladdin"),
            ("t", "[10/Oct/2000:20:55:36 +0000]"),
            ("r", "GET /path?x=1 HTTP/1.1"),
            ("m", "GET"),
            ("U", "/path"),
            ("q", "x=1"),
            ("H", "HTTP/1.1"),
            ("s", "200"),
            ("B", "1234"),
            ("b", "1234"),
            ("f", "http://example.com/from"),
            ("a", "curl/8.5.0"),
            ("T", "2"),
            ("M", "2003"),
            ("D", "2003456"),
            ("L", "2.003456"),
            ("p", pid.as_str()),
            ("{X-Request-Id}i", "abc-123"),
            ("{x-missing}i", "-"),
            ("{Content-Type}o", "text/plain"),
            ("{content-length}o", "-"),
            ("{REMOTE_ADDR}e", "127.0.0.1"),
            ("{request_method}e", "GET"),
            ("{PATH_INFO}e", "/path"),
            ("{QUERY_STRING}e", "x=1"),
            ("{RAW_URI}e", "/path?x=1"),
            ("{SERVER_PROTOCOL}e", "HTTP/1.1"),
            ("{HTTP_X_REQUEST_ID}e", "abc-123"),
            ("{FERROCORN_SURELY_UNSET_VARIABLE}e", "-"),
        ];
        for (atom, want) in cases {
            assert_eq!(render(&format!("%({atom})s"), &rec), want, "atom {atom}");
        }
    }

    #[test]
    fn environment_variables_are_read_at_start() {
        let path = std::env::var("PATH").unwrap();
        let request = Request::new();
        assert_eq!(render("%({PATH}e)s", &request.record()), path);
    }

    #[test]
    fn atoms_without_a_value() {
        let request = Request {
            req: HeaderMap::new(),
            resp: HeaderMap::new(),
        };
        let rec = AccessRecord {
            remote: "unix",
            query: None,
            version: Version::HTTP_10,
            status: 304,
            response_bytes: 0,
            elapsed: Duration::from_millis(7),
            ..request.record()
        };
        let line = render(
            "%(h)s %(u)s [%(q)s] %(r)s %(b)s %(B)s %(f)s %(a)s %(T)s %(L)s",
            &rec,
        );
        assert_eq!(line, "unix - [] GET /path HTTP/1.0 - 0 - - 0 0.007000");
    }

    #[test]
    fn default_format_with_literals_and_headers() {
        let request = Request::new();
        let rec = request.record();
        assert_eq!(
            render(crate::logging::DEFAULT_ACCESS_LOG_FORMAT, &rec),
            r#"127.0.0.1 - aladdin [10/Oct/2000:20:55:36 +0000] "GET /path?x=1 HTTP/1.1" 200 1234 "http://example.com/from" "curl/8.5.0""#
        );
        assert_eq!(
            render(
                "100%% id=%({x-request-id}i)s ct=%({content-type}o)s %(M)sms",
                &rec
            ),
            "100% id=abc-123 ct=text/plain 2003ms"
        );
        assert_eq!(render("no atoms", &rec), "no atoms");
        assert_eq!(render("", &rec), "");
    }

    #[test]
    fn values_are_escaped() {
        let mut request = Request::new();
        request.req.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(b"evil\" \\agent\xff").unwrap(),
        );
        request
            .req
            .append("x-twice", HeaderValue::from_static("first"));
        request
            .req
            .append("x-twice", HeaderValue::from_static("second"));
        let rec = request.record();
        assert_eq!(
            render("\"%(a)s\" %({x-twice}i)s", &rec),
            r#""evil\" \\agent\xff" second"#
        );
    }

    #[test]
    fn adjacent_literals_merge() {
        let format = AccessFormat::parse("a%%b%(l)sc%(s)s").unwrap();
        assert_eq!(format.parts.len(), 2, "{format:?}");
    }

    #[test]
    fn unknown_atom_is_named() {
        let err = AccessFormat::parse("%(h)s %(z)s").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "unknown access log atom %(z)s in --access-logformat (known atoms: {KNOWN_ATOMS})"
            )
        );
        for atom in ["{x}z", "{x", "hh", ""] {
            let err = AccessFormat::parse(&format!("%({atom})s"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("unknown access log atom %({atom})s ")),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_formats_say_how_to_write_them() {
        let err = |f: &str| AccessFormat::parse(f).unwrap_err().to_string();
        assert_eq!(
            err("%({bad name}i)s"),
            "access log atom %({bad name}i)s in --access-logformat has an invalid header name"
        );
        assert_eq!(
            err("50% %(h)s"),
            r#"invalid --access-logformat "50% %(h)s": a % at byte 2 must start %(name)s or be doubled as %%"#
        );
        assert!(err("%(h").ends_with(": unclosed %( in the format"));
        assert!(err("%(s)d").ends_with(": %(s) must be followed by s, as in %(s)s"));
        assert!(err("%").contains("a % at byte 0 must start"));
    }
}
