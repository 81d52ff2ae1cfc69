//! Who is on the other end of a new connection, decided once per
//! connection: whether its forwarding headers are trusted
//! (`forwarded_allow_ips`), and, with `--proxy-protocol`, the client a
//! PROXY header names (from a peer in `proxy_allow_ips` only) and the
//! bytes read past it, which go to hyper first ([`Rewound`]). As in
//! gunicorn, the socket peer is what is trusted or not, and a Unix-socket
//! peer is always allowed.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::proxy_protocol::{self, Malformed, ProxyHeader, Signature};
use super::status::ConnRefusal;
use crate::config::proxy::{allows, IpRange, ProxyProtocol};
use crate::config::Settings;
use crate::protocol::forwarded::Forwarding;

/// The proxy settings the HTTP front applies, shared by every connection.
#[derive(Debug, Clone)]
pub struct PeerRules {
    /// `forwarded_allow_ips`.
    pub forwarded_allow: Vec<IpRange>,
    /// `proxy_protocol`.
    pub proxy_protocol: ProxyProtocol,
    /// `proxy_allow_ips`.
    pub proxy_allow: Vec<IpRange>,
    /// What a trusted peer's headers may change.
    pub forwarding: Arc<Forwarding>,
}

impl Default for PeerRules {
    /// gunicorn's defaults, with no SCRIPT_NAME.
    fn default() -> Self {
        let local: Vec<IpRange> = ["127.0.0.1", "::1"]
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        PeerRules {
            forwarded_allow: local.clone(),
            proxy_protocol: ProxyProtocol::Off,
            proxy_allow: local,
            forwarding: Arc::default(),
        }
    }
}

impl PeerRules {
    /// The rules of `settings`; `environment_script_name` is the master's
    /// own SCRIPT_NAME, which `-e SCRIPT_NAME=...` overrides (gunicorn puts
    /// raw_env into `os.environ`, where its workers read SCRIPT_NAME).
    pub fn from_settings(settings: &Settings, environment_script_name: Option<&str>) -> PeerRules {
        let from_raw_env = settings
            .raw_env
            .iter()
            .rev()
            .find_map(|pair| pair.strip_prefix("SCRIPT_NAME="));
        let script_name = from_raw_env.or(environment_script_name).unwrap_or("");
        PeerRules {
            forwarded_allow: settings.forwarded_allow_ips.clone(),
            proxy_protocol: settings.proxy_protocol,
            proxy_allow: settings.proxy_allow_ips.clone(),
            forwarding: Arc::new(
                Forwarding::new(
                    &settings.secure_scheme_headers,
                    &settings.forwarder_headers,
                    script_name,
                )
                .with_header_map(settings.header_map)
                .with_casefold_method(settings.casefold_http_method),
            ),
        }
    }

    /// Whether this peer's forwarding headers count; `None` is a Unix socket.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_none_or(|ip| allows(&self.forwarded_allow, ip))
    }

    fn may_send_proxy(&self, peer: Option<IpAddr>) -> bool {
        peer.is_none_or(|ip| allows(&self.proxy_allow, ip))
    }
}

/// Reads the PROXY header the connection may start with: the header (if
/// any) and the bytes read past it. Reads only what the header
/// needs to be told apart and complete; the caller bounds it in time.
///
/// # Errors
/// A [`ConnRefusal`] to answer with, or `None` if the peer went away first.
pub async fn read_proxy_header<IO: AsyncRead + Unpin>(
    io: &mut IO,
    peer: Option<IpAddr>,
    rules: &PeerRules,
) -> Result<(Option<ProxyHeader>, Vec<u8>), Option<ConnRefusal>> {
    let mut buf = Vec::with_capacity(proxy_protocol::V1_MAX + 1);
    let kind = loop {
        match proxy_protocol::signature(&buf, rules.proxy_protocol) {
            Signature::Unsure => read_more(&mut buf, io).await?,
            Signature::None => return Ok((None, buf)),
            kind => break kind,
        }
    };
    // gunicorn's `proxy_protocol_access_check`: ForbiddenProxyRequest, 403.
    if !rules.may_send_proxy(peer) {
        return Err(Some(ConnRefusal::ProxyForbidden));
    }
    loop {
        match proxy_protocol::parse(&buf, kind) {
            Ok(None) => read_more(&mut buf, io).await?,
            Ok(Some((header, used))) => {
                buf.drain(..used);
                return Ok((Some(header), buf));
            }
            Err(Malformed(why)) => {
                tracing::debug!(why, "invalid PROXY protocol header");
                return Err(Some(ConnRefusal::ProxyMalformed));
            }
        }
    }
}

