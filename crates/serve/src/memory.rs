//! [`MemoryContext`]: an in-memory [`ContextProvider`] over a fixed list of
//! passages (tests, demos and load runs; needs no store).

use anectx_core::Embeddings;

use crate::context::{
    snippet, ContextChunk, ContextProvider, ContextRequest, ContextResult, FetchedChunk,
    IndexStatus, SearchHit, SearchRequest, SNIPPET_CHARS,
};
use crate::embed::EmbedService;
use crate::error::ServeError;

/// Cosine top-k over passages embedded once at start-up, packed greedily
/// by score until the token budget is spent. Queries are embedded through
/// the [`EmbedService`], so they share its batching and backpressure.
pub struct MemoryContext {
    service: EmbedService,
    passages: Vec<Passage>,
    vectors: Embeddings,
}

struct Passage {
    source: String,
    text: String,
    tokens: usize,
}

impl MemoryContext {
    /// Embeds `(source, text)` passages. Blocking: call it outside async tasks.
    pub fn new(service: EmbedService, passages: Vec<(String, String)>) -> Result<Self, ServeError> {
        let texts: Vec<&str> = passages.iter().map(|p| p.1.as_str()).collect();
        let prepared = service.prepare(&texts, None).map_err(|e| match e {
            ServeError::Invalid { message, .. } => {
                ServeError::invalid(format!("passage: {message}"))
            }
            other => other,
        })?;
        let lengths = prepared.lengths.clone();
        let vectors = if texts.is_empty() {
            Embeddings {
                rows: 0,
                dim: 0,
                data: Vec::new(),
            }
        } else {
            service.embed_prepared_blocking(prepared)?
        };
        let passages = passages
            .into_iter()
            .zip(lengths)
            .map(|((source, text), tokens)| Passage {
                source,
                text,
                tokens,
            })
            .collect();
        Ok(Self {
            service,
            passages,
            vectors,
        })
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }
}

impl ContextProvider for MemoryContext {
    fn describe(&self) -> String {
        format!("in-memory passages ({})", self.passages.len())
    }

    fn context(&self, request: &ContextRequest) -> Result<ContextResult, ServeError> {
        if !request.filters.is_empty() {
            return Err(no_filters());
        }
        let scored = self.scored(&request.query)?;
        let mut chunks = Vec::new();
        let mut used = 0;
        for (i, score) in scored {
            if request.max_chunks.is_some_and(|m| chunks.len() >= m) {
                break;
            }
            let p = &self.passages[i];
            if used + p.tokens > request.budget_tokens {
                continue;
            }
            used += p.tokens;
            chunks.push(ContextChunk {
                marker: chunks.len() + 1,
                id: format!("mem:{i}"),
                source: p.source.clone(),
                text: p.text.clone(),
                score,
                tokens: p.tokens,
                details: serde_json::Value::Null,
                chunk_id: None,
                propensity: None,
                scores: None,
            });
        }
        Ok(ContextResult {
            query: request.query.clone(),
            packed: ContextResult::pack(&chunks),
            chunks,
            tokens_used: used,
            budget_tokens: request.budget_tokens,
            details: serde_json::Value::Null,
            trace: None,
        })
    }

    fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>, ServeError> {
        if !request.filters.is_empty() {
            return Err(no_filters());
        }
        let scored = self.scored(&request.query)?;
        Ok(scored
            .into_iter()
            .take(request.k)
            .map(|(i, score)| {
                let p = &self.passages[i];
                SearchHit {
                    id: format!("mem:{i}"),
                    path: p.source.clone(),
                    page: None,
                    source: p.source.clone(),
                    heading: None,
                    snippet: snippet(&p.text, SNIPPET_CHARS),
                    score,
                }
            })
            .collect())
    }

    fn fetch(&self, id: &str) -> Result<Option<FetchedChunk>, ServeError> {
        let Some(i) = id
            .strip_prefix("mem:")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return Ok(None);
        };
        Ok(self.passages.get(i).map(|p| FetchedChunk {
            id: id.to_string(),
            path: p.source.clone(),
            page: None,
            source: p.source.clone(),
            heading: None,
            line_start: 1,
            line_end: p.text.lines().count().max(1),
            text: p.text.clone(),
        }))
    }

    fn status(&self) -> Result<IndexStatus, ServeError> {
        Ok(IndexStatus {
            description: self.describe(),
            documents: self.passages.len() as u64,
            chunks: self.passages.len() as u64,
            dense: true,
            embedder: None,
            relevance_model: "cosine".into(),
            interactions: 0,
            memory_questions: 0,
            last_index_ms: None,
        })
    }
}

impl MemoryContext {
    /// Passage indices by cosine with the query, best first.
    fn scored(&self, query: &str) -> Result<Vec<(usize, f32)>, ServeError> {
        let q = self.service.embed_blocking(&[query]).map_err(|e| match e {
            ServeError::Invalid { message, .. } | ServeError::TooLarge(message) => {
                ServeError::invalid_param("query", message)
            }
            other => other,
        })?;
        let qv = q.row(0);
        let mut scored: Vec<(usize, f32)> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(qv).map(|(a, b)| a * b).sum()))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(scored)
    }
}

/// Fixed passages have no paths, kinds or dates to filter on.
fn no_filters() -> ServeError {
    ServeError::invalid_param(
        "filters",
        "this context provider holds fixed passages without paths, kinds or dates; filters need \
         an index store (--store)",
    )
}
