//! `--backend auto` (issue 22): on Apple platforms the active embedder is
//! exported to Core ML once (cached by the model's identity and the
//! exporter's format), compiled and loaded on the CPU and Neural Engine, and
//! used only when its embeddings match candle's on a fixed probe set
//! (cosine ≥ [`MIN_COSINE`] for every probe text). Otherwise, and on every
//! other platform, candle runs, with one line saying why.
//!
//! The decision is a [`BackendChoice`]; `anectx status`, `serve`'s `/info`
//! and `embed --json` show it. [`choose_with`] takes the loader as an
//! argument, so the export, the cache, the probe and the fallback are tested
//! on Linux with this crate's MIL executor standing in for Core ML.

use std::path::{Path, PathBuf};

use anectx_core::{Backend, BackendChoice, BackendRequest, ComputeUnits, Parity, TokenBatch};
use anectx_coreml_runtime as rt;
use anectx_models::TextTokenizer;
use sha2::{Digest, Sha256};

use crate::error::{io_err, CoremlError, Result};
use crate::export::{export_model, load_model_dir, write_exported, ExportOptions, Exportable};

/// The model to export: a model folder, or the embedder built into the
/// binary (exported straight from memory, no files written first).
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    Dir(&'a Path),
    Builtin,
}

impl ModelSource<'_> {
    /// The model in f32 and its `tokenizer.json`.
    fn load(&self) -> Result<(Exportable, Vec<u8>)> {
        match self {
            ModelSource::Dir(d) => load_model_dir(d),
            ModelSource::Builtin => {
                use anectx_models::{default_model, Embedder, WeightDtype};
                let m = match default_model::load(WeightDtype::F32)? {
                    Embedder::Conv(c) => Exportable::ConvEmbedder(c),
                    Embedder::Bert(b) => Exportable::Bert(b),
                };
                Ok((m, default_model::TOKENIZER_JSON.to_vec()))
            }
        }
    }
}

/// The lowest cosine similarity with candle any probe text may have.
pub const MIN_COSINE: f32 = 0.999;

/// Bumped whenever the exported program for the same model could change, so
/// cached packages from an older exporter are not reused.
pub const EXPORT_FORMAT: u32 = 1;

/// Texts the Core ML model must embed like candle before it is used: short
/// and long, prose, code, numbers, non-ASCII; [`probe_texts`] adds one long
/// enough to be cut at the largest length. They are fixed and chosen for
/// variety of shape, not for any collection.
pub const PROBE: &[&str] = &[
    "hello",
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "fn main() { println!(\"{}\", 40 + 2); } // prints 42",
    "Invoice #2024-117: 3 × 19.99 EUR, due 2026-01-31.",
    "Café, naïve, Zürich, São Paulo, Kraków — déjà vu.",
    "東京都の天気は晴れです。",
    "ERROR 2026-03-04T05:06:07Z worker=7 timeout after 30s; retrying (attempt 3/5)",
    "Photosynthesis converts light energy into chemical energy stored in glucose, \
     releasing oxygen as a by-product; it takes place in the chloroplasts of plant cells.",
    "To configure the service, copy the example file to config.toml, set the listen \
     address and the data directory, then restart it. Logs are written to the journal; \
     use the status command to see whether it is healthy, and the reload command after \
     changing the file. Older versions read settings from the environment only, so \
     remove any variables you set for them before upgrading, or they will override the \
     file without warning.",
];

/// [`PROBE`] and a text longer than the largest sequence length (512), so
/// the probe also checks that both backends cut it at the same place.
pub fn probe_texts() -> Vec<String> {
    let mut v: Vec<String> = PROBE.iter().map(|s| s.to_string()).collect();
    v.push(format!("{LONG_PROBE} {LONG_PROBE}"));
    v
}

