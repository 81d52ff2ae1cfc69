//! The master <-> worker protocol (docs/protocol.md): frames, the handshake,
//! the environ encoding (with what a trusted proxy may say in it), a lane
//! (over its socket, shared-memory rings, or a stream of a socket shared by
//! many lanes) and the control frames sent
//! after a boot.

pub mod control;
pub mod environ;
pub mod forwarded;
pub mod frame;
pub mod handshake;
pub mod lane;
pub mod mux;
pub mod response_head;
pub mod ring;
