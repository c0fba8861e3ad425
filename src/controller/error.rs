//! The controller's failures, and the one place that turns them into a `Ready` condition.

use super::condition::Readiness;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object has no metadata.{0}")]
    MissingMetadata(&'static str),
    #[error("{0}")]
    InvalidSpec(String),
    #[error("the object does not parse: {0}")]
    Unreadable(String),
    #[error(
        "code.path ({0}) names a folder on one machine, which pods on a cluster cannot read; \
         use code.inline (the files in the Function) or code.configMap (a ConfigMap holding them)"
    )]
    CodePathNotSupported(String),
    #[error("ConfigMap {0} (code.configMap) does not exist")]
    CodeConfigMapNotFound(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot encode an object: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    /// Short stable category: the condition reason and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "InvalidObject",
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Unreadable(_) => "InvalidObject",
            Self::CodePathNotSupported(_) => "CodePathNotSupported",
            Self::CodeConfigMapNotFound(_) => "CodeConfigMapNotFound",
            Self::Kube(_) => "KubernetesApiError",
            Self::Encode(_) => "InternalError",
        }
    }

    /// Whether only a change by the user fixes it (then retrying soon is pointless).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Kube(_) | Self::Encode(_))
    }

    /// The `Ready` condition this failure shows.
    pub fn readiness(&self) -> Readiness {
        Readiness::not_ready(self.reason(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_path_error_says_what_to_use_instead() {
        let r = Error::CodePathNotSupported("./src".to_owned()).readiness();
        assert!(!r.ready);
        assert_eq!(r.reason, "CodePathNotSupported");
        assert!(r.message.contains("code.inline"), "{}", r.message);
        assert!(r.message.contains("code.configMap"), "{}", r.message);
        assert!(r.message.contains("./src"), "{}", r.message);
    }

    #[test]
    fn api_errors_are_retried_user_errors_wait_for_a_change() {
        let api = Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert!(!api.is_user_error());
        assert_eq!(api.reason(), "KubernetesApiError");
        assert!(Error::InvalidSpec("x".into()).is_user_error());
    }
}
