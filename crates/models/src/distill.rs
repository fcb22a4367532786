//! Distillation of a [`ConvEmbedder`] student from a BERT sentence embedder.
//!
//! The method, in four phases:
//!
//! 1. **Teacher token vectors.** The teacher embeds every vocabulary token on
//!    its own (`[CLS] t [SEP]`). The vectors are centred and reduced to the
//!    student's width with PCA (Jacobi eigen-decomposition of the covariance
//!    in f64), and each row is scaled by a SIF weight `a / (a + p(t))` with
//!    token frequencies counted on the training corpus. This initialises the
//!    student's embedding table; the projection starts as the PCA components,
//!    and every convolution block starts as the identity (channel LayerNorm
//!    weight and bias zero, so GELU(0) = 0 and only the residual remains).
//!    At step 0 the student is therefore the SIF-weighted mean of the
//!    teacher's token vectors.
//! 2. **Teacher sentence vectors**, computed once for every passage of the
//!    corpus and cached on disk (`<out>/cache/`), appended chunk by chunk so an
//!    interrupted run keeps what it computed.
//! 3. **Pseudo-queries.** Each passage gets one query of its own, fixed by
//!    the seed: its heading when the corpus line is `HEADING<TAB>BODY`, else
//!    one of its sentences (inverse cloze), else a span of its words. The
//!    teacher embeds them too (cached like the passages). With hard
//!    negatives, each query's hard negative is the training passage the
//!    teacher ranks first for it, other than its own.
//! 4. **Training**: loss = (1 − cos(student, teacher)) + λ · InfoNCE over the
//!    in-batch student-vs-teacher similarities, plus, with `pair_weight` μ > 0,
//!    μ times the sum of KL(teacher ‖ student) over each query's softmax
//!    across the batch's passages and hard negatives (the teacher's
//!    similarities are the soft targets) and (1 − cos) of the query vectors.
//!    AdamW with warm-up and cosine decay, a held-out split evaluated every `checkpoint_every` steps (cosine
//!    to the teacher on passages and on queries, and how often the student's
//!    best held-out passage for a held-out query is the teacher's), the best
//!    and last weights kept under `<out>/checkpoints/` (`--resume` continues
//!    from the last one; the optimiser moments restart), and with
//!    `export_checkpoints` every evaluated step written as a model directory
//!    under `<out>/steps/` (for a learning curve in nDCG).
//!
//! The result is a model directory (`config.json`, fp16 `model.safetensors`,
//! `tokenizer.json`, `metrics.json`) written to `out`.
//!
//! The teacher always runs on the CPU (its fused kernels are CPU kernels);
//! the student trains on any candle device (`Device::new_cuda(0)` when built
//! with the `cuda` feature).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use crate::conv_embedder::CONV_EMBEDDER_ARCH;
use crate::io::{load_embedder, save_model_dir, Embedder, TOKENIZER_FILE};
use crate::weights::Rng;
use crate::{AneBert, ConvEmbedder, ConvEmbedderConfig, ModelError, Result, WeightDtype};

/// File with the training summary inside a distilled model directory.
pub const METRICS_FILE: &str = "metrics.json";

/// Everything `anectx distill` can set.
#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// Hugging Face BERT sentence-embedder directory (e.g. all-MiniLM-L6-v2).
    pub teacher: PathBuf,
    /// Text files (one passage per line) or folders of `.txt` files.
    pub corpus: Vec<PathBuf>,
    /// Output model directory; `checkpoints/` and `cache/` go inside it.
    pub out: PathBuf,
    /// Student embedding width (= every block's width).
    pub embed_dim: usize,
    /// Kernel width of each convolution block.
    pub kernel_sizes: Vec<usize>,
    /// Passages are cut to this many tokens (specials included).
    pub max_tokens: usize,
    /// Use at most this many passages (0: all).
    pub max_passages: usize,
    /// Passages held out for evaluation.
    pub holdout: usize,
    pub batch_size: usize,
    pub max_steps: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// λ, the weight of the in-batch contrastive term.
    pub contrastive_weight: f64,
    pub temperature: f64,
    /// The `a` of the SIF weights `a / (a + p(t))`.
    pub sif_a: f64,
    pub checkpoint_every: usize,
    pub seed: u64,
    pub resume: bool,
    /// Start from this model directory's weights (a ConvEmbedder with the same
    /// configuration, e.g. an earlier distillation, or with fewer blocks: the
    /// student's extra blocks then start as the identity) instead of the
    /// PCA/SIF initialisation. Ignored when `resume` finds a checkpoint.
    pub init: Option<PathBuf>,
    /// μ, the weight of the (pseudo-query, passage) term; 0 turns it off.
    pub pair_weight: f64,
    /// Add each query's mined hard negative to the batch's passages.
    pub hard_negatives: bool,
    /// Pseudo-queries are cut to this many tokens (specials included).
    pub query_tokens: usize,
    /// Write every evaluated step as a model directory under `<out>/steps/`.
    pub export_checkpoints: bool,
    /// Where the student trains.
    pub device: Device,
    /// The command line, recorded in `metrics.json`.
    pub command: String,
}

impl DistillOptions {
    /// Defaults for everything but the paths.
    pub fn new(teacher: PathBuf, corpus: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            teacher,
            corpus,
            out,
            embed_dim: 192,
            kernel_sizes: vec![3, 3],
            max_tokens: 64,
            max_passages: 0,
            holdout: 500,
            batch_size: 64,
            max_steps: 2000,
            lr: 2e-3,
            warmup_steps: 50,
            contrastive_weight: 0.1,
            temperature: 0.05,
            sif_a: 1e-3,
            checkpoint_every: 200,
            seed: 42,
            resume: false,
            init: None,
            pair_weight: 0.0,
            hard_negatives: true,
            query_tokens: 32,
            export_checkpoints: false,
            device: Device::Cpu,
            command: String::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ModelError::Input(m.to_string()));
        if self.embed_dim == 0 || self.kernel_sizes.is_empty() {
            return bad("embed_dim must be positive and there must be at least one block");
        }
        if self.kernel_sizes.iter().any(|k| k % 2 == 0) {
            return bad("kernel sizes must be odd");
        }
        if self.max_tokens < 3 || self.query_tokens < 3 {
            return bad("max_tokens and query_tokens must be at least 3");
        }
        if !(self.pair_weight >= 0.0 && self.pair_weight.is_finite()) {
            return bad("pair_weight must be 0 or positive");
        }
        if self.batch_size < 2 {
            return bad("batch_size must be at least 2 (the contrastive term needs negatives)");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every must be positive");
        }
        if !(self.temperature > 0.0 && self.lr > 0.0 && self.sif_a > 0.0) {
            return bad("temperature, lr and sif_a must be positive");
        }
        if self.corpus.is_empty() {
            return bad("no corpus given");
        }
        Ok(())
    }
}

