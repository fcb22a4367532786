//! The Core ML runtime backend.
//!
//! On Apple platforms this wraps `objc2-core-ml`: it compiles a
//! `.mlpackage` (caching the compiled `.mlmodelc` by content hash), loads it
//! with the compute units the user chose, runs predictions with
//! `MLMultiArray`s (reading outputs through their strides), and reports the
//! placement `MLComputePlan` predicts for every operation. Everywhere else the
//! same API compiles to a stub whose every call returns
//! [`CoreMlError::Unsupported`] ("Core ML needs macOS").
//!
//! This crate must not depend on anything that compiles C, so that the Apple
//! code type-checks for `aarch64-apple-darwin` on Linux
//! (`../shared/tools/check-macos -p anectx-coreml-runtime`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anectx_core::placement::{ane_residency, islands, Device, Island};
use anectx_core::{
    Backend, BackendError, BackendHealth, ComputeUnits, Embeddings, SupportedShapes, TokenBatch,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[cfg_attr(target_vendor = "apple", path = "apple.rs")]
#[cfg_attr(not(target_vendor = "apple"), path = "stub.rs")]
mod imp;

/// Errors of the Core ML runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreMlError {
    /// Not on an Apple platform (or an OS too old for the call).
    #[error("{0}")]
    Unsupported(String),
    #[error("could not read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("Core ML could not compile {path}: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("Core ML could not load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("prediction failed: {0}")]
    Predict(String),
    #[error("invalid input: {0}")]
    Input(String),
}

impl From<CoreMlError> for BackendError {
    fn from(e: CoreMlError) -> Self {
        match e {
            CoreMlError::Unsupported(m) => BackendError::Unsupported(m),
            CoreMlError::Input(m) => BackendError::Input(m),
            CoreMlError::Predict(m) => BackendError::Inference(m),
            other => BackendError::Start(other.to_string()),
        }
    }
}

/// The message every stub call returns.
pub const NEEDS_MACOS: &str = "Core ML needs macOS (or another Apple OS): this build of anectx \
     runs on the CPU backend only; use --backend candle, or run on a Mac";

/// Apple's `MLComputeUnits` raw values, from `MLModelConfiguration.h`:
/// CPUOnly = 0, CPUAndGPU = 1, All = 2, CPUAndNeuralEngine = 3 (macOS 13+).
/// (One published Rust wrapper maps CPU-only to 1 and CPU+ANE to 2; those
/// are CPU+GPU and All.)
pub fn ml_compute_units(units: ComputeUnits) -> isize {
    match units {
        ComputeUnits::CpuOnly => 0,
        ComputeUnits::CpuAndGpu => 1,
        ComputeUnits::All => 2,
        ComputeUnits::CpuAndNeuralEngine => 3,
    }
}

/// Host-side array passed to or returned from a prediction (row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostArray {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I32 { shape: Vec<usize>, data: Vec<i32> },
}

impl HostArray {
    pub fn shape(&self) -> &[usize] {
        match self {
            HostArray::F32 { shape, .. } | HostArray::I32 { shape, .. } => shape,
        }
    }

    fn check(&self) -> Result<(), CoreMlError> {
        let n: usize = self.shape().iter().product();
        let len = match self {
            HostArray::F32 { data, .. } => data.len(),
            HostArray::I32 { data, .. } => data.len(),
        };
        if n != len {
            return Err(CoreMlError::Input(format!(
                "array of shape {:?} needs {n} values, got {len}",
                self.shape()
            )));
        }
        Ok(())
    }
}

/// Reads element `index` (row-major over `shape`) from a buffer laid out
/// with `strides` (in elements), as `MLMultiArray` outputs may be padded.
pub fn strided_to_dense<T: Copy>(buf: &[T], shape: &[usize], strides: &[usize]) -> Option<Vec<T>> {
    if shape.len() != strides.len() {
        return None;
    }
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let off: usize = idx.iter().zip(strides).map(|(i, s)| i * s).sum();
        out.push(*buf.get(off)?);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(out)
}

/// Names of the package's features used by [`CoreMlBackend`]. The defaults
/// are those of packages written by `anectx export coreml --ids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoNames {
    /// int32 `(1, S)` token ids.
    pub input_ids: String,
    /// int32 `(1, S)` segment ids (BERT packages only; sent when present).
    pub token_type_ids: String,
    /// `(1, 1, 1, S)` 0/1 mask.
    pub mask: String,
    /// `(1, D)` L2-normalised embedding.
    pub output: String,
}

