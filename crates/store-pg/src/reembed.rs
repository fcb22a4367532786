//! Re-embedding the shared store for the whole fleet at once.
//!
//! One machine computes every chunk's vector with the new embedder and
//! stages it beside the old one (`next_embedding`), in batches that each
//! commit, so a run that stops is resumed where it was. Replicas keep
//! serving and publishing meanwhile: a chunk a publisher rewrites starts
//! without a staged vector, and a staged vector is only written to a chunk
//! whose text is still the text it was computed from. When every chunk has
//! one, a single transaction swaps them in, records the new embedder and
//! gives every document a new change number, so each replica's next sync
//! takes the new vectors; a replica still running the old embedder is
//! refused at that sync, and keeps serving its cache, until it runs the
//! new one.

use anectx_store::EmbedderInfo;
use serde::Serialize;

use crate::{PgError, PgStore, Result, CHANGE_LOCK, MIGRATION_LOCK};

/// The meta key of a re-embedding in progress (its target embedder).
const REEMBEDDING_KEY: &str = "reembedding";

/// The text a chunk is embedded from, as a local store embeds it.
const EMBED_TEXT: &str = "CASE WHEN heading IS NULL THEN text ELSE heading || chr(10) || text END";

/// A chunk still to be embedded with the new embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkToEmbed {
    pub doc_id: i64,
    pub ord: i32,
    /// What is embedded (the heading and the text).
    pub text: String,
}

/// What [`PgStore::switch_embedder`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwitchReport {
    pub documents: u64,
    pub chunks: u64,
    /// The shared store's last change number afterwards.
    pub head: i64,
    /// Seconds spent building the new HNSW index.
    pub index_built_s: Option<f64>,
}

impl PgStore {
    /// The embedder a re-embedding in progress moves to, if any.
    pub fn reembedding(&self) -> Result<Option<EmbedderInfo>> {
        let row = self.client().query_opt(
            "SELECT value FROM anectx_meta WHERE key = $1",
            &[&REEMBEDDING_KEY],
        )?;
        row.map(|r| {
            serde_json::from_str(&r.get::<_, String>(0))
                .map_err(|e| PgError::Invalid(format!("corrupt re-embedding record: {e}")))
        })
        .transpose()
    }

    /// Starts re-embedding the store with `to`, or goes on with the one in
    /// progress when it has the same target (true). Another target starts
    /// over: its staged vectors are dropped.
    pub fn begin_reembedding(&self, to: &EmbedderInfo) -> Result<bool> {
        if self.reembedding()?.as_ref() == Some(to) {
            return Ok(true);
        }
        let json = serde_json::to_string(to)
            .map_err(|e| PgError::Invalid(format!("embedder record: {e}")))?;
        let mut c = self.client();
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK])?;
        tx.execute(
            "UPDATE anectx_chunks SET next_embedding = NULL WHERE next_embedding IS NOT NULL",
            &[],
        )?;
        tx.execute(
            "INSERT INTO anectx_meta(key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&REEMBEDDING_KEY, &json],
        )?;
        tx.commit()?;
        Ok(false)
    }

    /// Chunks with a staged vector, and all chunks.
    pub fn reembedding_progress(&self) -> Result<(u64, u64)> {
        let r = self.client().query_one(
            "SELECT COUNT(next_embedding), COUNT(*) FROM anectx_chunks",
            &[],
        )?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }

    /// Up to `limit` chunks without a staged vector.
    pub fn chunks_to_reembed(&self, limit: usize) -> Result<Vec<ChunkToEmbed>> {
        let rows = self.client().query(
            &format!(
                "SELECT doc_id, ord, {EMBED_TEXT} FROM anectx_chunks \
                 WHERE next_embedding IS NULL ORDER BY doc_id, ord LIMIT $1"
            ),
            &[&(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| ChunkToEmbed {
                doc_id: r.get(0),
                ord: r.get(1),
                text: r.get(2),
            })
            .collect())
    }

    /// Stages the new vectors of `chunks` (one per chunk, in order), in one
    /// transaction. A chunk whose text changed since it was read keeps no
    /// vector (it is read again). Returns how many were staged.
    pub fn stage_vectors(&self, chunks: &[ChunkToEmbed], vectors: &[Vec<f32>]) -> Result<u64> {
        if chunks.len() != vectors.len() {
            return Err(PgError::Invalid(format!(
                "{} vectors for {} chunks",
                vectors.len(),
                chunks.len()
            )));
        }
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let st = tx.prepare(&format!(
            "UPDATE anectx_chunks SET next_embedding = $3 \
             WHERE doc_id = $1 AND ord = $2 AND {EMBED_TEXT} = $4"
        ))?;
        let mut staged = 0;
        for (ch, v) in chunks.iter().zip(vectors) {
            let v = pgvector::Vector::from(v.clone());
            staged += tx.execute(&st, &[&ch.doc_id, &ch.ord, &v, &ch.text])?;
            if staged == 1 {
                anectx_store::failpoint("mid-stage-vectors");
            }
        }
        tx.commit()?;
        Ok(staged)
    }

    /// Swaps the staged vectors in, when every chunk has one (`None` when
    /// some chunk still lacks one: stage it, then call again). One
    /// transaction under the change lock: the old HNSW index goes, the
    /// vectors and the embedder record change, and every document gets a
    /// new change number. Then the index is built for the new dimension.
    pub fn switch_embedder(&self) -> Result<Option<SwitchReport>> {
        let Some(to) = self.reembedding()? else {
            return Err(PgError::Invalid(
                "no re-embedding is in progress in the shared store".into(),
            ));
        };
        let json = serde_json::to_string(&to)
            .map_err(|e| PgError::Invalid(format!("embedder record: {e}")))?;
        let mut report = SwitchReport::default();
        {
            let mut c = self.client();
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK])?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            let missing: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM anectx_chunks WHERE next_embedding IS NULL",
                    &[],
                )?
                .get(0);
            if missing > 0 {
                return Ok(None);
            }
            tx.batch_execute("DROP INDEX IF EXISTS anectx_chunks_hnsw")?;
            report.chunks = tx.execute(
                "UPDATE anectx_chunks SET embedding = next_embedding, next_embedding = NULL",
                &[],
            )?;
            anectx_store::failpoint("mid-switch-embedder");
            tx.execute(
                "INSERT INTO anectx_meta(key, value) VALUES ('embedder', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&json],
            )?;
            tx.execute(
                "DELETE FROM anectx_meta WHERE key = $1",
                &[&REEMBEDDING_KEY],
            )?;
            report.documents = tx.execute(
                "WITH ch AS (INSERT INTO anectx_changes(path, op) \
                   SELECT path, 'put' FROM anectx_documents ORDER BY path RETURNING seq, path) \
                 UPDATE anectx_documents d SET seq = ch.seq FROM ch WHERE d.path = ch.path",
                &[],
            )?;
            report.head = tx
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM anectx_changes", &[])?
                .get(0);
            tx.execute(
                "SELECT pg_notify('anectx_changes', $1::text)",
                &[&report.head.to_string()],
            )?;
            tx.commit()?;
        }
        let t = std::time::Instant::now();
        if self.ensure_vector_index()? {
            report.index_built_s = Some(t.elapsed().as_secs_f64());
        }
        Ok(Some(report))
    }
}