/// Which part of the run a [`Progress`] report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The teacher embeds every vocabulary token.
    TeacherVocab,
    /// The teacher embeds the corpus passages.
    TeacherCorpus,
    /// The teacher embeds the pseudo-queries.
    TeacherQueries,
    Train,
}

/// A progress report; `loss` is the running training loss.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: Phase,
    pub done: usize,
    pub total: usize,
    pub loss: Option<f32>,
    pub heldout_cosine: Option<f32>,
}

/// What a run did; also written to `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillMetrics {
    /// This run's command line.
    pub command: String,
    /// Every command line that trained these weights (the first run, then
    /// each `--resume`).
    pub commands: Vec<String>,
    pub teacher: String,
    pub corpus: CorpusInfo,
    pub student: ConvEmbedderConfig,
    pub parameters: usize,
    pub train_passages: usize,
    pub heldout_passages: usize,
    pub steps: usize,
    pub best_step: usize,
    /// Mean cosine to the teacher on the held-out passages at step 0 (the
    /// SIF/PCA initialisation alone).
    pub heldout_cosine_init: f32,
    /// The same for the best checkpoint (f32 weights).
    pub heldout_cosine_best: f32,
    /// What chose the best checkpoint.
    #[serde(default)]
    pub selected_by: String,
    /// The same for the saved fp16 model, reloaded from disk.
    pub heldout_cosine_saved: f32,
    pub history: Vec<EvalPoint>,
    pub hyperparameters: serde_json::Value,
}

/// The corpus a run read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorpusInfo {
    pub files: Vec<String>,
    pub bytes: u64,
    /// Distinct non-empty lines read.
    pub passages: usize,
    /// blake3 of every file's bytes, in order.
    pub blake3: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    /// Mean training loss since the previous point (none at step 0).
    pub loss: Option<f32>,
    pub heldout_cosine: f32,
    /// Mean cosine to the teacher on the held-out passages' pseudo-queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_query_cosine: Option<f32>,
    /// Share of held-out queries whose best held-out passage under the
    /// student is the teacher's best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_agreement: Option<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: usize,
    best_step: usize,
    best_cosine: f32,
    /// The selection score of the best step (see [`DistillMetrics::selected_by`]);
    /// absent in runs before it existed, whose score was the passage cosine.
    #[serde(default)]
    best_score: Option<f32>,
    init_cosine: f32,
    history: Vec<EvalPoint>,
    config: ConvEmbedderConfig,
    /// Every command line that trained these weights, first run first.
    #[serde(default)]
    commands: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the corpus: every distinct non-empty line of the given files (and
/// of the `.txt` files under given folders, in name order).
pub fn read_corpus(paths: &[PathBuf]) -> Result<(Vec<String>, CorpusInfo)> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            let mut found = Vec::new();
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).map_err(io_err(&d))? {
                    let path = e.map_err(io_err(&d))?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|x| x == "txt") {
                        found.push(path);
                    }
                }
            }
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(ModelError::Input(format!(
                "corpus path {} does not exist",
                p.display()
            )));
        }
    }
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let mut seen = HashSet::new();
    let mut passages = Vec::new();
    for f in &files {
        let mut buf = Vec::new();
        std::fs::File::open(f)
            .and_then(|mut h| h.read_to_end(&mut buf))
            .map_err(io_err(f))?;
        hasher.update(&buf);
        bytes += buf.len() as u64;
        for line in String::from_utf8_lossy(&buf).lines() {
            let line = line.trim();
            if !line.is_empty() && seen.insert(line.to_string()) {
                passages.push(line.to_string());
            }
        }
    }
    if passages.is_empty() {
        return Err(ModelError::Input(format!(
            "the corpus ({} file(s)) has no non-empty lines to train on",
            files.len()
        )));
    }
    let info = CorpusInfo {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        bytes,
        passages: passages.len(),
        blake3: hasher.finalize().to_hex().to_string(),
    };
    Ok((passages, info))
}

/// Loads the teacher (a BERT sentence embedder) on the CPU.
fn load_teacher(dir: &Path) -> Result<(AneBert, Tokenizer, PathBuf)> {
    if !dir.is_dir() {
        return Err(ModelError::Input(format!(
            "teacher {} does not exist (pass a Hugging Face BERT sentence-embedder directory, \
             e.g. .fixtures/all-minilm-l6-v2)",
            dir.display()
        )));
    }
    let (model, _) = load_embedder(dir, WeightDtype::F32)
        .map_err(|e| ModelError::Input(format!("could not load teacher {}: {e}", dir.display())))?;
    let Embedder::Bert(bert) = model else {
        return Err(ModelError::Unsupported(format!(
            "teacher {} is not a BERT sentence embedder",
            dir.display()
        )));
    };
    let tok_path = dir.join(TOKENIZER_FILE);
    let tok = Tokenizer::from_file(&tok_path).map_err(|e| {
        ModelError::Tokenizer(format!("could not load {}: {e}", tok_path.display()))
    })?;
    Ok((*bert, tok, tok_path))
}

/// Token ids of each text, with special tokens, cut to `max_tokens`.
fn tokenize_all(tok: &Tokenizer, texts: &[String], max_tokens: usize) -> Result<Vec<Vec<u32>>> {
    let mut tok = tok.clone();
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_tokens,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        ..Default::default()
    }))
    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(1024) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let enc = tok
            .encode_batch(refs, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        out.extend(enc.into_iter().map(|e| e.get_ids().to_vec()));
    }
    Ok(out)
}

