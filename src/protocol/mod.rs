//! The master <-> worker protocol (docs/protocol.md): frames, the handshake,
//! the environ encoding, a lane's socket and the control frames sent after a
//! boot.

pub mod control;
pub mod environ;
pub mod frame;
pub mod handshake;
pub mod lane;
