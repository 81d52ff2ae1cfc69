//! The master <-> worker protocol (docs/protocol.md): frames, the handshake,
//! the environ encoding and a lane's socket.

pub mod environ;
pub mod frame;
pub mod handshake;
pub mod lane;