/// `(B, S)` id and mask tensors for `rows`, padded with 0 to the longest.
fn pad_batch(rows: &[&[u32]], device: &Device) -> Result<(Tensor, Tensor)> {
    let s = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut ids = vec![0u32; rows.len() * s];
    let mut mask = vec![0u32; rows.len() * s];
    for (i, r) in rows.iter().enumerate() {
        ids[i * s..i * s + r.len()].copy_from_slice(r);
        mask[i * s..i * s + r.len()].fill(1);
    }
    Ok((
        Tensor::from_vec(ids, (rows.len(), s), device)?,
        Tensor::from_vec(mask, (rows.len(), s), device)?,
    ))
}

/// Teacher embeddings (L2-normalised) of token-id rows, batched by length.
fn teacher_embed(teacher: &AneBert, rows: &[&[u32]], batch: usize) -> Result<Vec<f32>> {
    let dim = teacher.hidden_size();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].len());
    let mut out = vec![0f32; rows.len() * dim];
    for idx in order.chunks(batch) {
        let sel: Vec<&[u32]> = idx.iter().map(|&i| rows[i]).collect();
        let (ids, mask) = pad_batch(&sel, &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let e = teacher
            .forward(&ids, &types, &mask)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (k, &i) in idx.iter().enumerate() {
            out[i * dim..(i + 1) * dim].copy_from_slice(&e[k * dim..(k + 1) * dim]);
        }
    }
    Ok(out)
}

/// Reads whole f32 rows of `dim` from a cache file (a partial last row is dropped).
fn read_cache(path: &Path, dim: usize) -> Result<Vec<f32>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let rows = bytes.len() / (4 * dim);
    Ok(bytes[..rows * dim * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn write_rows(path: &Path, rows: &[f32], append: bool) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .map_err(io_err(path))?;
    let mut buf = Vec::with_capacity(rows.len() * 4);
    for v in rows {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    f.write_all(&buf).map_err(io_err(path))
}

/// Eigen-decomposition of a symmetric `n×n` matrix (row-major, f64) by cyclic
/// Jacobi rotations. Returns eigenvalues in decreasing order and the matching
/// eigenvectors as the columns of a row-major `n×n` matrix.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(ModelError::Input(format!(
            "symmetric_eigen: {} values for a {n}×{n} matrix",
            a.len()
        )));
    }
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-24 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0f64; n * n];
    for (col, &src) in order.iter().enumerate() {
        for r in 0..n {
            vectors[r * n + col] = v[r * n + src];
        }
    }
    Ok((values, vectors))
}

/// The initial student weights (f32, CPU): SIF-weighted PCA token table,
/// identity blocks, projection = PCA components.
fn init_student(
    config: &ConvEmbedderConfig,
    token_vecs: &[f32],
    teacher_dim: usize,
    counts: &[u64],
    sif_a: f64,
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    let (v, d, e) = (config.vocab_size, teacher_dim, config.embed_dim);
    if e > d {
        return Err(ModelError::Input(format!(
            "embed_dim {e} is larger than the teacher's width {d}"
        )));
    }
    let mut mean = vec![0f64; d];
    for row in token_vecs.chunks_exact(d) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= v as f64);
    let mut cov = vec![0f64; d * d];
    let mut centred = vec![0f64; d];
    for row in token_vecs.chunks_exact(d) {
        for ((c, &x), &m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = x as f64 - m;
        }
        for i in 0..d {
            let ci = centred[i];
            let dst = &mut cov[i * d..(i + 1) * d];
            for (o, &cj) in dst.iter_mut().zip(&centred) {
                *o += ci * cj;
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= v as f64);
    let (_values, vecs) = symmetric_eigen(&cov, d)?;
    // components[k][j] = vecs[j][k] for the top e eigenvectors.
    let comp = |k: usize, j: usize| vecs[j * d + k];
    let total: u64 = counts.iter().sum::<u64>().max(1);
    let mut table = vec![0f32; v * e];
    let mut norm_sum = 0f64;
    for (t, row) in token_vecs.chunks_exact(d).enumerate() {
        for ((c, &x), &m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = x as f64 - m;
        }
        let mut n2 = 0f64;
        for k in 0..e {
            let y: f64 = (0..d).map(|j| centred[j] * comp(k, j)).sum();
            table[t * e + k] = y as f32;
            n2 += y * y;
        }
        norm_sum += n2.sqrt();
    }
    // Scale rows to unit mean norm (the projection compensates), then apply
    // the SIF weights.
    let scale = (v as f64 / norm_sum.max(1e-12)) as f32;
    for (t, row) in table.chunks_exact_mut(e).enumerate() {
        let p = counts.get(t).copied().unwrap_or(0) as f64 / total as f64;
        let w = (sif_a / (sif_a + p)) as f32;
        row.iter_mut().for_each(|x| *x *= scale * w);
    }
    let mut proj = vec![0f32; d * e];
    for j in 0..d {
        for k in 0..e {
            proj[j * e + k] = comp(k, j) as f32 / scale;
        }
    }
    let dev = Device::Cpu;
    let mut out = vec![(
        "embeddings.weight".to_string(),
        Tensor::from_vec(table, (v, e), &dev)?,
    )];
    let mut rng = Rng::new(seed);
    for (i, &k) in config.kernel_sizes.iter().enumerate() {
        identity_block(i, e, k, &mut rng, &mut out)?;
    }
    out.push(("proj.weight".into(), Tensor::from_vec(proj, (d, e), &dev)?));
    out.push(("proj.bias".into(), Tensor::zeros(d, DType::F32, &dev)?));
    Ok(out)
}

/// Block `i` (width `e`, kernel `k`) as the identity: a random convolution
/// behind a LayerNorm of zero gain and shift, so the residual passes its input
/// through unchanged until training moves the gain.
fn identity_block(
    i: usize,
    e: usize,
    k: usize,
    rng: &mut Rng,
    out: &mut Vec<(String, Tensor)>,
) -> Result<()> {
    let dev = Device::Cpu;
    let std = (1.0 / (e * k) as f32).sqrt();
    out.push((
        format!("blocks.{i}.conv.weight"),
        crate::weights::randn(&[e, e, 1, k], std, rng)?,
    ));
    for part in ["conv.bias", "norm.weight", "norm.bias"] {
        out.push((
            format!("blocks.{i}.{part}"),
            Tensor::zeros(e, DType::F32, &dev)?,
        ));
    }
    Ok(())
}

fn shuffle(v: &mut [usize], seed: u64) {
    let mut rng = Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

fn lr_at(o: &DistillOptions, step: usize) -> f64 {
    if step < o.warmup_steps {
        return o.lr * (step + 1) as f64 / o.warmup_steps as f64;
    }
    let span = o.max_steps.saturating_sub(o.warmup_steps).max(1) as f64;
    let t = ((step - o.warmup_steps) as f64 / span).min(1.0);
    o.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Weights of an existing model directory to start from, as f32. Its
/// configuration must equal the student's, or be the student's with fewer
/// blocks: the student then grows, its extra blocks (after the model's own)
/// starting as the identity, so that at step 0 it embeds exactly as the
/// model does and training only adds what the new blocks learn.
fn load_init(dir: &Path, config: &ConvEmbedderConfig, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let cfg_path = dir.join("config.json");
    let raw = std::fs::read(&cfg_path).map_err(io_err(&cfg_path))?;
    let theirs: ConvEmbedderConfig = serde_json::from_slice(&raw)
        .map_err(|e| ModelError::Input(format!("{}: {e}", cfg_path.display())))?;
    let have = theirs.kernel_sizes.len();
    let grows = have < config.kernel_sizes.len()
        && ConvEmbedderConfig {
            widths: config.widths[..have].to_vec(),
            kernel_sizes: config.kernel_sizes[..have].to_vec(),
            ..config.clone()
        } == theirs;
    if &theirs != config && !grows {
        return Err(ModelError::Input(format!(
            "--init {}: its configuration differs from the student's (embed_dim {} vs {}, kernels {:?} vs {:?}); a student may differ only by blocks added after the model's own",
            dir.display(),
            theirs.embed_dim,
            config.embed_dim,
            theirs.kernel_sizes,
            config.kernel_sizes
        )));
    }
    let w = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&w, &Device::Cpu)?;
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        out.push((name, t.to_dtype(DType::F32)?));
    }
    let mut rng = Rng::new(seed);
    for (i, &k) in config.kernel_sizes.iter().enumerate().skip(have) {
        identity_block(i, config.embed_dim, k, &mut rng, &mut out)?;
    }
    Ok(out)
}

/// A corpus line's heading and body: `HEADING<TAB>BODY`, or a body alone.
pub fn split_heading(line: &str) -> (Option<&str>, &str) {
    match line.split_once('\t') {
        Some((h, b)) if !b.trim().is_empty() => {
            let h = h.trim();
            let has_word = h.chars().any(char::is_alphabetic);
            (has_word.then_some(h), b.trim())
        }
        _ => (None, line.trim()),
    }
}

/// The pseudo-query of a passage, fixed by `seed`: its heading if it has
/// one; else one of its sentences of 4 to 40 words (inverse cloze) when it
/// has two sentences or more; else a span of about a third of its words
/// (4 to 16).
pub fn pseudo_query(heading: Option<&str>, body: &str, seed: u64) -> String {
    if let Some(h) = heading {
        return h.to_string();
    }
    let mut rng = Rng::new(seed);
    let mut sentences = Vec::new();
    let mut start = 0;
    let b = body.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let end = matches!(c, b'.' | b'?' | b'!') && b.get(i + 1).is_none_or(|n| *n == b' ');
        if end {
            sentences.push(body[start..=i].trim());
            start = i + 1;
        }
    }
    if start < body.len() {
        sentences.push(body[start..].trim());
    }
    sentences.retain(|s| !s.is_empty());
    let fit: Vec<&str> = sentences
        .iter()
        .copied()
        .filter(|s| (4..=40).contains(&s.split_whitespace().count()))
        .collect();
    if sentences.len() >= 2 && !fit.is_empty() {
        return fit[rng.below(fit.len())].to_string();
    }
    let words: Vec<&str> = body.split_whitespace().collect();
    let len = (words.len() / 3).clamp(4, 16).min(words.len());
    let from = rng.below(words.len() - len + 1);
    words[from..from + len].join(" ")
}

