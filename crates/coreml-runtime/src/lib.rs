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
/// Where `anectx export coreml` stores its side information (`SideInfo`).
pub const PACKAGE_SIDE_INFO: &str = "Data/com.anectx/anectx.json";

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

/// The cache location of a compiled model: the package's content hash and
/// the OS build (`os_build`, see [`os_build`]), since a model compiled by one
/// Core ML version is not guaranteed to load on another.
pub fn compiled_cache_path(cache_root: &Path, digest: &str, os_build: &str) -> PathBuf {
    let build: String = os_build
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache_root.join(format!("{digest}-{build}.mlmodelc"))
}

/// The OS build compiled models are keyed by: NSProcessInfo's
/// `operatingSystemVersionString` (e.g. "Version 14.4 (Build 23E214)") on
/// Apple platforms, the OS name elsewhere.
pub fn os_build() -> String {
    imp::os_build()
}

/// A name part no other process or thread uses at the same time: the
/// process id, a per-process counter and 64 random bits (from std's
/// randomly seeded hasher), e.g. for temporary packages and staging folders.
pub fn unique_suffix() -> String {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let random = std::collections::hash_map::RandomState::new().hash_one((nanos, n));
    format!("{}-{n}-{random:016x}", std::process::id())
}

/// The default cache root: `$ANECTX_CACHE/coreml`, else
/// `~/Library/Caches/anectx/coreml` on macOS, else `~/.cache/anectx/coreml`.
/// Without `ANECTX_CACHE` or an absolute `HOME` it is an error (never a
/// folder relative to the working directory).
pub fn default_cache_root() -> Result<PathBuf, CoreMlError> {
    cache_root_from(
        std::env::var_os("ANECTX_CACHE").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn cache_root_from(
    anectx_cache: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, CoreMlError> {
    if let Some(p) = anectx_cache.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p.join("coreml"));
    }
    let home = home
        .filter(|h| h.is_absolute())
        .ok_or_else(|| CoreMlError::Io {
            path: PathBuf::from("$HOME"),
            message: "no cache folder for compiled Core ML models: HOME is unset or not absolute; \
                  set ANECTX_CACHE (or HOME)"
                .into(),
        })?;
    Ok(if cfg!(target_vendor = "apple") {
        home.join("Library/Caches/anectx/coreml")
    } else {
        home.join(".cache/anectx/coreml")
    })
}

fn io_error(p: &Path, e: std::io::Error) -> CoreMlError {
    CoreMlError::Io {
        path: p.to_path_buf(),
        message: e.to_string(),
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// Compiles `package` with `compile` unless a compilation of the same
/// content on the same OS build is cached under `cache_root`, and returns
/// the cached `.mlmodelc`. `compile` returns a folder (Core ML's temporary
/// compiled model) that is moved into the cache: first to a staging name no
/// other thread or process uses ([`unique_suffix`]), then renamed into place
/// in one step, so concurrent loads of one package never see a partial
/// model; when another load won the race its copy is kept and ours removed.
pub fn compile_cached(
    package: &Path,
    cache_root: &Path,
    os_build: &str,
    compile: impl FnOnce(&Path) -> Result<PathBuf, CoreMlError>,
) -> Result<PathBuf, CoreMlError> {
    let digest = package_digest(package)?;
    let dst = compiled_cache_path(cache_root, &digest, os_build);
    if dst.is_dir() {
        tracing::debug!(path = %dst.display(), "reusing compiled model");
        return Ok(dst);
    }
    std::fs::create_dir_all(cache_root).map_err(|e| io_error(cache_root, e))?;
    let tmp = compile(package)?;
    let staging = cache_root.join(format!(".{digest}.{}.partial", unique_suffix()));
    if std::fs::rename(&tmp, &staging).is_err() {
        // Another file system: copy, then drop Core ML's temporary folder.
        if let Err(e) = copy_dir(&tmp, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io_error(&staging, e));
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    match std::fs::rename(&staging, &dst) {
        Ok(()) => Ok(dst),
        Err(_) if dst.is_dir() => {
            // A concurrent load installed the same content first.
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dst)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(io_error(&dst, e))
        }
    }
}

/// Checks that `package` names an `.mlpackage` (Core ML compiles only those
/// from a path; a compiled `.mlmodelc` or a lone `.mlmodel` is refused here
/// with a clear message rather than by Core ML).
pub fn check_package_path(package: &Path) -> Result<(), CoreMlError> {
    let ok = package
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mlpackage"));
    if ok {
        Ok(())
    } else {
        Err(CoreMlError::Input(format!(
            "{} is not an .mlpackage: Core ML models load from an ML Program package \
             (anectx export coreml writes one)",
            package.display()
        )))
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
        check_package_path(&config.package)?;
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

    /// The declared shape of output `name` (from the model description),
    /// when the package declares one.
    pub fn output_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.output_shape(name)
    }

    /// Per-op placement from `MLComputePlan` (macOS 14.4+; older systems
    /// answer [`CoreMlError::Unsupported`]).
    pub fn placement(&self) -> Result<PlacementReport, CoreMlError> {
        Ok(PlacementReport::from_ops(
            self.config.units,
            self.inner.placement(&self.config)?,
        ))
    }
}

/// The padding id recorded in an anectx package's side data
/// (`Data/com.anectx/anectx.json`), 0 when absent.
fn package_pad_id(package: &Path) -> i32 {
    std::fs::read(package.join(PACKAGE_SIDE_INFO))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("pad_token_id").and_then(|p| p.as_i64()))
        .map(|p| p as i32)
        .unwrap_or(0)
}

/// The [`Backend`] over a Core ML embedder package exported with in-graph
/// token lookup (`anectx export coreml --ids`): batch 1, one or more
/// enumerated sequence lengths.
#[derive(Debug)]
pub struct CoreMlBackend {
    model: CoreMlModel,
    seq_lengths: Vec<usize>,
    /// Rank of the mask input; None when the package computes the mask from
    /// the ids (one enumerated input below spec 9).
    mask_rank: Option<usize>,
    has_type_ids: bool,
    /// The id padded positions carry (what an in-graph mask compares with).
    pad_id: i32,
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
        let mask_rank = shapes.get(&io.mask).and_then(|s| s.first()).map(Vec::len);
        let has_type_ids = shapes.contains_key(&io.token_type_ids);
        let pad_id = package_pad_id(&model.config().package);
        // (1, D, 1, 1) or (1, D): the product of the declared output shape.
        let dim = model
            .output_shape(&io.output)
            .map(|s| s.iter().product::<usize>())
            .filter(|&d| d > 0);
        Ok(Self {
            model,
            seq_lengths,
            mask_rank,
            has_type_ids,
            pad_id,
            dim,
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
            // Padded positions carry the padding id, so a mask computed in
            // the graph from the ids agrees with the batch's mask.
            let mut ids = vec![self.pad_id; seq];
            let mut types = vec![0i32; seq];
            let mut mask = vec![0f32; seq];
            for j in 0..batch.seq {
                let m = batch.mask[row * batch.seq + j];
                if m != 0 {
                    ids[j] = batch.ids[row * batch.seq + j] as i32;
                }
                types[j] = batch.type_ids[row * batch.seq + j] as i32;
                mask[j] = m as f32;
            }
            let ids_shape = vec![1, seq];
            let mut inputs = vec![(
                io.input_ids.as_str(),
                HostArray::I32 {
                    shape: ids_shape.clone(),
                    data: ids,
                },
            )];
            if let Some(rank) = self.mask_rank {
                let mut mask_shape = vec![1; rank.max(1)];
                if let Some(last) = mask_shape.last_mut() {
                    *last = seq;
                }
                inputs.push((
                    io.mask.as_str(),
                    HostArray::F32 {
                        shape: mask_shape,
                        data: mask,
                    },
                ));
            }
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
        assert!(
            compiled_cache_path(Path::new("/c"), &b, "Version 14.4 (Build 23E214)")
                .ends_with(format!("{b}-Version_14.4__Build_23E214_.mlmodelc"))
        );
        assert_ne!(
            compiled_cache_path(Path::new("/c"), &b, "Version 14.4 (Build 23E214)"),
            compiled_cache_path(Path::new("/c"), &b, "Version 14.5 (Build 23F79)"),
            "another OS build compiles again"
        );
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        assert!(package_digest(&d.path().join("empty")).is_err());
        assert!(package_digest(&d.path().join("missing")).is_err());
    }

    fn tiny_package(dir: &Path) -> PathBuf {
        let pkg = dir.join("m.mlpackage");
        std::fs::create_dir_all(pkg.join("Data/com.apple.CoreML")).unwrap();
        std::fs::write(pkg.join("Manifest.json"), "{}").unwrap();
        std::fs::write(pkg.join("Data/com.apple.CoreML/model.mlmodel"), b"abc").unwrap();
        pkg
    }

    const FAKE_PARTS: usize = 200;

    /// A stand-in for Core ML's compiler: a fresh temporary `.mlmodelc`
    /// folder holding a copy of the model file, written slowly.
    fn fake_compile(pkg: &Path, tmp: &Path) -> Result<PathBuf, CoreMlError> {
        let out = tmp.join(format!("compiled-{}.mlmodelc", unique_suffix()));
        std::fs::create_dir_all(out.join("weights")).unwrap();
        for i in 0..FAKE_PARTS {
            std::fs::write(out.join(format!("weights/part{i}.bin")), [i as u8; 64]).unwrap();
        }
        std::fs::copy(
            pkg.join("Data/com.apple.CoreML/model.mlmodel"),
            out.join("model.mil"),
        )
        .unwrap();
        Ok(out)
    }

    #[test]
    fn concurrent_loads_of_one_package_share_the_cache_safely() {
        // Two loads of the same package compile at the same moment (the
        // barrier) and install into one cache: both get the complete model,
        // and no staging folder is left behind.
        let d = tempfile::tempdir().unwrap();
        let pkg = tiny_package(d.path());
        let root = d.path().join("cache");
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        for round in 0..20 {
            let _ = std::fs::remove_dir_all(&root);
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<Result<PathBuf, CoreMlError>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            compile_cached(&pkg, &root, "test-build", |p| {
                                let out = fake_compile(p, &tmp);
                                barrier.wait();
                                out
                            })
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let paths: Vec<PathBuf> = results
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("round {round}: {e}")))
                .collect();
            assert_eq!(paths[0], paths[1]);
            let dst = &paths[0];
            assert_eq!(std::fs::read(dst.join("model.mil")).unwrap(), b"abc");
            assert_eq!(
                std::fs::read_dir(dst.join("weights")).unwrap().count(),
                FAKE_PARTS,
                "round {round}: a partial model was installed"
            );
            let left: Vec<_> = std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left.len(), 1, "round {round}: {left:?}");
        }
        // A third load reuses the cache without compiling.
        let again = compile_cached(&pkg, &root, "test-build", |_| {
            panic!("the cached model must be reused")
        })
        .unwrap();
        assert!(again.is_dir());
    }

    #[test]
    fn another_loaders_staging_folder_is_left_alone() {
        // Another process is halfway through installing the same package
        // (its staging folder exists, here under the name a fixed scheme
        // would give it). Our load must neither delete nor reuse it.
        let d = tempfile::tempdir().unwrap();
        let pkg = tiny_package(d.path());
        let root = d.path().join("cache");
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let digest = package_digest(&pkg).unwrap();
        let theirs = root.join(format!("{digest}.partial"));
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("half-written.bin"), b"x").unwrap();
        let dst = compile_cached(&pkg, &root, "b", |p| fake_compile(p, &tmp)).unwrap();
        assert!(theirs.join("half-written.bin").is_file(), "deleted");
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1, "reused");
        assert!(!dst.join("half-written.bin").exists());
        assert_eq!(std::fs::read(dst.join("model.mil")).unwrap(), b"abc");
    }

    #[test]
    fn unique_suffixes_differ_across_threads() {
        let all: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..100).map(|_| unique_suffix()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let set: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert!(all[0].starts_with(&format!("{}-", std::process::id())));
    }

    #[test]
    fn cache_root_needs_an_absolute_home_or_anectx_cache() {
        let r = cache_root_from(None, None).unwrap_err();
        assert!(r.to_string().contains("ANECTX_CACHE"), "{r}");
        assert!(cache_root_from(None, Some(PathBuf::from(""))).is_err());
        assert!(cache_root_from(None, Some(PathBuf::from("rel/home"))).is_err());
        let h = cache_root_from(None, Some(PathBuf::from("/home/u"))).unwrap();
        assert!(h.starts_with("/home/u") && h.ends_with("anectx/coreml"));
        assert_eq!(
            cache_root_from(Some(PathBuf::from("/c")), None).unwrap(),
            PathBuf::from("/c/coreml")
        );
    }

    #[test]
    fn only_mlpackages_load() {
        for bad in ["m.mlmodel", "m.mlmodelc", "m", "m.mlpackage/x"] {
            let e = CoreMlModel::load(CoreMlConfig::new(bad, ComputeUnits::All)).unwrap_err();
            assert!(
                matches!(e, CoreMlError::Input(_)) && e.to_string().contains(".mlpackage"),
                "{bad}: {e}"
            );
        }
        assert!(check_package_path(Path::new("a/M.MLPACKAGE")).is_ok());
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
