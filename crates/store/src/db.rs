//! SQLite metadata: documents, chunks and the consistency queues.
//!
//! The schema is a list of migrations applied in order; `PRAGMA user_version`
//! records how many have run. Later features (an interaction log, usage
//! labels) append migrations here and add their own module beside this one.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// Meta key of [`Db::local_id`].
const LOCAL_ID_KEY: &str = "local_store_id";

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: documents, chunks, consistency queue, key/value metadata.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE documents (
        id           INTEGER PRIMARY KEY,
        path         TEXT NOT NULL UNIQUE,
        content_hash TEXT NOT NULL,
        bytes        INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        indexed_at   INTEGER NOT NULL
    );
    -- AUTOINCREMENT: chunk ids are never reused, because tantivy and the
    -- vector store key their entries by chunk id.
    CREATE TABLE chunks (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id     INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ord        INTEGER NOT NULL,
        text       TEXT NOT NULL,
        heading    TEXT,
        byte_start INTEGER NOT NULL,
        byte_end   INTEGER NOT NULL,
        line_start INTEGER NOT NULL,
        line_end   INTEGER NOT NULL,
        tokens     INTEGER NOT NULL,
        lexed      INTEGER NOT NULL DEFAULT 0,
        embedded   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX chunks_doc ON chunks(doc_id);
    CREATE INDEX chunks_unlexed ON chunks(lexed) WHERE lexed = 0;
    CREATE INDEX chunks_unembedded ON chunks(embedded) WHERE embedded = 0;
    -- Chunks deleted from SQLite whose tantivy / vector entries still exist.
    CREATE TABLE pending_deletes (
        chunk_id INTEGER PRIMARY KEY,
        lexical  INTEGER NOT NULL DEFAULT 1,
        vector   INTEGER NOT NULL DEFAULT 1
    );
    CREATE TRIGGER chunks_deleted AFTER DELETE ON chunks BEGIN
        INSERT OR REPLACE INTO pending_deletes(chunk_id, lexical, vector) VALUES (old.id, 1, 1);
    END;
    "#,
    // v2: the interaction log, usage labels and feedback (see `crate::log`).
    crate::log::MIGRATION_V2,
    // v3: the page (PDF page, PPTX slide) a chunk comes from; NULL for
    // documents without pages and for chunks written before v3.
    "ALTER TABLE chunks ADD COLUMN page INTEGER;",
    // v4: the file's modification time (Unix seconds) for date filters;
    // NULL for in-memory documents, and for files indexed before v4 until
    // the next `index` sees them.
    "ALTER TABLE documents ADD COLUMN modified INTEGER;",
    // v5: the candidates of pulled interactions that name chunks this cache
    // did not hold yet (ids from `FOREIGN_CHUNK_BASE` = 2^62 up), found
    // again when their documents arrive (see `Db::place_foreign`).
    "CREATE INDEX candidates_foreign ON interaction_candidates(chunk_id) \
     WHERE chunk_id >= 4611686018427387904;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Which embedder produced a store's vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderInfo {
    /// Content fingerprint of the model (config, tokenizer, weights, dtype).
    pub fingerprint: String,
    /// Human-readable description (directory, architecture).
    pub description: String,
    pub dim: usize,
}

/// The meta key of a re-embedding in progress ([`Reembedding`]).
const REEMBEDDING_KEY: &str = "reembedding";

/// A re-embedding in progress: every chunk's vector is being replaced by
/// one from another embedder. Recorded in SQLite in the same transaction
/// that records `to` as the store's embedder and marks every chunk
/// unembedded; removed once every chunk has a vector from `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reembedding {
    /// The embedder whose vectors are being replaced (`None`: the store was
    /// BM25-only).
    pub from: Option<EmbedderInfo>,
    /// The embedder whose vectors replace them.
    pub to: EmbedderInfo,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// The old vector file is still to be removed: a crash came between
    /// the SQLite transaction and the removal, which opening the store
    /// finishes.
    pub reset_pending: bool,
}

