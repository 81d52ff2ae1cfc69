//! The PROXY protocol header a front-end (HAProxy, stunnel, a cloud load
//! balancer) may send before the first HTTP byte, v1 (text) and v2
//! (binary), as gunicorn 27 reads them (`gunicorn/http/message.py`
//! `_handle_proxy_protocol`). A pure parser over the bytes read so far:
//! partial input is a normal state, no input makes it panic, and it never
//! asks for more than a header can hold (v1: 107 bytes, v2: 16 + its
//! length). `peer.rs` reads the socket and decides who may send one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::proxy::ProxyProtocol;

/// The v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 line, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;

/// Which header the connection starts with, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// Too few bytes to tell.
    Unsure,
    /// None the mode accepts: the bytes are HTTP (or garbage) for hyper.
    None,
    /// A v1 line.
    V1,
    /// A v2 header.
    V2,
}

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The client's address and the address it connected to.
    Proxied {
        /// The client: REMOTE_ADDR and REMOTE_PORT.
        source: SocketAddr,
        /// Where the client connected (the proxy's side).
        destination: SocketAddr,
        /// `TCP4` or `TCP6`, gunicorn's PROXY_PROTOCOL value.
        protocol: &'static str,
    },
    /// No client address: v2 LOCAL (the proxy's own health check), an
    /// unspecified or Unix family, v1 UNKNOWN. The connection's own peer stays.
    Unknown,
}

/// A header that starts as PROXY but is not a valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid PROXY protocol header: {0}")]
pub struct Malformed(pub &'static str);

/// Which header `buf` starts with, for `mode`.
pub fn signature(buf: &[u8], mode: ProxyProtocol) -> Signature {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        (buf[..n] == sig[..n]).then_some(buf.len() >= sig.len())
    };
    let v1 = if mode.takes_v1() {
        starts(V1_PREFIX)
    } else {
        None
    };
    let v2 = if mode.takes_v2() {
        starts(V2_SIGNATURE)
    } else {
        None
    };
    match (v1, v2) {
        (Some(true), _) => Signature::V1,
        (_, Some(true)) => Signature::V2,
        (None, None) => Signature::None,
        _ => Signature::Unsure,
    }
}