impl Default for IoNames {
    fn default() -> Self {
        Self {
            input_ids: "input_ids".into(),
            token_type_ids: "token_type_ids".into(),
            mask: "mask".into(),
            output: "embedding".into(),
        }
    }
}

/// Where `anectx export coreml` stores the tokenizer inside a package.
pub const PACKAGE_TOKENIZER: &str = "Data/com.anectx/tokenizer.json";

/// How to load a package.
#[derive(Debug, Clone)]
pub struct CoreMlConfig {
    pub package: PathBuf,
    pub units: ComputeUnits,
    /// Where compiled models are cached (default: the user cache dir).
    pub cache_dir: Option<PathBuf>,
    pub io: IoNames,
}

impl CoreMlConfig {
    pub fn new(package: impl Into<PathBuf>, units: ComputeUnits) -> Self {
        Self {
            package: package.into(),
            units,
            cache_dir: None,
            io: IoNames::default(),
        }
    }
}

/// A content hash of a package: SHA-256 over its files' relative paths and
/// bytes, in sorted order. The compiled model is cached under this hash, so a
/// changed package is recompiled and an unchanged one is not.
pub fn package_digest(package: &Path) -> Result<String, CoreMlError> {
    let io = |p: &Path, e: std::io::Error| CoreMlError::Io {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    let mut files = Vec::new();
    let mut stack = vec![package.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                files.push(path);
            }
        }
    }
    if files.is_empty() {
        return Err(CoreMlError::Io {
            path: package.to_path_buf(),
            message: "not a package: no files inside".into(),
        });
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let rel = f.strip_prefix(package).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0u8]);
        h.update(std::fs::read(f).map_err(|e| io(f, e))?);
        h.update([0u8]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The cache location of a compiled model.
pub fn compiled_cache_path(cache_root: &Path, digest: &str) -> PathBuf {
    cache_root.join(format!("{digest}.mlmodelc"))
}

/// The default cache root: `$ANECTX_CACHE/coreml`, else
/// `~/Library/Caches/anectx/coreml` on macOS, else `~/.cache/anectx/coreml`.
pub fn default_cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("ANECTX_CACHE") {
        return PathBuf::from(p).join("coreml");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if cfg!(target_vendor = "apple") {
        home.join("Library/Caches/anectx/coreml")
    } else {
        home.join(".cache/anectx/coreml")
    }
}

/// Placement of one operation as `MLComputePlan` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpPlacement {
    pub op_type: String,
    /// Names of the op's outputs (identify it in the program).
    pub outputs: Vec<String>,
    pub preferred: Device,
    pub supported: Vec<Device>,
    /// Share of the model's estimated cost (None for constants).
    pub cost: Option<f64>,
}

/// A placement report for a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementReport {
    pub units: ComputeUnits,
    pub ops: Vec<OpPlacement>,
    /// Cost-weighted share of the Neural Engine (None without cost data).
    pub ane_residency: Option<f64>,
    /// Share of non-constant ops preferring the Neural Engine.
    pub ane_op_share: f64,
    pub islands: Vec<Island>,
    /// Ops per device type, e.g. {"ANE": 120, "CPU": 2}.
    pub by_device: BTreeMap<String, usize>,
}

impl PlacementReport {
    /// Builds the summary from per-op placements.
    pub fn from_ops(units: ComputeUnits, ops: Vec<OpPlacement>) -> Self {
        let devices: Vec<Device> = ops.iter().map(|o| o.preferred).collect();
        let costs: Vec<(Device, Option<f64>)> = ops.iter().map(|o| (o.preferred, o.cost)).collect();
        let real: Vec<&OpPlacement> = ops.iter().filter(|o| o.preferred != Device::None).collect();
        let on_ane = real
            .iter()
            .filter(|o| o.preferred == Device::NeuralEngine)
            .count();
        let mut by_device = BTreeMap::new();
        for o in &real {
            *by_device
                .entry(o.preferred.label().to_string())
                .or_insert(0) += 1;
        }
        Self {
            units,
            ane_residency: ane_residency(&costs),
            ane_op_share: if real.is_empty() {
                0.0
            } else {
                on_ane as f64 / real.len() as f64
            },
            islands: islands(&devices),
            by_device,
            ops,
        }
    }
}

/// A compiled, loaded Core ML model.
pub struct CoreMlModel {
    inner: imp::Model,
    config: CoreMlConfig,
}

impl std::fmt::Debug for CoreMlModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreMlModel")
            .field("package", &self.config.package)
            .field("units", &self.config.units)
            .finish()
    }
}

