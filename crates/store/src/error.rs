use std::path::{Path, PathBuf};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store's schema is version {found}, newer than this anectx understands ({supported}); upgrade anectx")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("vector store {path}: {message}")]
    Vectors { path: PathBuf, message: String },
    #[error("vector of dimension {got} does not match the store's dimension {want}")]
    Dimension { got: usize, want: usize },
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
