//! kfaas: the AWS Lambda + API Gateway model on Kubernetes, and on a laptop with no cluster.
// Denied rather than forbidden: one reviewed exception, `session::in_own_session`.
#![deny(unsafe_code)]

pub mod api;
pub mod autoscaler;
pub mod backend;
pub mod cli;
pub mod controller;
pub mod gateway;
pub mod import;
pub mod local;
pub mod objects;
pub mod runtime;
pub mod session;
pub mod workload;
