//! The fleet's interaction log in the shared store.
//!
//! Every replica appends its interactions here (an append is acknowledged
//! only after PostgreSQL commits it), and a learner pulls them into its
//! local log, where `anectx train` and the usage memory read them as today.
//!
//! Chunk ids are local to each replica's cache (each assigns its own as it
//! writes documents), so an interaction travels with a [`ChunkRef`] for each
//! candidate, and a puller puts its own ids back in. A candidate it cannot
//! place (the pusher no longer held the chunk, or the puller does not hold
//! that document with that content yet) gets an id of
//! [`FOREIGN_CHUNK_BASE`] or above, which no local chunk has: it still
//! counts for training, and the usage memory never boosts a chunk for it.
//! When the document arrives later, the sync that writes it gives such
//! candidates their local ids ([`foreign_chunk_id`]).

use anectx_store::{ChunkRef, Db, Feedback, LoggedInteraction};
use serde::Deserialize;
use serde::Serialize;

use crate::{PgError, PgStore, Result};

/// Local meta key: the last shared interaction pulled into this local log.
pub const LOG_WATERMARK_KEY: &str = "shared_log_watermark";

/// Local meta key: the last local interaction row pushed to the shared log.
pub const LOG_PUSHED_KEY: &str = "shared_log_pushed";

/// Local meta key: the last local feedback row pushed to the shared log.
pub const FEEDBACK_PUSHED_KEY: &str = "shared_feedback_pushed";

/// Local meta key: the last shared feedback row taken into this local log.
pub const FEEDBACK_WATERMARK_KEY: &str = "shared_feedback_watermark";

/// Ids from here up name candidates a pulled interaction had that this
/// cache could not place (see the module documentation).
pub use anectx_store::FOREIGN_CHUNK_BASE;

/// The stand-in id of the chunk at `ord` of the document `path` with
/// `content_hash`, until this cache holds it: what a sync places again.
pub(crate) fn foreign_chunk_id(path: &str, content_hash: &str, ord: usize) -> u64 {
    foreign_id(&format!("{path}\u{0}{content_hash}\u{0}{ord}"))
}

/// A stand-in id for an unplaceable candidate: stable for the same
/// reference, at or above [`FOREIGN_CHUNK_BASE`].
fn foreign_id(key: &str) -> u64 {
    // FNV-1a: deterministic on every platform and Rust version.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    FOREIGN_CHUNK_BASE | (h & (FOREIGN_CHUNK_BASE - 1))
}

/// One interaction of the shared log.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedInteraction {
    /// Its id in the shared log.
    pub id: i64,
    /// As its replica logged it (chunk ids are that replica's).
    pub interaction: LoggedInteraction,
    /// Each candidate's chunk, where the replica held it (empty for a row
    /// written before references were kept).
    pub chunk_refs: Vec<Option<ChunkRef>>,
}

/// What [`PgStore::pull_log`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullReport {
    pub from: i64,
    pub to: i64,
    /// Interactions copied into the local log.
    pub pulled: u64,
    /// Interactions the local log already had (same uid).
    pub already_local: u64,
    /// Candidates of the pulled interactions this cache could not place
    /// (given ids from [`FOREIGN_CHUNK_BASE`] up).
    pub unplaced_candidates: u64,
}

