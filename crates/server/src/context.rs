//! The two seams between the server and the rest of anectx:
//!
//! - [`ContextProvider`] selects context for a query (implemented by the
//!   engine over an index store); `/v1/context` and the chat proxy call it.
//! - [`InteractionRecorder`] receives every answered query with the chunks
//!   that were shown and the response text, for the learning loop.
//!   [`NoopRecorder`] is the default.
//!
//! Both traits are synchronous (store and engine code is blocking); the
//! server calls them on tokio's blocking pool.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What to select context for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextRequest {
    pub query: String,
    /// Token budget for the packed context.
    pub budget_tokens: usize,
    /// At most this many chunks, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunks: Option<usize>,
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
    /// to clients and to the recorder.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
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

/// Why a provider could not answer.
#[derive(Debug, Error)]
pub enum ContextError {
    /// The query itself is unusable (empty, too long, …): HTTP 422.
    #[error("{0}")]
    InvalidQuery(String),
    /// The provider is busy (its embedding queue is full): HTTP 429.
    #[error("{0}")]
    Overloaded(String),
    /// The provider cannot answer now (store not ready): HTTP 503.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: HTTP 500.
    #[error("{0}")]
    Failed(String),
}

/// A source of context. Implementations must be cheap to call concurrently
/// (`&self`); the server runs each call on a blocking thread.
pub trait ContextProvider: Send + Sync + 'static {
    /// A short description for `/info` (e.g. the store path and chunk count).
    fn describe(&self) -> String;

    /// Selects and packs context for `request.query` within `request.budget_tokens`.
    fn context(&self, request: &ContextRequest) -> Result<ContextResult, ContextError>;
}

/// Which endpoint produced an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    /// `/v1/chat/completions` through the proxy; `response` is the answer.
    Chat,
    /// `/v1/context`; there is no response text.
    Context,
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
    /// The provider's [`ContextResult::details`] for this query (for the
    /// engine: `relevance_model`, `explored` and the candidate `pool`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
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
        Err(RecordError(
            "this server keeps no interaction log, so feedback cannot be stored".into(),
        ))
    }

    /// Whether [`InteractionRecorder::feedback`] stores anything.
    fn accepts_feedback(&self) -> bool {
        false
    }
}

/// A recorder failure.
#[derive(Debug, Error)]
#[error("could not record the interaction: {0}")]
pub struct RecordError(pub String);

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
