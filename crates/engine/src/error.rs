use std::path::PathBuf;

/// Errors from the context engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] anectx_store::StoreError),
    #[error("shared store: {0}")]
    Shared(#[from] anectx_store_pg::PgError),
    #[error(transparent)]
    Model(#[from] anectx_models::ModelError),
    #[error("embedding backend: {0}")]
    Backend(#[from] anectx_core::BackendError),
    #[error("{path}: {message}")]
    Path { path: PathBuf, message: String },
    #[error(
        "the store in {store} holds vectors from embedder {stored} ({stored_dim} dims), \
         but the configured embedder is {requested} ({requested_dim} dims); anectx never mixes \
         models in one store: use the original model, re-embed the store with this one \
         (anectx reembed, with the same --store and this --model), or index into another --store"
    )]
    EmbedderMismatch {
        store: PathBuf,
        stored: String,
        stored_dim: usize,
        requested: String,
        requested_dim: usize,
    },
    #[error(
        "the shared store {store} holds vectors from embedder {stored}, but this replica runs \
         {requested}: every replica uses the shared store's embedder; run this one with it \
         (--model), or re-embed the shared store for the whole fleet (anectx reembed, with \
         the same --store and that --model)"
    )]
    FleetEmbedder {
        store: String,
        stored: String,
        requested: String,
    },
    #[error(
        "the store in {store} holds vectors from embedder {stored}; configure that model \
         (--model or ANECTX_MODEL) to index into it, or index into another --store"
    )]
    EmbedderRequired { store: PathBuf, stored: String },
    #[error("evaluation data: {0}")]
    Eval(String),
    #[error("relevance model {version}: {message}")]
    Relevance { version: String, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A context filter is unusable (bad glob, empty kind, empty range).
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    #[error(
        "the query is {chars} characters long, more than the {max} allowed: ask a shorter \
         question"
    )]
    QueryTooLong { chars: usize, max: usize },
}

impl EngineError {
    pub(crate) fn path(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Path {
            path: path.into(),
            message: message.into(),
        }
    }
}
