//! The anectx context engine: ingest files, retrieve with BM25 and dense
//! vectors, fuse with reciprocal-rank fusion, score with a pluggable
//! relevance model, diversify with MMR and pack into a token budget.
//!
//! ```no_run
//! use std::sync::Arc;
//! use anectx_engine::{ContextOptions, Engine};
//! let engine = Arc::new(Engine::open(".anectx".as_ref(), None)?);
//! let answer = engine.context("how do I configure the port?", &ContextOptions::default())?;
//! println!("{}", answer.text);
//! # Ok::<(), anectx_engine::EngineError>(())
//! ```

pub mod chunk;
pub mod embed;
mod engine;
mod error;
pub mod eval;
pub mod extract;
pub mod filter;
pub mod formats;
pub mod ingest;
pub mod memory;
pub mod memory_file;
pub mod record;
pub mod reembed;
pub mod relevance;
pub mod select;
pub mod source;

pub use anectx_store::{Bm25Params, Store};
pub use chunk::ChunkConfig;
pub use embed::{ModelEmbedder, ModelIdentity, TextEmbedder};
pub use engine::{
    ChunkScores, ContextChunk, ContextOptions, ContextResult, Engine, PoolCandidate, ReembedReport,
    Refreshed, RetrievalMode, Timings, LAST_INDEX_META, MAX_QUERY_CHARS,
};
pub use error::EngineError;
pub use filter::{CompiledFilter, Filter, FilterError};
pub use ingest::{
    index_changes, index_paths, index_texts, IndexOptions, IndexReport, NoProgress, Progress,
    SkippedFile,
};
pub use memory::{MemoryConfig, MemoryStats, UsageMemory};
pub use memory_file::{MemoryFileError, MemoryFileInfo, MEMORY_FORMAT};
pub use record::{record, Answer, SelectionTrace, ShownChunk};
pub use reembed::{adopt_shared_embedder, reembed_shared, SharedReembedReport};
pub use relevance::{Candidate, Features, FusionRelevance, RelevanceModel};

/// Result alias for this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
