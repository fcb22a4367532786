//! [`ServeError`]: why a serving call did not answer, typed so that each
//! front end (HTTP, MCP) maps it to its own status without reading text.

use thiserror::Error;

use crate::batcher::BatchError;

/// Why a service call did not answer.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The request is unusable (empty, too long, wrong shape); `param` names
    /// the offending field when there is one. HTTP 422.
    #[error("{message}")]
    Invalid {
        param: Option<&'static str>,
        message: String,
    },
    /// The request is larger than a configured limit. HTTP 413.
    #[error("{0}")]
    TooLarge(String),
    /// Input `index` has more tokens than the model reads and the caller
    /// asked not to truncate ([`crate::Truncate::Refuse`]). HTTP 413.
    #[error("input {index} has {tokens} tokens; the model reads at most {max}")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    /// A queue is full; retry later. HTTP 429.
    #[error("{0}")]
    Overloaded(String),
    /// The service cannot answer now (backend stopped, store not ready). HTTP 503.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else. HTTP 500.
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ServeError {
    /// An [`ServeError::Invalid`] without a parameter name.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            param: None,
            message: message.into(),
        }
    }

    /// An [`ServeError::Invalid`] naming the offending field.
    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: Some(param),
            message: message.into(),
        }
    }

    /// An [`ServeError::Internal`] from anything that is an error.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<anectx_core::BackendError> for ServeError {
    fn from(e: anectx_core::BackendError) -> Self {
        use anectx_core::BackendError as B;
        match e {
            B::Input(m) => Self::invalid(m),
            B::Overloaded(m) => Self::Overloaded(m),
            B::NotSupported(m) => Self::Unavailable(format!("not supported by this model: {m}")),
            B::Unsupported(m) => Self::Unavailable(m),
            B::Start(m) => Self::Unavailable(format!("the backend is not running: {m}")),
            e @ B::Inference(_) => Self::internal(e),
        }
    }
}

impl From<BatchError> for ServeError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Overloaded { .. } => Self::Overloaded(e.to_string()),
            BatchError::TooLarge(m) => Self::TooLarge(m),
            BatchError::Backend(b) => b.into(),
            BatchError::Stopped => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<anectx_engine::EngineError> for ServeError {
    fn from(e: anectx_engine::EngineError) -> Self {
        use anectx_engine::EngineError as E;
        match e {
            E::Backend(b) => b.into(),
            e @ E::QueryTooLong { .. } => Self::invalid(e.to_string()),
            E::Filter(f) => Self::invalid_param(
                match f.param {
                    "path" => "filters.path",
                    "kind" => "filters.kind",
                    "modified_after" => "filters.modified_after",
                    _ => "filters.modified_before",
                },
                f.message,
            ),
            E::Model(anectx_models::ModelError::Input(m)) => Self::invalid(m),
            other => Self::internal(other),
        }
    }
}
