//! Errors of the shared store.

/// What can go wrong with the shared store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: postgres::Error,
    },
    #[error("PostgreSQL: {0}")]
    Db(#[from] postgres::Error),
    #[error(
        "the shared store has schema version {found}, newer than this anectx knows ({known}); \
         upgrade anectx"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error(
        "cannot enable pgvector in the shared store ({0}); an administrator must run \
         `CREATE EXTENSION vector;` in that database once"
    )]
    Extension(String),
    #[error(
        "the shared store holds vectors of {store}, not {given}; use the same embedder on every \
         replica"
    )]
    Embedder { store: String, given: String },
    #[error(
        "this local store is a cache of another shared store ({local}, not {shared}); use a \
         fresh local directory"
    )]
    OtherStore { local: String, shared: String },
    #[error(transparent)]
    Local(#[from] anectx_store::StoreError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, PgError>;
