//! anectx's serving core, without HTTP.
//!
//! Front ends (the HTTP server in `anectx-server`, MCP) are thin layers over
//! these services, so every route shares one copy of the logic:
//!
//! - [`Batcher`]: the backend on its own thread with dynamic batching and
//!   bounded admission; [`Metrics`] observes it.
//! - [`EmbedService`]: tokenise → split into jobs → embed or score.
//! - [`ContextProvider`]: selects context, searches and fetches chunks
//!   ([`EngineContext`] over the engine, [`MemoryContext`] over fixed
//!   passages); [`ContextService`] runs it for every front end and records
//!   each selection as an interaction.
//! - [`InteractionRecorder`]: records answered queries
//!   ([`SqliteRecorder`]: the store's interaction log, group commit); the
//!   record itself is the engine's one mapping ([`anectx_engine::record`]).
//! - [`RelevanceReloader`]: hot swap of the relevance model from a
//!   [`RelevanceSource`] ([`RegistrySource`]: the model registry, with the
//!   usage memory rebuilt at each load).
//! - [`ServeError`]: why a call did not answer, typed for every front end.

pub mod batcher;
pub mod context;
pub mod embed;
mod error;
pub mod memory;
pub mod metrics;
pub mod provider;
pub mod recorder;
pub mod registry;
pub mod reload;
pub mod service;

pub use batcher::{BackendInfo, BatchError, Batcher, BatcherConfig, JobTimings};
pub use context::{
    ContextChunk, ContextError, ContextProvider, ContextRequest, ContextResult, FetchedChunk,
    IndexStatus, Interaction, InteractionKind, InteractionRecorder, NoopRecorder, RecordError,
    SearchHit, SearchRequest,
};
pub use embed::{CallTimings, EmbedService, Embedded, Prepared, Scored, Truncate};
pub use error::ServeError;
pub use memory::MemoryContext;
pub use metrics::Metrics;
pub use provider::{BatcherEmbedder, EngineContext};
pub use recorder::SqliteRecorder;
pub use registry::RegistrySource;
pub use reload::{RelevanceReloader, RelevanceSource, ReloadError, ReloadOutcome, SourceError};
pub use service::{ContextAnswer, ContextService, InteractionIds};
