//! Core types shared by every anectx crate: token batches, the [`Backend`]
//! trait that each runtime (candle on CPU, Core ML on macOS) implements,
//! typed errors and layered settings.
//!
//! This crate has no numeric or platform dependencies so that every other
//! crate, including the Apple runtime, can depend on it cheaply.

mod backend;
mod error;
pub mod placement;
pub mod rng;
pub mod settings;
mod tokens;

pub use backend::{
    Backend, BackendChoice, BackendHealth, BackendRequest, ComputeUnits, Embeddings, PairedBackend,
    Parity, SupportedShapes,
};
pub use error::{BackendError, CoreError};
pub use tokens::{TokenBatch, Truncation, SEQ_BUCKETS};
