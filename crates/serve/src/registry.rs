//! [`RegistrySource`]: the [`RelevanceSource`] over the model registry, with
//! the usage memory rebuilt at every load.

use std::sync::Arc;

use anectx_engine::{Engine, RelevanceModel};
use anectx_learn::analyzer::{Analyzer, ANALYZER_VERSION};
use anectx_learn::train::label_log;
use anectx_learn::Registry;

use crate::reload::{RelevanceSource, SourceError};

/// The stamp is the registry's current version; loading checks and loads it.
pub struct RegistrySource {
    pub registry: Registry,
    /// Rebuild this engine's usage memory from its log at every load
    /// (startup, promotion, rollback, `POST /admin/reload`).
    pub memory: Option<Arc<Engine>>,
}

impl RelevanceSource for RegistrySource {
    fn stamp(&self) -> Result<String, SourceError> {
        Ok(self.registry.stamp()?)
    }

    fn load(&self) -> Result<Arc<dyn RelevanceModel>, SourceError> {
        let model = self.registry.load_current()?;
        if let Some(engine) = &self.memory {
            // A failure here keeps the memory that serves; the model swap goes on.
            let rebuilt = label_log(&engine.store().db, &Analyzer::default())
                .map_err(SourceError::from)
                .and_then(|_| Ok(engine.rebuild_memory(ANALYZER_VERSION)?));
            match rebuilt {
                Ok(Some(s)) => tracing::info!(
                    questions = s.questions,
                    pairs = s.pairs,
                    "usage memory rebuilt from the interaction log"
                ),
                Ok(None) => tracing::info!("usage memory off: nothing used in the log yet"),
                Err(e) => tracing::warn!("usage memory not rebuilt: {e}"),
            }
        }
        Ok(model)
    }
}
