//! The value types of the settings for running behind a proxy, with
//! gunicorn's spellings: IP allow lists (`forwarded_allow_ips`,
//! `proxy_allow_ips`: addresses, CIDR networks or `*`), scheme headers
//! (`secure_scheme_headers`: `NAME=VALUE`), forwarder header names
//! (`forwarder_headers`) and the PROXY protocol mode. Matching an address
//! against a list is here too, as a plain function the HTTP front calls
//! once per connection.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::types::{Scalar, ValueError};

/// One entry of an allow list: every address (`*`) or one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRange {
    /// `*`: any peer.
    Any,
    /// An address with a prefix length; a bare address is a full-length network.
    Net(IpAddr, u8),
}

impl IpRange {
    /// Whether `ip` is in this range. An IPv4-mapped IPv6 peer
    /// (`::ffff:10.0.0.1`, from a dual-stack listener) counts as its IPv4
    /// address, as Python's `ipaddress` does not; gunicorn on such a socket
    /// sees the mapped form and matches it against no IPv4 entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, prefix) = match *self {
            IpRange::Any => return true,
            IpRange::Net(net, prefix) => (net, prefix),
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(ip).into(), 32, prefix)
                    == masked(u32::from(net).into(), 32, prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, prefix) == masked(u128::from(net), 128, prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-wide address.
fn masked(value: u128, bits: u8, prefix: u8) -> u128 {
    let host_bits = bits.saturating_sub(prefix);
    if host_bits >= 128 {
        0
    } else {
        value >> host_bits
    }
}

/// Whether `ip` is in any range of `list`.
pub fn allows(list: &[IpRange], ip: IpAddr) -> bool {
    list.iter().any(|range| range.contains(ip))
}

impl FromStr for IpRange {
    type Err = ValueError;

    /// `*`, `ADDRESS` or `ADDRESS/PREFIX`; as Python's strict
    /// `ipaddress.ip_network` (gunicorn's check), a network with host bits
    /// set (`192.168.1.1/24`) is refused as a likely mistake.
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        if text == "*" {
            return Ok(IpRange::Any);
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ValueError::Invalid)?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| ValueError::Invalid)?
            }
            Some(_) => return Err(ValueError::Invalid),
        };
        if prefix > bits {
            return Err(ValueError::Invalid);
        }
        let range = IpRange::Net(addr, prefix);
        if net_address(addr, prefix) != addr {
            return Err(ValueError::Invalid);
        }
        Ok(range)
    }
}

/// `addr` with its host bits cleared.
fn net_address(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = masked(u32::from(v4).into(), 32, prefix) << (32 - u32::from(prefix.min(32)));
            IpAddr::V4((keep as u32).into())
        }
        IpAddr::V6(v6) => {
            let host_bits = 128 - u32::from(prefix.min(128));
            let keep = if host_bits >= 128 {
                0
            } else {
                (u128::from(v6) >> host_bits) << host_bits
            };
            IpAddr::V6(keep.into())
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpRange::Any => f.write_str("*"),
            IpRange::Net(addr, prefix) if prefix == if addr.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{addr}")
            }
            IpRange::Net(addr, prefix) => write!(f, "{addr}/{prefix}"),
        }
    }
}

impl Scalar for IpRange {
    const VALUE_NAME: &'static str = "IP[,IP...]";
    const EXPECTED: &'static str =
        "expected *, an IP address or a network such as 10.0.0.0/8 (no host bits set)";
    const COMMA_SEPARATED: bool = true;
    fn parse(text: &str) -> Result<Self, ValueError> {
        text.parse()
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// One of `secure_scheme_headers`: a header and the value by which the
/// front-end says the request came over HTTPS. gunicorn compares the
/// upper-cased header name with the dict key as written (so a lower-case
/// key never matches there); here names match in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeHeader {
    /// The header name, upper case (gunicorn's spelling of the keys).
    pub name: String,
    /// The value meaning https, compared exactly (case-sensitive, as gunicorn).
    pub value: String,
}

impl Scalar for SchemeHeader {
    const VALUE_NAME: &'static str = "NAME=VALUE";
    const EXPECTED: &'static str =
        "expected NAME=VALUE with a header name such as X-FORWARDED-PROTO=https";
    fn parse(text: &str) -> Result<Self, ValueError> {
        let (name, value) = text.split_once('=').ok_or(ValueError::Invalid)?;
        let name = name.trim();
        if !is_token(name) {
            return Err(ValueError::Invalid);
        }
        Ok(SchemeHeader {
            name: name.to_ascii_uppercase(),
            value: value.trim().to_string(),
        })
    }
    fn render(&self) -> String {
        format!("{}={}", self.name, self.value)
    }
}

/// A header name in `forwarder_headers` (`SCRIPT_NAME`), upper case, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldName(pub String);

impl Scalar for FieldName {
    const VALUE_NAME: &'static str = "NAME[,NAME...]";
    const EXPECTED: &'static str = "expected header names such as SCRIPT_NAME,PATH_INFO, or *";
    const COMMA_SEPARATED: bool = true;
    fn parse(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        if text == "*" || is_token(text) {
            Ok(FieldName(text.to_ascii_uppercase()))
        } else {
            Err(ValueError::Invalid)
        }
    }
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// An RFC 9110 token: what a header name may be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Which PROXY protocol headers a connection may start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// None: the first bytes are HTTP.
    Off,
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
    /// Either.
    Auto,
}

impl ProxyProtocol {
    /// Whether a v1 header is accepted.
    pub fn takes_v1(self) -> bool {
        matches!(self, ProxyProtocol::V1 | ProxyProtocol::Auto)
    }