/// Parses the header of `signature` at the start of `buf`: `Ok(None)` if
/// more bytes are needed, else the header and its length in bytes.
///
/// # Errors
/// [`Malformed`] when the bytes cannot become a valid header.
pub fn parse(buf: &[u8], signature: Signature) -> Result<Option<(ProxyHeader, usize)>, Malformed> {
    match signature {
        Signature::V1 => parse_v1(buf),
        Signature::V2 => parse_v2(buf),
        Signature::None | Signature::Unsure => Err(Malformed("not a PROXY header")),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, Malformed> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| Malformed("v1 line is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    // The spec's "PROXY UNKNOWN" (anything may follow) carries no
    // address; gunicorn refuses it, which fails a proxy's own checks.
    if fields.get(1) == Some(&"UNKNOWN") {
        return Ok(Some((ProxyHeader::Unknown, end + 2)));
    }
    let [_, protocol, source, destination, source_port, destination_port] = fields[..] else {
        return Err(Malformed("v1 line needs 6 fields"));
    };
    let (source, destination): (IpAddr, IpAddr) = match protocol {
        "TCP4" => (v4(source)?.into(), v4(destination)?.into()),
        "TCP6" => (v6(source)?.into(), v6(destination)?.into()),
        _ => return Err(Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(source, port(source_port)?),
        destination: SocketAddr::new(destination, port(destination_port)?),
        protocol: if protocol == "TCP4" { "TCP4" } else { "TCP6" },
    };
    Ok(Some((header, end + 2)))
}

fn v4(text: &str) -> Result<Ipv4Addr, Malformed> {
    text.parse()
        .map_err(|_| Malformed("v1 address is not IPv4"))
}

fn v6(text: &str) -> Result<Ipv6Addr, Malformed> {
    text.parse()
        .map_err(|_| Malformed("v1 address is not IPv6"))
}

fn port(text: &str) -> Result<u16, Malformed> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| text.parse().ok())
        .flatten()
        .ok_or(Malformed("v1 port is not 0 to 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, Malformed> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(None);
    };
    let (version_command, family_protocol) = (fixed[12], fixed[13]);
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if version_command >> 4 != 2 {
        return Err(Malformed("v2 version is not 2"));
    }
    let command = version_command & 0x0F;
    if command > 1 {
        return Err(Malformed("v2 command is not LOCAL or PROXY"));
    }
    let total = 16 + length;
    let Some(addresses) = buf.get(16..total) else {
        return Ok(None);
    };
    if command == 0 {
        return Ok(Some((ProxyHeader::Unknown, total)));
    }
    let (family, protocol) = (family_protocol >> 4, family_protocol & 0x0F);
    if family == 0 || family == 3 {
        // AF_UNSPEC or AF_UNIX: no IP to give; the spec says use the
        // connection's own (gunicorn refuses AF_UNIX).
        return Ok(Some((ProxyHeader::Unknown, total)));
    }
    if protocol != 1 {
        return Err(Malformed("v2 transport is not TCP"));
    }
    let header = match family {
        1 => {
            let a: &[u8; 12] = addresses
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(Malformed("v2 IPv4 addresses are short"))?;
            let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
                protocol: "TCP4",
            }
        }
        2 => {
            let a: &[u8; 36] = addresses
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(Malformed("v2 IPv6 addresses are short"))?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
                protocol: "TCP6",
            }
        }
        _ => return Err(Malformed("v2 address family is unknown")),
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const AUTO: ProxyProtocol = ProxyProtocol::Auto;

    fn whole(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, Malformed> {
        parse(buf, signature(buf, AUTO))
    }

    fn proxied(source: &str, destination: &str, protocol: &'static str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            protocol,
        }
    }

    fn v2(command: u8, family_protocol: u8, addresses: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family_protocol);
        out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        out.extend_from_slice(addresses);
        out
    }

    #[test]
    fn signatures_decide_as_soon_as_the_bytes_allow() {
        assert_eq!(signature(b"", AUTO), Signature::Unsure);
        assert_eq!(signature(b"PRO", AUTO), Signature::Unsure);
        assert_eq!(signature(b"\r\n\r\n", AUTO), Signature::Unsure);
        assert_eq!(signature(b"PROXY ", AUTO), Signature::V1);
        assert_eq!(signature(b"GET / HTTP/1.1\r\n", AUTO), Signature::None);
        assert_eq!(signature(b"G", AUTO), Signature::None);
        assert_eq!(signature(V2_SIGNATURE, AUTO), Signature::V2);
        assert_eq!(signature(b"PROXY ", ProxyProtocol::V2), Signature::None);
        assert_eq!(signature(V2_SIGNATURE, ProxyProtocol::V1), Signature::None);
        assert_eq!(
            signature(b"PROXY TCP4", ProxyProtocol::Off),
            Signature::None
        );
    }

    #[test]
    fn v1_lines_give_the_client_address() {
        let line = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            whole(line),
            Ok(Some((
                proxied("192.0.2.10:56324", "198.51.100.1:443", "TCP4"),
                46
            )))
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
        assert_eq!(
            whole(line),
            Ok(Some((
                proxied("[2001:db8::1]:65535", "[::1]:0", "TCP6"),
                line.len()
            )))
        );
        assert_eq!(
            whole(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Unknown, 15)))
        );
        assert_eq!(whole(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"), Ok(None));
    }

    #[test]
    fn bad_v1_lines_are_malformed() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n",
            b"PROXY \r\n",
        ] {
            assert!(whole(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [&b"PROXY "[..], &[b'x'; 200]].concat();
        assert_eq!(
            whole(&long),
            Err(Malformed("v1 line longer than 107 bytes"))
        );
        // A CRLF past the bound does not count.
        let late = [&long[..107], b"\r\n"].concat();
        assert!(whole(&late).is_err());
    }

    #[test]
    fn v2_headers_give_the_client_address() {
        let ipv4 = [192, 0, 2, 10, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB];
        let header = [v2(1, 0x11, &ipv4), b"GET".to_vec()].concat();
        assert_eq!(
            whole(&header),
            Ok(Some((
                proxied("192.0.2.10:56324", "198.51.100.1:443", "TCP4"),
                28
            )))
        );
        let mut ipv6 = [0u8; 36];
        ipv6[15] = 1; // ::1
        ipv6[16] = 0x20;
        ipv6[17] = 0x01; // 2001::
        ipv6[32..36].copy_from_slice(&[0, 80, 0, 81]);
        assert_eq!(
            whole(&v2(1, 0x21, &ipv6)),
            Ok(Some((proxied("[::1]:80", "[2001::]:81", "TCP6"), 52)))
        );
        // TLVs after the addresses are skipped with them.
        let with_tlv = [&ipv4[..], &[0x04, 0x00, 0x01, 0x00]].concat();
        assert_eq!(whole(&v2(1, 0x11, &with_tlv)).unwrap().unwrap().1, 32);
        assert_eq!(
            whole(&v2(0, 0x00, &[])),
            Ok(Some((ProxyHeader::Unknown, 16)))
        );
        assert_eq!(
            whole(&v2(1, 0x00, &[])),
            Ok(Some((ProxyHeader::Unknown, 16)))
        );
        assert_eq!(
            whole(&v2(1, 0x31, &[0; 216])),
            Ok(Some((ProxyHeader::Unknown, 232)))
        );
    }

    #[test]
    fn bad_v2_headers_are_malformed_and_short_ones_wait() {
        let ipv4 = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        let mut wrong_version = v2(1, 0x11, &ipv4);
        wrong_version[12] = 0x11;
        let mut wrong_command = v2(1, 0x11, &ipv4);
        wrong_command[12] = 0x22;
        for bad in [
            wrong_version,
            wrong_command,
            v2(1, 0x12, &ipv4),
            v2(1, 0x11, &ipv4[..11]),
            v2(1, 0x21, &[0; 35]),
            v2(1, 0x41, &ipv4),
        ] {
            assert!(whole(&bad).is_err(), "{bad:?}");
        }
        let good = v2(1, 0x11, &ipv4);
        for cut in 12..good.len() {
            assert_eq!(whole(&good[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_never_overrun() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let starts: [&[u8]; 3] = [b"PROXY ", V2_SIGNATURE, b""];
        for _ in 0..20_000 {
            let start = starts[rng.random_range(0..starts.len())];
            let len = rng.random_range(0..160);
            let mut buf = start.to_vec();
            buf.extend((0..len).map(|_| {
                if rng.random_bool(0.5) {
                    b" 0123456789.:TCP46\r\n"[rng.random_range(0..20)]
                } else {
                    rng.random()
                }
            }));
            if let Ok(Some((_, used))) = parse(&buf, signature(&buf, AUTO)) {
                assert!(used <= buf.len());
            }
        }
    }
}