/// A shared change applied to a local cache ([`Db::apply_shared`]):
/// the chunks that take the vectors that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The document's chunk ids, in order.
    pub ids: Vec<u64>,
    /// The document was written (new or changed content); else its content
    /// was already here and only its chunks' missing vectors are taken.
    pub new: bool,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub id: i64,
    pub path: String,
    pub content_hash: String,
    pub bytes: u64,
    pub kind: String,
}

/// What retrieval filters read of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFacts {
    pub id: i64,
    pub path: String,
    /// `markdown`, `pdf`, … (see the engine's `DocKind` and `Format`).
    pub kind: String,
    /// The file's modification time in Unix seconds, when known.
    pub modified: Option<i64>,
}

/// A chunk to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChunk {
    pub text: String,
    pub heading: Option<String>,
    pub byte_start: usize,
    pub byte_end: usize,
    pub line_start: usize,
    pub line_end: usize,
    pub tokens: usize,
    /// 1-based page (PDF page, PPTX slide) the chunk comes from, if any.
    pub page: Option<u32>,
}

/// Where a chunk sits, in terms every cache of one shared store agrees on:
/// chunk ids are local to each store (each assigns its own), so a record
/// that names chunks and travels between replicas (the fleet's interaction
/// log) names them this way. A document rewritten with other content is
/// another `content_hash`, as a rewrite gives new chunk ids locally.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub path: String,
    pub content_hash: String,
    pub ord: u32,
}

/// A stored document with its modification time and its chunks (id and
/// content, in order): see [`Db::document_with_chunks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    pub record: DocumentRecord,
    pub modified: Option<i64>,
    pub chunks: Vec<(u64, NewChunk)>,
}

/// A document as a shared store holds it: what a replica writes into its
/// local cache (see [`Db::apply_shared`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDocument {
    pub path: String,
    pub content_hash: String,
    pub bytes: u64,
    pub kind: String,
    pub modified: Option<i64>,
    pub chunks: Vec<NewChunk>,
}

/// One change of a shared store, as a replica applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedChange {
    /// The document as it is now (inserted or replaced).
    Put(SharedDocument),
    /// The document at this path is gone.
    Delete(String),
}

/// A stored chunk with its document path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: u64,
    pub doc_id: i64,
    pub path: String,
    pub ord: u32,
    pub text: String,
    pub heading: Option<String>,
    pub byte_start: usize,
    pub byte_end: usize,
    pub line_start: usize,
    pub line_end: usize,
    pub tokens: usize,
}

/// Work an interrupted run left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub unlexed_chunks: u64,
    pub unembedded_chunks: u64,
    pub lexical_deletes: u64,
    pub vector_deletes: u64,
}

impl Pending {
    /// `unembedded` only counts when the store has an embedder.
    pub fn is_empty(&self) -> bool {
        self.unlexed_chunks == 0
            && self.unembedded_chunks == 0
            && self.lexical_deletes == 0
            && self.vector_deletes == 0
    }
}

