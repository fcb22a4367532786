//! The context engine behind the front ends.
//!
//! - [`BatcherEmbedder`] is an engine [`TextEmbedder`] that embeds queries
//!   through the [`EmbedService`], so query embeddings share the one loaded
//!   model, its batching and its backpressure.
//! - [`EngineContext`] is the [`ContextProvider`] over an [`Engine`]: the
//!   context service that HTTP and MCP call.

use std::sync::Arc;

use std::collections::HashSet;

use anectx_core::BackendError;
use anectx_engine::{
    ContextOptions, Engine, EngineError, RetrievalMode, SelectionTrace, TextEmbedder,
};
use anectx_store::EmbedderInfo;
use serde_json::json;

use crate::context::{
    snippet, ContextChunk, ContextProvider, ContextRequest, ContextResult, FetchedChunk,
    IndexStatus, SearchHit, SearchRequest, SNIPPET_CHARS,
};
use crate::embed::EmbedService;
use crate::error::ServeError;

/// Embeds texts through an [`EmbedService`]. Blocking; the engine calls it
/// on a blocking thread.
pub struct BatcherEmbedder {
    service: EmbedService,
    info: EmbedderInfo,
    legacy: Vec<String>,
}

impl BatcherEmbedder {
    /// `info` must describe the service's embedder exactly as the store
    /// expects it (see `anectx_engine::embed::fingerprint_model_dir`).
    pub fn new(service: EmbedService, info: EmbedderInfo) -> Self {
        Self {
            service,
            info,
            legacy: Vec::new(),
        }
    }

    /// Also accepts stores that recorded one of `legacy` as this model's
    /// fingerprint (see `anectx_engine::ModelIdentity`).
    pub fn with_legacy(mut self, legacy: Vec<String>) -> Self {
        self.legacy = legacy;
        self
    }
}

impl TextEmbedder for BatcherEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn accepts(&self, stored: &EmbedderInfo) -> bool {
        anectx_engine::embed::same_model(&self.info, &self.legacy, stored)
    }

    fn embed(&self, texts: &[&str]) -> anectx_engine::Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let e = self.service.embed_blocking(texts).map_err(|e| {
            EngineError::Backend(match e {
                ServeError::Overloaded(m) => BackendError::Overloaded(m),
                ServeError::Invalid { message, .. } => BackendError::Input(message),
                other => BackendError::Inference(other.to_string()),
            })
        })?;
        anectx_engine::embed::checked_rows(&self.info, e, texts.len())
    }
}

/// A [`ContextProvider`] over an [`Engine`] (BM25 + dense retrieval, RRF,
/// relevance model, MMR, packing with `[n]` markers).
///
/// What the interaction log needs travels in `details`: per chunk
/// `chunk_id`, `propensity` and `scores` (with the features); per result
/// `relevance_model`, `explored` and `pool` (every scored candidate, shown
/// or not, with `shown` = its marker).
pub struct EngineContext {
    engine: Arc<Engine>,
    base: ContextOptions,
    description: String,
}