const LONG_PROBE: &str = "A library keeps books, journals, maps and recordings, and lends \
    them to its members for a few weeks at a time. Members search the catalogue by title, \
    author or subject, reserve items that are out, and collect them at the desk. Rare items \
    stay in a reading room. The staff buy new titles each year from a budget set by the \
    council, remove worn copies, and repair what can be repaired. Many libraries also run \
    reading groups for children, offer computers and printing, and host talks in the \
    evening. A good catalogue is the heart of it: without accurate records, nobody finds \
    anything, and the best collection in the world sits unread on its shelves. Records \
    describe each item once, link it to its authors and subjects, and note where each copy \
    is and whether it is on loan. Interlibrary loans bring in what the library does not \
    hold, and digital lending adds e-books and audiobooks that never need a shelf at all. \
    Opening hours, quiet rooms, and friendly help at the desk matter as much as the books. \
    Written twice over, this paragraph is long enough to be cut at the largest sequence length, so the \
    probe also checks that both backends truncate a long text the same way, word for word, \
    token for token, at exactly the same place, which is what a user indexing long files \
    relies on when the vectors of one backend are searched with queries of the other.";

/// The export options `auto` uses: token ids in (one enumerated input, the
/// mask computed in the graph, spec 7 for macOS 13+) at the tokenizer's own
/// sequence lengths, so both backends see the same tokens.
pub fn export_options(seq_lengths: &[usize]) -> ExportOptions {
    ExportOptions {
        seq_lengths: seq_lengths.to_vec(),
        ids_input: true,
        spec_version: 7,
    }
}

