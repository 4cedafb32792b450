//! Why the control plane refused or failed a change: the core's own errors,
//! free of any protocol. The admin API maps them to its answers
//! ([`crate::admin::api::ApiError`]); background work logs them.

/// Why a change or a read of the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The change is not valid (it does not compile, or its store refused it).
    #[error("{0}")]
    Invalid(String),
    /// Another change came first, or the object is in use.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot take changes now (etcd unreachable or behind).
    #[error("{0}")]
    Unavailable(String),
    /// The gateway failed.
    #[error("{0}")]
    Internal(String),
}

impl From<anyhow::Error> for ControlError {
    fn from(e: anyhow::Error) -> Self {
        ControlError::Internal(format!("{e:#}"))
    }
}
