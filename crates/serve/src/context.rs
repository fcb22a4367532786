//! The two seams between the front ends (HTTP, MCP) and the rest of anectx:
//!
//! - [`ContextProvider`] selects context for a query (implemented by the
//!   engine over an index store); `/v1/context` and the chat proxy call it.
//! - [`InteractionRecorder`] receives every answered query with the chunks
//!   that were shown and the response text, for the learning loop.
//!   [`NoopRecorder`] is the default.
//!
//! Both traits are synchronous (store and engine code is blocking); the
//! server calls them on tokio's blocking pool.

use anectx_engine::{ChunkScores, Filter, SelectionTrace, ShownChunk};
pub use anectx_store::InteractionKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::error::ServeError as ContextError;

/// What to select context for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextRequest {
    pub query: String,
    /// Token budget for the packed context.
    pub budget_tokens: usize,
    /// At most this many chunks, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunks: Option<usize>,
    /// Which documents to draw from (path glob, kind, modification time);
    /// applied inside retrieval.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub filters: Filter,
}

/// One selected chunk. `marker` is the `n` of its `[n]` citation marker in
/// the packed text (1-based, in packing order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    pub marker: usize,
    /// Stable chunk id in the store.
    pub id: String,
    /// Where the chunk comes from (file path, URL, title).
    pub source: String,
    pub text: String,
    /// The final relevance score used for selection.
    pub score: f32,
    /// Tokens the chunk takes in the budget.
    pub tokens: usize,
    /// Provider-specific detail (spans, per-feature scores), passed through
    /// to clients.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// The store's chunk id, when the provider has numeric ids (the engine).
    #[serde(skip)]
    pub chunk_id: Option<u64>,
    /// Probability of being shown under the logging policy, when known.
    #[serde(skip)]
    pub propensity: Option<f32>,
    /// Per-feature scores, when known.
    #[serde(skip)]
    pub scores: Option<ChunkScores>,
}

impl ContextChunk {
    /// The chunk as the interaction record sees it.
    pub fn shown(&self) -> ShownChunk {
        ShownChunk {
            marker: u32::try_from(self.marker).unwrap_or(u32::MAX),
            chunk_id: self.chunk_id.or_else(|| self.id.parse().ok()),
            label: self.id.clone(),
            text: self.text.clone(),
            score: self.score,
            propensity: self.propensity,
            scores: self.scores.clone(),
        }
    }
}

/// The selection for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextResult {
    pub query: String,
    pub chunks: Vec<ContextChunk>,
    /// The chunks packed as text, each preceded by its `[n]` marker.
    pub packed: String,
    pub tokens_used: usize,
    pub budget_tokens: usize,
    /// Provider-specific detail (mode, candidates, timings, notes).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// What the selection leaves for the interaction log (the engine's
    /// candidate pool); `None` for a provider without one.
    #[serde(skip)]
    pub trace: Option<SelectionTrace>,
}

impl ContextResult {
    /// Packs `chunks` as `[n] (source)\ntext` blocks separated by blank lines.
    pub fn pack(chunks: &[ContextChunk]) -> String {
        chunks
            .iter()
            .map(|c| {
                // Chunk text cannot start a line like a source line, and a
                // source name cannot break its line.
                let text = anectx_engine::source::neutralize_markers(c.text.trim());
                if c.source.is_empty() {
                    format!("[{}]\n{text}", c.marker)
                } else {
                    let source = anectx_engine::source::one_line(&c.source);
                    format!("[{}] ({source})\n{text}", c.marker)
                }
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// What to search for: the `k` best chunks, unpacked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub query: String,
    pub k: usize,
    /// Only chunks of documents that pass (applied inside retrieval).
    #[serde(default)]
    pub filters: Filter,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SearchHit {
    /// The chunk's id (give it to `fetch`).
    pub id: String,
    /// The document's path.
    pub path: String,
    /// The page (PDF page, slide), for paged documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// `path p.N` or `path:lines`.
    pub source: String,
    /// The nearest heading above the chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// The chunk's start, at most [`SNIPPET_CHARS`] characters.
    pub snippet: String,
    pub score: f32,
}

/// Characters of a chunk shown in a [`SearchHit::snippet`].
pub const SNIPPET_CHARS: usize = 300;

/// One chunk, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FetchedChunk {
    pub id: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    pub line_start: usize,
    pub line_end: usize,
    pub text: String,
}

/// What an index holds and what serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IndexStatus {
    /// The provider's description (store path, mode).
    pub description: String,
    pub documents: u64,
    pub chunks: u64,
    /// Whether dense retrieval runs (an embedder made the vectors).
    pub dense: bool,
    /// The embedder's description, when dense retrieval runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// The relevance model's version.
    pub relevance_model: String,
    /// Interactions in the log.
    pub interactions: u64,
    /// Logged questions the usage memory remembers (0: no memory).
    pub memory_questions: u64,
    /// When the last index run finished (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_index_ms: Option<u64>,
}

/// The first `max` characters of `text` (whitespace collapsed), cut at a
/// word boundary when one is near, with `…` when cut.
pub fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i >= cut.len() * 3 / 4 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end())
}

