//! anectx learning loop: from logged interactions to a better relevance model.
//!
//! - [`analyzer`]: which shown chunks an answer used, from the answer text alone.
//! - [`simllm`]: a simulated LLM that answers from shown chunks, for offline runs.

pub mod analyzer;
pub mod simllm;
mod error;

pub use error::LearnError;

/// Result alias for this crate.
pub type Result<T, E = LearnError> = std::result::Result<T, E>;