/// Teacher vectors of `ids`, cached in `path` (rows appended chunk by chunk,
/// a partial last row dropped, extra rows of a larger earlier run ignored).
fn cached_teacher_rows(
    teacher: &AneBert,
    ids: &[Vec<u32>],
    path: &Path,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<f32>> {
    let dim = teacher.hidden_size();
    let n = ids.len();
    let mut rows = read_cache(path, dim)?;
    let file_len = std::fs::metadata(path).map_or(0, |m| m.len());
    if file_len != rows.len() as u64 * 4 {
        write_rows(path, &rows, false)?;
    }
    rows.truncate(n * dim);
    const CHUNK: usize = 256;
    while rows.len() < n * dim {
        let start = rows.len() / dim;
        let end = (start + CHUNK).min(n);
        let r: Vec<&[u32]> = ids[start..end].iter().map(Vec::as_slice).collect();
        let e = teacher_embed(teacher, &r, 32)?;
        write_rows(path, &e, true)?;
        rows.extend(e);
        progress(Progress {
            phase,
            done: end,
            total: n,
            loss: None,
            heldout_cosine: None,
        });
    }
    Ok(rows)
}

/// Student vectors (f32, CPU, row-major) of `idx`'s token rows.
fn student_rows(
    student: &ConvEmbedder,
    ids: &[Vec<u32>],
    idx: &[usize],
    device: &Device,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for chunk in idx.chunks(128) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        let (x, m) = pad_batch(&rows, device)?;
        out.extend(
            student
                .forward(&x, &m)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

/// For each row of `q`, the index of the row of `p` with the highest dot
/// product (ties: the lowest index), by matrix products in blocks;
/// `skip(q, p)` excludes pairs.
fn best_rows(
    q: &[f32],
    p: &[f32],
    dim: usize,
    skip: &dyn Fn(usize, usize) -> bool,
) -> Result<Vec<usize>> {
    let np = p.len() / dim;
    let pt = Tensor::from_slice(p, (np, dim), &Device::Cpu)?
        .t()?
        .contiguous()?;
    let mut out = Vec::with_capacity(q.len() / dim);
    for (b, block) in q.chunks(256 * dim).enumerate() {
        let rows = block.len() / dim;
        let sims = Tensor::from_slice(block, (rows, dim), &Device::Cpu)?
            .matmul(&pt)?
            .to_vec2::<f32>()?;
        for (r, row) in sims.iter().enumerate() {
            let qi = b * 256 + r;
            let mut best = (f32::NEG_INFINITY, usize::MAX);
            for (pi, &d) in row.iter().enumerate() {
                if d > best.0 && !skip(qi, pi) {
                    best = (d, pi);
                }
            }
            out.push(best.1);
        }
    }
    Ok(out)
}

/// Rows `idx` of a row-major matrix of width `dim`, stacked.
fn gather(src: &[f32], idx: &[usize], dim: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        v.extend_from_slice(&src[i * dim..(i + 1) * dim]);
    }
    v
}

/// For each training passage, the training passage the teacher ranks first
/// for its pseudo-query, other than itself.
fn mine_hard_negatives(
    queries: &[f32],
    passages: &[f32],
    dim: usize,
    train: &[usize],
) -> Result<Vec<u32>> {
    let best = best_rows(
        &gather(queries, train, dim),
        &gather(passages, train, dim),
        dim,
        &|q, p| q == p,
    )?;
    let mut neg = vec![u32::MAX; passages.len() / dim];
    for (&i, &b) in train.iter().zip(&best) {
        neg[i] = train[b] as u32;
    }
    Ok(neg)
}

/// The held-out evaluation of a student against the teacher's cached
/// vectors: the mean cosine on passages and on their pseudo-queries, and the
/// share of queries whose best held-out passage under the student is the
/// teacher's best. Each held-out text is embedded once.
struct Heldout<'a> {
    pids: &'a [Vec<u32>],
    ptargets: &'a [f32],
    qids: &'a [Vec<u32>],
    qtargets: &'a [f32],
    idx: &'a [usize],
    dim: usize,
}

/// What [`Heldout::run`] measures.
#[derive(Debug, Clone, Copy)]
struct HeldoutScores {
    passage_cosine: f32,
    query_cosine: f32,
    agreement: f32,
}

impl Heldout<'_> {
    fn run(&self, student: &ConvEmbedder, device: &Device) -> Result<HeldoutScores> {
        let d = self.dim;
        let sp = student_rows(student, self.pids, self.idx, device)?;
        let sq = student_rows(student, self.qids, self.idx, device)?;
        let (tp, tq) = (
            gather(self.ptargets, self.idx, d),
            gather(self.qtargets, self.idx, d),
        );
        let mean_cos = |a: &[f32], b: &[f32]| {
            let sum: f64 = a
                .chunks_exact(d)
                .zip(b.chunks_exact(d))
                .map(|(x, y)| crate::metrics::cosine(x, y) as f64)
                .sum();
            (sum / self.idx.len().max(1) as f64) as f32
        };
        let none = |_: usize, _: usize| false;
        let s_best = best_rows(&sq, &sp, d, &none)?;
        let t_best = best_rows(&tq, &tp, d, &none)?;
        let agree = s_best.iter().zip(&t_best).filter(|(a, b)| a == b).count();
        Ok(HeldoutScores {
            passage_cosine: mean_cos(&sp, &tp),
            query_cosine: mean_cos(&sq, &tq),
            agreement: agree as f32 / self.idx.len().max(1) as f32,
        })
    }
}

