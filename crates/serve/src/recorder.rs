//! [`SqliteRecorder`]: the [`InteractionRecorder`] that writes the
//! interaction log of an `anectx_store` database.
//!
//! One writer thread owns the appends. [`InteractionRecorder::record`]
//! (called on tokio's blocking pool) maps the [`Interaction`] to a
//! [`LoggedInteraction`] ([`Interaction::to_logged`]), hands it to the writer through a bounded channel
//! and waits for the commit. The writer takes every interaction waiting in
//! the channel (up to [`MAX_GROUP`]) and commits them in one transaction
//! (group commit), so with `synchronous = FULL` one fsync covers a group.
//! `record` returns `Ok` only after the commit: an acknowledged interaction
//! is in the log.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anectx_store::{Db, Durability, Feedback, LoggedInteraction, Store};

use crate::context::{Interaction, InteractionRecorder, RecordError};
use crate::metrics::Metrics;

/// Most interactions committed in one transaction.
pub const MAX_GROUP: usize = 256;
/// Interactions waiting for the writer before `record` blocks.
const QUEUE: usize = 4096;

type Reply = SyncSender<Result<i64, anectx_store::StoreError>>;

/// A second log that each committed group is also written to before
/// `record` returns (the shared store's log, for a fleet of replicas). A
/// failure there is logged and does not fail the request: the group is in
/// the local log, and the replica's catch-up sends it later.
pub type Mirror = Box<dyn FnMut(&Db, &[LoggedInteraction]) -> Result<(), String> + Send>;

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
    catch_up: Option<LogHook>,
    feedback_mirror: Option<LogHook>,
}

/// Work on the local log that a replica of a shared store adds: taking
/// the fleet's log in ([`SqliteRecorder::with_catch_up`]), or sending
/// feedback out ([`SqliteRecorder::with_feedback_mirror`]).
pub type LogHook = Box<dyn Fn(&Db) -> Result<(), String> + Send + Sync>;

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
        Self::with_mirror(db, None)
    }

    /// [`SqliteRecorder::open`], also writing every committed group to
    /// `mirror` before acknowledging it.
    pub fn open_mirrored(
        dir: &Path,
        durability: Durability,
        mirror: Mirror,
    ) -> Result<Self, anectx_store::StoreError> {
        let db = Db::open(&Store::db_path(dir))?;
        db.set_durability(durability)?;
        Self::with_mirror(Arc::new(db), Some(mirror))
    }

    fn with_mirror(
        db: Arc<Db>,
        mut mirror: Option<Mirror>,
    ) -> Result<Self, anectx_store::StoreError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let wdb = db.clone();
        let writer = std::thread::Builder::new()
            .name("anectx-log-writer".into())
            .spawn(move || write_loop(&wdb, &rx, &mut mirror))
            .map_err(|e| anectx_store::StoreError::Invalid(format!("log writer thread: {e}")))?;
        Ok(Self {
            db,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            metrics: None,
            catch_up: None,
            feedback_mirror: None,
        })
    }

    /// Calls `mirror` after each feedback is written to the local log, before
    /// it is acknowledged (a replica sends it to the shared log); a failure
    /// is logged, and the replica's catch-up sends it later.
    pub fn with_feedback_mirror(mut self, mirror: LogHook) -> Self {
        self.feedback_mirror = Some(mirror);
        self
    }

    /// Calls `catch_up` when asked about an interaction id the local log
    /// does not hold, then looks again: feedback may reach one replica
    /// before its interaction has been copied there from the one that
    /// answered.
    pub fn with_catch_up(mut self, catch_up: LogHook) -> Self {
        self.catch_up = Some(catch_up);
        self
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
            .ok_or(RecordError::Stopped)?;
        let (reply, done) = mpsc::sync_channel(1);
        let kind = item.kind.clone();
        tx.send(Job { item, reply })
            .map_err(|_| RecordError::Stopped)?;
        drop(tx);
        let out = done
            .recv()
            .map_err(|_| RecordError::Stopped)?
            .map_err(RecordError::Store);
        if let Some(m) = &self.metrics {
            m.log_write_duration
                .observe_duration(kind.as_str(), start.elapsed());
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

fn write_loop(db: &Db, rx: &Receiver<Job>, mirror: &mut Option<Mirror>) {
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
                if let Some(m) = mirror.as_mut() {
                    if let Err(e) = m(db, &items) {
                        tracing::warn!(
                            "{} interactions logged locally but not in the shared log yet: {e}",
                            items.len()
                        );
                    }
                }
                for (j, id) in jobs.into_iter().zip(ids) {
                    let _ = j.reply.send(Ok(id));
                }
            }
            // One bad item (e.g. a duplicate uid) fails the group: retry one
            // by one so the others are still written.
            Err(_) => {
                for j in jobs {
                    let r = db.append_interaction(&j.item);
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
        self.append(interaction.to_logged()).map(|_| ())
    }

    fn contains(&self, id: &str) -> Result<Option<bool>, RecordError> {
        let here = |db: &Db| db.interaction_id(id).map(|r| r.is_some());
        if here(&self.db).map_err(RecordError::Store)? {
            return Ok(Some(true));
        }
        if let Some(catch_up) = &self.catch_up {
            if let Err(e) = catch_up(&self.db) {
                tracing::warn!("taking the shared log for interaction `{id}` failed: {e}");
            }
            return here(&self.db).map(Some).map_err(RecordError::Store);
        }
        Ok(Some(false))
    }

    fn feedback(&self, feedback: &Feedback) -> Result<i64, RecordError> {
        let id = self.db.add_feedback(feedback).map_err(RecordError::Store)?;
        if let Some(mirror) = &self.feedback_mirror {
            if let Err(e) = mirror(&self.db) {
                tracing::warn!("feedback logged locally but not in the shared log yet: {e}");
            }
        }
        Ok(id)
    }

    fn accepts_feedback(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{ContextChunk, InteractionKind};

    fn chunk(marker: usize, id: &str, propensity: f32) -> ContextChunk {
        ContextChunk {
            marker,
            id: id.into(),
            source: "a.md:1-2".into(),
            text: format!("text of {id}"),
            score: 0.5,
            tokens: 4,
            details: serde_json::Value::Null,
            chunk_id: None,
            propensity: Some(propensity),
            scores: None,
        }
    }

    fn interaction(chunks: Vec<ContextChunk>) -> Interaction {
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
            budget_tokens: None,
            tokens_used: None,
            trace: None,
        }
    }

    #[test]
    fn records_through_the_writer_and_refuses_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let r = SqliteRecorder::open(dir.path(), Durability::Full).unwrap();
        let i = interaction(vec![chunk(1, "12", 1.0)]);
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
                        let mut i = interaction(vec![]);
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
