//! Errors of the shared store.

/// What can go wrong with the shared store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `detail` is the whole chain of causes (a TLS failure says why only
    /// in its causes).
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
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

impl PgError {
    /// A failed connection to `target`, with every cause of `e` and, for a
    /// certificate that was not trusted, what to do about it.
    pub(crate) fn connect(target: &str, e: &postgres::Error, tls: bool) -> Self {
        let mut detail = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !detail.contains(&text) {
                detail = format!("{detail}: {text}");
            }
            cause = c.source();
        }
        if tls && detail.contains("certificate") {
            detail.push_str(
                " (the server's certificate is verified against the Mozilla root \
                 certificates; for one a private CA signed, add sslrootcert=/path/to/ca.pem)",
            );
        }
        Self::Connect {
            target: target.to_string(),
            detail,
        }
    }
}
