use std::path::PathBuf;
use thiserror::Error;

/// Errors from loading, saving and running models.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("model directory {0} does not exist")]
    MissingDir(PathBuf),
    #[error("{path} is missing from the model directory {dir}")]
    MissingFile { dir: PathBuf, path: String },
    #[error("could not read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid weights {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "tokenizer and model disagree: the tokenizer has {tokenizer} tokens but the model's \
         embedding table has {model} rows"
    )]
    VocabMismatch { tokenizer: usize, model: usize },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<ModelError> for anectx_core::BackendError {
    fn from(e: ModelError) -> Self {
        use anectx_core::BackendError as B;
        match e {
            ModelError::Input(m) => B::Input(m),
            ModelError::VocabMismatch { .. } => B::Input(e.to_string()),
            ModelError::Unsupported(m) => B::NotSupported(m),
            ModelError::Candle(_) => B::Inference(e.to_string()),
            other => B::Start(other.to_string()),
        }
    }
}
