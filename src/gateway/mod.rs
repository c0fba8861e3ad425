//! The data plane: routing, invocation, the activator, error mapping, logs and metrics.

pub mod access_log;
pub mod activator;
mod admit;
pub mod cluster;
mod coarse_clock;
pub mod config;
pub mod error;
pub mod event;
pub mod h1;
pub mod h1_request;
pub mod h1_response;
mod h1_server;
pub mod handler;
mod integration;
pub mod invoke;
pub mod metrics;
mod outbox;
pub mod policy;
pub mod request_body;
pub mod response;
pub mod server;
mod spare;
pub mod table;
mod upstream;

/// A hash map for keys the gateway itself chose (function keys, instance ids and addresses),
/// looked up on every request: foldhash rather than SipHash, whose resistance to chosen keys is
/// not needed for them and which was a visible share of a request's CPU.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
