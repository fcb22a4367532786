//! Hot swap of the engine's relevance model.
//!
//! A [`RelevanceSource`] (the model registry, in the CLI) says which version
//! is current ([`RelevanceSource::stamp`]) and loads it. The
//! [`RelevanceReloader`] loads a new version, validates it on a probe
//! query, and only then swaps it into the [`Engine`] (lock-free for
//! readers: requests in flight keep the `Arc` of the model they started
//! with). A version that fails to load or to validate is refused and the
//! current model keeps serving. Reloads happen on `POST /admin/reload` and
//! when a poll of the stamp sees a change.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anectx_engine::{Candidate, Engine, Features, RelevanceModel};
use anectx_store::ChunkRecord;
use serde::Serialize;

use crate::metrics::Metrics;

/// Why a [`RelevanceSource`] could not answer (its own error type, kept
/// as the source of the refusal).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where relevance models come from (implemented over the model registry:
/// [`crate::RegistrySource`]).
pub trait RelevanceSource: Send + Sync {
    /// A cheap fingerprint of the current version (e.g. the registry's
    /// active version id and its mtime); a change triggers a reload.
    fn stamp(&self) -> Result<String, SourceError>;
    /// Loads the current version.
    fn load(&self) -> Result<Arc<dyn RelevanceModel>, SourceError>;
    /// Brings derived state up to date between loads (called at every poll
    /// that finds the stamp unchanged); returns how many new items it took
    /// in. [`crate::RegistrySource`] folds newly logged interactions into
    /// the usage memory.
    fn refresh(&self) -> Result<u64, SourceError> {
        Ok(0)
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new model serves now.
    Swapped {
        previous: String,
        version: String,
        stamp: String,
    },
    /// The stamp did not change (polls only).
    Unchanged { version: String, stamp: String },
}

/// A refused reload: the model named by `serving` keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}; the current relevance model `{serving}` keeps serving")]
pub struct ReloadError {
    pub stamp: Option<String>,
    pub message: String,
    pub serving: String,
}

/// For `/info`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub version: String,
    pub stamp: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_error: Option<String>,
    pub poll_secs: f64,
    /// What keeps the server from taking in its store's changes (`null`:
    /// nothing): another process re-embedded the store with another
    /// model, or reading the store failed.
    pub store_problem: Option<String>,
}

#[derive(Default)]
struct State {
    /// Stamp of the model serving now (None until the first successful load).
    stamp: Option<String>,
    /// Stamp of the last version that failed: polls do not retry it.
    failed_stamp: Option<String>,
    last_error: Option<String>,
    /// The last error picking up the store's changes (logged once).
    store_error: Option<String>,
}