impl EngineContext {
    /// `base` supplies every option but the budget, which comes per request.
    pub fn new(engine: Arc<Engine>, base: ContextOptions, description: String) -> Self {
        Self {
            engine,
            base,
            description,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl ContextProvider for EngineContext {
    fn describe(&self) -> String {
        let mode = if self.engine.dense_enabled() {
            "hybrid BM25 + dense"
        } else {
            "BM25 only"
        };
        format!("{} ({mode})", self.description)
    }

    fn context(&self, request: &ContextRequest) -> Result<ContextResult, ServeError> {
        let opts = ContextOptions {
            budget: request.budget_tokens,
            filter: request.filters.clone(),
            ..self.base.clone()
        };
        let r = self
            .engine
            .context(&request.query, &opts)
            .map_err(query_error)?;
        let mut trace = SelectionTrace::of(&r);
        let mut chunks: Vec<ContextChunk> = r
            .chunks
            .iter()
            .map(|c| ContextChunk {
                marker: c.marker as usize,
                id: c.chunk_id.to_string(),
                // `path p.N` for a page (PDF page, slide), else `path:lines`.
                source: anectx_engine::source::citation(&c.path, c.line_start, c.line_end, c.page),
                text: c.text.clone(),
                score: c.scores.relevance,
                tokens: c.tokens,
                details: json!({
                    "path": c.path,
                    "heading": c.heading,
                    "line_start": c.line_start,
                    "line_end": c.line_end,
                    "page": c.page,
                    "byte_start": c.byte_start,
                    "byte_end": c.byte_end,
                    "scores": c.scores,
                    "chunk_id": c.chunk_id,
                    "propensity": c.propensity,
                }),
                chunk_id: Some(c.chunk_id),
                propensity: Some(c.propensity),
                scores: Some(c.scores.clone()),
            })
            .collect();
        let mut packed = r.text.clone();
        if let Some(m) = request.max_chunks {
            if chunks.len() > m {
                chunks.truncate(m);
                packed = ContextResult::pack(&chunks);
                // Chunks cut by `max_chunks` were not shown after all.
                let kept: HashSet<u64> = r.chunks[..m].iter().map(|c| c.chunk_id).collect();
                trace.keep_shown(&kept);
            }
        }
        let used = if chunks.len() == r.chunks.len() {
            r.used_tokens
        } else {
            chunks.iter().map(|c| c.tokens).sum()
        };
        Ok(ContextResult {
            query: r.query,
            chunks,
            packed,
            tokens_used: used,
            budget_tokens: r.budget,
            details: json!({
                "candidates": r.candidates,
                "mode": r.mode,
                "relevance_model": r.relevance_model,
                "embedder": r.embedder,
                "notes": r.notes,
                "timings": r.timings,
                "explored": r.explored,
                "pool": &trace.pool,
            }),
            trace: Some(trace),
        })
    }

    fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>, ServeError> {
        let opts = ContextOptions {
            filter: request.filters.clone(),
            ..self.base.clone()
        };
        let ranked = self
            .engine
            .rank(&request.query, None, RetrievalMode::Full, request.k, &opts)
            .map_err(query_error)?;
        let ids: Vec<u64> = ranked.iter().map(|r| r.0).collect();
        let db = &self.engine.store().db;
        let records = db.chunks_by_ids(&ids).map_err(ServeError::internal)?;
        let pages = db.chunk_pages(&ids).map_err(ServeError::internal)?;
        let by_id: std::collections::HashMap<u64, _> =
            records.into_iter().map(|c| (c.id, c)).collect();
        Ok(ranked
            .into_iter()
            .filter_map(|(id, score)| {
                let c = by_id.get(&id)?;
                let page = pages.get(&id).copied();
                Some(SearchHit {
                    id: id.to_string(),
                    path: c.path.clone(),
                    page,
                    source: anectx_engine::source::citation(
                        &c.path,
                        c.line_start,
                        c.line_end,
                        page,
                    ),
                    heading: c.heading.clone(),
                    snippet: snippet(&c.text, SNIPPET_CHARS),
                    score,
                })
            })
            .collect())
    }

    fn fetch(&self, id: &str) -> Result<Option<FetchedChunk>, ServeError> {
        let Ok(n) = id.parse::<u64>() else {
            return Err(ServeError::invalid_param(
                "id",
                format!("`{id}` is not a chunk id (chunk ids are non-negative integers)"),
            ));
        };
        let db = &self.engine.store().db;
        let Some(c) = db
            .chunks_by_ids(&[n])
            .map_err(ServeError::internal)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let page = db
            .chunk_pages(&[n])
            .map_err(ServeError::internal)?
            .get(&n)
            .copied();
        Ok(Some(FetchedChunk {
            id: n.to_string(),
            source: anectx_engine::source::citation(&c.path, c.line_start, c.line_end, page),
            path: c.path,
            page,
            heading: c.heading,
            line_start: c.line_start,
            line_end: c.line_end,
            text: c.text,
        }))
    }

    fn status(&self) -> Result<IndexStatus, ServeError> {
        let db = &self.engine.store().db;
        Ok(IndexStatus {
            description: self.describe(),
            documents: db.document_count().map_err(ServeError::internal)?,
            chunks: db.chunk_count().map_err(ServeError::internal)?,
            dense: self.engine.dense_enabled(),
            embedder: self
                .engine
                .embedder()
                .filter(|_| self.engine.dense_enabled())
                .map(|e| e.info().description.clone()),
            relevance_model: self.engine.relevance_model().version(),
            interactions: db.interaction_count().map_err(ServeError::internal)?,
            memory_questions: self.engine.memory().map_or(0, |m| m.stats().questions),
            last_index_ms: db
                .meta(anectx_engine::LAST_INDEX_META)
                .map_err(ServeError::internal)?
                .and_then(|v| v.parse().ok()),
        })
    }
}

/// An engine error about a query: a bad input is the query's fault.
fn query_error(e: EngineError) -> ServeError {
    match ServeError::from(e) {
        ServeError::Invalid {
            param: None,
            message,
        } => ServeError::invalid_param("query", message),
        other => other,
    }
}
