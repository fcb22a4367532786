//! Errors of the benchmark library.

use std::path::PathBuf;

/// Everything that can go wrong while benchmarking or reading a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] anectx_models::ModelError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("evaluation collection: {0}")]
    Eval(#[from] anectx_engine::EngineError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: not a benchmark report: {message}")]
    Report { path: PathBuf, message: String },
    #[error("invalid benchmark setting: {0}")]
    Config(String),
    #[error("chart: {0}")]
    Chart(String),
    #[error("{0}")]
    Other(String),
}

impl BenchError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
