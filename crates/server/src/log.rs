//! [`SqliteRecorder`]: the [`InteractionRecorder`] that writes the
//! interaction log of an `anectx_store` database.
//!
//! One writer thread owns the appends. [`InteractionRecorder::record`]
//! (called on tokio's blocking pool) maps the [`Interaction`] to a
//! [`LoggedInteraction`], hands it to the writer through a bounded channel
//! and waits for the commit. The writer takes every interaction waiting in
//! the channel (up to [`MAX_GROUP`]) and commits them in one transaction
//! (group commit), so with `synchronous = FULL` one fsync covers a group.
//! `record` returns `Ok` only after the commit: an acknowledged interaction
//! is in the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anectx_store::{Db, Durability, Feedback, LoggedCandidate, LoggedInteraction, Store};
use serde_json::{json, Map, Value};

use crate::context::{Interaction, InteractionKind, InteractionRecorder, RecordError};
use crate::metrics::Metrics;

/// Most interactions committed in one transaction.
pub const MAX_GROUP: usize = 256;
/// Interactions waiting for the writer before `record` blocks.
const QUEUE: usize = 4096;

type Reply = SyncSender<Result<i64, String>>;

struct Job {
    item: LoggedInteraction,
    reply: Reply,
}

/// Writes interactions and feedback to the interaction log of a store.
pub struct SqliteRecorder {
    db: Arc<Db>,
    tx: Mutex<Option<SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for SqliteRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteRecorder")
    }
}

impl SqliteRecorder {
    /// Opens the log in the store directory `dir` (its own SQLite
    /// connection, beside the engine's) with `durability`, and starts the
    /// writer thread.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, anectx_store::StoreError> {
        let db = Db::open(&Store::db_path(dir))?;
        db.set_durability(durability)?;
        Self::new(Arc::new(db))
    }

    /// Starts the writer over an open database.
    pub fn new(db: Arc<Db>) -> Result<Self, anectx_store::StoreError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let wdb = db.clone();
        let writer = std::thread::Builder::new()
            .name("anectx-log-writer".into())
            .spawn(move || write_loop(&wdb, &rx))
            .map_err(|e| anectx_store::StoreError::Invalid(format!("log writer thread: {e}")))?;
        Ok(Self {
            db,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            metrics: None,
        })
    }

    /// Observes write latency (`anectx_log_write_duration_seconds`) and
    /// outcomes (`anectx_log_writes_total`) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The database (for reading the log back).
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Appends one logged interaction through the writer and waits for the
    /// commit; returns its row id.
    pub fn append(&self, item: LoggedInteraction) -> Result<i64, RecordError> {
        let start = Instant::now();
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| RecordError("the log writer has stopped".into()))?;
        let (reply, done) = mpsc::sync_channel(1);
        let kind = item.kind.clone();
        tx.send(Job { item, reply })
            .map_err(|_| RecordError("the log writer has stopped".into()))?;
        drop(tx);
        let out = done
            .recv()
            .map_err(|_| RecordError("the log writer stopped before the commit".into()))?
            .map_err(RecordError);
        if let Some(m) = &self.metrics {
            m.log_write_duration
                .observe_duration(&kind, start.elapsed());
            m.record_log_write(out.is_ok());
        }
        out
    }
}

impl Drop for SqliteRecorder {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it commits what is queued.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

fn write_loop(db: &Db, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let items: Vec<LoggedInteraction> = jobs.iter().map(|j| j.item.clone()).collect();
        match db.append_interactions(&items) {
            Ok(ids) => {
                for (j, id) in jobs.into_iter().zip(ids) {
                    let _ = j.reply.send(Ok(id));
                }
            }
            // One bad item (e.g. a duplicate uid) fails the group: retry one
            // by one so the others are still written.
            Err(_) => {
                for j in jobs {
                    let r = db.append_interaction(&j.item).map_err(|e| e.to_string());
                    if let Err(e) = &r {
                        tracing::warn!("could not log interaction `{}`: {e}", j.item.uid);
                    }
                    let _ = j.reply.send(r);
                }
            }
        }
    }
}

impl InteractionRecorder for SqliteRecorder {
    fn record(&self, interaction: Interaction) -> Result<(), RecordError> {
        self.append(to_logged(&interaction)).map(|_| ())
    }

    fn contains(&self, id: &str) -> Result<Option<bool>, RecordError> {
        self.db
            .interaction_id(id)
            .map(|r| Some(r.is_some()))
            .map_err(|e| RecordError(e.to_string()))
    }

