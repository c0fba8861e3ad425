//! The autoscaler: a pure function from a function's scaling policy, what was observed of it, and
//! the time, to the number of instances it should have. Whoever applies the answer (the local
//! backend, the controller) is elsewhere, so this is tested without any I/O.

pub mod driver;

use std::time::Duration;

/// Scaling bounds of one function (from `Function.spec.scaling` and `concurrency`).
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingPolicy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// In-flight invocations one instance should carry.
    pub target_concurrency: u32,
    /// How long demand must stay lower before instances are taken away.
    pub idle_timeout: Duration,
}

/// What was observed of one function.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Instances that exist now (ready or starting).
    pub current_replicas: u32,
    /// Invocations running plus requests held by the activator, right now.
    pub demand_now: u32,
    /// The highest demand seen during the last `idle_timeout`.
    pub peak_demand_in_window: u32,
    /// Time since the last request arrived; `None` if none ever did.
    pub since_last_request: Option<Duration>,
}

/// The number of instances the function should have.
///
/// Scale-up is immediate (enough instances for the demand now); scale-down waits until demand has
/// been lower for a whole idle window (Knative's stable window), and to zero only after
/// `idle_timeout` without any request.
pub fn desired_replicas(policy: &ScalingPolicy, observed: &Observed) -> u32 {
    let target = policy.target_concurrency.max(1);
    let max = policy.max_replicas.max(policy.min_replicas);
    let for_demand = |demand: u32| demand.div_ceil(target);
    let idle = observed
        .since_last_request
        .is_none_or(|since| since >= policy.idle_timeout);

    let wanted = if observed.demand_now > 0 {
        // Now busy: at least what the demand needs, and never below what the window needed.
        for_demand(observed.demand_now)
            .max(for_demand(observed.peak_demand_in_window))
            .max(1)
    } else if idle {
        0
    } else {
        // Quiet but not idle: keep what the recent peak needed (at least one instance).
        for_demand(observed.peak_demand_in_window).max(1)
    };
    wanted.clamp(policy.min_replicas, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScalingPolicy {
        ScalingPolicy {
            min_replicas: 0,
            max_replicas: 10,
            target_concurrency: 2,
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn observed(demand_now: u32, peak: u32, since_secs: Option<u64>) -> Observed {
        Observed {
            current_replicas: 0,
            demand_now,
            peak_demand_in_window: peak,
            since_last_request: since_secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn scales_from_zero_on_the_first_held_request() {
        assert_eq!(desired_replicas(&policy(), &observed(1, 1, Some(0))), 1);
    }

    #[test]
    fn scales_up_to_demand_over_target_and_caps_at_max() {
        assert_eq!(desired_replicas(&policy(), &observed(7, 7, Some(0))), 4);
        assert_eq!(
            desired_replicas(&policy(), &observed(100, 100, Some(0))),
            10
        );
    }

    #[test]
    fn keeps_the_window_peak_until_demand_has_been_low_for_the_window() {
        assert_eq!(desired_replicas(&policy(), &observed(1, 8, Some(1))), 4);
        assert_eq!(desired_replicas(&policy(), &observed(0, 8, Some(30))), 4);
        assert_eq!(desired_replicas(&policy(), &observed(0, 1, Some(30))), 1);
    }

    #[test]
    fn scales_to_zero_only_after_the_idle_timeout() {
        assert_eq!(desired_replicas(&policy(), &observed(0, 0, Some(59))), 1);
        assert_eq!(desired_replicas(&policy(), &observed(0, 0, Some(60))), 0);
        assert_eq!(desired_replicas(&policy(), &observed(0, 0, None)), 0);
    }

    #[test]
    fn never_below_min_replicas() {
        let p = ScalingPolicy {
            min_replicas: 2,
            ..policy()
        };
        assert_eq!(desired_replicas(&p, &observed(0, 0, None)), 2);
        assert_eq!(desired_replicas(&p, &observed(1, 1, Some(0))), 2);
    }
}