    /// Whether a v2 header is accepted.
    pub fn takes_v2(self) -> bool {
        matches!(self, ProxyProtocol::V2 | ProxyProtocol::Auto)
    }
}

impl FromStr for ProxyProtocol {
    type Err = ValueError;

    /// gunicorn's spellings (`validate_proxy_protocol`): off/false/0/none,
    /// auto/true/1, v1, v2, in any case.
    fn from_str(text: &str) -> Result<Self, ValueError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "0" | "none" => Ok(ProxyProtocol::Off),
            "auto" | "true" | "1" => Ok(ProxyProtocol::Auto),
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            _ => Err(ValueError::Invalid),
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
            ProxyProtocol::Auto => "auto",
        })
    }
}

impl Scalar for ProxyProtocol {
    const VALUE_NAME: &'static str = "MODE";
    const EXPECTED: &'static str = "expected off, v1, v2 or auto";
    fn parse(text: &str) -> Result<Self, ValueError> {
        text.parse()
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> IpRange {
        text.parse().unwrap_or_else(|_| panic!("{text} parses"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_match_as_pythons_ipaddress() {
        assert!(range("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!range("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(range("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!range("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(range("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!range("0.0.0.0/0").contains(ip("::1")));
        assert!(range("::1").contains(ip("::1")));
        assert!(range("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!range("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(range("::/0").contains(ip("2001:db9::1")));
        assert!(range("*").contains(ip("203.0.113.9")));
        assert!(range("192.168.1.0/31").contains(ip("192.168.1.1")));
        assert!(!range("192.168.1.0/31").contains(ip("192.168.1.2")));
    }

    #[test]
    fn a_mapped_ipv6_peer_matches_its_ipv4_entry() {
        assert!(range("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(range("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!range("::1").contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_refused_as_gunicorn_refuses_them() {
        for bad in [
            "",
            "localhost",
            "10.0.0.1/24",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "::1/129",
            "2001:db8::1/32",
            "1.2.3",
            "1.2.3.4.5",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_render_canonically() {
        for (given, shown) in [
            ("127.0.0.1", "127.0.0.1"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("::1/128", "::1"),
            ("10.1.2.3/32", "10.1.2.3"),
            ("*", "*"),
            ("2001:DB8::/32", "2001:db8::/32"),
        ] {
            assert_eq!(range(given).to_string(), shown);
        }
        assert!(allows(&[range("10.0.0.1"), range("::1")], ip("::1")));
        assert!(!allows(&[], ip("::1")));
    }

    #[test]
    fn scheme_headers_and_field_names_parse_upper_cased() {
        let header = SchemeHeader::parse("x-forwarded-proto=https").unwrap();
        assert_eq!(header.render(), "X-FORWARDED-PROTO=https");
        assert_eq!(SchemeHeader::parse("X-A= On ").unwrap().value, "On");
        assert!(SchemeHeader::parse("no-equals").is_err());
        assert!(SchemeHeader::parse("bad name=x").is_err());
        assert!(SchemeHeader::parse("=x").is_err());
        assert_eq!(FieldName::parse("script_name").unwrap().0, "SCRIPT_NAME");
        assert_eq!(FieldName::parse("*").unwrap().0, "*");
        assert!(FieldName::parse("a b").is_err());
    }

    #[test]
    fn proxy_protocol_takes_gunicorns_spellings() {
        for (text, mode) in [
            ("off", ProxyProtocol::Off),
            ("False", ProxyProtocol::Off),
            ("0", ProxyProtocol::Off),
            ("none", ProxyProtocol::Off),
            ("true", ProxyProtocol::Auto),
            ("1", ProxyProtocol::Auto),
            ("AUTO", ProxyProtocol::Auto),
            ("v1", ProxyProtocol::V1),
            ("v2", ProxyProtocol::V2),
        ] {
            assert_eq!(text.parse::<ProxyProtocol>(), Ok(mode), "{text}");
        }
        assert!("v3".parse::<ProxyProtocol>().is_err());
        assert!(ProxyProtocol::Auto.takes_v1() && ProxyProtocol::Auto.takes_v2());
        assert!(!ProxyProtocol::V1.takes_v2() && !ProxyProtocol::V2.takes_v1());
    }
}
