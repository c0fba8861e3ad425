//! How a Function becomes Kubernetes objects: the names, labels and ports that the controller
//! (which creates the Deployment and Service) and the cluster gateway (which finds the ready
//! instances in the Service's EndpointSlices and scales the Deployment) both rely on.

/// Label on every object kfaas creates for a Function (Deployment, its pods, Service,
/// ConfigMap); its value is the Function's name. EndpointSlices inherit it from the Service.
pub const FUNCTION_LABEL: &str = "kfaas.dev/function";

/// `app.kubernetes.io/managed-by` value on the objects kfaas creates.
pub const MANAGED_BY: &str = "kfaas";

/// Name of the Service port (and of the container port) that takes invocations: the RIE invoke
/// endpoint of `kfaas runtime` for `lambda` functions, the function's own server for `http`.
pub const INVOKE_PORT_NAME: &str = "invoke";

/// Port `kfaas runtime` serves the invoke endpoint on inside a pod (lambda functions).
pub const RUNTIME_INVOKE_PORT: u16 = 8080;

/// Annotation on a Function's Deployment holding the per-instance concurrency, so a gateway
/// that has not yet seen the Function still sizes leases right.
pub const CONCURRENCY_ANNOTATION: &str = "kfaas.dev/concurrency";

/// The Deployment and the Service of a Function share the Function's name.
pub fn deployment_name(function: &str) -> &str {
    function
}

/// See [`deployment_name`].
pub fn service_name(function: &str) -> &str {
    function
}

/// The ConfigMap holding a Function's `code.inline` files.
pub fn code_config_map_name(function: &str) -> String {
    format!("{function}-code")
}

/// Label selector matching every object made for one Function.
pub fn function_selector(function: &str) -> String {
    format!("{FUNCTION_LABEL}={function}")
}
