//! The data plane: routing, invocation, the activator, error mapping, logs and metrics.

pub mod access_log;
pub mod activator;
mod admit;
pub mod cluster;
pub mod config;
pub mod error;
pub mod event;
pub mod handler;
mod integration;
pub mod invoke;
pub mod metrics;
pub mod policy;
pub mod response;
pub mod server;
pub mod table;
mod upstream;
