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

/// What `--backend` asks for (`ANECTX_BACKEND`, config `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendRequest {
    /// On Apple platforms, the embedder exported to Core ML and run on the
    /// CPU and Neural Engine when its output matches candle's; candle
    /// otherwise (and always elsewhere).
    #[default]
    Auto,
    /// candle on the CPU, everywhere.
    Candle,
    /// Core ML, or an error saying why not.
    #[serde(rename = "coreml")]
    CoreMl,
}

impl BackendRequest {
    pub const ALL: [BackendRequest; 3] = [Self::Auto, Self::Candle, Self::CoreMl];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Candle => "candle",
            Self::CoreMl => "coreml",
        }
    }

    /// `auto`, `candle` or `coreml` (any case; `core-ml` too).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "candle" | "cpu" => Some(Self::Candle),
            "coreml" | "core-ml" => Some(Self::CoreMl),
            _ => None,
        }
    }
}

impl std::fmt::Display for BackendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How closely a backend's embeddings matched the reference (candle) on a
/// fixed probe set: cosine similarity per text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Parity {
    pub texts: usize,
    pub min_cosine: f32,
    pub mean_cosine: f32,
    /// The lowest `min_cosine` that passes.
    pub threshold: f32,
}

impl Parity {
    pub fn passes(&self) -> bool {
        self.texts > 0 && self.min_cosine >= self.threshold
    }
}

/// Which backend runs the embedder, and why: the decision `--backend auto`
/// made, shown by `anectx status`, `serve`'s `/info` and `embed --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendChoice {
    pub requested: BackendRequest,
    /// The backend's name, e.g. `candle-cpu` or `coreml-ane`.
    pub used: String,
    /// One line: why this backend (or why not Core ML).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_units: Option<ComputeUnits>,
    /// The Core ML package in use (or tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<Parity>,
    /// Cost-weighted share of the model `MLComputePlan` places on the Neural
    /// Engine (macOS 14.4+), from the last placement report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ane_share: Option<f64>,
    /// Operations per device in that placement report, e.g.
    /// `{"ANE": 120, "CPU": 2}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_by_device: Option<std::collections::BTreeMap<String, usize>>,
}

impl BackendChoice {
    /// candle, for `reason`.
    pub fn candle(requested: BackendRequest, reason: impl Into<String>) -> Self {
        Self {
            requested,
            used: "candle-cpu".into(),
            reason: reason.into(),
            compute_units: None,
            package: None,
            parity: None,
            ane_share: None,
            ops_by_device: None,
        }
    }
}

/// One backend embeds, another scores: e.g. the embedder on Core ML and a
/// relevance classifier on candle. Shapes and health are the embedder's.
pub struct PairedBackend {
    pub embed: Box<dyn Backend>,
    pub score: Box<dyn Backend>,
}

impl Backend for PairedBackend {
    fn name(&self) -> &str {
        self.embed.name()
    }

    fn health(&self) -> BackendHealth {
        let (e, s) = (self.embed.health(), self.score.health());
        BackendHealth {
            ok: e.ok && s.ok,
            detail: format!("embed: {}; score: {}", e.detail, s.detail),
        }
    }

    fn shapes(&self) -> SupportedShapes {
        self.embed.shapes()
    }

    fn embedding_dim(&self) -> Option<usize> {
        self.embed.embedding_dim()
    }

    fn embed(&self, batch: &TokenBatch) -> Result<Embeddings, BackendError> {
        self.embed.embed(batch)
    }

    fn score(&self, pairs: &TokenBatch) -> Result<Vec<f32>, BackendError> {
        self.score.score(pairs)
    }
}