impl PgStore {
    /// Appends interactions in one transaction; returns their shared ids.
    /// `local` is the store whose chunk ids the candidates carry: each
    /// candidate is stored with its [`ChunkRef`] there, so other replicas
    /// can find the same chunk. An interaction whose uid is already in the
    /// shared log is not written twice (its existing id is returned), so a
    /// retried append is safe.
    pub fn append_interactions(&self, local: &Db, items: &[LoggedInteraction]) -> Result<Vec<i64>> {
        let ids: Vec<u64> = items
            .iter()
            .flat_map(|it| it.candidates.iter().map(|c| c.chunk_id))
            .collect();
        let refs = local.chunk_refs(&ids)?;
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let record = serde_json::to_value(it)
                .map_err(|e| PgError::Invalid(format!("interaction {}: {e}", it.uid)))?;
            let these: Vec<Option<&ChunkRef>> = it
                .candidates
                .iter()
                .map(|c| refs.get(&c.chunk_id))
                .collect();
            let these = serde_json::to_value(these)
                .map_err(|e| PgError::Invalid(format!("interaction {}: {e}", it.uid)))?;
            let row = tx.query_opt(
                "INSERT INTO anectx_interactions(uid, record, chunk_refs) VALUES ($1, $2, $3) \
                 ON CONFLICT (uid) DO NOTHING RETURNING id",
                &[&it.uid, &record, &these],
            )?;
            let id = match row {
                Some(r) => r.get(0),
                None => tx
                    .query_one(
                        "SELECT id FROM anectx_interactions WHERE uid = $1",
                        &[&it.uid],
                    )?
                    .get(0),
            };
            out.push(id);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Number of interactions in the shared log.
    pub fn interaction_count(&self) -> Result<u64> {
        let r = self
            .client()
            .query_one("SELECT COUNT(*) FROM anectx_interactions", &[])?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Number of feedback rows in the shared log.
    pub fn feedback_count(&self) -> Result<u64> {
        let r = self
            .client()
            .query_one("SELECT COUNT(*) FROM anectx_feedback", &[])?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Up to `limit` interactions with shared id > `after`, in id order,
    /// each with the [`ChunkRef`] of each candidate where its pusher had one
    /// (none at all for a row written before references were kept).
    pub fn interactions_after(&self, after: i64, limit: usize) -> Result<Vec<SharedInteraction>> {
        let rows = self.client().query(
            "SELECT id, record, chunk_refs FROM anectx_interactions WHERE id > $1 \
             ORDER BY id LIMIT $2",
            &[&after, &(limit.min(i64::MAX as usize) as i64)],
        )?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let bad = |e: serde_json::Error| {
                    PgError::Invalid(format!("shared interaction {id}: {e}"))
                };
                let it: LoggedInteraction = serde_json::from_value(r.get(1)).map_err(bad)?;
                let refs: Option<serde_json::Value> = r.get(2);
                let refs: Vec<Option<ChunkRef>> = match refs {
                    Some(v) => serde_json::from_value(v).map_err(bad)?,
                    None => Vec::new(),
                };
                Ok(SharedInteraction {
                    id,
                    interaction: it,
                    chunk_refs: refs,
                })
            })
            .collect()
    }

    /// Sends `local`'s interactions logged since the last push that the
    /// shared log lacks (by uid):
    /// the catch-up for interactions a replica logged while the shared
    /// store was unreachable. Returns how many were sent.
    pub fn push_log(&self, local: &Db) -> Result<u64> {
        let mut after: i64 = watermark(local, LOG_PUSHED_KEY)?;
        let mut sent = 0u64;
        loop {
            let batch = local.interactions(after, 500)?;
            let Some(last) = batch.last().map(|b| b.0) else {
                break;
            };
            // Most rows are already there: the server's mirror wrote them
            // before acknowledging, and rows pulled from other replicas came
            // from there. One lookup a batch instead of a write a row.
            let uids: Vec<&str> = batch.iter().map(|(_, it)| it.uid.as_str()).collect();
            let known: std::collections::HashSet<String> = self
                .client()
                .query(
                    "SELECT uid FROM anectx_interactions WHERE uid = ANY($1)",
                    &[&uids],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let items: Vec<LoggedInteraction> = batch
                .into_iter()
                .map(|(_, it)| it)
                .filter(|it| !known.contains(&it.uid))
                .collect();
            if !items.is_empty() {
                self.append_interactions(local, &items)?;
            }
            sent += items.len() as u64;
            local.set_meta(LOG_PUSHED_KEY, &last.to_string())?;
            after = last;
        }
        Ok(sent)
    }

    /// Copies the shared log's new interactions into `local`'s log (those
    /// it lacks, by uid), so training and the usage memory see the whole
    /// fleet's traffic. Safe to interrupt and rerun.
    pub fn pull_log(&self, local: &Db) -> Result<PullReport> {
        let from: i64 = watermark(local, LOG_WATERMARK_KEY)?;
        let mut report = PullReport {
            from,
            to: from,
            ..PullReport::default()
        };
        loop {
            let batch = self.interactions_after(report.to, 1000)?;
            let Some(last) = batch.last().map(|b| b.id) else {
                break;
            };
            let mut fresh = Vec::with_capacity(batch.len());
            for SharedInteraction {
                interaction: mut it,
                chunk_refs: refs,
                ..
            } in batch
            {
                if local.interaction_id(&it.uid)?.is_some() {
                    report.already_local += 1;
                    continue;
                }
                report.unplaced_candidates += place_candidates(local, &mut it, &refs)?;
                fresh.push(it);
            }
            local.append_interactions(&fresh)?;
            report.pulled += fresh.len() as u64;
            local.set_meta(LOG_WATERMARK_KEY, &last.to_string())?;
            report.to = last;
        }
        Ok(report)
    }
}

/// Gives `it`'s candidates this store's chunk ids, from `refs` (one per
/// candidate); the number it could not place.
fn place_candidates(db: &Db, it: &mut LoggedInteraction, refs: &[Option<ChunkRef>]) -> Result<u64> {
    let known: Vec<&ChunkRef> = refs.iter().flatten().collect();
    let mut placed = db.resolve_chunk_refs(&known)?.into_iter();
    let mut unplaced = 0;
    for (i, c) in it.candidates.iter_mut().enumerate() {
        let here = match refs.get(i) {
            Some(Some(r)) => placed.next().flatten().ok_or((
                r.path.as_str(),
                r.content_hash.as_str(),
                r.ord as usize,
            )),
            _ => Err(("", "", i)),
        };
        c.chunk_id = match here {
            Ok(id) => id,
            Err((path, hash, ord)) => {
                unplaced += 1;
                if path.is_empty() {
                    // No reference at all: never placeable.
                    foreign_id(&format!("{}\u{0}{ord}", it.uid))
                } else {
                    foreign_chunk_id(path, hash, ord)
                }
            }
        };
    }
    Ok(unplaced)
}

/// A chunk named by feedback, in terms every replica can place: its index
/// among the interaction's candidates (whose order every replica keeps),
/// else its [`ChunkRef`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackChunk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkRef>,
}

/// Feedback as the shared log keeps it (chunk ids made portable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFeedback {
    pub interaction_uid: String,
    pub ts_ms: i64,
    pub rating: Option<i32>,
    pub chunks: Vec<FeedbackChunk>,
    pub comment: Option<String>,
}

