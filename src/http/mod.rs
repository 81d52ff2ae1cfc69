//! The HTTP front in the master: listeners, hyper connections, the
//! per-request service, the trip to a worker, and the status mapping.

pub mod body;
pub mod exchange;
pub mod framing;
pub mod listener;
pub mod server;
pub mod service;
pub mod status;
pub mod timer;