/// Mean over queries of KL(teacher ‖ student) between the softmaxes of
/// query·passage similarities over the same passages, at `temperature`:
/// the teacher's similarities are the soft targets.
pub fn pair_kl(
    student_q: &Tensor,
    student_p: &Tensor,
    teacher_q: &Tensor,
    teacher_p: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let ls = candle_nn::ops::log_softmax(&(student_q.matmul(&student_p.t()?)? / temperature)?, 1)?;
    let lt = candle_nn::ops::log_softmax(&(teacher_q.matmul(&teacher_p.t()?)? / temperature)?, 1)?;
    Ok((lt.exp()? * (lt - ls)?)?.sum(1)?.mean_all()?)
}

/// Runs a distillation; see the module documentation.
pub fn distill(o: &DistillOptions, progress: &mut dyn FnMut(Progress)) -> Result<DistillMetrics> {
    o.validate()?;
    let (teacher, tok, tok_path) = load_teacher(&o.teacher)?;
    let (mut passages, corpus) = read_corpus(&o.corpus)?;
    let dim = teacher.hidden_size();
    let vocab = teacher.config.vocab_size;

    // Fixed selection and order of passages.
    let mut order: Vec<usize> = (0..passages.len()).collect();
    shuffle(&mut order, o.seed ^ 0x5eed);
    // The teacher cache is keyed by the whole shuffled corpus and holds a
    // prefix of it, so a later run with a larger --max-passages reuses it.
    let order_key = {
        let mut h = blake3::Hasher::new();
        for &i in &order {
            h.update(passages[i].as_bytes());
            h.update(b"\n");
        }
        h.finalize().to_hex().to_string()
    };
    if o.max_passages > 0 {
        order.truncate(o.max_passages);
    }
    passages = order.iter().map(|&i| passages[i].clone()).collect();
    // Bodies are what the student and the teacher embed; each passage's
    // pseudo-query comes from its heading or its body.
    let (bodies, queries): (Vec<String>, Vec<String>) = passages
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let (heading, body) = split_heading(line);
            let q = pseudo_query(heading, body, o.seed.wrapping_mul(0x9e37_79b9) ^ i as u64);
            (body.to_string(), q)
        })
        .unzip();
    drop(passages);
    let n = bodies.len();
    let holdout = o.holdout.min(n / 5);
    if n - holdout < 2 {
        return Err(ModelError::Input(format!(
            "the corpus has {n} distinct passages; at least 2 are needed for training"
        )));
    }
    let ids = tokenize_all(&tok, &bodies, o.max_tokens)?;
    let qids = tokenize_all(&tok, &queries, o.query_tokens)?;
    if let Some(bad) = ids
        .iter()
        .chain(&qids)
        .flatten()
        .find(|&&t| t as usize >= vocab)
    {
        return Err(ModelError::VocabMismatch {
            tokenizer: *bad as usize + 1,
            model: vocab,
        });
    }

    let cache_dir = o.out.join("cache");
    let ckpt_dir = o.out.join("checkpoints");
    std::fs::create_dir_all(&cache_dir).map_err(io_err(&cache_dir))?;
    std::fs::create_dir_all(&ckpt_dir).map_err(io_err(&ckpt_dir))?;
    let teacher_cfg = std::fs::read(o.teacher.join("config.json")).unwrap_or_default();
    let key = {
        let mut h = blake3::Hasher::new();
        h.update(&teacher_cfg);
        h.update(
            &std::fs::metadata(o.teacher.join("model.safetensors"))
                .map_or(0u64, |m| m.len())
                .to_le_bytes(),
        );
        h.update(o.max_tokens.to_le_bytes().as_slice());
        h.finalize().to_hex().to_string()[..16].to_string()
    };

    // Phase 1: teacher vectors of every vocabulary token.
    let specials = tok
        .encode("", true)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?
        .get_ids()
        .to_vec();
    let (pre, post) = match specials.as_slice() {
        [a, b] => (vec![*a], vec![*b]),
        _ => (Vec::new(), Vec::new()),
    };
    let vocab_path = cache_dir.join(format!("vocab-{key}.f32"));
    let mut token_vecs = read_cache(&vocab_path, dim)?;
    if token_vecs.len() != vocab * dim {
        let rows: Vec<Vec<u32>> = (0..vocab as u32)
            .map(|t| pre.iter().chain([&t]).chain(&post).copied().collect())
            .collect();
        token_vecs = Vec::with_capacity(vocab * dim);
        for (c, chunk) in rows.chunks(1024).enumerate() {
            let r: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            token_vecs.extend(teacher_embed(&teacher, &r, 256)?);
            progress(Progress {
                phase: Phase::TeacherVocab,
                done: (c * 1024 + chunk.len()).min(vocab),
                total: vocab,
                loss: None,
                heldout_cosine: None,
            });
        }
        write_rows(&vocab_path, &token_vecs, false)?;
    }

    // Phase 2: teacher vectors of the passages (appended chunk by chunk).
    let corpus_key = {
        let mut h = blake3::Hasher::new();
        h.update(key.as_bytes());
        h.update(order_key.as_bytes());
        h.finalize().to_hex().to_string()[..16].to_string()
    };
    let corpus_path = cache_dir.join(format!("passages-{corpus_key}.f32"));
    let targets =
        cached_teacher_rows(&teacher, &ids, &corpus_path, Phase::TeacherCorpus, progress)?;
    // Phase 3: teacher vectors of the pseudo-queries.
    let query_key = {
        let mut h = blake3::Hasher::new();
        h.update(key.as_bytes());
        h.update(o.query_tokens.to_le_bytes().as_slice());
        for q in &queries {
            h.update(q.as_bytes());
            h.update(b"\n");
        }
        h.finalize().to_hex().to_string()[..16].to_string()
    };
    let query_path = cache_dir.join(format!("queries-{query_key}.f32"));
    // Without the pair term only the held-out queries are evaluated; the
    // cache holds a prefix, so a later run with the term extends it.
    let pair = o.pair_weight > 0.0;
    let need = if pair { n } else { holdout };
    let qtargets = cached_teacher_rows(
        &teacher,
        &qids[..need],
        &query_path,
        Phase::TeacherQueries,
        progress,
    )?;
    drop(teacher);

    // Token frequencies for the SIF weights (training passages only).
    let heldout_idx: Vec<usize> = (0..holdout).collect();
    let train_idx: Vec<usize> = (holdout..n).collect();
    let negatives = if pair && o.hard_negatives {
        mine_hard_negatives(&qtargets, &targets, dim, &train_idx)?
    } else {
        Vec::new()
    };
    // Which held-out step is kept: the passage cosine alone, or with the
    // pair term (which trades some passage cosine for the queries') the mean
    // of the passage and query cosines.
    let select = |c: f32, qc: f32| if pair { 0.5 * (c + qc) } else { c };
    let selected_by = if pair {
        "mean of the held-out passage and query cosines"
    } else {
        "held-out passage cosine"
    };
    let heldout = Heldout {
        pids: &ids,
        ptargets: &targets,
        qids: &qids,
        qtargets: &qtargets,
        idx: &heldout_idx,
        dim,
    };
    let mut counts = vec![0u64; vocab];
    for &i in &train_idx {
        for &t in &ids[i] {
            counts[t as usize] += 1;
        }
    }

    let config = ConvEmbedderConfig {
        anectx_architecture: CONV_EMBEDDER_ARCH.into(),
        vocab_size: vocab,
        embed_dim: o.embed_dim,
        widths: vec![o.embed_dim; o.kernel_sizes.len()],
        kernel_sizes: o.kernel_sizes.clone(),
        output_dim: dim,
        max_seq: 512,
        pad_token_id: 0,
        layer_norm_eps: 1e-5,
    };
    let mut varmap = VarMap::new();
    let student = ConvEmbedder::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &o.device),
        config.clone(),
    )?;
    let state_path = ckpt_dir.join("state.json");
    let last_path = ckpt_dir.join("last.safetensors");
    let best_path = ckpt_dir.join("best.safetensors");
    let mut state = if o.resume && state_path.is_file() && last_path.is_file() {
        let s: TrainState =
            serde_json::from_slice(&std::fs::read(&state_path).map_err(io_err(&state_path))?)
                .map_err(|e| ModelError::Input(format!("{}: {e}", state_path.display())))?;
        if s.config != config {
            return Err(ModelError::Input(format!(
                "cannot resume: {} was trained with another student configuration",
                state_path.display()
            )));
        }
        varmap.load(&last_path)?;
        s
    } else {
        if o.resume {
            tracing::warn!(
                "--resume: no checkpoint in {}, starting fresh",
                ckpt_dir.display()
            );
        }
        let init = match &o.init {
            Some(dir) => load_init(dir, &config, o.seed)?,
            None => init_student(&config, &token_vecs, dim, &counts, o.sif_a, o.seed)?,
        };
        for (name, t) in &init {
            varmap.set_one(name, t.to_device(&o.device)?)?;
        }
        let h = heldout.run(&student, &o.device)?;
        let (c0, qc, agree) = (h.passage_cosine, h.query_cosine, h.agreement);
        varmap.save(&best_path)?;
        TrainState {
            step: 0,
            best_step: 0,
            best_cosine: c0,
            best_score: Some(select(c0, qc)),
            init_cosine: c0,
            history: vec![EvalPoint {
                step: 0,
                loss: None,
                heldout_cosine: c0,
                heldout_query_cosine: Some(qc),
                heldout_agreement: Some(agree),
            }],
            config: config.clone(),
            commands: Vec::new(),
        }
    };
    state.commands.push(o.command.clone());
    drop(token_vecs);

    // Phase 3: training.
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: o.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let bsz = o.batch_size.min(train_idx.len());
    let per_epoch = (train_idx.len() / bsz).max(1);
    let mut perm_epoch = usize::MAX;
    let mut perm = train_idx.clone();
    let mut running = f32::NAN;
    let mut since_eval = (0f64, 0usize);
    let rows_t = |src: &[f32], sel: &[usize]| -> Result<Tensor> {
        Ok(Tensor::from_vec(
            gather(src, sel, dim),
            (sel.len(), dim),
            &o.device,
        )?)
    };
    let targets_t = |sel: &[usize]| rows_t(&targets, sel);
    let qtargets_t = |sel: &[usize]| rows_t(&qtargets, sel);
    while state.step < o.max_steps {
        let step = state.step;
        let epoch = step / per_epoch;
        if epoch != perm_epoch {
            perm = train_idx.clone();
            shuffle(&mut perm, o.seed.wrapping_add(1 + epoch as u64));
            perm_epoch = epoch;
        }
        let at = (step % per_epoch) * bsz;
        let sel = &perm[at..at + bsz];
        // The batch's passages, then (with hard negatives) each query's
        // hard negative.
        let mut psel = sel.to_vec();
        if !negatives.is_empty() {
            psel.extend(sel.iter().map(|&i| negatives[i] as usize));
        }
        let rows: Vec<&[u32]> = psel.iter().map(|&i| ids[i].as_slice()).collect();
        let (x, m) = pad_batch(&rows, &o.device)?;
        let t = targets_t(&psel)?;
        let s = student.forward(&x, &m)?;
        let cos = (&s * &t)?.sum(1)?.mean_all()?;
        let l_cos = cos.affine(-1.0, 1.0)?;
        let (s_b, t_b) = (s.narrow(0, 0, bsz)?, t.narrow(0, 0, bsz)?);
        let logits = (s_b.matmul(&t_b.t()?)? / o.temperature)?;
        let labels = Tensor::arange(0u32, bsz as u32, &o.device)?;
        let l_nce = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let mut loss = (l_cos + (l_nce * o.contrastive_weight)?)?;
        if pair {
            let qrows: Vec<&[u32]> = sel.iter().map(|&i| qids[i].as_slice()).collect();
            let (xq, mq) = pad_batch(&qrows, &o.device)?;
            let tq = qtargets_t(sel)?;
            let sq = student.forward(&xq, &mq)?;
            let l_qcos = (&sq * &tq)?.sum(1)?.mean_all()?.affine(-1.0, 1.0)?;
            let kl = pair_kl(&sq, &s, &tq, &t, o.temperature)?;
            loss = (loss + ((kl + l_qcos)? * o.pair_weight)?)?;
        }
        opt.set_learning_rate(lr_at(o, step));
        opt.backward_step(&loss)?;
        let l = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !l.is_finite() {
            return Err(ModelError::Input(format!(
                "the loss became {l} at step {step}; lower --lr"
            )));
        }
        running = if running.is_nan() {
            l
        } else {
            0.98 * running + 0.02 * l
        };
        since_eval.0 += l as f64;
        since_eval.1 += 1;
        state.step += 1;
        let mut cos_now = None;
        if state.step % o.checkpoint_every == 0 || state.step == o.max_steps {
            let h = heldout.run(&student, &o.device)?;
            let (c, qc, agree) = (h.passage_cosine, h.query_cosine, h.agreement);
            cos_now = Some(c);
            state.history.push(EvalPoint {
                step: state.step,
                loss: Some((since_eval.0 / since_eval.1.max(1) as f64) as f32),
                heldout_cosine: c,
                heldout_query_cosine: Some(qc),
                heldout_agreement: Some(agree),
            });
            if o.export_checkpoints {
                let dir = o.out.join("steps").join(format!("step-{:06}", state.step));
                let tensors = student
                    .named_tensors()
                    .into_iter()
                    .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
                    .collect::<Result<Vec<_>>>()?;
                save_model_dir(&dir, &config, &tensors, WeightDtype::F16, &tok_path)?;
            }
            since_eval = (0.0, 0);
            let score = select(c, qc);
            if score > state.best_score.unwrap_or(state.best_cosine) {
                state.best_score = Some(score);
                state.best_cosine = c;
                state.best_step = state.step;
                varmap.save(&best_path)?;
            }
            varmap.save(&last_path)?;
            let js =
                serde_json::to_vec_pretty(&state).map_err(|e| ModelError::Input(e.to_string()))?;
            std::fs::write(&state_path, js).map_err(io_err(&state_path))?;
        }
        progress(Progress {
            phase: Phase::Train,
            done: state.step,
            total: o.max_steps,
            loss: Some(running),
            heldout_cosine: cos_now,
        });
    }

    // Export the best weights as fp16 and evaluate the saved model.
    varmap.load(&best_path)?;
    let tensors = student.named_tensors();
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let parameters = crate::weights::param_count(&tensors);
    save_model_dir(&o.out, &config, &tensors, WeightDtype::F16, &tok_path)?;
    let (saved, _) = load_embedder(&o.out, WeightDtype::F32)?;
    let Embedder::Conv(saved) = saved else {
        return Err(ModelError::Unsupported(
            "the saved model is not a conv embedder".into(),
        ));
    };
    let saved_cos = heldout.run(&saved, &Device::Cpu)?.passage_cosine;
    let metrics = DistillMetrics {
        command: o.command.clone(),
        commands: state.commands.clone(),
        teacher: o.teacher.display().to_string(),
        corpus,
        student: config,
        parameters,
        train_passages: train_idx.len(),
        heldout_passages: holdout,
        steps: state.step,
        best_step: state.best_step,
        heldout_cosine_init: state.init_cosine,
        heldout_cosine_best: state.best_cosine,
        selected_by: selected_by.to_string(),
        heldout_cosine_saved: saved_cos,
        history: state.history.clone(),
        hyperparameters: serde_json::json!({
            "max_tokens": o.max_tokens,
            "max_passages": o.max_passages,
            "batch_size": o.batch_size,
            "max_steps": o.max_steps,
            "lr": o.lr,
            "warmup_steps": o.warmup_steps,
            "contrastive_weight": o.contrastive_weight,
            "temperature": o.temperature,
            "sif_a": o.sif_a,
            "seed": o.seed,
            "pair_weight": o.pair_weight,
            "hard_negatives": o.hard_negatives && o.pair_weight > 0.0,
            "query_tokens": o.query_tokens,
            "device": format!("{:?}", o.device),
        }),
    };
    let mpath = o.out.join(METRICS_FILE);
    let js = serde_json::to_vec_pretty(&metrics).map_err(|e| ModelError::Input(e.to_string()))?;
    std::fs::write(&mpath, js).map_err(io_err(&mpath))?;
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_eigen_decomposes_a_symmetric_matrix() {
        let n = 6;
        let mut rng = Rng::new(3);
        let b: Vec<f64> = (0..n * n).map(|_| rng.normal() as f64).collect();
        // a = bᵀb is symmetric positive semi-definite.
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum();
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, n).unwrap();
        for w in vals.windows(2) {
            assert!(w[0] >= w[1]);
        }
        for c in 0..n {
            for r in 0..n {
                let av: f64 = (0..n).map(|k| a[r * n + k] * vecs[k * n + c]).sum();
                assert!((av - vals[c] * vecs[r * n + c]).abs() < 1e-8, "A v != λ v");
            }
            let norm: f64 = (0..n).map(|r| vecs[r * n + c].powi(2)).sum();
            assert!((norm - 1.0).abs() < 1e-10);
        }
        assert!(symmetric_eigen(&a, n + 1).is_err());
    }

    #[test]
    fn a_heading_is_split_from_its_body() {
        assert_eq!(
            split_heading("Wing\tA wing lifts."),
            (Some("Wing"), "A wing lifts.")
        );
        assert_eq!(split_heading("no tab here"), (None, "no tab here"));
        // A heading without a word, or an empty body, is no heading.
        assert_eq!(split_heading("1.2\tBody text."), (None, "Body text."));
        assert_eq!(split_heading("Head\t  "), (None, "Head"));
    }

    #[test]
    fn pseudo_queries_come_from_the_heading_a_sentence_or_a_span() {
        assert_eq!(pseudo_query(Some("Shock waves"), "Body.", 1), "Shock waves");
        let body = "Air flows over the wing. The pressure drops above it! \
                    Why does the wing lift at all? Short.";
        let sentences = [
            "Air flows over the wing.",
            "The pressure drops above it!",
            "Why does the wing lift at all?",
        ];
        let mut seen = HashSet::new();
        for seed in 0..40 {
            let q = pseudo_query(None, body, seed);
            assert!(
                sentences.contains(&q.as_str()),
                "{q:?} is not a whole sentence of 4+ words"
            );
            seen.insert(q);
        }
        assert!(seen.len() > 1, "the seed picks among the sentences");
        assert_eq!(pseudo_query(None, body, 5), pseudo_query(None, body, 5));
        // One sentence: a contiguous span of about a third of its words.
        let one: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let one = one.join(" ");
        let q = pseudo_query(None, &one, 3);
        assert_eq!(q.split_whitespace().count(), 10);
        assert!(one.contains(&q));
        // Too short for a span of 4: the whole text.
        assert_eq!(pseudo_query(None, "two words", 9), "two words");
    }

    #[test]
    fn the_hard_negative_is_the_teachers_best_other_training_passage() {
        let dim = 2;
        // Passage 0 is held out; queries of 1..=3 point at passages 2, 1, 0.
        let passages = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0];
        let queries = [0.0, 0.0, 0.6, 0.8, 0.0, 1.0, 1.0, 0.0];
        let neg = mine_hard_negatives(&queries, &passages, dim, &[1, 2, 3]).unwrap();
        // Query 1's best is passage 2; query 2's own passage is best, so
        // passage 1; query 3 points at the held-out passage 0, so the best
        // training passage other than 3 is 2 (0.6).
        assert_eq!(&neg[1..], &[2, 1, 2]);
        assert_eq!(neg[0], u32::MAX, "held-out passages get none");
    }

    #[test]
    fn the_pair_term_is_zero_when_the_student_ranks_as_the_teacher_and_positive_otherwise() {
        let dev = Device::Cpu;
        let t = |v: &[f32], r: usize| Tensor::from_vec(v.to_vec(), (r, 2), &dev).unwrap();
        let tq = t(&[1.0, 0.0, 0.0, 1.0], 2);
        let tp = t(&[0.8, 0.6, 0.6, 0.8, -1.0, 0.0], 3);
        let same = pair_kl(&tq, &tp, &tq, &tp, 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(same.abs() < 1e-6, "{same}");
        let sq = t(&[0.0, 1.0, 1.0, 0.0], 2);
        let kl = pair_kl(&sq, &tp, &tq, &tp, 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // By hand: KL of softmax(teacher sims / τ) to softmax(student sims / τ).
        let soft = |x: [f32; 3]| {
            let e: Vec<f32> = x.iter().map(|v| (v / 0.5).exp()).collect();
            let z: f32 = e.iter().sum();
            e.into_iter().map(|v| v / z).collect::<Vec<f32>>()
        };
        let rows = [
            ([0.8, 0.6, -1.0], [0.6, 0.8, 0.0]),
            ([0.6, 0.8, 0.0], [0.8, 0.6, -1.0]),
        ];
        let want: f32 = rows
            .iter()
            .map(|(tt, ss)| {
                let (p, q) = (soft(*tt), soft(*ss));
                p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f32>()
            })
            .sum::<f32>()
            / 2.0;
        assert!(kl > 0.01 && (kl - want).abs() < 1e-5, "{kl} vs {want}");
    }

    #[test]
    fn learning_rate_warms_up_and_decays() {
        let mut o = DistillOptions::new("t".into(), vec!["c".into()], "o".into());
        o.max_steps = 100;
        o.warmup_steps = 10;
        assert!(lr_at(&o, 0) < lr_at(&o, 9));
        assert!((lr_at(&o, 10) - o.lr).abs() < 1e-12);
        assert!(lr_at(&o, 99) < 0.2 * o.lr);
        assert!(lr_at(&o, 99) >= 0.1 * o.lr - 1e-12);
    }
}
