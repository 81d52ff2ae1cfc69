//! The HTTP front in the master: listeners, hyper connections, the
//! per-request service, the trip to a worker (and the pump of a streamed
//! request body), the peer's trust and PROXY header, and the status mapping.

pub mod body;
pub mod exchange;
pub mod framing;
pub mod graceful;
mod guarded;
pub mod inherited;
pub mod listener;
pub mod peer;
pub mod proxy_protocol;
mod pump;
mod scanner;
pub mod server;
pub mod service;
pub mod status;
pub mod timer;