/// The cache key of a model's package: its identity (content fingerprint),
/// the export options and [`EXPORT_FORMAT`]. (The compiled model is cached by
/// the runtime under the package's digest and the OS build.)
pub fn package_key(model_identity: &str, opts: &ExportOptions) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "anectx-auto/{EXPORT_FORMAT}\0{model_identity}\0{:?}\0{}\0{}",
        opts.seq_lengths, opts.ids_input, opts.spec_version
    ));
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The package for `model` under `cache_root/auto/`, exported now when
/// it is not there yet. Returns the path and whether it was exported by
/// this call. The package is written under a name no other process uses
/// and renamed into place in one step; when another process won the race,
/// its package is kept and ours removed.
pub fn cached_package(
    model: &ModelSource<'_>,
    model_identity: &str,
    cache_root: &Path,
    opts: &ExportOptions,
) -> Result<(PathBuf, bool)> {
    let dir = cache_root.join("auto");
    let path = dir.join(format!("{}.mlpackage", package_key(model_identity, opts)));
    if is_complete(&path) {
        return Ok((path, false));
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let staging = dir.join(format!(".export-{}.mlpackage", rt::unique_suffix()));
    let result = (|| {
        let (m, tokenizer) = model.load()?;
        let mut exported = export_model(&m, opts)?;
        exported.tokenizer_json = Some(tokenizer);
        write_exported(&exported, &staging, false)?;
        Ok::<_, CoremlError>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&staging, &path) {
        let _ = std::fs::remove_dir_all(&staging);
        if !is_complete(&path) {
            return Err(io_err(&path)(e));
        }
        return Ok((path, false));
    }
    Ok((path, true))
}

/// A finished package: the manifest is written last by the writer's rename.
fn is_complete(path: &Path) -> bool {
    path.join("Manifest.json").is_file()
}

/// Embeds every [`probe_texts`] text with both backends, one text per call (so
/// each runs at its own sequence length) and compares them.
pub fn parity(
    reference: &dyn Backend,
    candidate: &dyn Backend,
    tokenizer: &TextTokenizer,
) -> Result<Parity> {
    let texts = probe_texts();
    let mut cosines = Vec::with_capacity(texts.len());
    for text in &texts {
        let batch: TokenBatch = tokenizer.encode_batch(&[text.as_str()])?;
        let a = reference
            .embed(&batch)
            .map_err(|e| CoremlError::Unsupported(format!("candle failed on the probe: {e}")))?;
        let b = candidate.embed(&batch).map_err(|e| {
            CoremlError::Unsupported(format!("{} failed on the probe: {e}", candidate.name()))
        })?;
        if a.rows != 1 || b.rows != 1 || a.dim != b.dim {
            return Err(CoremlError::Unsupported(format!(
                "{} answered {}×{} where candle answered {}×{}",
                candidate.name(),
                b.rows,
                b.dim,
                a.rows,
                a.dim
            )));
        }
        cosines.push(cosine(a.row(0), b.row(0)));
    }
    let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len().max(1) as f32;
    Ok(Parity {
        texts: cosines.len(),
        min_cosine: if min.is_finite() { min } else { 0.0 },
        mean_cosine: mean,
        threshold: MIN_COSINE,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 || !ab.is_finite() {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// What `auto` (or `coreml`) is asked to prepare.
pub struct Request<'a> {
    pub requested: BackendRequest,
    /// The model to export when no package is cached yet.
    pub model: ModelSource<'a>,
    /// The identity stores know the model by (its content fingerprint).
    pub model_identity: &'a str,
    /// The candle backend, the reference for the probe.
    pub reference: &'a dyn Backend,
    /// The model's tokenizer (its lengths are the package's lengths).
    pub tokenizer: &'a TextTokenizer,
    pub units: ComputeUnits,
    /// Where packages are cached (`None`: the runtime's default root).
    pub cache_root: Option<PathBuf>,
}

/// A loaded candidate and a summary of its placement report.
pub struct Loaded {
    pub backend: Box<dyn Backend>,
    /// Cost-weighted share on the Neural Engine (op share without costs).
    pub ane_share: Option<f64>,
    /// Operations per device.
    pub ops_by_device: Option<std::collections::BTreeMap<String, usize>>,
}

/// The decision.
pub enum Outcome {
    /// Use this backend (it passed the probe) with this tokenizer.
    CoreMl {
        backend: Box<dyn Backend>,
        tokenizer: Box<TextTokenizer>,
        choice: BackendChoice,
    },
    /// Use candle; `choice.reason` says why.
    Candle { choice: BackendChoice },
}

impl Outcome {
    pub fn choice(&self) -> &BackendChoice {
        match self {
            Outcome::CoreMl { choice, .. } | Outcome::Candle { choice } => choice,
        }
    }
}

/// Loads a package with Core ML (the real loader). Where Core ML is not
/// available the runtime's stub answers why.
pub fn load_coreml(package: &Path, units: ComputeUnits) -> std::result::Result<Loaded, String> {
    let b = rt::CoreMlBackend::load(rt::CoreMlConfig::new(package, units))
        .map_err(|e| e.to_string())?;
    // MLComputePlan exists from macOS 14.4; older systems answer Unsupported.
    let (ane_share, ops_by_device) = match b.model().placement() {
        Ok(p) => (p.ane_residency.or(Some(p.ane_op_share)), Some(p.by_device)),
        Err(e) => {
            tracing::debug!("no placement report: {e}");
            (None, None)
        }
    };
    Ok(Loaded {
        backend: Box::new(b),
        ane_share,
        ops_by_device,
    })
}

/// The decision on this platform: on Apple platforms [`choose_with`] with
/// [`load_coreml`]; elsewhere `auto` is candle (and `coreml` says it needs
/// macOS).
pub fn choose(req: &Request<'_>) -> Outcome {
    if cfg!(target_vendor = "apple") || req.requested == BackendRequest::Candle {
        return choose_with(req, load_coreml);
    }
    candle(req, not_apple(req.requested))
}

/// The decision with a given loader: export (or reuse) the package, load
/// it, run the probe, and use it only when every probe text's cosine with
/// candle is at least [`MIN_COSINE`].
pub fn choose_with(
    req: &Request<'_>,
    load: impl FnOnce(&Path, ComputeUnits) -> std::result::Result<Loaded, String>,
) -> Outcome {
    if req.requested == BackendRequest::Candle {
        return candle(req, "asked for candle");
    }
    let opts = export_options(req.tokenizer.buckets());
    let root = match &req.cache_root {
        Some(r) => r.clone(),
        None => match rt::default_cache_root() {
            Ok(r) => r,
            Err(e) => return candle(req, format!("no cache folder for the Core ML package: {e}")),
        },
    };
    let (package, exported) = match cached_package(&req.model, req.model_identity, &root, &opts) {
        Ok(p) => p,
        Err(e) => {
            return candle(
                req,
                format!("exporting the embedder to Core ML failed: {e}"),
            )
        }
    };
    if exported {
        tracing::info!(package = %package.display(), "exported the embedder to Core ML");
    }
    let with_package = |mut c: BackendChoice| {
        c.package = Some(package.clone());
        c
    };
    let loaded = match load(&package, req.units) {
        Ok(l) => l,
        Err(e) => {
            return Outcome::Candle {
                choice: with_package(candle_choice(
                    req,
                    format!("Core ML could not load it: {e}"),
                )),
            }
        }
    };
    let tokenizer = req.tokenizer.clone().with_buckets(opts.seq_lengths.clone());
    // A pass is remembered for this package, OS build and compute units, so
    // later commands do not embed the probe twice at every start.
    let verdict = verdict_path(&package, req.units);
    let parity = match read_verdict(&verdict) {
        Some(p) => p,
        None => match parity(req.reference, loaded.backend.as_ref(), &tokenizer) {
            Ok(p) => {
                if p.passes() {
                    write_verdict(&verdict, &p);
                }
                p
            }
            Err(e) => {
                return Outcome::Candle {
                    choice: with_package(candle_choice(req, format!("the probe failed: {e}"))),
                }
            }
        },
    };
    if !parity.passes() {
        let mut c = with_package(candle_choice(
            req,
            format!(
                "{} differs from candle on the probe (lowest cosine {:.5} < {MIN_COSINE})",
                loaded.backend.name(),
                parity.min_cosine
            ),
        ));
        c.parity = Some(parity);
        c.ane_share = loaded.ane_share;
        c.ops_by_device = loaded.ops_by_device;
        return Outcome::Candle { choice: c };
    }
    let choice = BackendChoice {
        requested: req.requested,
        used: loaded.backend.name().to_string(),
        reason: format!(
            "matches candle on {} probe texts (lowest cosine {:.5})",
            parity.texts, parity.min_cosine
        ),
        compute_units: Some(req.units),
        package: Some(package.clone()),
        parity: Some(parity),
        ane_share: loaded.ane_share,
        ops_by_device: loaded.ops_by_device,
    };
    Outcome::CoreMl {
        backend: loaded.backend,
        tokenizer: Box::new(tokenizer),
        choice,
    }
}

/// Why Core ML is not used off Apple platforms.
pub fn not_apple(requested: BackendRequest) -> &'static str {
    match requested {
        BackendRequest::Auto => "auto runs candle (CPU) here: Core ML runs only on Apple platforms",
        _ => rt::NEEDS_MACOS,
    }
}

/// Where a passing probe is remembered: beside the package, named by the OS
/// build and the compute units (the package's name already carries the
/// model's identity and the export format).
pub fn verdict_path(package: &Path, units: ComputeUnits) -> PathBuf {
    let os: String = rt::os_build()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    package.with_extension(format!("{os}.{}.parity.json", units.short_name()))
}

/// A remembered pass, if there is a readable one that still passes.
fn read_verdict(path: &Path) -> Option<Parity> {
    let p: Parity = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (p.passes() && p.threshold >= MIN_COSINE && p.texts == probe_texts().len()).then_some(p)
}

/// Writes a pass under a unique name, then renames it into place; a failure
/// only means the probe runs again next time.
fn write_verdict(path: &Path, p: &Parity) {
    let tmp = path.with_extension(format!("{}.tmp", rt::unique_suffix()));
    let ok = serde_json::to_vec(p)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|_| std::fs::rename(&tmp, path).ok());
    if ok.is_none() {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn candle_choice(req: &Request<'_>, reason: impl Into<String>) -> BackendChoice {
    let mut c = BackendChoice::candle(req.requested, reason);
    c.used = req.reference.name().to_string();
    c
}

fn candle(req: &Request<'_>, reason: impl Into<String>) -> Outcome {
    Outcome::Candle {
        choice: candle_choice(req, reason),
    }
}
