//! Re-embedding a shared store for the whole fleet, and a replica's cache
//! taking the new vectors (see [`anectx_store_pg`]'s `reembed` module).
//! A local store is re-embedded by [`crate::Engine::reembed`].

use std::path::Path;

use anectx_store::Store;
use anectx_store_pg::{PgStore, SwitchReport};
use serde::Serialize;

use crate::embed::TextEmbedder;
use crate::ingest::Progress;
use crate::{EngineError, Result};

/// What [`reembed_shared`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SharedReembedReport {
    /// The shared store's embedder before.
    pub from: Option<String>,
    pub to: String,
    /// A re-embedding to the same embedder was under way and went on.
    pub resumed: bool,
    /// The shared store's vectors already came from this embedder.
    pub already_current: bool,
    /// Chunks embedded by this run.
    pub chunks_embedded: u64,
    /// The swap, when it happened.
    pub switched: Option<SwitchReport>,
    pub seconds: f64,
}

/// Re-embeds every chunk of the shared store with `embedder`, staging the
/// vectors in batches of `batch` (each one committed, so a stopped run
/// resumes), then swaps them in for the whole fleet at once. Chunks that
/// replicas publish meanwhile are embedded too, before the swap.
pub fn reembed_shared(
    shared: &PgStore,
    embedder: &dyn TextEmbedder,
    batch: usize,
    progress: &dyn Progress,
) -> Result<SharedReembedReport> {
    let t0 = std::time::Instant::now();
    let info = embedder.info();
    let stored = shared.embedder()?;
    let mut report = SharedReembedReport {
        from: stored.as_ref().map(|s| s.description.clone()),
        to: info.description.clone(),
        ..SharedReembedReport::default()
    };
    if stored.as_ref().is_some_and(|s| embedder.accepts(s)) && shared.reembedding()?.is_none() {
        report.already_current = true;
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    report.resumed = shared.begin_reembedding(info)?;
    loop {
        let (done, total) = shared.reembedding_progress()?;
        progress.stage("embedding", Some(total));
        progress.inc(done);
        loop {
            let chunks = shared.chunks_to_reembed(batch.max(1))?;
            if chunks.is_empty() {
                break;
            }
            let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
            let flat = embedder.embed(&texts)?;
            let dim = info.dim;
            if flat.len() != chunks.len() * dim {
                return Err(EngineError::Invalid(format!(
                    "the embedder returned {} values for {} texts of {dim} dimensions",
                    flat.len(),
                    chunks.len()
                )));
            }
            let vectors: Vec<Vec<f32>> = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
            let staged = shared.stage_vectors(&chunks, &vectors)?;
            report.chunks_embedded += staged;
            progress.inc(staged);
        }
        progress.stage("switching the fleet", None);
        if let Some(s) = shared.switch_embedder()? {
            report.switched = Some(s);
            break;
        }
        // A replica published chunks after the last read: embed them too.
    }
    progress.finish();
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Prepares this machine's cache of `shared` (the store in `dir`) for
/// `embedder` after the shared store was re-embedded with it: when the
/// cache still holds another embedder's vectors, it starts re-embedding to
/// the shared store's ([`Store::begin_reembedding`]), so an engine opens
/// on it (BM25-only with a note) and its next sync copies the new vectors
/// in. Returns whether it did. A cache of another shared store, or a
/// configured embedder that is not the shared store's, is left alone (the
/// sync refuses it).
pub fn adopt_shared_embedder(
    dir: &Path,
    embedder: &dyn TextEmbedder,
    shared: &PgStore,
) -> Result<bool> {
    let Some(s) = shared.embedder()? else {
        return Ok(false);
    };
    if !embedder.accepts(&s) || !Store::exists(dir) {
        return Ok(false);
    }
    let store = Store::open(dir)?;
    if store.db.meta(anectx_store_pg::STORE_ID_KEY)? != Some(shared.store_id()?) {
        return Ok(false);
    }
    // Another process on this machine may be syncing this cache: the
    // vectors are removed only between writers' runs.
    let _guard = store.write_guard()?;
    match store.db.embedder()? {
        Some(have) if have.fingerprint != s.fingerprint || have.dim != s.dim => {
            store.begin_reembedding(&s)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
