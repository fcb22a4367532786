//! The benchmark report: the JSON schema written by `anectx bench`.
//!
//! Every field is documented in `docs/bench.md`. Units are in the field
//! names (`_ms`, `_s`, `_bytes`, `_gb_s`, `_gflops`, `_per_s`, `_db`, `_pct`).
//! Floats that have no finite value (a PSNR of identical outputs, a ratio
//! without a baseline) are `null`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{BenchError, Result};

/// Version of the report format. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// Always `"anectx-bench"`.
    pub tool: String,
    pub anectx_version: String,
    /// Seconds since the Unix epoch when the run started.
    pub created_unix_s: u64,
    /// The same instant, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_utc: String,
    /// Wall time of the whole run.
    pub duration_s: f64,
    pub config: RunConfig,
    pub system: SystemInfo,
    pub peak: PeakInfo,
    pub models: Vec<ModelEntry>,
    pub rows: Vec<BenchRow>,
    pub precision: Vec<PrecisionRow>,
    pub summary: Summary,
    /// Free-form remarks (random weights, skipped parts, machine load).
    pub notes: Vec<String>,
}

/// The settings the run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub quick: bool,
    /// Untimed calls before each timed series.
    pub warmup: usize,
    /// Timed calls of the latency series.
    pub runs: usize,
    /// Shape of the latency series (and of the ANEMLL-style weight GB/s).
    pub latency_batch: usize,
    pub latency_seq: usize,
    /// Throughput grid: every batch size × every sequence bucket.
    pub batch_sizes: Vec<usize>,
    pub seq_lens: Vec<usize>,
    /// Minimum timed calls and seconds per throughput cell.
    pub throughput_min_runs: usize,
    pub throughput_min_s: f64,
    /// Numbers of model instances run at once.
    pub concurrency: Vec<usize>,
    pub concurrency_batch: usize,
    pub concurrency_seq: usize,
    /// Seconds each instance runs at each concurrency level.
    pub concurrency_s: f64,
    /// Soak length per model (0 = no soak) and window width.
    pub soak_s: f64,
    pub soak_window_s: f64,
    pub soak_batch: usize,
    pub soak_seq: usize,
    /// `backend:units` pairs requested, e.g. `candle:cpu`, `coreml:ane`.
    pub targets: Vec<String>,
    pub eval_dir: Option<String>,
    pub eval_docs: usize,
    pub eval_queries: usize,
    pub eval_seq: usize,
}

/// The machine the run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// `linux`, `macos`, …
    pub os: String,
    /// Distribution or product version (`/etc/os-release`, `sw_vers`).
    pub os_version: Option<String>,
    pub kernel: Option<String>,
    pub arch: String,
    /// CPU or chip name (`/proc/cpuinfo` model name, `machdep.cpu.brand_string`).
    pub cpu_model: Option<String>,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub memory_bytes: Option<u64>,
    /// 1, 5 and 15 minute load averages when the run started (Unix).
    pub load_average: Option<[f64; 3]>,
    pub candle_version: String,
    /// Threads candle's CPU kernels use.
    pub candle_threads: usize,
    /// CPU features candle was built with (`avx`, `f16c`, `neon`, `mkl`, `accelerate`).
    pub candle_features: Vec<String>,
    pub rustc_version: String,
    /// `release` or `debug` (opt-level of the bench crate).
    pub build_profile: String,
    /// Whether this build can run Core ML (Apple platforms only).
    pub coreml_available: bool,
}

/// The machine's measured f32 peak (a multi-threaded FMA loop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakInfo {
    pub method: String,
    /// Instruction set the loop ran with (`avx2+fma`, `avx512`, `neon`, `scalar`).
    pub isa: String,
    /// f32 lanes per vector register.
    pub simd_lanes: usize,
    pub threads: usize,
    /// Best of several repeats, all threads together.
    pub gflops_all_threads: f64,
    pub gflops_one_thread: f64,
}

/// The role of a model in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The baseline every ratio is taken against.
    Reference,
    Candidate,
}

/// One benchmarked model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Short key used by rows (`reference`, `ane-bert`, `conv-embedder`, …).
    pub id: String,
    pub label: String,
    pub role: Role,
    /// `reference_bert` (candle-transformers BertModel), `ane_bert`, `conv_embedder`.
    pub kind: String,
    /// Where the weights come from: a directory, or `random`.
    pub source: String,
    /// `pretrained` or `random`.
    pub weights: String,
    /// e.g. "random weights (timing only)".
    pub note: Option<String>,
    pub parameters: u64,
    /// Bytes of the weights the encoder graph reads per call, in f32 (lookup
    /// tables excluded: they stay on the host in the Core ML export).
    pub graph_weight_bytes: u64,
    /// Bytes of the embedding lookup tables, in f32.
    pub embedding_table_bytes: u64,
    pub architecture: serde_json::Value,
}

/// Status of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

/// One model × backend × compute units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub model: String,
    /// `candle` or `coreml`.
    pub backend: String,
    /// `cpu`, `gpu`, `ane`, `all`.
    pub units: String,
    /// Compute precision of the timed runs (`f32`).
    pub dtype: String,
    pub status: Status,
    /// Why a row was skipped or failed.
    pub message: Option<String>,
    pub load: Option<LoadTiming>,
    pub latency: Option<Latency>,
    pub throughput: Vec<ThroughputPoint>,
    pub concurrency: Vec<ConcurrencyPoint>,
    pub soak: Option<Soak>,
}

