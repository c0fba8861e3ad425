//! autoscaler
