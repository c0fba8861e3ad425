//! The gateway on a Kubernetes cluster.
pub mod backend;
pub mod objects;
pub mod pods;
pub mod run;
pub mod shared_demand;
pub mod usage_status;