/// The SQLite database (one connection behind a mutex; WAL mode).
pub struct Db {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

const CHUNK_COLUMNS: &str = "c.id, c.doc_id, d.path, c.ord, c.text, c.heading, c.byte_start, \
     c.byte_end, c.line_start, c.line_end, c.tokens";

/// Ids bound in one `IN (…)` statement (SQLite allows 32,766 variables).
const ID_BATCH: usize = 500;

/// `?, ?, …` for `n` parameters.
fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(3 * n);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

fn chunk_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkRecord> {
    Ok(ChunkRecord {
        id: r.get::<_, i64>(0)? as u64,
        doc_id: r.get(1)?,
        path: r.get(2)?,
        ord: r.get::<_, i64>(3)? as u32,
        text: r.get(4)?,
        heading: r.get(5)?,
        byte_start: r.get::<_, i64>(6)? as usize,
        byte_end: r.get::<_, i64>(7)? as usize,
        line_start: r.get::<_, i64>(8)? as usize,
        line_end: r.get::<_, i64>(9)? as usize,
        tokens: r.get::<_, i64>(10)? as usize,
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Opens the database, enables WAL and applies pending migrations.
    /// A missing database file is created 0600 on Unix (SQLite gives its
    /// WAL and shared-memory files the database file's mode).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            crate::private::private_file_options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| StoreError::io(path, e))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` inside one transaction.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// This store's own identity, made on first use. Chunk ids are this
    /// store's own numbering, so what records chunk ids (a usage memory)
    /// records it too, and another store refuses the record. A copy of the
    /// store directory keeps it, as it keeps the numbering.
    pub fn local_id(&self) -> Result<String> {
        let conn = self.conn();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let fresh = format!("{nanos:x}-{:x}", std::process::id());
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
            params![LOCAL_ID_KEY, fresh],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [LOCAL_ID_KEY],
            |r| r.get(0),
        )?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The embedder that produced the store's vectors, if any.
    pub fn embedder(&self) -> Result<Option<EmbedderInfo>> {
        match self.meta("embedder")? {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| StoreError::Invalid(format!("corrupt embedder record: {e}"))),
        }
    }

    pub(crate) fn set_embedder(&self, info: &EmbedderInfo) -> Result<()> {
        let s = serde_json::to_string(info)
            .map_err(|e| StoreError::Invalid(format!("embedder record: {e}")))?;
        self.set_meta("embedder", &s)
    }

    /// The re-embedding in progress, if any.
    pub fn reembedding(&self) -> Result<Option<Reembedding>> {
        match self.meta(REEMBEDDING_KEY)? {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| StoreError::Invalid(format!("corrupt re-embedding record: {e}"))),
        }
    }

    /// In one transaction: records `r` and its target as the store's
    /// embedder, marks every chunk unembedded and drops the queued vector
    /// deletes (the vector file is replaced as a whole).
    pub(crate) fn start_reembedding(&self, r: &Reembedding) -> Result<()> {
        let json = |v: Result<String, serde_json::Error>| {
            v.map_err(|e| StoreError::Invalid(format!("re-embedding record: {e}")))
        };
        let marker = json(serde_json::to_string(r))?;
        let embedder = json(serde_json::to_string(&r.to))?;
        self.transaction(|tx| {
            for (k, v) in [(REEMBEDDING_KEY, &marker), ("embedder", &embedder)] {
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2) \
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![k, v],
                )?;
            }
            tx.execute("UPDATE chunks SET embedded = 0 WHERE embedded = 1", [])?;
            tx.execute("UPDATE pending_deletes SET vector = 0", [])?;
            tx.execute(
                "DELETE FROM pending_deletes WHERE lexical = 0 AND vector = 0",
                [],
            )?;
            Ok(())
        })
    }

    /// Replaces the re-embedding record, or removes it (`None`).
    pub(crate) fn set_reembedding(&self, r: Option<&Reembedding>) -> Result<()> {
        match r {
            Some(r) => {
                let s = serde_json::to_string(r)
                    .map_err(|e| StoreError::Invalid(format!("re-embedding record: {e}")))?;
                self.set_meta(REEMBEDDING_KEY, &s)
            }
            None => {
                self.conn()
                    .execute("DELETE FROM meta WHERE key = ?1", [REEMBEDDING_KEY])?;
                Ok(())
            }
        }
    }

    /// All documents (path → record).
    pub fn documents(&self) -> Result<Vec<DocumentRecord>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT id, path, content_hash, bytes, kind FROM documents ORDER BY path")?;
        let rows = st.query_map([], |r| {
            Ok(DocumentRecord {
                id: r.get(0)?,
                path: r.get(1)?,
                content_hash: r.get(2)?,
                bytes: r.get::<_, i64>(3)? as u64,
                kind: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces (or inserts) a document and its chunks in `tx`. Old chunks go
    /// to the delete queue through the trigger. Returns the new chunk ids.
    pub fn replace_document(
        tx: &rusqlite::Transaction<'_>,
        path: &str,
        content_hash: &str,
        bytes: u64,
        kind: &str,
        chunks: &[NewChunk],
    ) -> Result<Vec<u64>> {
        tx.execute("DELETE FROM documents WHERE path = ?1", [path])?;
        tx.execute(
            "INSERT INTO documents(path, content_hash, bytes, kind, indexed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![path, content_hash, bytes as i64, kind, now_secs()],
        )?;
        let doc_id = tx.last_insert_rowid();
        let mut st = tx.prepare_cached(
            "INSERT INTO chunks(doc_id, ord, text, heading, byte_start, byte_end, line_start, \
             line_end, tokens, page) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut ids = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            st.execute(params![
                doc_id,
                i as i64,
                c.text,
                c.heading,
                c.byte_start as i64,
                c.byte_end as i64,
                c.line_start as i64,
                c.line_end as i64,
                c.tokens as i64,
                c.page.map(i64::from)
            ])?;
            ids.push(tx.last_insert_rowid() as u64);
        }
        Ok(ids)
    }

    /// Applies changes from a shared store in one transaction, together
    /// with the meta entry `watermark` (key, value) that records how far the
    /// cache has caught up; so a crash leaves both before or both after. A
    /// `Put` whose content hash the cache already holds is skipped. Returns,
    /// for each change, the new chunk ids of a written `Put` (in chunk
    /// order), else `None`.
    pub fn apply_shared(
        &self,
        changes: &[SharedChange],
        watermark: (&str, &str),
    ) -> Result<Vec<Option<Applied>>> {
        self.transaction(|tx| {
            let mut out = Vec::with_capacity(changes.len());
            for ch in changes {
                match ch {
                    SharedChange::Put(d) => {
                        let have: Option<String> = tx
                            .query_row(
                                "SELECT content_hash FROM documents WHERE path = ?1",
                                [&d.path],
                                |r| r.get(0),
                            )
                            .optional()?;
                        if have.as_deref() == Some(d.content_hash.as_str()) {
                            // The same content: at most a new time (a
                            // touched file), no new chunks; but chunks
                            // without vectors (a cache taking a re-embedded
                            // store's) take the ones that came with it.
                            if let Some(m) = d.modified {
                                Self::set_modified(tx, &d.path, m)?;
                            }
                            let mut st = tx.prepare_cached(
                                "SELECT c.id, c.embedded FROM chunks c \
                                 JOIN documents d ON d.id = c.doc_id \
                                 WHERE d.path = ?1 ORDER BY c.ord",
                            )?;
                            let rows: Vec<(i64, bool)> = st
                                .query_map([&d.path], |r| Ok((r.get(0)?, r.get(1)?)))?
                                .collect::<rusqlite::Result<_>>()?;
                            let unembedded = rows.len() == d.chunks.len()
                                && rows.iter().all(|(_, embedded)| !embedded);
                            out.push(unembedded.then(|| Applied {
                                ids: rows.iter().map(|(id, _)| *id as u64).collect(),
                                new: false,
                            }));
                            continue;
                        }
                        let ids = Self::replace_document(
                            tx,
                            &d.path,
                            &d.content_hash,
                            d.bytes,
                            &d.kind,
                            &d.chunks,
                        )?;
                        if let Some(m) = d.modified {
                            Self::set_modified(tx, &d.path, m)?;
                        }
                        out.push(Some(Applied { ids, new: true }));
                    }
                    SharedChange::Delete(path) => {
                        Self::delete_document(tx, path)?;
                        out.push(None);
                    }
                }
            }
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![watermark.0, watermark.1],
            )?;
            Ok(out)
        })
    }

    /// A document's record, modification time and chunks in order, each
    /// with its id, as [`replace_document`](Self::replace_document) took
    /// them (`None` when no document has `path`). What a shared store
    /// publishes.
    pub fn document_with_chunks(&self, path: &str) -> Result<Option<StoredDocument>> {
        let conn = self.conn();
        let doc = conn
            .query_row(
                "SELECT id, path, content_hash, bytes, kind, modified FROM documents WHERE path = ?1",
                [path],
                |r| {
                    Ok((
                        DocumentRecord {
                            id: r.get(0)?,
                            path: r.get(1)?,
                            content_hash: r.get(2)?,
                            bytes: r.get::<_, i64>(3)? as u64,
                            kind: r.get(4)?,
                        },
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((doc, modified)) = doc else {
            return Ok(None);
        };
        let mut st = conn.prepare_cached(
            "SELECT id, text, heading, byte_start, byte_end, line_start, line_end, tokens, page \
             FROM chunks WHERE doc_id = ?1 ORDER BY ord",
        )?;
        let rows = st.query_map([doc.id], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                NewChunk {
                    text: r.get(1)?,
                    heading: r.get(2)?,
                    byte_start: r.get::<_, i64>(3)? as usize,
                    byte_end: r.get::<_, i64>(4)? as usize,
                    line_start: r.get::<_, i64>(5)? as usize,
                    line_end: r.get::<_, i64>(6)? as usize,
                    tokens: r.get::<_, i64>(7)? as usize,
                    page: r
                        .get::<_, Option<i64>>(8)?
                        .and_then(|p| u32::try_from(p).ok()),
                },
            ))
        })?;
        let chunks = rows.collect::<rusqlite::Result<_>>()?;
        Ok(Some(StoredDocument {
            record: doc,
            modified,
            chunks,
        }))
    }

    /// The [`ChunkRef`] of each of `ids` this store holds (ids it does not
    /// hold are left out). One statement for all of them: the shared log's
    /// mirror calls this for every group of interactions it acknowledges.
    pub fn chunk_refs(&self, ids: &[u64]) -> Result<std::collections::HashMap<u64, ChunkRef>> {
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let list = serde_json::to_string(ids)
            .map_err(|e| StoreError::Invalid(format!("chunk ids: {e}")))?;
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT c.id, d.path, d.content_hash, c.ord FROM chunks c \
             JOIN documents d ON d.id = c.doc_id \
             WHERE c.id IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = st.query_map([list], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                ChunkRef {
                    path: r.get(1)?,
                    content_hash: r.get(2)?,
                    ord: r.get::<_, i64>(3)? as u32,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// This store's chunk id for each of `refs` (`None` where it does not
    /// hold that document with that content).
    pub fn resolve_chunk_refs(&self, refs: &[&ChunkRef]) -> Result<Vec<Option<u64>>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT c.id FROM documents d JOIN chunks c ON c.doc_id = d.id \
             WHERE d.path = ?1 AND d.content_hash = ?2 AND c.ord = ?3",
        )?;
        refs.iter()
            .map(|r| {
                Ok(st
                    .query_row(params![r.path, r.content_hash, r.ord as i64], |row| {
                        row.get::<_, i64>(0)
                    })
                    .optional()?
                    .map(|id| id as u64))
            })
            .collect()
    }

    /// Records a document's file modification time (Unix seconds) in `tx`;
    /// returns whether a row changed.
    pub fn set_modified(tx: &rusqlite::Transaction<'_>, path: &str, modified: i64) -> Result<bool> {
        Ok(tx.execute(
            "UPDATE documents SET modified = ?2 WHERE path = ?1 \
             AND (modified IS NULL OR modified != ?2)",
            params![path, modified],
        )? > 0)
    }

    /// Every document's path, kind and modification time.
    pub fn document_facts(&self) -> Result<Vec<DocumentFacts>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT id, path, kind, modified FROM documents ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok(DocumentFacts {
                id: r.get(0)?,
                path: r.get(1)?,
                kind: r.get(2)?,
                modified: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The ids of the chunks of documents `doc_ids`.
    pub fn chunk_ids_of(&self, doc_ids: &HashSet<i64>) -> Result<HashSet<u64>> {
        if doc_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id, doc_id FROM chunks")?;
        let mut out = HashSet::new();
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            if doc_ids.contains(&r.get::<_, i64>(1)?) {
                out.insert(r.get::<_, i64>(0)? as u64);
            }
        }
        Ok(out)
    }

    /// Deletes documents by path in `tx` (their chunks are queued for deletion).
    pub fn delete_document(tx: &rusqlite::Transaction<'_>, path: &str) -> Result<bool> {
        Ok(tx.execute("DELETE FROM documents WHERE path = ?1", [path])? > 0)
    }

    pub fn chunk_count(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    pub fn document_count(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Ids of chunks whose vectors are recorded as written.
    pub fn embedded_chunk_ids(&self) -> Result<HashSet<u64>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT id FROM chunks WHERE embedded = 1")?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        rows.map(|r| Ok(r? as u64)).collect()
    }

    /// Up to `limit` chunks with id > `after` not yet in tantivy:
    /// `(id, indexed text)`. The indexed text is the heading path, a newline
    /// and the chunk text.
    pub fn unlexed_chunks_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        self.id_text("lexed", after, limit)
    }

    /// Up to `limit` chunks with id > `after` without vectors: `(id, indexed text)`.
    pub fn unembedded_chunks_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        self.id_text("embedded", after, limit)
    }

    fn id_text(&self, flag: &str, after: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT id, CASE WHEN heading IS NULL THEN text ELSE heading || char(10) || text END \
             FROM chunks WHERE {flag} = 0 AND id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = st.query_map([after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn mark(&self, sql: &str, ids: &[u64]) -> Result<()> {
        self.transaction(|tx| {
            let mut st = tx.prepare_cached(sql)?;
            for id in ids {
                st.execute([*id as i64])?;
            }
            Ok(())
        })
    }

    pub fn mark_lexed(&self, ids: &[u64]) -> Result<()> {
        self.mark("UPDATE chunks SET lexed = 1 WHERE id = ?1", ids)
    }

    pub fn mark_embedded(&self, ids: &[u64]) -> Result<()> {
        self.mark("UPDATE chunks SET embedded = 1 WHERE id = ?1", ids)
    }

    /// Chunk ids queued for deletion from tantivy (`lexical`) or the vector store.
    pub fn pending_deletes(&self, lexical: bool) -> Result<Vec<u64>> {
        let col = if lexical { "lexical" } else { "vector" };
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT chunk_id FROM pending_deletes WHERE {col} = 1"
        ))?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        rows.map(|r| Ok(r? as u64)).collect()
    }

    /// Marks deletes as applied to one side and drops fully applied entries.
    pub fn clear_pending_deletes(&self, lexical: bool, ids: &[u64]) -> Result<()> {
        let sql = if lexical {
            "UPDATE pending_deletes SET lexical = 0 WHERE chunk_id = ?1"
        } else {
            "UPDATE pending_deletes SET vector = 0 WHERE chunk_id = ?1"
        };
        self.mark(sql, ids)?;
        self.conn().execute(
            "DELETE FROM pending_deletes WHERE lexical = 0 AND vector = 0",
            [],
        )?;
        Ok(())
    }

    /// Outstanding work. Unembedded chunks count only when an embedder is set.
    pub fn pending(&self) -> Result<Pending> {
        let has_embedder = self.embedder()?.is_some();
        let conn = self.conn();
        let count = |sql: &str| -> Result<u64> {
            Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok(Pending {
            unlexed_chunks: count("SELECT COUNT(*) FROM chunks WHERE lexed = 0")?,
            unembedded_chunks: if has_embedder {
                count("SELECT COUNT(*) FROM chunks WHERE embedded = 0")?
            } else {
                0
            },
            lexical_deletes: count("SELECT COUNT(*) FROM pending_deletes WHERE lexical = 1")?,
            vector_deletes: if has_embedder {
                count("SELECT COUNT(*) FROM pending_deletes WHERE vector = 1")?
            } else {
                0
            },
        })
    }

    /// Without an embedder nothing consumes vector deletes; drop them.
    pub fn drop_vector_deletes(&self) -> Result<()> {
        let conn = self.conn();
        conn.execute("UPDATE pending_deletes SET vector = 0", [])?;
        conn.execute(
            "DELETE FROM pending_deletes WHERE lexical = 0 AND vector = 0",
            [],
        )?;
        Ok(())
    }

    /// Chunks by id, in the order given; ids that no longer exist are skipped.
    pub fn chunks_by_ids(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        // One statement per batch of ids (a `context` call asks for about a
        // hundred), not one per id; rows come back in `ids` order.
        let conn = self.conn();
        let mut found: std::collections::HashMap<u64, ChunkRecord> =
            std::collections::HashMap::with_capacity(ids.len());
        for batch in ids.chunks(ID_BATCH) {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {CHUNK_COLUMNS} FROM chunks c JOIN documents d ON d.id = c.doc_id \
                 WHERE c.id IN ({})",
                placeholders(batch.len())
            ))?;
            let params = rusqlite::params_from_iter(batch.iter().map(|&i| i as i64));
            for c in st.query_map(params, chunk_from_row)? {
                let c = c?;
                found.insert(c.id, c);
            }
        }
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    /// Chunk id → page for those of `ids` that carry a page (PDF pages,
    /// PPTX slides); chunks without a page, and ids that no longer exist,
    /// are absent.
    pub fn chunk_pages(&self, ids: &[u64]) -> Result<std::collections::HashMap<u64, u32>> {
        let conn = self.conn();
        let mut out = std::collections::HashMap::new();
        for batch in ids.chunks(ID_BATCH) {
            let mut st = conn.prepare_cached(&format!(
                "SELECT id, page FROM chunks WHERE page IS NOT NULL AND id IN ({})",
                placeholders(batch.len())
            ))?;
            let params = rusqlite::params_from_iter(batch.iter().map(|&i| i as i64));
            let rows = st.query_map(params, |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
            for row in rows {
                let (id, page) = row?;
                if let Some(p) = page.and_then(|p| u32::try_from(p).ok()) {
                    out.insert(id as u64, p);
                }
            }
        }
        Ok(out)
    }

    /// Chunk id → document path for every chunk (used by evaluation).
    pub fn chunk_paths(&self) -> Result<std::collections::HashMap<u64, String>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT c.id, d.path FROM chunks c JOIN documents d ON d.id = c.doc_id")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        // IMMEDIATE takes the write lock first; another process may have
        // applied this step while we waited for it, so read the version again.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::debug!(version = i + 1, "applied store migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> NewChunk {
        NewChunk {
            text: text.into(),
            heading: None,
            byte_start: 0,
            byte_end: text.len(),
            line_start: 1,
            line_end: 1,
            tokens: text.split_whitespace().count(),
            page: None,
        }
    }

    #[test]
    fn chunk_refs_name_chunks_by_document_and_place_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.sqlite")).unwrap();
        let a = db
            .transaction(|tx| {
                Db::replace_document(tx, "a.md", "h1", 3, "markdown", &[chunk("x"), chunk("y")])
            })
            .unwrap();
        let b = db
            .transaction(|tx| Db::replace_document(tx, "b.md", "h2", 3, "text", &[chunk("z")]))
            .unwrap();
        // Repeated and unknown ids in one call.
        let refs = db.chunk_refs(&[a[1], b[0], a[1], 999]).unwrap();
        assert_eq!(refs.len(), 2);
        let r = ChunkRef {
            path: "a.md".into(),
            content_hash: "h1".into(),
            ord: 1,
        };
        assert_eq!(refs[&a[1]], r);
        assert_eq!(refs[&b[0]].path, "b.md");
        assert!(db.chunk_refs(&[]).unwrap().is_empty());
        let other = ChunkRef {
            content_hash: "h9".into(),
            ..r.clone()
        };
        assert_eq!(
            db.resolve_chunk_refs(&[&r, &refs[&b[0]], &other]).unwrap(),
            vec![Some(a[1]), Some(b[0]), None]
        );
    }

    #[test]
    fn migrates_and_queues_deleted_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.sqlite")).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        let ids = db
            .transaction(|tx| {
                Db::replace_document(
                    tx,
                    "a.md",
                    "h1",
                    3,
                    "markdown",
                    &[chunk("one"), chunk("two")],
                )
            })
            .unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(db.pending().unwrap().unlexed_chunks, 2);
        db.mark_lexed(&ids).unwrap();
        // Replacing the document queues the old chunks and never reuses ids.
        let new_ids = db
            .transaction(|tx| {
                Db::replace_document(tx, "a.md", "h2", 3, "markdown", &[chunk("three")])
            })
            .unwrap();
        assert!(new_ids[0] > ids[1]);
        let mut pending = db.pending_deletes(true).unwrap();
        pending.sort();
        assert_eq!(pending, ids);
        db.clear_pending_deletes(true, &ids).unwrap();
        assert!(db.pending_deletes(true).unwrap().is_empty());
        assert_eq!(db.pending_deletes(false).unwrap().len(), 2);
        let got = db.chunks_by_ids(&[ids[0], new_ids[0]]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text, "three");
        assert_eq!(got[0].path, "a.md");
        // Re-opening keeps the version and data.
        drop(db);
        let db = Db::open(&dir.path().join("a.sqlite")).unwrap();
        assert_eq!(db.chunk_count().unwrap(), 1);
    }

    /// A store written before pages existed (schema v2, with a chunk) opens,
    /// keeps its chunk (without a page) and takes chunks with pages.
    #[test]
    fn a_store_from_before_pages_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sqlite");
        {
            let mut c = Connection::open(&p).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &MIGRATIONS[..2] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 2).unwrap();
            tx.execute(
                "INSERT INTO documents(path, content_hash, bytes, kind, indexed_at) \
                 VALUES ('old.md', 'h', 3, 'markdown', 0)",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO chunks(doc_id, ord, text, heading, byte_start, byte_end, \
                 line_start, line_end, tokens) VALUES (1, 0, 'old text', NULL, 0, 8, 1, 1, 2)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let db = Db::open(&p).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        let old = db.chunks_by_ids(&[1]).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].text, "old text");
        assert!(db.chunk_pages(&[1]).unwrap().is_empty());
        let mut paged = chunk("page three text");
        paged.page = Some(3);
        let ids = db
            .transaction(|tx| {
                Db::replace_document(tx, "new.pdf", "h2", 9, "pdf", &[paged, chunk("x")])
            })
            .unwrap();
        let pages = db.chunk_pages(&[1, ids[0], ids[1]]).unwrap();
        assert_eq!(pages.len(), 1, "{pages:?}");
        assert_eq!(pages.get(&ids[0]), Some(&3));
    }

    /// A store written before modification times (schema v3, with a
    /// document) opens with the time unknown, and takes times.
    #[test]
    fn a_store_from_before_modified_times_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sqlite");
        {
            let mut c = Connection::open(&p).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute(
                "INSERT INTO documents(path, content_hash, bytes, kind, indexed_at) \
                 VALUES ('old.md', 'h', 3, 'markdown', 0)",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO chunks(doc_id, ord, text, heading, byte_start, byte_end, \
                 line_start, line_end, tokens, page) VALUES (1, 0, 'old', NULL, 0, 3, 1, 1, 1, NULL)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let db = Db::open(&p).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        let facts = db.document_facts().unwrap();
        assert_eq!(
            facts,
            vec![DocumentFacts {
                id: 1,
                path: "old.md".into(),
                kind: "markdown".into(),
                modified: None
            }]
        );
        assert!(db
            .transaction(|tx| Db::set_modified(tx, "old.md", 1_700_000_000))
            .unwrap());
        // The same time again changes nothing.
        assert!(!db
            .transaction(|tx| Db::set_modified(tx, "old.md", 1_700_000_000))
            .unwrap());
        assert_eq!(
            db.document_facts().unwrap()[0].modified,
            Some(1_700_000_000)
        );
        let ids = db.chunk_ids_of(&HashSet::from([1])).unwrap();
        assert_eq!(ids, HashSet::from([1]));
        assert!(db.chunk_ids_of(&HashSet::from([2])).unwrap().is_empty());
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sqlite");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
                .unwrap();
        }
        let err = Db::open(&p).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    }
}
