//! What a front-end proxy may say about a request, as gunicorn judges it
//! (`gunicorn/http/message.py` `HeaderPolicy`, `gunicorn/http/wsgi.py`
//! `create`): the url scheme from `secure_scheme_headers`, the underscore
//! headers of `forwarder_headers` (a `SCRIPT_NAME` header among them sets
//! SCRIPT_NAME), and the SCRIPT_NAME of the server's environment. Only a
//! trusted peer's headers count; whether the peer is trusted is decided
//! once per connection (`http/server.rs`), so an untrusted connection pays
//! nothing per request. Pure functions over a `HeaderMap`; `environ.rs`
//! calls them while it encodes a request.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::proxy::{FieldName, SchemeHeader};
use crate::config::HeaderMapping;

/// The proxy rules of the running server, shared by every connection.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// `secure_scheme_headers`: a header and its value meaning https.
    secure: Vec<(HeaderName, Vec<u8>)>,
    /// `forwarder_headers`, as header names.
    forwarder: Vec<HeaderName>,
    /// `forwarder_headers` holds `*`: every underscore header is kept.
    forward_all: bool,
    /// SCRIPT_NAME from the environment (`-e SCRIPT_NAME=/app` or the
    /// master's own), as gunicorn reads `os.environ`; empty if unset.
    script_name: Vec<u8>,
    /// `header_map`: what happens to other underscore headers.
    header_map: HeaderMapping,
    /// `casefold_http_method`: REQUEST_METHOD in upper case.
    casefold_method: bool,
}

/// Two `secure_scheme_headers` disagree on whether the request is https
/// (gunicorn's `InvalidSchemeHeaders`, a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemeConflict;

static SCRIPT_NAME: HeaderName = HeaderName::from_static("script_name");

/// gunicorn's PROXY_PROTOCOL, PROXY_ADDR and PROXY_PORT: the PROXY
/// header's protocol and the address the client connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInfo {
    /// `TCP4` or `TCP6`.
    pub protocol: &'static str,
    /// The destination address.
    pub addr: String,
    /// The destination port.
    pub port: String,
}

impl Forwarding {
    /// The rules from the settings and the environment's SCRIPT_NAME.
    pub fn new(secure: &[SchemeHeader], forwarder: &[FieldName], script_name: &str) -> Forwarding {
        // Names were checked as tokens by the settings; one that is still
        // no header name could never match a request, so it is skipped.
        let secure = secure
            .iter()
            .filter_map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                Some((name, h.value.as_bytes().to_vec()))
            })
            .collect();
        let forward_all = forwarder.iter().any(|f| f.0 == "*");
        let forwarder = forwarder
            .iter()
            .filter_map(|f| HeaderName::from_bytes(f.0.as_bytes()).ok())
            .collect();
        Forwarding {
            secure,
            forwarder,
            forward_all,
            script_name: script_name.as_bytes().to_vec(),
            header_map: HeaderMapping::Drop,
            casefold_method: false,
        }
    }

    /// The same rules with `casefold_http_method` set.
    pub fn with_casefold_method(mut self, casefold: bool) -> Forwarding {
        self.casefold_method = casefold;
        self
    }

    /// Whether REQUEST_METHOD is given in upper case.
    pub fn casefold_method(&self) -> bool {
        self.casefold_method
    }

    /// The same rules with `header_map` set.
    pub fn with_header_map(mut self, header_map: HeaderMapping) -> Forwarding {
        self.header_map = header_map;
        self
    }

    /// What happens to an underscore header `forwarder_headers` does not keep.
    pub fn header_map(&self) -> HeaderMapping {
        self.header_map
    }

    /// The scheme a trusted front-end's headers give: `Some("https")` when
    /// a listed header has its value, `Some("http")` when one has another
    /// value, `None` when none is present. Every listed header present must
    /// agree, each repeat too, as in gunicorn.
    pub fn url_scheme(&self, headers: &HeaderMap) -> Result<Option<&'static str>, SchemeConflict> {
        let mut seen: Option<bool> = None;
        // One pass over the request's few headers costs less than a hashed
        // lookup of each listed name, and the verdict does not depend on
        // the order the values are met in.
        for (name, value) in headers {
            for (_, wanted) in self.secure.iter().filter(|(listed, _)| listed == name) {
                let secure = trim(value) == wanted.as_slice();
                match seen {
                    Some(before) if before != secure => return Err(SchemeConflict),
                    _ => seen = Some(secure),
                }
            }
        }
        Ok(seen.map(|secure| if secure { "https" } else { "http" }))
    }

    /// The url scheme and SCRIPT_NAME of a request on a connection whose
    /// own scheme is `scheme`: an untrusted peer's headers are not looked at.
    pub fn judge<'a>(
        &'a self,
        headers: &'a HeaderMap,
        trusted: bool,
        scheme: &'static str,
    ) -> Result<(&'static str, &'a [u8]), SchemeConflict> {
        let scheme = match trusted {
            true => self.url_scheme(headers)?.unwrap_or(scheme),
            false => scheme,
        };
        Ok((scheme, self.script_name(headers, trusted)))
    }

    /// Whether a trusted front-end may set this underscore header.
    pub fn forwards(&self, name: &HeaderName) -> bool {
        self.forward_all || self.forwarder.contains(name)
    }

    /// SCRIPT_NAME: a trusted front-end's `SCRIPT_NAME` header (the last
    /// one, as gunicorn's loop keeps) if `forwarder_headers` lets it
    /// through, else the environment's.
    pub fn script_name<'a>(&'a self, headers: &'a HeaderMap, trusted: bool) -> &'a [u8] {
        if trusted && self.forwards(&SCRIPT_NAME) {
            // The map yields a name's values together, in order.
            let last = headers
                .iter()
                .filter(|(name, _)| **name == SCRIPT_NAME)
                .last();
            if let Some((_, value)) = last {
                return trim(value);
            }
        }
        &self.script_name
    }
}

