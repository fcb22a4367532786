//! ANE-first models on candle.
//!
//! Every model here is laid out the way Apple's Neural Engine wants it:
//! activations are channels-first `(B, C, 1, S)`, every linear layer is a
//! 1×1 convolution, attention is computed per head with additive `-1e4`
//! masks, and LayerNorm runs over the channel axis with an fp16-safe epsilon.
//! On CPU the singleton height axis is dropped internally and 1×1 convolutions
//! run as matrix products; the structure (and the Core ML export built from it)
//! is what matches the ANE, not the CPU kernel.
//!
//! Models:
//! - [`ConvEmbedder`]: a small convolutional sentence embedder;
//! - [`ConvClassifier`]: a convolutional (query, chunk) relevance classifier;
//! - [`AneBert`]: a BERT encoder (e.g. all-MiniLM-L6-v2) loaded from a
//!   Hugging Face directory, with sentence-transformers pooling.

pub mod backend;
pub mod bert;
pub mod conv_classifier;
pub mod conv_embedder;
pub mod default_model;
pub mod distill;
mod error;
pub mod finetune;
pub mod io;
pub mod layers;
pub mod metrics;
pub mod tokenize;
pub mod weights;

pub use backend::CandleBackend;
pub use bert::{AneBert, BertConfig, Pooling};
pub use conv_classifier::{ConvClassifier, ConvClassifierConfig};
pub use conv_embedder::{ConvEmbedder, ConvEmbedderConfig};
pub use error::ModelError;
pub use io::{load_classifier, load_embedder, Embedder, ModelInfo, ModelKind, WeightDtype};
pub use tokenize::{TextTokenizer, TokenSpan};

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