/// Loads, validates and swaps relevance models into an [`Engine`].
pub struct RelevanceReloader {
    engine: Arc<Engine>,
    source: Arc<dyn RelevanceSource>,
    /// Serialises reloads; held across a whole reload (file reads, the
    /// probe), so only ever taken on blocking threads.
    serial: Mutex<()>,
    /// What `/info` reports; held only to copy or set a few fields, never
    /// across a load, so an async handler never waits on a reload.
    state: Mutex<State>,
    ok: AtomicU64,
    failed: AtomicU64,
    poll: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RelevanceReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelevanceReloader")
            .field("poll", &self.poll)
            .finish()
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Two synthetic candidates a loaded model must score before it may serve.
fn probe() -> Vec<Candidate> {
    (0..2u32)
        .map(|k| Candidate {
            chunk: ChunkRecord {
                id: u64::from(k) + 1,
                doc_id: 1,
                path: "anectx-probe.md".into(),
                ord: k,
                text: "the relevance model probe checks that a new version can score".into(),
                heading: None,
                byte_start: 0,
                byte_end: 60,
                line_start: 1,
                line_end: 1,
                tokens: 11,
            },
            features: Features {
                rrf: 1.0 / (61.0 + k as f32),
                bm25: Some(2.0 - k as f32),
                bm25_rank: Some(k + 1),
                tokens: 11,
                ..Features::default()
            },
        })
        .collect()
}

/// Checks that `model` has a version and scores the probe with finite numbers.
pub fn validate(model: &dyn RelevanceModel) -> Result<String, String> {
    let version = model.version();
    if version.trim().is_empty() {
        return Err("the model has an empty version".into());
    }
    let cands = probe();
    let scores = model
        .score("probe query for a relevance model", &cands)
        .map_err(|e| format!("version `{version}` failed the probe: {e}"))?;
    if scores.len() != cands.len() {
        return Err(format!(
            "version `{version}` returned {} scores for {} candidates",
            scores.len(),
            cands.len()
        ));
    }
    if let Some(s) = scores.iter().find(|s| !s.is_finite()) {
        return Err(format!("version `{version}` returned the score {s}"));
    }
    Ok(version)
}

impl RelevanceReloader {
    /// `poll` = 0 disables polling.
    pub fn new(
        engine: Arc<Engine>,
        source: Arc<dyn RelevanceSource>,
        poll: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_relevance_version(&engine.relevance_model().version());
        Self {
            engine,
            source,
            serial: Mutex::new(()),
            state: Mutex::new(State::default()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            poll,
            metrics,
        }
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// The version serving now.
    pub fn version(&self) -> String {
        self.engine.relevance_model().version()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the source's current version and swaps it in. With `force`
    /// false, nothing happens when the stamp equals the serving one or the
    /// last failed one. Blocking (loading a model reads files): call it on a
    /// blocking thread. Reloads are serialised.
    pub fn reload(&self, force: bool) -> Result<ReloadOutcome, ReloadError> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_store();
        let serving = self.version();
        let fail = |stamp: Option<String>, message: String| {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.metrics.record_reload(false);
            tracing::warn!("relevance model reload refused: {message}; `{serving}` keeps serving");
            let mut st = self.state();
            st.failed_stamp = stamp.clone();
            st.last_error = Some(message.clone());
            ReloadError {
                stamp,
                message,
                serving: serving.clone(),
            }
        };
        let stamp = match catch_unwind(AssertUnwindSafe(|| self.source.stamp())) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(None, format!("reading the stamp: {e}"))),
            Err(p) => {
                let m = format!("reading the stamp panicked: {}", panic_message(p));
                return Err(fail(None, m));
            }
        };
        let (same, failed_before) = {
            let st = self.state();
            (
                st.stamp.as_deref() == Some(stamp.as_str()),
                st.failed_stamp.as_deref() == Some(stamp.as_str()),
            )
        };
        if !force && (same || failed_before) {
            if same {
                match catch_unwind(AssertUnwindSafe(|| self.source.refresh())) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("refreshing `{stamp}`: {e}"),
                    Err(p) => tracing::warn!("refreshing `{stamp}` panicked: {}", panic_message(p)),
                }
            }
            return Ok(ReloadOutcome::Unchanged {
                version: serving,
                stamp,
            });
        }
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            let m = self.source.load().map_err(|e| e.to_string())?;
            let v = validate(m.as_ref())?;
            Ok::<_, String>((m, v))
        }));
        let (model, version) = match loaded {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(fail(Some(stamp.clone()), format!("loading `{stamp}`: {e}"))),
            Err(p) => {
                let m = format!("loading `{stamp}` panicked: {}", panic_message(p));
                return Err(fail(Some(stamp), m));
            }
        };
        self.engine.set_relevance_model(model);
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.metrics.record_reload(true);
        self.metrics.set_relevance_version(&version);
        {
            let mut st = self.state();
            st.stamp = Some(stamp.clone());
            st.failed_stamp = None;
            st.last_error = None;
        }
        if serving != version {
            tracing::info!("relevance model swapped: `{serving}` → `{version}` ({stamp})");
        }
        Ok(ReloadOutcome::Swapped {
            previous: serving,
            version,
            stamp,
        })
    }

    /// Picks up what another process indexed into the engine's store
    /// ([`Engine::refresh_from_disk`]): at every poll and reload, so a
    /// running server answers from documents an `anectx index` beside it
    /// added. Problems are logged once each; the engine keeps what it has.
    fn refresh_store(&self) {
        let r = catch_unwind(AssertUnwindSafe(|| self.engine.refresh_from_disk())).unwrap_or_else(
            |p| {
                Err(anectx_engine::EngineError::Invalid(format!(
                    "panicked: {}",
                    panic_message(p)
                )))
            },
        );
        let problem = match r {
            Ok(r) => {
                if r.vectors_read {
                    tracing::info!("read the store's vectors again: another process wrote to it");
                }
                r.other_embedder.map(|other| {
                    format!(
                        "the store was re-embedded with {other} by another process: this server \
                         keeps answering from the vectors it loaded, and documents indexed from \
                         now on reach it through BM25 only, until it is started again with that \
                         model (--model)"
                    )
                })
            }
            Err(e) => Some(format!("picking up the store's changes failed: {e}")),
        };
        let mut st = self.state();
        if let Some(m) = problem.as_deref() {
            if st.store_error.as_deref() != Some(m) {
                tracing::warn!("{m}");
            }
        }
        st.store_error = problem;
    }

    /// For `/info`.
    pub fn status(&self) -> ReloadStatus {
        let st = self.state();
        ReloadStatus {
            version: self.version(),
            stamp: st.stamp.clone(),
            reloads_ok: self.ok.load(Ordering::Relaxed),
            reloads_failed: self.failed.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
            poll_secs: self.poll.as_secs_f64(),
            store_problem: st.store_error.clone(),
        }
    }
}