/// A source of context. Implementations must be cheap to call concurrently
/// (`&self`); the server runs each call on a blocking thread.
pub trait ContextProvider: Send + Sync + 'static {
    /// A short description for `/info` (e.g. the store path and chunk count).
    fn describe(&self) -> String;

    /// Selects and packs context for `request.query` within `request.budget_tokens`.
    fn context(&self, request: &ContextRequest) -> Result<ContextResult, ContextError>;

    /// The `request.k` best chunks, best first.
    fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>, ContextError>;

    /// One chunk by id; `None` when there is none.
    fn fetch(&self, id: &str) -> Result<Option<FetchedChunk>, ContextError>;

    /// What the index holds.
    fn status(&self) -> Result<IndexStatus, ContextError>;
}

/// One answered query, as the learning loop needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Unique id handed to the client (`<start-ms>-<pid>-<counter>`).
    pub id: String,
    pub kind: InteractionKind,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub timestamp_ms: u64,
    pub query: String,
    /// The chunks that were shown, in order, with their markers.
    pub chunks: Vec<ContextChunk>,
    /// The LLM's answer (for streams: the concatenated deltas), if any.
    pub response: Option<String>,
    /// The `model` the client asked for (chat).
    pub model: Option<String>,
    /// Upstream HTTP status (chat).
    pub upstream_status: Option<u16>,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// `false` when the client went away or the upstream failed mid-answer.
    pub complete: bool,
    pub latency_ms: u64,
    /// The packed context's budget and use, when the route reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<usize>,
    /// The provider's [`ContextResult::trace`] for this query.
    #[serde(skip)]
    pub trace: Option<SelectionTrace>,
}

impl Interaction {
    /// The logged form: the engine's one mapping ([`anectx_engine::record`]).
    pub fn to_logged(&self) -> anectx_store::LoggedInteraction {
        let shown: Vec<ShownChunk> = self.chunks.iter().map(ContextChunk::shown).collect();
        let meta = anectx_store::InteractionMeta {
            latency_ms: Some(self.latency_ms),
            llm_model: self.model.clone(),
            upstream_status: self.upstream_status,
            streamed: (self.kind == InteractionKind::Chat).then_some(self.streamed),
            budget_tokens: self.budget_tokens.map(|n| n as u64),
            tokens_used: self.tokens_used.map(|n| n as u64),
            ..Default::default()
        };
        anectx_engine::record(
            anectx_engine::Answer {
                uid: self.id.clone(),
                kind: self.kind.clone(),
                ts_ms: i64::try_from(self.timestamp_ms).unwrap_or(i64::MAX),
                query: self.query.clone(),
                response: self.response.clone(),
                complete: self.complete,
                meta,
            },
            &shown,
            self.trace.as_ref(),
        )
    }
}

/// Receives interactions. Errors are logged by the server and never fail the
/// client's request; `/v1/context` waits for [`InteractionRecorder::record`]
/// to return before it answers and reports the outcome as `logged`.
pub trait InteractionRecorder: Send + Sync + 'static {
    /// Records one interaction; `Ok` means it is stored (for a durable
    /// recorder: committed).
    fn record(&self, interaction: Interaction) -> Result<(), RecordError>;

    /// Whether this recorder stores anything (`false` for [`NoopRecorder`]).
    fn enabled(&self) -> bool {
        true
    }

    /// Whether an interaction with this id is stored; `None` when the
    /// recorder cannot tell.
    fn contains(&self, _id: &str) -> Result<Option<bool>, RecordError> {
        Ok(None)
    }

    /// Stores explicit user feedback; returns its id. The default refuses.
    fn feedback(&self, _feedback: &anectx_store::Feedback) -> Result<i64, RecordError> {
        Err(RecordError::NoLog)
    }

    /// Whether [`InteractionRecorder::feedback`] stores anything.
    fn accepts_feedback(&self) -> bool {
        false
    }
}

/// A recorder failure.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The log writer thread is gone (shutting down or crashed).
    #[error("could not record the interaction: the log writer has stopped")]
    Stopped,
    /// This recorder keeps no log.
    #[error("this server keeps no interaction log, so feedback cannot be stored")]
    NoLog,
    /// The store refused or failed.
    #[error("could not record the interaction: {0}")]
    Store(#[from] anectx_store::StoreError),
}

/// Drops every interaction.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopRecorder;

impl InteractionRecorder for NoopRecorder {
    fn record(&self, _interaction: Interaction) -> Result<(), RecordError> {
        Ok(())
    }

    fn enabled(&self) -> bool {
        false
    }
}
