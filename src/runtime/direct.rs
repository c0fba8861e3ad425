//! Invoking a runtime that runs in this process, without HTTP: `kfaas local` runs its `lambda`
//! instances' runtimes inside its own process, and its gateway hands them events directly. What
//! an invocation gives is what the invoke endpoint would have answered (`invoke_api::render`),
//! before it is written as HTTP.

use std::{hash::Hash, sync::Arc};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{
    invocation::{Failure, Invocation, Outcome, Success, error_body},
    invoke_api::{checked_request_id, fresh_trace_id},
    pool::Pool,
    stream::gather,
};

/// A handle on one runtime's pool of handler processes.
#[derive(Clone)]
pub struct DirectInvoker {
    pool: Arc<Pool>,
}

/// What an invocation gave: the handler's result, or a failure of a kind the invoke endpoint
/// names in `X-Kfaas-Invoke-Error` (`function`, `timeout`, `crash`, `init`) with its body.
#[derive(Debug, PartialEq, Eq)]
pub enum DirectOutcome {
    Result(Bytes),
    Failed { kind: &'static str, body: Bytes },
}

/// The runtime is stopping and takes no more invocations.
#[derive(Debug, thiserror::Error)]
#[error("the function's runtime is stopping")]
pub struct Stopping;

impl DirectInvoker {
    pub(super) fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }

    /// Invokes the function with `payload`; `request_id` is used when it is uuid-like.
    pub async fn invoke(
        &self,
        request_id: &str,
        payload: Bytes,
    ) -> Result<DirectOutcome, Stopping> {
        let (reply, outcome) = oneshot::channel();
        let invocation = Invocation {
            request_id: checked_request_id(Some(request_id)),
            payload,
            trace_id: fresh_trace_id(),
            client_context: None,
            cognito_identity: None,
            reply,
        };
        self.pool.submit(invocation).map_err(|_| Stopping)?;
        let outcome = outcome.await.unwrap_or_else(|_| Outcome::Crash {
            body: error_body(
                "Runtime.ExitError",
                "the invocation was lost by the runtime",
            ),
        });
        Ok(match outcome.into_result() {
            Ok(Success::Response { body, .. }) => DirectOutcome::Result(body),
            // The gateway answers whole bodies: a streamed result is gathered, and a stream that
            // failed midway answers its failure, not a cut body.
            Ok(Success::Stream { body, .. }) => match gather(body).await {
                Ok(body) => DirectOutcome::Result(body),
                Err(Failure { kind, body }) => DirectOutcome::Failed { kind, body },
            },
            Err(Failure { kind, body }) => DirectOutcome::Failed { kind, body },
        })
    }
}

// Instances are compared (a ready set is replaced only when it changed) and hashed: a handle is
// the pool it points to.
impl PartialEq for DirectInvoker {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for DirectInvoker {}

impl Hash for DirectInvoker {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.pool).hash(state);
    }
}

impl std::fmt::Debug for DirectInvoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectInvoker").finish_non_exhaustive()
    }
}