/// Polls the reloader's source every [`RelevanceReloader::poll_interval`] on
/// the current tokio runtime (nothing when the interval is zero). Abort the
/// handle to stop.
pub fn spawn_polling(reloader: Arc<RelevanceReloader>) -> Option<tokio::task::JoinHandle<()>> {
    let every = reloader.poll_interval();
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let r = reloader.clone();
            // Errors are counted and logged by the reloader.
            let _ = tokio::task::spawn_blocking(move || r.reload(false)).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anectx_engine::FusionRelevance;

    struct Nan;
    impl RelevanceModel for Nan {
        fn version(&self) -> String {
            "nan-v1".into()
        }
        fn score(&self, _q: &str, c: &[Candidate]) -> anectx_engine::Result<Vec<f32>> {
            Ok(vec![f32::NAN; c.len()])
        }
    }

    struct Short;
    impl RelevanceModel for Short {
        fn version(&self) -> String {
            "short-v1".into()
        }
        fn score(&self, _q: &str, _c: &[Candidate]) -> anectx_engine::Result<Vec<f32>> {
            Ok(vec![0.5])
        }
    }

    /// A source whose load waits for the test's token (bounded: it gives
    /// up after 60 s and says so).
    struct Gated {
        entered: std::sync::mpsc::Sender<()>,
        gate: Mutex<std::sync::mpsc::Receiver<()>>,
    }
    impl RelevanceSource for Gated {
        fn stamp(&self) -> Result<String, SourceError> {
            Ok("v2".into())
        }
        fn load(&self) -> Result<Arc<dyn RelevanceModel>, SourceError> {
            let _ = self.entered.send(());
            self.gate
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| "the load was never released: status() waited on it")?;
            Ok(Arc::new(FusionRelevance::default()))
        }
    }

    /// `status()` (what the async `/info` handler calls) answers while a
    /// reload is loading, instead of waiting on a lock the load holds.
    #[test]
    fn status_answers_while_a_reload_is_loading() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(&dir.path().join("store"), None).unwrap());
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel();
        let r = Arc::new(RelevanceReloader::new(
            engine,
            Arc::new(Gated {
                entered: entered_tx,
                gate: Mutex::new(gate),
            }),
            Duration::ZERO,
            Arc::new(Metrics::new()),
        ));
        let loading = {
            let r = r.clone();
            std::thread::spawn(move || r.reload(true))
        };
        entered.recv().unwrap();
        // With the load holding the status lock, this waits until the load
        // gives up, and the reload below then fails.
        let st = r.status();
        release.send(()).unwrap();
        let outcome = loading.join().unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(st.reloads_ok, 0);
        assert_eq!(r.status().reloads_ok, 1);
        assert_eq!(r.status().stamp.as_deref(), Some("v2"));
    }

    /// Every text gets the same unit vector of `dim` dimensions.
    struct Flat(anectx_store::EmbedderInfo);
    impl anectx_engine::TextEmbedder for Flat {
        fn info(&self) -> &anectx_store::EmbedderInfo {
            &self.0
        }
        fn embed(&self, texts: &[&str]) -> anectx_engine::Result<Vec<f32>> {
            let d = self.0.dim;
            Ok((0..texts.len() * d)
                .map(|i| if i % d == 0 { 1.0 } else { 0.0 })
                .collect())
        }
    }
    fn flat(dim: usize) -> Arc<dyn anectx_engine::TextEmbedder> {
        Arc::new(Flat(anectx_store::EmbedderInfo {
            fingerprint: format!("flat-{dim}"),
            description: format!("flat {dim}"),
            dim,
        }))
    }

    struct Fixed;
    impl RelevanceSource for Fixed {
        fn stamp(&self) -> Result<String, SourceError> {
            Ok("v1".into())
        }
        fn load(&self) -> Result<Arc<dyn RelevanceModel>, SourceError> {
            Ok(Arc::new(FusionRelevance::default()))
        }
    }

    /// A server whose store another process re-embedded with another model
    /// says so in `/info` (the status), as well as in its log.
    #[test]
    fn status_names_a_store_another_process_re_embedded() {
        let dir = tempfile::tempdir().unwrap();
        let docs = tempfile::tempdir().unwrap();
        std::fs::write(docs.path().join("a.md"), "# A\n\nlighthouse keepers\n").unwrap();
        let store = dir.path().join("store");
        let engine = Arc::new(Engine::open(&store, Some(flat(4))).unwrap());
        engine
            .index(
                &[docs.path().into()],
                &anectx_engine::IndexOptions::default(),
                &anectx_engine::NoProgress,
            )
            .unwrap();
        let r = RelevanceReloader::new(
            engine,
            Arc::new(Fixed),
            Duration::ZERO,
            Arc::new(Metrics::new()),
        );
        r.reload(false).unwrap();
        assert_eq!(r.status().store_problem, None);
        let other = Engine::open_to_reembed(&store, flat(2)).unwrap();
        other.reembed(&anectx_engine::NoProgress).unwrap();
        r.reload(false).unwrap();
        let problem = r.status().store_problem.unwrap_or_default();
        assert!(problem.contains("re-embedded with flat 2"), "{problem}");
    }

    #[test]
    fn validation_refuses_broken_models() {
        assert!(validate(&FusionRelevance::default()).is_ok());
        let e = validate(&Nan).unwrap_err();
        assert!(e.contains("NaN"), "{e}");
        let e = validate(&Short).unwrap_err();
        assert!(e.contains("1 scores for 2"), "{e}");
    }
}