impl CoreMlModel {
    /// Compiles (or reuses the cached compilation of) and loads a package.
    pub fn load(config: CoreMlConfig) -> Result<Self, CoreMlError> {
        let inner = imp::Model::load(&config)?;
        Ok(Self { inner, config })
    }

    pub fn config(&self) -> &CoreMlConfig {
        &self.config
    }

    /// Input names and shapes (enumerated shapes included) of the package.
    pub fn input_shapes(&self) -> Result<BTreeMap<String, Vec<Vec<usize>>>, CoreMlError> {
        self.inner.input_shapes()
    }

    /// Runs one prediction. Inputs are checked for size; outputs are
    /// returned dense and row-major whatever strides Core ML used.
    pub fn predict(
        &self,
        inputs: &[(&str, HostArray)],
    ) -> Result<BTreeMap<String, HostArray>, CoreMlError> {
        for (_, a) in inputs {
            a.check()?;
        }
        self.inner.predict(inputs)
    }

    /// Per-op placement from `MLComputePlan` (macOS 14.4+).
    pub fn placement(&self) -> Result<PlacementReport, CoreMlError> {
        Ok(PlacementReport::from_ops(
            self.config.units,
            self.inner.placement(&self.config)?,
        ))
    }
}

/// The [`Backend`] over a Core ML embedder package exported with in-graph
/// token lookup (`anectx export coreml --ids`): batch 1, one or more
/// enumerated sequence lengths.
#[derive(Debug)]
pub struct CoreMlBackend {
    model: CoreMlModel,
    seq_lengths: Vec<usize>,
    mask_rank: usize,
    has_type_ids: bool,
    dim: Option<usize>,
    name: String,
}

impl CoreMlBackend {
    pub fn load(config: CoreMlConfig) -> Result<Self, CoreMlError> {
        let name = format!("coreml-{}", config.units.short_name());
        let model = CoreMlModel::load(config)?;
        let shapes = model.input_shapes()?;
        let io = &model.config().io;
        let ids = shapes.get(&io.input_ids).ok_or_else(|| {
            CoreMlError::Input(format!(
                "the package has no input named {:?} (inputs: {:?}); export it with --ids",
                io.input_ids,
                shapes.keys().collect::<Vec<_>>()
            ))
        })?;
        let mut seq_lengths: Vec<usize> = ids.iter().filter_map(|s| s.last().copied()).collect();
        seq_lengths.sort_unstable();
        seq_lengths.dedup();
        let mask_rank = shapes
            .get(&io.mask)
            .and_then(|s| s.first())
            .map(Vec::len)
            .ok_or_else(|| {
                CoreMlError::Input(format!("the package has no input named {:?}", io.mask))
            })?;
        let has_type_ids = shapes.contains_key(&io.token_type_ids);
        Ok(Self {
            model,
            seq_lengths,
            mask_rank,
            has_type_ids,
            dim: None,
            name,
        })
    }

    pub fn model(&self) -> &CoreMlModel {
        &self.model
    }
}