/// A header value without the spaces and tabs around it (gunicorn strips them).
fn trim(value: &HeaderValue) -> &[u8] {
    value.as_bytes().trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::Scalar;

    fn defaults(script_name: &str) -> Forwarding {
        let secure: Vec<SchemeHeader> = [
            "X-FORWARDED-PROTOCOL=ssl",
            "X-FORWARDED-PROTO=https",
            "X-FORWARDED-SSL=on",
        ]
        .iter()
        .map(|t| SchemeHeader::parse(t).unwrap())
        .collect();
        let forwarder: Vec<FieldName> = ["SCRIPT_NAME", "PATH_INFO"]
            .iter()
            .map(|t| FieldName::parse(t).unwrap())
            .collect();
        Forwarding::new(&secure, &forwarder, script_name)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_scheme_follows_gunicorns_table() {
        let rules = defaults("");
        let scheme = |pairs: &[(&str, &str)]| rules.url_scheme(&headers(pairs));
        assert_eq!(scheme(&[]), Ok(None));
        assert_eq!(scheme(&[("X-Forwarded-Proto", "https")]), Ok(Some("https")));
        assert_eq!(scheme(&[("x-forwarded-ssl", " on ")]), Ok(Some("https")));
        assert_eq!(
            scheme(&[("X-Forwarded-Protocol", "ssl")]),
            Ok(Some("https"))
        );
        // Values compare case-sensitively, as gunicorn's.
        assert_eq!(scheme(&[("X-Forwarded-Proto", "HTTPS")]), Ok(Some("http")));
        assert_eq!(scheme(&[("X-Forwarded-Proto", "http")]), Ok(Some("http")));
        assert_eq!(
            scheme(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on")]),
            Ok(Some("https"))
        );
        assert_eq!(
            scheme(&[("X-Forwarded-Ssl", "on"), ("X-Forwarded-Proto", "http")]),
            Err(SchemeConflict)
        );
        assert_eq!(
            scheme(&[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Proto", "http")
            ]),
            Err(SchemeConflict)
        );
        assert_eq!(scheme(&[("X-Scheme", "https")]), Ok(None));
        let none = Forwarding::new(&[], &[], "");
        assert_eq!(
            none.url_scheme(&headers(&[("X-Forwarded-Proto", "https")])),
            Ok(None)
        );
    }

    #[test]
    fn script_name_comes_from_a_trusted_header_else_the_environment() {
        let rules = defaults("/env");
        let sent = headers(&[("script_name", "/a"), ("SCRIPT_NAME", " /app ")]);
        assert_eq!(rules.script_name(&sent, true), b"/app");
        assert_eq!(rules.script_name(&sent, false), b"/env");
        assert_eq!(rules.script_name(&HeaderMap::new(), true), b"/env");
        let closed = Forwarding::new(&[], &[FieldName::parse("PATH_INFO").unwrap()], "");
        assert_eq!(closed.script_name(&sent, true), b"");
        assert!(closed.forwards(&HeaderName::from_static("path_info")));
        assert!(!closed.forwards(&HeaderName::from_static("remote_user")));
        let all = Forwarding::new(&[], &[FieldName::parse("*").unwrap()], "");
        assert!(all.forwards(&HeaderName::from_static("remote_user")));
    }
}