/// What [`PgStore::pull_feedback`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeedbackPull {
    /// Feedback rows taken into the local log.
    pub pulled: u64,
    /// Rows skipped: this store's own, feedback on an interaction the
    /// shared log does not hold (it cannot be placed anywhere), or refused
    /// by the local log (its limits per interaction).
    pub skipped: u64,
    /// Whether the pull stopped at a row whose interaction is in the shared
    /// log but not here yet ([`PgStore::pull_log`] brings it; the next pull
    /// resumes at that row).
    pub waiting: bool,
}

/// The number a local meta key holds (0 when unset): how far a push, pull
/// or sync has come.
pub(crate) fn watermark(db: &Db, key: &str) -> Result<i64> {
    Ok(db.meta(key)?.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// The candidates of the interaction `uid` in `db` (`None`: not logged).
fn candidates_of(db: &Db, uid: &str) -> Result<Option<Vec<u64>>> {
    let Some(row) = db.interaction_id(uid)? else {
        return Ok(None);
    };
    Ok(db
        .interactions(row - 1, 1)?
        .into_iter()
        .next()
        .map(|(_, it)| it.candidates.iter().map(|c| c.chunk_id).collect()))
}

impl PgStore {
    /// Sends `local`'s feedback written since the last push, chunk ids made
    /// portable ([`FeedbackChunk`]). A row the shared log already holds (the
    /// same feedback, pulled from there) is not written twice. Returns how
    /// many rows were new there.
    pub fn push_feedback(&self, local: &Db) -> Result<u64> {
        let origin = local.local_id()?;
        let mut after: i64 = watermark(local, FEEDBACK_PUSHED_KEY)?;
        let mut sent = 0u64;
        loop {
            let batch = local.feedback_after(after, 500)?;
            let Some(last) = batch.last().map(|b| b.0) else {
                break;
            };
            let mut records = Vec::with_capacity(batch.len());
            for (_, f) in &batch {
                let cands = candidates_of(local, &f.interaction_uid)?.unwrap_or_default();
                let refs = local.chunk_refs(&f.chunk_ids)?;
                let chunks = f
                    .chunk_ids
                    .iter()
                    .map(|id| FeedbackChunk {
                        candidate: cands.iter().position(|c| c == id).map(|p| p as u32),
                        chunk: refs.get(id).cloned(),
                    })
                    .collect();
                let record = SharedFeedback {
                    interaction_uid: f.interaction_uid.clone(),
                    ts_ms: f.ts_ms,
                    rating: f.rating,
                    chunks,
                    comment: f.comment.clone(),
                };
                records.push(
                    serde_json::to_value(&record)
                        .map_err(|e| PgError::Invalid(format!("feedback: {e}")))?,
                );
            }
            let mut c = self.client();
            let mut tx = c.transaction()?;
            for r in &records {
                // The key is the record's own content, so the same feedback
                // pushed again by a replica that pulled it is not a new row.
                sent += tx.execute(
                    "INSERT INTO anectx_feedback(key, origin, record) \
                     VALUES (md5($1::jsonb::text), $2, $1) ON CONFLICT (key) DO NOTHING",
                    &[r, &origin],
                )?;
            }
            tx.commit()?;
            drop(c);
            local.set_meta(FEEDBACK_PUSHED_KEY, &last.to_string())?;
            after = last;
        }
        Ok(sent)
    }

    /// Takes the shared log's feedback from other stores into `local`, each
    /// chunk placed in this store's ids (a chunk it cannot place is left
    /// out). Stops at feedback whose interaction is in the shared log but
    /// not in `local` yet ([`PgStore::pull_log`] brings it), and resumes
    /// there next time; feedback on an interaction the shared log does not
    /// hold is skipped, so it cannot hold up the rest.
    pub fn pull_feedback(&self, local: &Db) -> Result<FeedbackPull> {
        let origin = local.local_id()?;
        let mut after: i64 = watermark(local, FEEDBACK_WATERMARK_KEY)?;
        let mut report = FeedbackPull::default();
        loop {
            let rows = self.client().query(
                "SELECT id, origin, record FROM anectx_feedback WHERE id > $1 ORDER BY id \
                 LIMIT 500",
                &[&after],
            )?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let id: i64 = r.get(0);
                let from: String = r.get(1);
                if from != origin {
                    let f: SharedFeedback = serde_json::from_value(r.get(2))
                        .map_err(|e| PgError::Invalid(format!("shared feedback {id}: {e}")))?;
                    let Some(cands) = candidates_of(local, &f.interaction_uid)? else {
                        let shared = self
                            .client()
                            .query_opt(
                                "SELECT 1 FROM anectx_interactions WHERE uid = $1",
                                &[&f.interaction_uid],
                            )?
                            .is_some();
                        if shared {
                            report.waiting = true;
                            return Ok(report);
                        }
                        tracing::warn!(
                            "shared feedback {id} not taken: its interaction `{}` is in no log",
                            f.interaction_uid
                        );
                        report.skipped += 1;
                        after = id;
                        local.set_meta(FEEDBACK_WATERMARK_KEY, &after.to_string())?;
                        continue;
                    };
                    let refs: Vec<&ChunkRef> =
                        f.chunks.iter().filter_map(|c| c.chunk.as_ref()).collect();
                    let mut placed = local.resolve_chunk_refs(&refs)?.into_iter();
                    let mut chunk_ids = Vec::new();
                    for c in &f.chunks {
                        let by_ref = if c.chunk.is_some() {
                            placed.next().flatten()
                        } else {
                            None
                        };
                        let by_candidate = c.candidate.and_then(|p| cands.get(p as usize).copied());
                        if let Some(id) = by_candidate.or(by_ref) {
                            chunk_ids.push(id);
                        }
                    }
                    let fb = Feedback {
                        interaction_uid: f.interaction_uid,
                        ts_ms: f.ts_ms,
                        rating: f.rating,
                        chunk_ids,
                        comment: f.comment,
                    };
                    match local.add_feedback(&fb) {
                        Ok(row) => {
                            report.pulled += 1;
                            // Not this store's to send: when everything
                            // before it was sent, the push starts after it.
                            // (Else the push sends it and the shared log,
                            // keyed by content, keeps one.)
                            let pushed = watermark(local, FEEDBACK_PUSHED_KEY)?;
                            if pushed == row - 1 {
                                local.set_meta(FEEDBACK_PUSHED_KEY, &row.to_string())?;
                            }
                        }
                        Err(anectx_store::StoreError::Invalid(m)) => {
                            tracing::warn!("shared feedback {id} not taken: {m}");
                            report.skipped += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    report.skipped += 1;
                }
                after = id;
                local.set_meta(FEEDBACK_WATERMARK_KEY, &after.to_string())?;
            }
        }
        Ok(report)
    }
}
