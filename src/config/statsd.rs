//! The value type of `statsd_host`: where statsd datagrams go, parsed as
//! gunicorn 27's `validate_statsd_address` (through `util.parse_address`)
//! parses it. The sender lives in `crate::metrics::statsd`.

use super::types::{split_host_port, Scalar, ValueError};
use std::fmt;
use std::path::PathBuf;

/// gunicorn's port when `--statsd-host` names only a host.
pub const DEFAULT_STATSD_PORT: u16 = 8125;

/// A statsd collector's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatsdAddr {
    /// UDP to a host name or IP address (IPv6 without brackets).
    Udp {
        /// Host name or IP address, lower case as gunicorn makes it.
        host: String,
        /// UDP port.
        port: u16,
    },
    /// `unix:PATH` or `unix://PATH`: a unix datagram socket.
    Unix(PathBuf),
}

impl Scalar for StatsdAddr {
    const VALUE_NAME: &'static str = "STATSD_ADDR";
    const EXPECTED: &'static str =
        "expected HOST:PORT, HOST (port 8125), [IPv6]:PORT or unix:PATH (a unix datagram socket)";

    fn parse(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("unix:") {
            // gunicorn keeps `unix:8125` meaning host "unix", port 8125, as
            // before its release 20 (its validator says so and tests it).
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                let port = rest.parse().map_err(|_| ValueError::Invalid)?;
                return Ok(StatsdAddr::Udp {
                    host: "unix".to_string(),
                    port,
                });
            }
            let path = rest.strip_prefix("//").unwrap_or(rest);
            return match path {
                "" => Err(ValueError::Invalid),
                path => Ok(StatsdAddr::Unix(PathBuf::from(path))),
            };
        }
        // gunicorn's parse_address returns an fd number here, which its
        // statsd client then fails to connect to, silently: refuse it.
        if text.starts_with("fd://") {
            return Err(ValueError::Invalid);
        }
        let text = text.strip_prefix("tcp://").unwrap_or(text);
        // gunicorn sends an empty host to 0.0.0.0, which reaches nothing
        // useful; a typo is likelier, so it is refused (as an empty host is).
        let (host, port) = split_host_port(text, DEFAULT_STATSD_PORT)?;
        Ok(StatsdAddr::Udp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StatsdAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsdAddr::Udp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            StatsdAddr::Udp { host, port } => write!(f, "{host}:{port}"),
            StatsdAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(host: &str, port: u16) -> StatsdAddr {
        StatsdAddr::Udp {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn addresses_parse_as_gunicorns_validator() {
        let parse = |text: &str| StatsdAddr::parse(text).unwrap_or_else(|_| panic!("{text}"));
        assert_eq!(parse("127.0.0.1:8125"), udp("127.0.0.1", 8125));
        assert_eq!(parse("Statsd.Local:9125"), udp("statsd.local", 9125));
        assert_eq!(parse("localhost"), udp("localhost", 8125));
        assert_eq!(parse("tcp://10.0.0.1:1"), udp("10.0.0.1", 1));
        assert_eq!(parse("[::1]:9125"), udp("::1", 9125));
        assert_eq!(parse("[::1]"), udp("::1", 8125));
        assert_eq!(
            parse("unix:/run/statsd.sock"),
            StatsdAddr::Unix("/run/statsd.sock".into())
        );
        assert_eq!(
            parse("unix:///run/statsd.sock"),
            StatsdAddr::Unix("/run/statsd.sock".into())
        );
        // gunicorn's regression guard: `unix:PORT` is host "unix".
        assert_eq!(parse("unix:8125"), udp("unix", 8125));
    }

    #[test]
    fn bad_addresses_are_refused() {
        for text in [
            "",
            "unix:",
            ":8125",
            "host:",
            "host:port",
            "host:99999",
            "fd://3",
            "[::1",
            "[x]:1",
        ] {
            assert!(
                StatsdAddr::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn rendering_parses_back() {
        for text in ["127.0.0.1:8125", "[::1]:9125", "unix:/run/statsd.sock"] {
            let addr = StatsdAddr::parse(text).unwrap();
            assert_eq!(addr.render(), text);
            assert_eq!(StatsdAddr::parse(&addr.render()).unwrap(), addr);
        }
    }
}
