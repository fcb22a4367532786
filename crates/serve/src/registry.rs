//! [`RegistrySource`]: the [`RelevanceSource`] over the model registry. A
//! load serves the current version's model and the usage memory that
//! belongs to it (see [`anectx_learn::memory`]): promoting a version serves
//! its memory, rolling back serves the memory of the version rolled back
//! to, and a version without a memory serves without one. Between loads,
//! [`RelevanceSource::refresh`] folds the interactions logged since into
//! the memory serving now (not written back to the registry: `anectx
//! memory rebuild` does that).

use std::sync::{Arc, Mutex};

use anectx_engine::{Engine, FusionRelevance, RelevanceModel, UsageMemory};
use anectx_learn::analyzer::{Analyzer, ANALYZER_VERSION};
use anectx_learn::memory::{self, MemoryLoad};
use anectx_learn::Registry;

use crate::reload::{RelevanceSource, SourceError};

/// The stamp is the registry's current version (and, with a memory, its
/// memory's watermark and checksum); loading checks and loads both.
pub struct RegistrySource {
    registry: Registry,
    /// The engine whose usage memory follows the current version (`None`:
    /// `serve --no-memory`, the memory stays off).
    memory: Option<Arc<Engine>>,
    /// The memory the current version serves with, including what was
    /// folded in since the load (`None`: the version has no memory). Held
    /// while loading and folding, so the two never interleave.
    served: Mutex<Option<UsageMemory>>,
}

impl RegistrySource {
    pub fn new(registry: Registry, memory: Option<Arc<Engine>>) -> Self {
        Self {
            registry,
            memory,
            served: Mutex::new(None),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn served(&self) -> std::sync::MutexGuard<'_, Option<UsageMemory>> {
        self.served.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the memory of `version` into `engine` (off when it has
    /// none, or when it cannot be read at all).
    fn load_memory(&self, engine: &Engine, version: Option<&str>) {
        let mut served = self.served();
        let who = version.unwrap_or("the built-in model");
        let loaded = memory::load(engine, &self.registry, version, &Analyzer::default())
            .and_then(|l| Ok((l, engine.store().db.last_interaction_id()?)));
        let (l, tail) = match loaded {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("usage memory of {who} off: {e}");
                engine.set_memory(None);
                *served = None;
                return;
            }
        };
        let Some(spec) = l.spec().cloned() else {
            tracing::info!("usage memory off: {who} has none (`anectx memory rebuild` makes one)");
            engine.set_memory(None);
            *served = None;
            return;
        };
        if let MemoryLoad::Rebuilt { refused, .. } = &l {
            tracing::warn!("usage memory of {who} was rebuilt from the log ({refused})");
        }
        let mut base = l
            .into_memory()
            .unwrap_or_else(|| UsageMemory::empty(ANALYZER_VERSION, &spec.config, spec.watermark));
        // What was logged between the memory's watermark and now is not
        // this version's (it served while another version did, or before a
        // restart): only what is logged from here on is folded in.
        base.skip_to(tail);
        tracing::info!(
            questions = spec.stats.questions,
            pairs = spec.stats.pairs,
            watermark = spec.watermark,
            "usage memory of {who} loaded"
        );
        engine.set_memory((base.stats().pairs > 0).then(|| Arc::new(base.clone())));
        *served = Some(base);
    }
}

impl RelevanceSource for RegistrySource {
    fn stamp(&self) -> Result<String, SourceError> {
        let current = self.registry.current()?;
        let mut stamp = current.clone().unwrap_or_else(|| "builtin".into());
        if self.memory.is_some() {
            // An unreadable spec is reported (once) by the load, which turns
            // the memory off; it must not fail every poll.
            let m = memory::memory_stamp(&self.registry, current.as_deref())
                .unwrap_or_else(|_| "memory:unreadable".into());
            if !m.is_empty() {
                stamp = format!("{stamp} {m}");
            }
        }
        Ok(stamp)
    }

    fn load(&self) -> Result<Arc<dyn RelevanceModel>, SourceError> {
        let current = self.registry.current()?;
        let model: Arc<dyn RelevanceModel> = match &current {
            Some(v) => Arc::new(self.registry.load(v)?),
            None => Arc::new(FusionRelevance::default()),
        };
        if let Some(engine) = &self.memory {
            self.load_memory(engine, current.as_deref());
        }
        Ok(model)
    }

    /// Labels the interactions logged after the serving memory's watermark
    /// and folds them in; the number folded.
    fn refresh(&self) -> Result<u64, SourceError> {
        let Some(engine) = &self.memory else {
            return Ok(0);
        };
        let mut served = self.served();
        let Some(base) = served.as_mut() else {
            return Ok(0);
        };
        let db = &engine.store().db;
        anectx_learn::train::label_log_after(db, &Analyzer::default(), base.stats().watermark)?;
        let (next, read) = engine.extend_memory(base)?;
        if read > 0 {
            engine.set_memory((next.stats().pairs > 0).then(|| Arc::new(next.clone())));
            tracing::debug!(
                read,
                questions = next.stats().questions,
                pairs = next.stats().pairs,
                "usage memory: folded new interactions in"
            );
            *base = next;
        }
        Ok(read)
    }
}
