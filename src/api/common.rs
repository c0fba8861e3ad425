//! Types shared by more than one kind.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Request-rate limits, as API Gateway's throttle settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.rateLimit > 0.0").message("throttle.rateLimit must be greater than 0 (requests per second)"))]
#[x_kube(validation = Rule::new("self.burstLimit > 0").message("throttle.burstLimit must be greater than 0 (requests)"))]
pub struct Throttle {
    /// Steady-state requests per second (token refill rate).
    pub rate_limit: f64,
    /// Largest number of requests admitted at once (bucket size).
    pub burst_limit: i64,
}