/// Cold start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadTiming {
    /// Reading and building the model (plus Core ML compile on a Mac);
    /// for random weights, initialising them.
    pub cold_load_ms: f64,
    /// The first call after loading, at the latency shape.
    pub first_call_ms: f64,
}

/// Warm latency at one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub batch: usize,
    pub seq: usize,
    pub warmup: usize,
    pub runs: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub stddev_ms: f64,
    /// The bytes the GB/s figure divides (graph weights, f32).
    pub weight_bytes: u64,
    /// ANEMLL way: weight bytes / mean latency, in GB/s (1e9 bytes).
    pub weight_gb_s_anemll: f64,
    /// Analytic FLOPs per call / mean latency.
    pub gflops: f64,
    /// Reference mean latency / this mean latency (> 1 = faster than the reference).
    pub speedup_vs_reference: Option<f64>,
}

/// Throughput at one batch × sequence cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputPoint {
    pub batch: usize,
    pub seq: usize,
    pub runs: usize,
    pub mean_ms: f64,
    /// Sequences per second.
    pub items_per_s: f64,
    /// Token positions per second (batch × seq per call, padding included).
    pub tokens_per_s: f64,
    /// Analytic FLOPs of one call.
    pub flops_per_call: f64,
    pub gflops: f64,
    /// gflops / the machine's all-thread FMA peak.
    pub peak_fraction: f64,
    /// This items/s / the reference's items/s at the same cell.
    pub ratio_vs_reference: Option<f64>,
}

/// N instances of the model running at once, one thread each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencyPoint {
    pub instances: usize,
    pub batch: usize,
    pub seq: usize,
    /// Calls completed, all instances together.
    pub calls: usize,
    /// From the common start to the last instance finishing.
    pub wall_s: f64,
    /// Per-call latency over every instance's calls.
    pub latency_mean_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// Sequences per second, all instances together.
    pub aggregate_items_per_s: f64,
    /// ANEMLL's combined GB/s: weight bytes × calls / wall.
    pub aggregate_weight_gb_s: f64,
    /// Aggregate / (instances × the single-instance throughput), as ANEMLL's
    /// dual-model test reports it (1 = perfect scaling).
    pub utilization_factor: f64,
}

/// A sustained run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Soak {
    pub batch: usize,
    pub seq: usize,
    pub duration_s: f64,
    pub window_s: f64,
    pub windows: Vec<SoakWindow>,
    pub mean_items_per_s: f64,
    /// (last window − first window) / first window, in percent.
    pub drift_pct: f64,
    /// Least-squares slope of items/s over time, as percent of the mean per minute.
    pub slope_pct_per_min: f64,
    /// Slowest window / fastest window.
    pub min_over_max: f64,
}

/// One soak window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakWindow {
    /// Window start, seconds since the soak began.
    pub start_s: f64,
    pub calls: usize,
    pub items_per_s: f64,
}

/// fp16 against fp32 for one model (candle CPU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRow {
    pub model: String,
    pub backend: String,
    pub status: Status,
    pub message: Option<String>,
    /// `tokenized sample texts` or `synthetic token ids`.
    pub inputs: String,
    pub texts: usize,
    pub seq: usize,
    /// Cosine of each fp16 embedding with its fp32 counterpart.
    pub cosine_mean: f64,
    pub cosine_min: f64,
    /// PSNR of the fp16 embeddings against fp32, in dB (null when identical).
    pub psnr_db: Option<f64>,
    pub f32_ms: f64,
    pub f16_ms: f64,
    pub eval: Option<EvalDelta>,
}

/// nDCG@10 on an evaluation collection, fp32 and fp16 embeddings ranked by exact cosine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalDelta {
    pub collection: String,
    pub docs: usize,
    pub queries: usize,
    pub seq: usize,
    pub ndcg10_f32: f64,
    pub ndcg10_f16: f64,
    /// fp16 − fp32.
    pub ndcg10_delta: f64,
}

/// Headline figures derived from the rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub headlines: Vec<Headline>,
}

/// One headline figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub model: String,
    /// e.g. `latency_speedup_vs_reference`, `throughput_ratio_vs_reference`,
    /// `best_gflops`, `best_peak_fraction`, `utilization_factor`.
    pub metric: String,
    /// Where it was measured, e.g. `b1×s128`, `4 instances`.
    pub at: String,
    pub value: f64,
}

impl Report {
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Other(e.to_string()))
    }

    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| BenchError::Report {
            path: origin.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        match v.get("schema_version").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(SCHEMA_VERSION) => {}
            Some(n) => {
                return Err(BenchError::Report {
                    path: origin.to_path_buf(),
                    message: format!(
                        "schema_version {n}; this anectx reads version {SCHEMA_VERSION}"
                    ),
                })
            }
            None => {
                return Err(BenchError::Report {
                    path: origin.to_path_buf(),
                    message: "no schema_version field".into(),
                })
            }
        }
        serde_json::from_value(v).map_err(|e| BenchError::Report {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        Self::from_json(&text, path)
    }

    pub fn model(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The ok row of `model` on `backend:units`.
    pub fn row(&self, model: &str, backend: &str, units: &str) -> Option<&BenchRow> {
        self.rows.iter().find(|r| {
            r.model == model && r.backend == backend && r.units == units && r.status == Status::Ok
        })
    }

    /// The reference model's id, if the run has one.
    pub fn reference_id(&self) -> Option<&str> {
        self.models
            .iter()
            .find(|m| m.role == Role::Reference)
            .map(|m| m.id.as_str())
    }
}