/// Appends what the next read brings; `Err(None)` at the end of input.
async fn read_more<IO: AsyncRead + Unpin>(
    buf: &mut Vec<u8>,
    io: &mut IO,
) -> Result<(), Option<ConnRefusal>> {
    let mut chunk = [0u8; 512];
    match io.read(&mut chunk).await {
        Ok(0) | Err(_) => Err(None),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// A connection whose first bytes were already read: those come first.
#[derive(Debug)]
pub struct Rewound<IO> {
    io: IO,
    first: Vec<u8>,
    at: usize,
}

impl<IO> Rewound<IO> {
    /// `io` with `first` put back in front of it.
    pub fn new(io: IO, first: Vec<u8>) -> Rewound<IO> {
        Rewound { io, first, at: 0 }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewound<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = (this.first.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewound<IO> {
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

    fn rules(mode: ProxyProtocol, allow: &[&str]) -> PeerRules {
        PeerRules {
            proxy_protocol: mode,
            proxy_allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            ..PeerRules::default()
        }
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[tokio::test]
    async fn a_header_from_an_allowed_peer_names_the_client_and_the_rest_is_kept() {
        let sent = b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\nGET / HTTP/1.1\r\n\r\n";
        let mut io = &sent[..];
        let rules = rules(ProxyProtocol::Auto, &["127.0.0.1"]);
        let (header, rest) = read_proxy_header(&mut io, LOCAL, &rules).await.unwrap();
        assert_eq!(
            header,
            Some(ProxyHeader::Proxied {
                source: "192.0.2.1:4000".parse().unwrap(),
                destination: "192.0.2.2:80".parse().unwrap(),
                protocol: "TCP4",
            })
        );
        let mut rewound = Rewound::new(io, rest);
        let mut http = String::new();
        rewound.read_to_string(&mut http).await.unwrap();
        assert_eq!(http, "GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn plain_http_passes_and_others_are_refused() {
        let rules = rules(ProxyProtocol::Auto, &["10.0.0.1"]);
        let mut plain = &b"GET / HTTP/1.1\r\n\r\n"[..];
        let (client, rest) = read_proxy_header(&mut plain, LOCAL, &rules).await.unwrap();
        assert_eq!(
            (client, rest.as_slice()),
            (None, &b"GET / HTTP/1.1\r\n\r\n"[..])
        );
        let mut proxy = &b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\n"[..];
        let refused = read_proxy_header(&mut proxy, LOCAL, &rules).await;
        assert_eq!(refused.unwrap_err(), Some(ConnRefusal::ProxyForbidden));
        let unix = read_proxy_header(&mut &b"PROXY UNKNOWN\r\n"[..], None, &rules).await;
        assert_eq!(unix.unwrap(), (Some(ProxyHeader::Unknown), Vec::new()));
        let allowed = super::tests::rules(ProxyProtocol::Auto, &["*"]);
        let bad = read_proxy_header(&mut &b"PROXY TCP4 x\r\n"[..], LOCAL, &allowed).await;
        assert_eq!(bad.unwrap_err(), Some(ConnRefusal::ProxyMalformed));
        let gone = read_proxy_header(&mut &b"PROXY TCP4"[..], LOCAL, &allowed).await;
        assert_eq!(gone.unwrap_err(), None);
        assert!(allowed.trusts(None) && allowed.trusts(LOCAL));
        let strict = PeerRules {
            forwarded_allow: vec!["10.0.0.1".parse().unwrap()],
            ..PeerRules::default()
        };
        assert!(strict.trusts(None) && !strict.trusts(LOCAL));
    }

    #[test]
    fn script_name_comes_from_raw_env_over_the_environment() {
        let mut settings = Settings::default();
        let empty = http::HeaderMap::new();
        let rules = PeerRules::from_settings(&settings, Some("/env"));
        assert_eq!(rules.forwarding.script_name(&empty, false), b"/env");
        settings.raw_env = vec!["SCRIPT_NAME=/a".into(), "SCRIPT_NAME=/app".into()];
        let rules = PeerRules::from_settings(&settings, Some("/env"));
        assert_eq!(rules.forwarding.script_name(&empty, false), b"/app");
        let none = PeerRules::from_settings(&Settings::default(), None);
        assert_eq!(none.forwarding.script_name(&empty, false), b"");
        assert_eq!(none.proxy_protocol, ProxyProtocol::Off);
    }
}
