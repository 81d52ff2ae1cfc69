//! The HTTP front in the master: listeners, hyper connections, the
//! per-request service, the trip to a worker (and the pump of a streamed
//! request body), and the status mapping.

pub mod body;
pub mod exchange;
pub mod framing;
mod guarded;
pub mod inherited;
pub mod listener;
mod pump;
mod scanner;
pub mod server;
pub mod service;
pub mod status;
pub mod timer;
