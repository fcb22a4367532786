use crate::{BackendError, TokenBatch};
use serde::{Deserialize, Serialize};

/// Which processors a backend may use. Values follow Core ML's
/// `MLComputeUnits`; the candle backend only honours `CpuOnly`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeUnits {
    CpuOnly,
    CpuAndGpu,
    CpuAndNeuralEngine,
    All,
}

impl ComputeUnits {
    pub const ALL: [ComputeUnits; 4] = [
        ComputeUnits::CpuOnly,
        ComputeUnits::CpuAndGpu,
        ComputeUnits::CpuAndNeuralEngine,
        ComputeUnits::All,
    ];

    /// Short name used on the command line (`cpu`, `gpu`, `ane`, `all`).
    pub fn short_name(self) -> &'static str {
        match self {
            ComputeUnits::CpuOnly => "cpu",
            ComputeUnits::CpuAndGpu => "gpu",
            ComputeUnits::CpuAndNeuralEngine => "ane",
            ComputeUnits::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|u| u.short_name().eq_ignore_ascii_case(s))
    }
}

/// Shapes a backend accepts. Static-shape runtimes (Core ML on the ANE)
/// list a few sequence lengths; CPU backends accept any length up to `max_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportedShapes {
    pub max_batch: usize,
    /// Sequence lengths the backend runs without re-compiling.
    pub seq_buckets: Vec<usize>,
    pub max_seq: usize,
}

/// Row-major `(rows, dim)` embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dim.max(1))
    }
}

/// Health as reported by a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub ok: bool,
    pub detail: String,
}

/// A runtime that executes anectx models: embeds token sequences and scores
/// (query, chunk) pairs. Implementations are synchronous and are expected to
/// live on their own thread; callers batch requests in front of them.
pub trait Backend: Send {
    /// Human-readable name, e.g. `candle-cpu` or `coreml-ane`.
    fn name(&self) -> &str;

    /// Whether the backend can serve requests now.
    fn health(&self) -> BackendHealth;

    /// The shapes the backend supports.
    fn shapes(&self) -> SupportedShapes;

    /// Output dimension of [`Backend::embed`], if the backend has an embedder.
    fn embedding_dim(&self) -> Option<usize>;

    /// L2-normalised sentence embeddings, one row per sequence in `batch`.
    fn embed(&self, batch: &TokenBatch) -> Result<Embeddings, BackendError>;

    /// Relevance scores in `[0, 1]`, one per (query, chunk) pair sequence in `batch`.
    fn score(&self, pairs: &TokenBatch) -> Result<Vec<f32>, BackendError>;
}
