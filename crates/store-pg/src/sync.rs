//! Publishing a local store's documents to the shared store, and bringing a
//! local cache up to the shared store's change sequence.

use std::collections::{HashMap, HashSet};

use anectx_store::{failpoint, NewChunk, SharedChange, SharedDocument, Store, VectorIndex};
use postgres::types::ToSql;
use serde::Serialize;

use crate::{PgError, PgStore, Result, CHANGE_LOCK};

/// The statements a document write runs, prepared once per connection
/// (parsing and planning them for every document was PostgreSQL's largest
/// cost when publishing).
pub(crate) struct PutStatements {
    /// Takes the change lock, draws the number and writes the document in
    /// one statement (numbers are drawn under the lock and committed before
    /// the next writer draws, so they become visible in order).
    upsert: postgres::Statement,
    clear: postgres::Statement,
    chunk: postgres::Statement,
    notify: postgres::Statement,
}

impl PutStatements {
    fn prepare(c: &mut postgres::Client) -> Result<Self> {
        Ok(Self {
            upsert: c.prepare(
                "WITH l AS (SELECT pg_advisory_xact_lock($6)), \
                 ch AS (INSERT INTO anectx_changes(path, op) SELECT $1, 'put' FROM l \
                        RETURNING seq), \
                 d AS (INSERT INTO anectx_documents(path, content_hash, bytes, kind, modified, \
                        seq) SELECT $1, $2, $3, $4, $5, seq FROM ch \
                        ON CONFLICT (path) DO UPDATE SET content_hash = excluded.content_hash, \
                        bytes = excluded.bytes, kind = excluded.kind, \
                        modified = excluded.modified, seq = excluded.seq RETURNING id, seq) \
                 SELECT id, seq FROM d",
            )?,
            clear: c.prepare("DELETE FROM anectx_chunks WHERE doc_id = $1")?,
            chunk: c.prepare(
                "INSERT INTO anectx_chunks(doc_id, ord, text, heading, byte_start, byte_end, \
                 line_start, line_end, tokens, page, embedding) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )?,
            notify: c.prepare("SELECT pg_notify('anectx_changes', $1::text)")?,
        })
    }
}

/// Draws the next change number for `path` (`op`: put or delete) in `tx`,
/// which holds the change lock, and wakes the replicas at its commit.
fn new_change(tx: &mut postgres::Transaction<'_>, path: &str, op: &str) -> Result<i64> {
    let seq: i64 = tx
        .query_one(
            "INSERT INTO anectx_changes(path, op) VALUES ($1, $2) RETURNING seq",
            &[&path, &op],
        )?
        .get(0);
    tx.execute(
        "SELECT pg_notify('anectx_changes', $1::text)",
        &[&seq.to_string()],
    )?;
    Ok(seq)
}

/// The shared change `local` (a replica's cache) has caught up to (0: none).
pub fn synced_to(local: &anectx_store::Db) -> Result<i64> {
    crate::log::watermark(local, WATERMARK_KEY)
}

/// Local meta key: the last shared change this cache has applied.
pub const WATERMARK_KEY: &str = "shared_watermark";
/// Local meta key: which shared store this cache belongs to.
pub const STORE_ID_KEY: &str = "shared_store_id";
/// Changes read per batch (and applied per local transaction).
const BATCH: i64 = 512;

/// What [`PgStore::publish`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishReport {
    pub documents_written: u64,
    pub documents_deleted: u64,
    pub documents_unchanged: u64,
    /// Documents with the same content and a new modification time: only
    /// the time is written.
    pub documents_touched: u64,
    pub chunks_written: u64,
    /// The shared store's last change number afterwards.
    pub head: i64,
    /// Seconds spent building the HNSW index, when this publish built it
    /// (the first one with vectors).
    pub index_built_s: Option<f64>,
}

/// What [`PgStore::sync_into`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Watermark before and after.
    pub from: i64,
    pub to: i64,
    pub changes: u64,
    pub documents_written: u64,
    pub documents_deleted: u64,
    pub chunks_written: u64,
    /// Chunks whose vectors came from the shared store (not re-embedded).
    pub vectors_copied: u64,
    /// Candidates of interactions pulled before their chunks were here,
    /// given their local ids now.
    pub candidates_placed: u64,
}

