//! The master <-> worker protocol (docs/protocol.md): frames, the handshake,
//! the environ encoding (with what a trusted proxy may say in it), a lane
//! (over its socket or shared-memory rings) and the control frames sent
//! after a boot.

pub mod control;
pub mod environ;
pub mod forwarded;
pub mod frame;
pub mod handshake;
pub mod lane;
pub mod response_head;
pub mod ring;
