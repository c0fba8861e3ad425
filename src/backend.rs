//! The seam between the gateway and whatever runs function instances.
//!
//! Two implementations: the local process backend (`crate::local`) and the Kubernetes backend
//! (Deployment scale, in `crate::controller`). The gateway's activator reports demand through
//! [`Backend::scale`] and waits on [`Backend::ready_instances`].

use std::{fmt, net::SocketAddr, sync::Arc};

use tokio::sync::watch;

/// Names one Function: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionKey {
    pub namespace: String,
    pub name: String,
}

impl FunctionKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for FunctionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One ready function instance.
///
/// For `lambda` functions `addr` serves the RIE-compatible invoke endpoint of `kfaas runtime`
/// (`POST /2015-03-31/functions/function/invocations`); for `http` functions it is the
/// function's own HTTP server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Stable id for the instance's life (pod name, or a local process id).
    pub id: String,
    pub addr: SocketAddr,
    /// How many invocations this instance serves at once.
    pub concurrency: u32,
    /// For a `lambda` instance whose runtime runs in this process (`kfaas local`): invocations
    /// go to it directly instead of over HTTP to `addr`.
    pub direct: Option<crate::runtime::DirectInvoker>,
}

/// The ready instances of one function; replaced whole on every change.
pub type ReadyInstances = Arc<[Instance]>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("function {0} is not known to the backend")]
    UnknownFunction(FunctionKey),
    #[error("cannot scale function {function}: {message}")]
    Scale {
        function: FunctionKey,
        message: String,
    },
}

/// Applies a replica count to a function and reports its ready instances.
pub trait Backend: Send + Sync + 'static {
    /// Asks for `replicas` instances. Returns at once; instances become ready later and show up
    /// in [`Backend::ready_instances`]. Scaling down stops instances gracefully (in-flight
    /// invocations finish first).
    fn scale(&self, function: &FunctionKey, replicas: u32) -> Result<(), BackendError>;

    /// A channel that always holds the current ready instances of `function` (empty when none).
    fn ready_instances(
        &self,
        function: &FunctionKey,
    ) -> Result<watch::Receiver<ReadyInstances>, BackendError>;

    /// Why the function's instances cannot start right now (for example its command does not
    /// exist), while that lasts. Requests waiting for the function are then answered at once.
    fn start_failure(&self, _function: &FunctionKey) -> Option<String> {
        None
    }
}