impl Backend for CoreMlBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn health(&self) -> BackendHealth {
        BackendHealth {
            ok: true,
            detail: format!("loaded {}", self.model.config().package.display()),
        }
    }

    fn shapes(&self) -> SupportedShapes {
        SupportedShapes {
            max_batch: 1,
            seq_buckets: self.seq_lengths.clone(),
            max_seq: self.seq_lengths.last().copied().unwrap_or(0),
        }
    }

    fn embedding_dim(&self) -> Option<usize> {
        self.dim
    }

    fn embed(&self, batch: &TokenBatch) -> Result<Embeddings, BackendError> {
        let seq = self
            .seq_lengths
            .iter()
            .copied()
            .find(|&s| s >= batch.seq)
            .ok_or_else(|| {
                BackendError::Input(format!(
                    "sequence length {} exceeds the package's lengths {:?}",
                    batch.seq, self.seq_lengths
                ))
            })?;
        let io = &self.model.config().io;
        let mut data = Vec::new();
        let mut dim = 0;
        for row in 0..batch.batch {
            let mut ids = vec![0i32; seq];
            let mut types = vec![0i32; seq];
            let mut mask = vec![0f32; seq];
            for j in 0..batch.seq {
                ids[j] = batch.ids[row * batch.seq + j] as i32;
                types[j] = batch.type_ids[row * batch.seq + j] as i32;
                mask[j] = batch.mask[row * batch.seq + j] as f32;
            }
            let mut mask_shape = vec![1; self.mask_rank.max(1)];
            if let Some(last) = mask_shape.last_mut() {
                *last = seq;
            }
            let ids_shape = vec![1, seq];
            let mut inputs = vec![
                (
                    io.input_ids.as_str(),
                    HostArray::I32 {
                        shape: ids_shape.clone(),
                        data: ids,
                    },
                ),
                (
                    io.mask.as_str(),
                    HostArray::F32 {
                        shape: mask_shape,
                        data: mask,
                    },
                ),
            ];
            if self.has_type_ids {
                inputs.push((
                    io.token_type_ids.as_str(),
                    HostArray::I32 {
                        shape: ids_shape,
                        data: types,
                    },
                ));
            }
            let out = self.model.predict(&inputs)?;
            match out.get(&io.output) {
                Some(HostArray::F32 { data: v, .. }) => {
                    dim = v.len();
                    data.extend_from_slice(v);
                }
                _ => {
                    return Err(BackendError::Inference(format!(
                        "the package returned no float output named {:?}",
                        io.output
                    )))
                }
            }
        }
        Ok(Embeddings {
            rows: batch.batch,
            dim,
            data,
        })
    }

    fn score(&self, _pairs: &TokenBatch) -> Result<Vec<f32>, BackendError> {
        Err(BackendError::NotSupported(
            "the Core ML backend runs embedder packages; scoring runs on the CPU backend".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_unit_values_follow_apples_header() {
        assert_eq!(ml_compute_units(ComputeUnits::CpuOnly), 0);
        assert_eq!(ml_compute_units(ComputeUnits::CpuAndGpu), 1);
        assert_eq!(ml_compute_units(ComputeUnits::All), 2);
        assert_eq!(ml_compute_units(ComputeUnits::CpuAndNeuralEngine), 3);
    }

    #[test]
    fn strided_reads_skip_padding() {
        // shape (2, 3) stored with row stride 4 (one padding element per row)
        let buf = [1, 2, 3, -1, 4, 5, 6, -1];
        assert_eq!(
            strided_to_dense(&buf, &[2, 3], &[4, 1]),
            Some(vec![1, 2, 3, 4, 5, 6])
        );
        assert_eq!(strided_to_dense(&buf, &[2, 3], &[4]), None);
        assert_eq!(
            strided_to_dense(&buf, &[3, 3], &[4, 1]),
            None,
            "out of bounds is None"
        );
    }

    #[test]
    fn digest_changes_with_content_and_names_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let pkg = d.path().join("m.mlpackage");
        std::fs::create_dir_all(pkg.join("Data/com.apple.CoreML")).unwrap();
        std::fs::write(pkg.join("Manifest.json"), "{}").unwrap();
        std::fs::write(pkg.join("Data/com.apple.CoreML/model.mlmodel"), b"abc").unwrap();
        let a = package_digest(&pkg).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(a, package_digest(&pkg).unwrap());
        std::fs::write(pkg.join("Data/com.apple.CoreML/model.mlmodel"), b"abd").unwrap();
        let b = package_digest(&pkg).unwrap();
        assert_ne!(a, b);
        assert!(compiled_cache_path(Path::new("/c"), &b).ends_with(format!("{b}.mlmodelc")));
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        assert!(package_digest(&d.path().join("empty")).is_err());
        assert!(package_digest(&d.path().join("missing")).is_err());
    }

    #[test]
    fn placement_summary() {
        let op = |t: &str, d: Device, c: Option<f64>| OpPlacement {
            op_type: t.into(),
            outputs: vec![format!("{t}_out")],
            preferred: d,
            supported: vec![d],
            cost: c,
        };
        let r = PlacementReport::from_ops(
            ComputeUnits::CpuAndNeuralEngine,
            vec![
                op("const", Device::None, None),
                op("gather", Device::Cpu, Some(0.1)),
                op("conv", Device::NeuralEngine, Some(0.7)),
                op("reduce_mean", Device::NeuralEngine, Some(0.2)),
            ],
        );
        assert!((r.ane_residency.unwrap() - 0.9).abs() < 1e-12);
        assert!((r.ane_op_share - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.islands.len(), 2);
        assert_eq!(r.by_device.get("ANE"), Some(&2));
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn stub_says_core_ml_needs_macos() {
        let e = CoreMlModel::load(CoreMlConfig::new(
            "x.mlpackage",
            ComputeUnits::CpuAndNeuralEngine,
        ))
        .unwrap_err();
        assert!(matches!(e, CoreMlError::Unsupported(_)));
        assert!(e.to_string().contains("Core ML needs macOS"), "{e}");
        let b =
            CoreMlBackend::load(CoreMlConfig::new("x.mlpackage", ComputeUnits::All)).unwrap_err();
        assert!(BackendError::from(b).to_string().contains("needs macOS"));
    }
}
