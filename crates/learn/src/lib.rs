//! anectx learning loop: from logged interactions to a better relevance model.
//!
//! - [`analyzer`]: which shown chunks an answer used, from the answer text alone.
//! - [`simllm`]: a simulated LLM that answers from shown chunks, for offline runs.
//! - [`features`] and [`model`]: the learned relevance model (a small MLP over
//!   retrieval features) that the engine calls through `RelevanceModel`.
//! - [`train`]: labels the log, builds an IPS-weighted pairwise dataset, trains.
//! - [`gate`]: promotes a candidate only if it is not worse than the current model.
//! - [`registry`]: versions on disk, `CURRENT`, promote and rollback.
//! - [`round`]: one learning round (label → train → gate → register → promote).
//! - [`simulate`]: the whole loop offline on a BEIR-layout collection.

pub mod adapter;
pub mod analyzer;
mod error;
pub mod features;
pub mod gate;
pub mod memory;
pub mod model;
pub mod registry;
pub mod round;
pub mod simllm;
pub mod simulate;
pub mod train;

pub use error::LearnError;
pub use model::FeatureModel;
pub use registry::Registry;
pub use round::{round, RoundConfig, RoundOutcome, Trained};

/// Result alias for this crate.
pub type Result<T, E = LearnError> = std::result::Result<T, E>;
