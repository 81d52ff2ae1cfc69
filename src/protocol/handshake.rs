//! The worker's HELLO and the rules it must meet: same protocol version, same
//! frame size limit. The socket side of the handshake is in `worker/boot.rs`.

use serde::Deserialize;

use super::frame::{MAX_PAYLOAD, PROTOCOL_VERSION};

/// What a worker says about itself before it imports the app.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// The worker's process id.
    pub pid: u32,
    /// Its protocol version.
    pub protocol: u32,
    /// Its Python version, e.g. `3.11.7`.
    pub python: String,
    /// `sync` or `gthread`.
    pub worker_class: String,
    /// How many lanes it serves.
    pub lanes: usize,
    /// Its frame payload limit.
    pub max_payload: usize,
}

/// A HELLO the master cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not the JSON object of docs/protocol.md.
    #[error("worker sent an unreadable hello: {0}")]
    Malformed(String),
    /// The worker program and the master disagree on the protocol.
    #[error("worker speaks protocol {worker}, the master speaks {master}: the worker program does not match this binary")]
    Version {
        /// The worker's version.
        worker: u32,
        /// Ours.
        master: u32,
    },
    /// A constant differs between both sides.
    #[error("worker's max_payload is {worker}, the master's is {master}")]
    MaxPayload {
        /// The worker's limit.
        worker: usize,
        /// Ours.
        master: usize,
    },
    /// The worker did not open the lanes it was given.
    #[error("worker serves {worker} lanes, the master gave it {master}")]
    Lanes {
        /// What the worker reports.
        worker: usize,
        /// What it was given.
        master: usize,
    },
}

/// Parses a HELLO payload and checks it against this master.
pub fn check_hello(payload: &[u8], lanes: usize) -> Result<Hello, HandshakeError> {
    let hello: Hello = serde_json::from_slice(payload)
        .map_err(|err| HandshakeError::Malformed(err.to_string()))?;
    if hello.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::Version {
            worker: hello.protocol,
            master: PROTOCOL_VERSION,
        });
    }
    if hello.max_payload != MAX_PAYLOAD {
        return Err(HandshakeError::MaxPayload {
            worker: hello.max_payload,
            master: MAX_PAYLOAD,
        });
    }
    if hello.lanes != lanes {
        return Err(HandshakeError::Lanes {
            worker: hello.lanes,
            master: lanes,
        });
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(protocol: u32, max_payload: usize) -> String {
        format!(
            r#"{{"pid": 7, "protocol": {protocol}, "python": "3.11.7", "worker_class": "sync", "lanes": 1, "max_payload": {max_payload}}}"#
        )
    }

    #[test]
    fn accepts_a_matching_worker() {
        let ok = check_hello(hello(PROTOCOL_VERSION, MAX_PAYLOAD).as_bytes(), 1).unwrap();
        assert_eq!(ok.pid, 7);
        assert_eq!(ok.worker_class, "sync");
    }

    #[test]
    fn names_each_mismatch() {
        let err = check_hello(hello(1, MAX_PAYLOAD).as_bytes(), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker speaks protocol 1, the master speaks 3: the worker program does not match this binary"
        );
        let err = check_hello(hello(PROTOCOL_VERSION, 10).as_bytes(), 1).unwrap_err();
        assert!(matches!(err, HandshakeError::MaxPayload { worker: 10, .. }));
        let err = check_hello(hello(PROTOCOL_VERSION, MAX_PAYLOAD).as_bytes(), 4).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::Lanes {
                worker: 1,
                master: 4
            }
        ));
        assert!(matches!(
            check_hello(b"{", 1),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