    fn feedback(&self, feedback: &Feedback) -> Result<i64, RecordError> {
        self.db
            .add_feedback(feedback)
            .map_err(|e| RecordError(e.to_string()))
    }

    fn accepts_feedback(&self) -> bool {
        true
    }
}

fn as_f32(v: Option<&Value>) -> Option<f32> {
    v.and_then(Value::as_f64).map(|x| x as f32)
}

/// Maps a server [`Interaction`] to the log's [`LoggedInteraction`].
///
/// Candidates come from `details.pool` when the provider gives one (the
/// engine: every scored candidate with relevance, features and propensity);
/// otherwise from the shown chunks. A candidate's `position` is the marker
/// of the chunk as actually shown (authoritative over the pool's `shown`),
/// its `text` the text shown. Shown chunks without a numeric id (e.g. an
/// in-memory provider's `mem:3`) cannot be logged as candidates; their ids
/// are listed in `meta.unlogged_chunks`.
pub fn to_logged(i: &Interaction) -> LoggedInteraction {
    let d = &i.details;
    let mut unlogged = Vec::new();
    // Shown chunks by numeric id.
    let mut shown: HashMap<u64, &crate::context::ContextChunk> = HashMap::new();
    let mut shown_order = Vec::new();
    for c in &i.chunks {
        let id = c
            .details
            .get("chunk_id")
            .and_then(Value::as_u64)
            .or_else(|| c.id.parse::<u64>().ok());
        match id {
            Some(id) => {
                if shown.insert(id, c).is_none() {
                    shown_order.push(id);
                }
            }
            None => unlogged.push(c.id.clone()),
        }
    }
    let mut candidates = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Some(pool) = d.get("pool").and_then(Value::as_array) {
        for p in pool {
            let Some(id) = p.get("chunk_id").and_then(Value::as_u64) else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            let s = shown.get(&id);
            let score = as_f32(p.get("relevance"))
                .or(s.map(|c| c.score))
                .filter(|x| x.is_finite())
                .unwrap_or(0.0);
            let propensity = as_f32(p.get("propensity"))
                .or_else(|| s.and_then(|c| as_f32(c.details.get("propensity"))))
                .unwrap_or(if s.is_some() { 1.0 } else { 0.0 });
            let mut features = p.get("features").cloned().unwrap_or(Value::Null);
            if let (Value::Object(f), Some(rank)) = (&mut features, p.get("relevance_rank")) {
                f.entry("relevance_rank").or_insert(rank.clone());
            }
            candidates.push(LoggedCandidate {
                chunk_id: id,
                position: s.map(|c| c.marker as u32),
                score,
                propensity: clamp_prob(propensity),
                features,
                text: s.map(|c| c.text.clone()),
            });
        }
    }
    // Shown chunks missing from the pool (or no pool at all).
    for id in shown_order {
        if seen.contains(&id) {
            continue;
        }
        let c = shown[&id];
        candidates.push(LoggedCandidate {
            chunk_id: id,
            position: Some(c.marker as u32),
            score: if c.score.is_finite() { c.score } else { 0.0 },
            propensity: clamp_prob(as_f32(c.details.get("propensity")).unwrap_or(1.0)),
            features: c.details.get("scores").cloned().unwrap_or(Value::Null),
            text: Some(c.text.clone()),
        });
    }
    let mut meta = Map::new();
    meta.insert("latency_ms".into(), json!(i.latency_ms));
    if let Some(m) = &i.model {
        meta.insert("llm_model".into(), json!(m));
    }
    if let Some(s) = i.upstream_status {
        meta.insert("upstream_status".into(), json!(s));
    }
    if i.kind == InteractionKind::Chat {
        meta.insert("streamed".into(), json!(i.streamed));
    }
    for key in [
        "mode",
        "embedder",
        "candidates",
        "budget_tokens",
        "tokens_used",
    ] {
        if let Some(v) = d.get(key).filter(|v| !v.is_null()) {
            meta.insert(key.into(), v.clone());
        }
    }
    if !unlogged.is_empty() {
        meta.insert("unlogged_chunks".into(), json!(unlogged));
    }
    LoggedInteraction {
        uid: i.id.clone(),
        ts_ms: i64::try_from(i.timestamp_ms).unwrap_or(i64::MAX),
        kind: match i.kind {
            InteractionKind::Chat => "chat",
            InteractionKind::Context => "context",
        }
        .into(),
        query: i.query.clone(),
        model_version: d
            .get("relevance_model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        explored: d.get("explored").and_then(Value::as_bool).unwrap_or(false),
        response: i.response.clone(),
        complete: i.complete,
        meta: Value::Object(meta),
        candidates,
    }
}

fn clamp_prob(p: f32) -> f32 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextChunk;

    fn chunk(marker: usize, id: &str, propensity: f32) -> ContextChunk {
        ContextChunk {
            marker,
            id: id.into(),
            source: "a.md:1-2".into(),
            text: format!("text of {id}"),
            score: 0.5,
            tokens: 4,
            details: json!({"propensity": propensity, "scores": {"rrf": 0.1}}),
        }
    }

    fn interaction(details: Value, chunks: Vec<ContextChunk>) -> Interaction {
        Interaction {
            id: "1-2-3".into(),
            kind: InteractionKind::Context,
            timestamp_ms: 77,
            query: "q".into(),
            chunks,
            response: None,
            model: None,
            upstream_status: None,
            streamed: false,
            complete: true,
            latency_ms: 4,
            details,
        }
    }

    #[test]
    fn maps_the_pool_with_shown_positions_texts_and_propensities() {
        let details = json!({
            "relevance_model": "fusion-v1",
            "explored": true,
            "mode": "bm25",
            "pool": [
                {"chunk_id": 9, "relevance": 0.9, "relevance_rank": 1, "features": {"rrf": 0.2}, "shown": 2, "propensity": 0.8},
                {"chunk_id": 4, "relevance": 0.7, "relevance_rank": 2, "features": {"rrf": 0.1}, "shown": null, "propensity": 0.1},
                {"chunk_id": 5, "relevance": 0.6, "relevance_rank": 3, "features": {"rrf": 0.05}, "shown": 1, "propensity": 0.1},
            ],
        });
        // Chunk 9 shown at [2], chunk 5 (an explored runner-up) at [1].
        let i = interaction(details, vec![chunk(1, "5", 0.1), chunk(2, "9", 0.8)]);
        let l = to_logged(&i);
        assert_eq!(l.uid, "1-2-3");
        assert_eq!(l.model_version, "fusion-v1");
        assert!(l.explored);
        assert_eq!(l.meta["mode"], "bm25");
        let ids: Vec<u64> = l.candidates.iter().map(|c| c.chunk_id).collect();
        assert_eq!(ids, vec![9, 4, 5]);
        assert_eq!(l.candidates[0].position, Some(2));
        assert_eq!(l.candidates[1].position, None);
        assert_eq!(l.candidates[1].text, None);
        assert_eq!(l.candidates[2].position, Some(1));
        assert_eq!(l.candidates[2].text.as_deref(), Some("text of 5"));
        assert!((l.candidates[0].propensity - 0.8).abs() < 1e-6);
        assert!((l.candidates[1].score - 0.7).abs() < 1e-6);
        assert_eq!(l.candidates[0].features["relevance_rank"], 1);
    }

    #[test]
    fn without_a_pool_logs_the_shown_chunks_and_names_unloggable_ids() {
        let i = interaction(
            Value::Null,
            vec![chunk(1, "12", 1.0), chunk(2, "mem:3", 1.0)],
        );
        let l = to_logged(&i);
        assert_eq!(l.candidates.len(), 1);
        assert_eq!(l.candidates[0].chunk_id, 12);
        assert_eq!(l.candidates[0].position, Some(1));
        assert_eq!(l.candidates[0].features["rrf"], 0.1);
        assert_eq!(l.meta["unlogged_chunks"], json!(["mem:3"]));
        assert_eq!(l.model_version, "");
    }

    #[test]
    fn records_through_the_writer_and_refuses_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let r = SqliteRecorder::open(dir.path(), Durability::Full).unwrap();
        let i = interaction(Value::Null, vec![chunk(1, "12", 1.0)]);
        r.record(i.clone()).unwrap();
        assert_eq!(r.contains("1-2-3").unwrap(), Some(true));
        assert_eq!(r.contains("nope").unwrap(), Some(false));
        let err = r.record(i).unwrap_err();
        assert!(err.to_string().contains("already in the log"), "{err}");
        // Concurrent writers are grouped and all acknowledged.
        let r = Arc::new(r);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for k in 0..20 {
                        let mut i = interaction(Value::Null, vec![]);
                        i.id = format!("t{t}-{k}");
                        r.record(i).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(r.db().interaction_count().unwrap(), 161);
    }
}
