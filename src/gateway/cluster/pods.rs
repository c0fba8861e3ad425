//! Why a function's pods cannot start, read from their container states, so requests held for
//! a function whose pods will never become ready are answered at once (502) instead of waiting
//! out the integration timeout.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Waiting reasons that do not fix themselves: the pod needs a change (image, config, code).
const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The first stuck container of a pod: `pod NAME: container C: REASON: MESSAGE`.
fn stuck(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    containers.filter_map(stuck_container).next().map(|why| {
        format!(
            "pod {}: {why}",
            pod.metadata.name.as_deref().unwrap_or("(unnamed)")
        )
    })
}

fn stuck_container(status: &ContainerStatus) -> Option<String> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK_REASONS.contains(&reason) {
        return None;
    }
    Some(match waiting.message.as_deref() {
        Some(message) if !message.is_empty() => {
            format!("container {}: {reason}: {message}", status.name)
        }
        _ => format!("container {}: {reason}", status.name),
    })
}

/// Why the function's instances cannot start, when every live pod of it is stuck (a pod that
/// is still starting normally may yet become ready, so it keeps requests waiting).
pub fn start_failure<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    let mut first = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match stuck(pod) {
            Some(why) => {
                first.get_or_insert(why);
            }
            None => return None,
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, waiting: Option<(&str, &str)>) -> Pod {
        let state = match waiting {
            Some((reason, message)) => {
                serde_json::json!({"waiting": {"reason": reason, "message": message}})
            }
            None => serde_json::json!({"running": {}}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"containerStatuses": [{
                "name": "function", "image": "x", "imageID": "", "ready": false,
                "restartCount": 3, "state": state,
            }]},
        }))
        .expect("pod")
    }

    #[test]
    fn every_pod_stuck_is_a_start_failure_naming_pod_container_and_reason() {
        let a = pod(
            "hello-1",
            Some(("CrashLoopBackOff", "back-off 10s restarting")),
        );
        let b = pod("hello-2", Some(("ErrImagePull", "not found")));
        assert_eq!(
            start_failure([&a, &b]).as_deref(),
            Some("pod hello-1: container function: CrashLoopBackOff: back-off 10s restarting")
        );
    }

    #[test]
    fn a_pod_still_starting_or_running_keeps_requests_waiting() {
        let stuck = pod("hello-1", Some(("CrashLoopBackOff", "")));
        let creating = pod("hello-2", Some(("ContainerCreating", "")));
        let running = pod("hello-3", None);
        assert_eq!(start_failure([&stuck, &creating]), None);
        assert_eq!(start_failure([&stuck, &running]), None);
        assert_eq!(start_failure(std::iter::empty()), None);
        assert_eq!(
            start_failure([&stuck]).as_deref(),
            Some("pod hello-1: container function: CrashLoopBackOff")
        );
    }
}
