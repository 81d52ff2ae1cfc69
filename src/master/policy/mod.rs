//! Policies: plain functions over a worker's facts and a clock, unit-tested
//! without processes or sleeps.

pub mod backoff;
pub mod max_requests;
pub mod memory;
pub mod stagger;
