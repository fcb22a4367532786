use thiserror::Error;

/// Errors of the learning loop.
#[derive(Debug, Error)]
pub enum LearnError {
    #[error(transparent)]
    Engine(#[from] anectx_engine::EngineError),
    #[error(transparent)]
    Store(#[from] anectx_store::StoreError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] anectx_models::ModelError),
    /// Not enough logged data to train or evaluate.
    #[error("too little data: {0}")]
    TooLittleData(String),
    /// The model registry has no such version, or it cannot be loaded.
    #[error("model registry: {0}")]
    Registry(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl LearnError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
