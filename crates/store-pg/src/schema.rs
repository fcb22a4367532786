//! Versioned migrations of the shared store.

use postgres::Client;

use crate::{PgError, Result, MIGRATION_LOCK};

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: metadata, documents, chunks with vectors, the change sequence and
    // the interaction log.
    r#"
    CREATE TABLE anectx_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );
    INSERT INTO anectx_meta(key, value) VALUES ('store_id', md5(random()::text || clock_timestamp()::text));
    CREATE TABLE anectx_documents (
        id           bigserial PRIMARY KEY,
        path         text NOT NULL UNIQUE,
        content_hash text NOT NULL,
        bytes        bigint NOT NULL,
        kind         text NOT NULL,
        modified     bigint,
        seq          bigint NOT NULL
    );
    -- The vector column has no fixed dimension: the embedder is chosen by
    -- the first publish, which then builds an HNSW index on a cast.
    CREATE TABLE anectx_chunks (
        doc_id     bigint NOT NULL REFERENCES anectx_documents(id) ON DELETE CASCADE,
        ord        integer NOT NULL,
        text       text NOT NULL,
        heading    text,
        byte_start bigint NOT NULL,
        byte_end   bigint NOT NULL,
        line_start bigint NOT NULL,
        line_end   bigint NOT NULL,
        tokens     integer NOT NULL,
        page       integer,
        embedding  vector,
        PRIMARY KEY (doc_id, ord)
    );
    -- One row per document write or delete; replicas catch up by seq.
    CREATE TABLE anectx_changes (
        seq  bigserial PRIMARY KEY,
        path text NOT NULL,
        op   text NOT NULL CHECK (op IN ('put', 'delete')),
        at   timestamptz NOT NULL DEFAULT now()
    );
    -- The fleet's interaction log: one row per interaction, keyed by its uid.
    CREATE TABLE anectx_interactions (
        id     bigserial PRIMARY KEY,
        uid    text NOT NULL UNIQUE,
        record jsonb NOT NULL,
        at     timestamptz NOT NULL DEFAULT now()
    );
    "#,
    // v2: the model registry, shared: every version's files, and which one
    // is current (with a number that grows at each change, so replicas
    // notice a promotion, a rollback, or a return to the built-in model).
    r#"
    CREATE TABLE anectx_registry_files (
        version text NOT NULL,
        path    text NOT NULL,
        content bytea NOT NULL,
        PRIMARY KEY (version, path)
    );
    CREATE TABLE anectx_registry_current (
        id      integer PRIMARY KEY CHECK (id = 1),
        version text,
        seq     bigint NOT NULL
    );
    INSERT INTO anectx_registry_current(id, version, seq) VALUES (1, NULL, 0);
    "#,
    // v3: the chunks an interaction names, as (path, content hash, ord)
    // beside each candidate, since chunk ids are local to each replica; and
    // the folders documents were indexed from, so every replica shows
    // sources (and matches path filters) relative to them; and feedback.
    r#"
    ALTER TABLE anectx_interactions ADD COLUMN chunk_refs jsonb;
    CREATE TABLE anectx_roots (path text PRIMARY KEY);
    -- Explicit feedback from every replica; `key` is the md5 of the record
    -- (chunks named portably), `origin` the store that received it.
    CREATE TABLE anectx_feedback (
        id     bigserial PRIMARY KEY,
        key    text NOT NULL UNIQUE,
        origin text NOT NULL,
        record jsonb NOT NULL,
        at     timestamptz NOT NULL DEFAULT now()
    );
    "#,
    // v4: a re-embedding of the whole store stages each chunk's new vector
    // beside the old one (a rewritten chunk starts without one), and swaps
    // them in one transaction once every chunk has one.
    r#"
    ALTER TABLE anectx_chunks ADD COLUMN next_embedding vector;
    "#,
];

/// Applies pending migrations, one transaction for all, under an advisory
/// lock so replicas starting together migrate once.
pub(crate) fn migrate(c: &mut Client) -> Result<()> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS anectx_schema (version integer NOT NULL)")?;
    let v: Option<i32> = tx
        .query_opt("SELECT version FROM anectx_schema", &[])?
        .map(|r| r.get(0));
    let v = match v {
        Some(v) => v as i64,
        None => {
            tx.execute("INSERT INTO anectx_schema(version) VALUES (0)", &[])?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if v > known {
        return Err(PgError::SchemaTooNew { found: v, known });
    }
    if v < known {
        // pgvector first: without it no table with vectors can be made.
        if let Err(e) = tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector") {
            return Err(PgError::Extension(
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string()),
            ));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            tx.batch_execute(m)?;
            tracing::info!(version = i + 1, "shared store migrated");
        }
        tx.execute("UPDATE anectx_schema SET version = $1", &[&(known as i32)])?;
    }
    tx.commit()?;
    Ok(())
}

pub(crate) fn version(c: &mut Client) -> Result<i64> {
    let r = c.query_one("SELECT version FROM anectx_schema", &[])?;
    Ok(r.get::<_, i32>(0) as i64)
}