impl PgStore {
    /// Writes the documents of `local` under any of `scope` (paths of the
    /// roots just indexed: the root itself or anything below it; `None`:
    /// every document) to the shared store, one transaction per document,
    /// and deletes shared documents under `scope` that `local` no longer
    /// has (none without a scope). Documents whose content hash the shared store already
    /// holds are left alone. Vectors go with their chunks when `local` has
    /// an embedder; every chunk must then have one (a finished index run).
    pub fn publish(&self, local: &Store, scope: Option<&[String]>) -> Result<PublishReport> {
        let in_scope = |p: &str| {
            scope.is_none_or(|scope| {
                scope.iter().any(|s| {
                    p == s
                        || (p.starts_with(s.as_str())
                            && p[s.len()..].starts_with(std::path::MAIN_SEPARATOR))
                })
            })
        };
        let embedder = local.db.embedder()?;
        if let Some(info) = &embedder {
            self.set_embedder(info)?;
        }
        let shared: HashMap<String, (String, Option<i64>)> = self
            .client()
            .query(
                "SELECT path, content_hash, modified FROM anectx_documents",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut report = PublishReport::default();
        let local_docs = local.db.documents()?;
        let modified: HashMap<String, Option<i64>> = local
            .db
            .document_facts()?
            .into_iter()
            .map(|f| (f.path, f.modified))
            .collect();
        let local_paths: HashSet<&str> = local_docs.iter().map(|d| d.path.as_str()).collect();
        for d in &local_docs {
            if !in_scope(&d.path) {
                continue;
            }
            if let Some((hash, at)) = shared.get(&d.path) {
                if *hash == d.content_hash {
                    // The same content; a touched file's new time still
                    // reaches replicas, whose date filters read it.
                    match modified.get(&d.path) {
                        Some(Some(m)) if *at != Some(*m) => {
                            self.touch_document(&d.path, *m)?;
                            report.documents_touched += 1;
                        }
                        _ => report.documents_unchanged += 1,
                    }
                    continue;
                }
            }
            let Some(stored) = local.db.document_with_chunks(&d.path)? else {
                continue; // deleted locally meanwhile
            };
            let (doc, modified, chunks) = (stored.record, stored.modified, stored.chunks);
            let vectors: Option<Vec<pgvector::Vector>> = match &embedder {
                None => None,
                Some(_) => {
                    let v = local.vectors();
                    let mut out = Vec::with_capacity(chunks.len());
                    for (id, _) in &chunks {
                        let Some(x) = v.get(*id) else {
                            return Err(PgError::Invalid(format!(
                                "chunk {id} of {} has no vector yet; finish the local index \
                                 run (anectx index) before publishing",
                                doc.path
                            )));
                        };
                        out.push(pgvector::Vector::from(x));
                    }
                    Some(out)
                }
            };
            let doc = SharedDocument {
                path: doc.path,
                content_hash: doc.content_hash,
                bytes: doc.bytes,
                kind: doc.kind,
                modified,
                chunks: chunks.into_iter().map(|(_, c)| c).collect(),
            };
            self.put_document(&doc, vectors.as_deref())?;
            report.documents_written += 1;
            report.chunks_written += doc.chunks.len() as u64;
        }
        for path in shared.keys() {
            if scope.is_some()
                && in_scope(path)
                && !local_paths.contains(path.as_str())
                && self.delete_document(path)?
            {
                report.documents_deleted += 1;
            }
        }
        if embedder.is_some() {
            let t = std::time::Instant::now();
            if self.ensure_vector_index()? {
                report.index_built_s = Some(t.elapsed().as_secs_f64());
            }
        }
        report.head = self.head()?;
        Ok(report)
    }

    /// Inserts or replaces one document with its chunks (and vectors, one
    /// per chunk), in one transaction with its change number.
    pub fn put_document(
        &self,
        doc: &SharedDocument,
        vectors: Option<&[pgvector::Vector]>,
    ) -> Result<i64> {
        if let Some(v) = vectors {
            if v.len() != doc.chunks.len() {
                return Err(PgError::Invalid(format!(
                    "{}: {} vectors for {} chunks",
                    doc.path,
                    v.len(),
                    doc.chunks.len()
                )));
            }
        }
        let mut guard = self.client();
        let conn = &mut *guard.0;
        let st: &PutStatements = match &mut conn.put {
            Some(st) => st,
            slot @ None => slot.insert(PutStatements::prepare(&mut conn.client)?),
        };
        let mut tx = conn.client.transaction()?;
        // A document can be published again from its source file, so its
        // commit does not wait for the disk: a PostgreSQL crash may lose the
        // last moments of publishing (each document whole or absent, and
        // the next `index` publishes it again), never a half document. The
        // interaction log keeps synchronous commits.
        tx.batch_execute("SET LOCAL synchronous_commit = off")?;
        let row = tx.query_one(
            &st.upsert,
            &[
                &doc.path,
                &doc.content_hash,
                &(doc.bytes as i64),
                &doc.kind,
                &doc.modified,
                &CHANGE_LOCK,
            ],
        )?;
        let (doc_id, seq): (i64, i64) = (row.get(0), row.get(1));
        tx.execute(&st.clear, &[&doc_id])?;
        for (i, ch) in doc.chunks.iter().enumerate() {
            let emb = vectors.map(|v| &v[i]);
            let params: [&(dyn ToSql + Sync); 11] = [
                &doc_id,
                &(i as i32),
                &ch.text,
                &ch.heading,
                &(ch.byte_start as i64),
                &(ch.byte_end as i64),
                &(ch.line_start as i64),
                &(ch.line_end as i64),
                &(ch.tokens as i32),
                &ch.page.map(|p| p as i32),
                &emb,
            ];
            tx.execute(&st.chunk, &params)?;
            if i == 0 && doc.chunks.len() > 1 {
                failpoint("mid-publish");
            }
        }
        tx.execute(&st.notify, &[&seq.to_string()])?;
        tx.commit()?;
        Ok(seq)
    }

    /// Records a new modification time for a document whose content is
    /// unchanged, with a change number, so replicas take the new time.
    /// Returns whether the document exists.
    pub fn touch_document(&self, path: &str, modified: i64) -> Result<bool> {
        let mut c = self.client();
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK])?;
        let n = tx.execute(
            "UPDATE anectx_documents SET modified = $2 WHERE path = $1",
            &[&path, &modified],
        )?;
        if n > 0 {
            let seq = new_change(&mut tx, path, "put")?;
            tx.execute(
                "UPDATE anectx_documents SET seq = $2 WHERE path = $1",
                &[&path, &seq],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Deletes one document (in one transaction with its change number);
    /// returns whether it existed.
    pub fn delete_document(&self, path: &str) -> Result<bool> {
        let mut c = self.client();
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK])?;
        let n = tx.execute("DELETE FROM anectx_documents WHERE path = $1", &[&path])?;
        if n > 0 {
            new_change(&mut tx, path, "delete")?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// The shared store's identity (made by its first migration).
    pub fn store_id(&self) -> Result<String> {
        Ok(self
            .client()
            .query_one("SELECT value FROM anectx_meta WHERE key = 'store_id'", &[])?
            .get(0))
    }

    /// Brings `local` (a replica's cache) up to the shared store's last
    /// change: documents written or replaced since its watermark, with their
    /// vectors, and deletions. Postings, and vectors the shared store lacks,
    /// are left to the local store's pending work (the engine finishes it).
    /// A local store that caches another shared store is refused.
    /// `progress(done, total)` is called after each batch with change
    /// numbers caught up, out of those there were when it started.
    pub fn sync_into(
        &self,
        local: &Store,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<SyncReport> {
        let id = self.store_id()?;
        match local.db.meta(STORE_ID_KEY)? {
            Some(have) if have != id => {
                return Err(PgError::OtherStore {
                    local: have,
                    shared: id,
                })
            }
            Some(_) => {}
            None => local.db.set_meta(STORE_ID_KEY, &id)?,
        }
        if let Some(info) = self.embedder()? {
            match local.db.embedder()? {
                None => local.set_embedder(&info)?,
                Some(have) if have.fingerprint != info.fingerprint || have.dim != info.dim => {
                    return Err(PgError::Embedder {
                        store: format!("{} ({} dims)", info.description, info.dim),
                        given: format!("{} ({} dims), this replica's", have.description, have.dim),
                    })
                }
                Some(_) => {}
            }
        }
        let from: i64 = synced_to(&local.db)?;
        let mut report = SyncReport {
            from,
            to: from,
            ..SyncReport::default()
        };
        let total = (self.head()? - from).max(0) as u64;
        loop {
            let (changes, vectors, last) = self.read_changes(report.to)?;
            let Some(last) = last else { break };
            let written = local
                .db
                .apply_shared(&changes, (WATERMARK_KEY, &last.to_string()))?;
            report.changes += changes.len() as u64;
            report.to = last;
            let mut ids = Vec::new();
            let mut flat = Vec::new();
            let mut arrived = Vec::new();
            for ((ch, new_ids), vecs) in changes.iter().zip(&written).zip(&vectors) {
                match (ch, new_ids) {
                    (SharedChange::Put(d), Some(applied)) => {
                        let new_ids = &applied.ids;
                        if applied.new {
                            report.documents_written += 1;
                            report.chunks_written += d.chunks.len() as u64;
                        }
                        arrived.extend(new_ids.iter().enumerate().map(|(ord, &id)| {
                            (
                                crate::log::foreign_chunk_id(&d.path, &d.content_hash, ord),
                                id,
                            )
                        }));
                        if let Some(vecs) = vecs {
                            for (id, v) in new_ids.iter().zip(vecs) {
                                ids.push(*id);
                                flat.extend_from_slice(v);
                            }
                        }
                    }
                    (SharedChange::Delete(_), _) => report.documents_deleted += 1,
                    _ => {}
                }
            }
            if !ids.is_empty() {
                local.vectors_mut().append(&ids, &flat)?;
                local.db.mark_embedded(&ids)?;
                report.vectors_copied += ids.len() as u64;
            }
            // Interactions pulled before these chunks were here name them
            // now.
            report.candidates_placed += local.db.place_foreign(&arrived)?;
            progress(((last - from).max(0) as u64).min(total), total);
        }
        Ok(report)
    }

    /// The changes after `after` (at most one batch), each path once, as
    /// the shared store holds it now, read in one snapshot; with each put's
    /// vectors (when every chunk has one) and the batch's last number.
    #[allow(clippy::type_complexity)]
    fn read_changes(
        &self,
        after: i64,
    ) -> Result<(Vec<SharedChange>, Vec<Option<Vec<Vec<f32>>>>, Option<i64>)> {
        let mut c = self.client();
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let rows = tx.query(
            "SELECT seq, path FROM anectx_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &BATCH],
        )?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            return Ok((Vec::new(), Vec::new(), None));
        };
        // Each path once, in order of its last change in the batch.
        let mut paths: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for r in rows.iter().rev() {
            let p: String = r.get(1);
            if seen.insert(p.clone()) {
                paths.push(p);
            }
        }
        paths.reverse();
        let docs = tx.query(
            "SELECT id, path, content_hash, bytes, kind, modified FROM anectx_documents \
             WHERE path = ANY($1)",
            &[&paths],
        )?;
        let mut by_path: HashMap<String, (i64, SharedDocument)> = HashMap::new();
        for r in &docs {
            let path: String = r.get(1);
            by_path.insert(
                path.clone(),
                (
                    r.get(0),
                    SharedDocument {
                        path,
                        content_hash: r.get(2),
                        bytes: r.get::<_, i64>(3) as u64,
                        kind: r.get(4),
                        modified: r.get(5),
                        chunks: Vec::new(),
                    },
                ),
            );
        }
        let ids: Vec<i64> = by_path.values().map(|d| d.0).collect();
        let chunk_rows = tx.query(
            "SELECT doc_id, text, heading, byte_start, byte_end, line_start, line_end, tokens, \
             page, embedding FROM anectx_chunks WHERE doc_id = ANY($1) ORDER BY doc_id, ord",
            &[&ids],
        )?;
        tx.commit()?;
        let mut chunks: HashMap<i64, (Vec<NewChunk>, Vec<Option<Vec<f32>>>)> = HashMap::new();
        for r in &chunk_rows {
            let e = chunks.entry(r.get(0)).or_default();
            e.0.push(NewChunk {
                text: r.get(1),
                heading: r.get(2),
                byte_start: r.get::<_, i64>(3) as usize,
                byte_end: r.get::<_, i64>(4) as usize,
                line_start: r.get::<_, i64>(5) as usize,
                line_end: r.get::<_, i64>(6) as usize,
                tokens: r.get::<_, i32>(7) as usize,
                page: r.get::<_, Option<i32>>(8).map(|p| p as u32),
            });
            e.1.push(r.get::<_, Option<pgvector::Vector>>(9).map(|v| v.to_vec()));
        }
        let mut changes = Vec::with_capacity(paths.len());
        let mut vectors = Vec::with_capacity(paths.len());
        for p in paths {
            match by_path.remove(&p) {
                None => {
                    changes.push(SharedChange::Delete(p));
                    vectors.push(None);
                }
                Some((id, mut d)) => {
                    let (cs, vs) = chunks.remove(&id).unwrap_or_default();
                    d.chunks = cs;
                    let all: Option<Vec<Vec<f32>>> = vs.into_iter().collect();
                    vectors.push(all);
                    changes.push(SharedChange::Put(d));
                }
            }
        }
        Ok((changes, vectors, Some(last)))
    }
}
