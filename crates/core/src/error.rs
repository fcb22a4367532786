use thiserror::Error;

/// Errors raised by a [`crate::Backend`]. `Clone` so that one failure can be
/// delivered to every request that waited on the same batch.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BackendError {
    /// The backend cannot run on this platform or build (e.g. Core ML off macOS).
    #[error("{0}")]
    Unsupported(String),
    /// The backend failed to start (model load, compile).
    #[error("backend failed to start: {0}")]
    Start(String),
    /// The input does not fit what the backend supports (shape, vocab, empty).
    #[error("invalid input: {0}")]
    Input(String),
    /// The computation itself failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The operation is not provided by this backend/model (e.g. scoring with an embedder).
    #[error("not supported by this model: {0}")]
    NotSupported(String),
    /// The backend's queue is full; the caller may retry later (HTTP 429).
    #[error("{0}")]
    Overloaded(String),
}

/// Errors from core helpers (settings, token batches).
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("invalid settings in {path}: {message}")]
    Settings { path: String, message: String },
    #[error("could not read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid token batch: {0}")]
    Batch(String),
}
