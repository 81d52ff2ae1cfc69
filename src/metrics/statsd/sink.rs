//! The socket datagrams leave by: a connected, non-blocking UDP or unix
//! datagram socket, opened lazily and reopened when it breaks. A collector
//! that is down, unknown or full costs a dropped datagram and one warning
//! per outage, never a wait.

use std::io;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;

use tracing::{info, warn};

use crate::config::statsd::StatsdAddr;

/// Clean flushes in a row after which an outage counts as over. More than
/// one, because a UDP send to a closed port succeeds and the refusal comes
/// back on the next send: a down collector alternates.
const CLEAN_FLUSHES_TO_RECOVER: u32 = 10;

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    fn open(addr: &StatsdAddr) -> io::Result<Socket> {
        match addr {
            StatsdAddr::Udp { host, port } => {
                let target = (host.as_str(), *port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
                let local = if target.is_ipv6() {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let socket = UdpSocket::bind(local)?;
                socket.connect(target)?;
                socket.set_nonblocking(true)?;
                Ok(Socket::Udp(socket))
            }
            StatsdAddr::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path)?;
                socket.set_nonblocking(true)?;
                Ok(Socket::Unix(socket))
            }
        }
    }

    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Udp(socket) => socket.send(datagram),
            Socket::Unix(socket) => socket.send(datagram),
        }
    }
}

/// Sends each flush's datagrams to one collector.
pub struct Sink {
    addr: StatsdAddr,
    socket: Option<Socket>,
    /// Set by the first failure of an outage, which is the one logged.
    failing: bool,
    clean_flushes: u32,
    dropped: u64,
}

impl Sink {
    /// A sink for `addr`; nothing is opened until the first flush.
    pub fn new(addr: StatsdAddr) -> Sink {
        Sink {
            addr,
            socket: None,
            failing: false,
            clean_flushes: 0,
            dropped: 0,
        }
    }

    /// Sends one flush. Opens the socket first if needed; on an error the
    /// datagram is dropped, the rest are still tried.
    pub fn send_all(&mut self, datagrams: &[Vec<u8>]) {
        let mut error = None;
        if self.socket.is_none() {
            match Socket::open(&self.addr) {
                Ok(socket) => self.socket = Some(socket),
                Err(err) => error = Some(err),
            }
        }
        let mut broken = false;
        match &self.socket {
            Some(socket) => {
                for (i, datagram) in datagrams.iter().enumerate() {
                    if let Err(err) = socket.send(datagram) {
                        self.dropped += 1;
                        // A unix socket whose reader went away stays broken:
                        // drop the rest and reconnect next flush.
                        broken = matches!(self.addr, StatsdAddr::Unix(_))
                            && err.kind() != io::ErrorKind::WouldBlock;
                        error.get_or_insert(err);
                        if broken {
                            self.dropped += (datagrams.len() - i - 1) as u64;
                            break;
                        }
                    }
                }
            }
            None => self.dropped += datagrams.len() as u64,
        }
        if broken {
            self.socket = None;
        }
        self.settle(error);
    }

    /// Logs the first failure of an outage and its end.
    fn settle(&mut self, error: Option<io::Error>) {
        match error {
            Some(err) => {
                self.clean_flushes = 0;
                if !self.failing {
                    self.failing = true;
                    warn!(
                        statsd = %self.addr, error = %err,
                        "cannot send metrics to statsd at {}: {err}; they are dropped until it answers (logged once)",
                        self.addr
                    );
                }
            }
            None if self.failing => {
                self.clean_flushes += 1;
                if self.clean_flushes >= CLEAN_FLUSHES_TO_RECOVER {
                    self.failing = false;
                    info!(
                        statsd = %self.addr, dropped = self.dropped,
                        "sending metrics to statsd at {} again ({} datagrams dropped)",
                        self.addr, self.dropped
                    );
                    self.dropped = 0;
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn udp_datagrams_arrive_whole() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = collector.local_addr().unwrap().port();
        let mut sink = Sink::new(StatsdAddr::Udp {
            host: "127.0.0.1".into(),
            port,
        });
        sink.send_all(&[b"a:1|c\nb:2|g".to_vec(), b"c:3|ms".to_vec()]);
        let mut buf = [0u8; 2048];
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c\nb:2|g");
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"c:3|ms");
        assert!(!sink.failing);
    }

    #[test]
    fn unix_datagrams_arrive_and_a_missing_path_fails_without_blocking() {
        let dir = std::env::temp_dir().join(format!("ferrocorn-statsd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("statsd.sock");
        let _ = std::fs::remove_file(&path);
        let mut sink = Sink::new(StatsdAddr::Unix(path.clone()));
        sink.send_all(&[b"a:1|c".to_vec()]);
        assert!(sink.failing, "nothing listens at {}", path.display());
        assert_eq!(sink.dropped, 1);

        let collector = UnixDatagram::bind(&path).unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for _ in 0..CLEAN_FLUSHES_TO_RECOVER {
            sink.send_all(&[b"b:1|c".to_vec()]);
        }
        assert!(!sink.failing, "ten clean flushes end the outage");
        let mut buf = [0u8; 64];
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"b:1|c");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
