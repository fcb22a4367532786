//! Model directories: detection, loading, saving and inspection.
//!
//! A model directory holds `config.json`, `model.safetensors` and
//! `tokenizer.json`. Hugging Face BERT directories (`model_type: "bert"`)
//! load as [`AneBert`]; anectx's own models carry an `anectx_architecture`
//! field. A model may also be named by a Hugging Face id (`org/name`), which
//! is looked up in the local Hugging Face cache (anectx never downloads).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anectx_core::{Embeddings, TokenBatch};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bert::{AneBert, BertConfig, Pooling};
use crate::conv_classifier::{ConvClassifier, ConvClassifierConfig, CONV_CLASSIFIER_ARCH};
use crate::conv_embedder::{ConvEmbedder, ConvEmbedderConfig, CONV_EMBEDDER_ARCH};
use crate::tokenize::TextTokenizer;
use crate::weights;
use crate::{ModelError, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Storage / compute precision of weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    F16,
}

impl From<WeightDtype> for DType {
    fn from(d: WeightDtype) -> Self {
        match d {
            WeightDtype::F32 => DType::F32,
            WeightDtype::F16 => DType::F16,
        }
    }
}

impl FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            other => Err(format!("unknown dtype {other:?} (expected f32 or f16)")),
        }
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

/// What a model directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Bert,
    ConvEmbedder,
    ConvClassifier,
}

impl ModelKind {
    pub fn is_embedder(self) -> bool {
        matches!(self, Self::Bert | Self::ConvEmbedder)
    }
}

/// Resolves a model spec: an existing directory, or a Hugging Face id found
/// in the local Hugging Face cache.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    let p = PathBuf::from(spec);
    if p.is_dir() {
        return Ok(p);
    }
    if p.exists() {
        return Err(ModelError::Config {
            path: p,
            message: "expected a model directory, found a file".into(),
        });
    }
    let looks_like_id =
        spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/');
    if looks_like_id {
        if let Some(dir) = hf_cache_snapshot(spec) {
            return Ok(dir);
        }
        return Err(ModelError::Unsupported(format!(
            "{spec:?} is not a local directory and is not in the Hugging Face cache \
             ({}); anectx does not download models: fetch it first (e.g. \
             `huggingface-cli download {spec}`) or pass a directory",
            hf_cache_root()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "no cache found".into())
        )));
    }
    Err(ModelError::MissingDir(p))
}

fn hf_cache_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

fn hf_cache_snapshot(id: &str) -> Option<PathBuf> {
    let repo = hf_cache_root()?.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let d = snapshots.join(rev.trim());
        if d.join(CONFIG_FILE).is_file() {
            return Some(d);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|d| d.join(CONFIG_FILE).is_file())
}

fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(ModelError::MissingDir(dir.to_path_buf()));
    }
    let p = dir.join(name);
    if !p.is_file() {
        return Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            path: name.into(),
        });
    }
    Ok(p)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

fn parse_config<T: for<'de> Deserialize<'de>>(path: &Path, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads `config.json` and decides what kind of model the directory holds.
pub fn detect_kind(dir: &Path) -> Result<(ModelKind, Value)> {
    let path = require(dir, CONFIG_FILE)?;
    let v = read_json(&path)?;
    if let Some(arch) = v.get("anectx_architecture").and_then(Value::as_str) {
        return match arch {
            CONV_EMBEDDER_ARCH => Ok((ModelKind::ConvEmbedder, v)),
            CONV_CLASSIFIER_ARCH => Ok((ModelKind::ConvClassifier, v)),
            other => Err(ModelError::Config {
                path,
                message: format!("unknown anectx_architecture {other:?}"),
            }),
        };
    }
    match v.get("model_type").and_then(Value::as_str) {
        Some("bert") => Ok((ModelKind::Bert, v)),
        Some(other) => Err(ModelError::Unsupported(format!(
            "model_type {other:?} in {}: anectx runs BERT-family encoders (model_type \"bert\") \
             and its own conv models",
            path.display()
        ))),
        None => Err(ModelError::Config {
            path,
            message: "neither `model_type` nor `anectx_architecture` is set".into(),
        }),
    }
}

fn sentence_pooling(dir: &Path) -> Result<Pooling> {
    let p = dir.join("1_Pooling").join(CONFIG_FILE);
    if !p.is_file() {
        return Ok(Pooling::Mean);
    }
    let v = read_json(&p)?;
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("pooling_mode_mean_tokens") {
        Ok(Pooling::Mean)
    } else if flag("pooling_mode_cls_token") {
        Ok(Pooling::Cls)
    } else {
        Err(ModelError::Unsupported(format!(
            "{}: only mean or CLS pooling is supported",
            p.display()
        )))
    }
}

fn load_vb(dir: &Path, dtype: WeightDtype) -> Result<VarBuilder<'static>> {
    let path = require(dir, WEIGHTS_FILE)?;
    let tensors = weights::load(&path, &Device::Cpu)?;
    Ok(VarBuilder::from_tensors(
        tensors,
        dtype.into(),
        &Device::Cpu,
    ))
}

fn weights_err(dir: &Path, e: ModelError) -> ModelError {
    match e {
        ModelError::Candle(c) => ModelError::Weights {
            path: dir.join(WEIGHTS_FILE),
            message: format!("{c} (the weights do not match config.json)"),
        },
        other => other,
    }
}

fn load_tokenizer(dir: &Path, max_seq: usize, model_vocab: usize) -> Result<TextTokenizer> {
    let tok = TextTokenizer::from_file(&require(dir, TOKENIZER_FILE)?, max_seq)?;
    let bound = tok.id_bound();
    if bound > model_vocab {
        return Err(ModelError::VocabMismatch {
            tokenizer: bound,
            model: model_vocab,
        });
    }
    Ok(tok)
}

/// A sentence embedder of any supported kind.
#[derive(Debug, Clone)]
pub enum Embedder {
    Bert(Box<AneBert>),
    Conv(ConvEmbedder),
}

impl Embedder {
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Bert(_) => ModelKind::Bert,
            Self::Conv(_) => ModelKind::ConvEmbedder,
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Self::Bert(m) => m.hidden_size(),
            Self::Conv(m) => m.output_dim(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(m) => m.config.vocab_size,
            Self::Conv(m) => m.config.vocab_size,
        }
    }

    pub fn max_seq(&self) -> usize {
        match self {
            Self::Bert(m) => m.config.max_position_embeddings,
            Self::Conv(m) => m.config.max_seq,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Self::Bert(m) => m.dtype(),
            Self::Conv(m) => m.dtype(),
        }
    }

    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        match self {
            Self::Bert(m) => m.named_tensors(),
            Self::Conv(m) => m.named_tensors(),
        }
    }

    /// L2-normalised embeddings, one row per sequence of `batch`.
    pub fn embed(&self, batch: &TokenBatch) -> Result<Embeddings> {
        let (ids, type_ids, mask) = batch_tensors(batch, self.vocab_size())?;
        let out = match self {
            Self::Bert(m) => m.forward(&ids, &type_ids, &mask)?,
            Self::Conv(m) => m.forward(&ids, &mask)?,
        };
        let dim = out.dims()[1];
        let data = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Embeddings {
            rows: batch.batch,
            dim,
            data,
        })
    }
}

/// Checks ids against the vocabulary and builds `(B, S)` id, type and mask tensors.
pub fn batch_tensors(batch: &TokenBatch, vocab: usize) -> Result<(Tensor, Tensor, Tensor)> {
    if let Some(bad) = batch.ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(ModelError::Input(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}; \
             was the text tokenised with another model's tokenizer?"
        )));
    }
    let shape = (batch.batch, batch.seq);
    let dev = Device::Cpu;
    Ok((
        Tensor::from_slice(&batch.ids, shape, &dev)?,
        Tensor::from_slice(&batch.type_ids, shape, &dev)?,
        Tensor::from_slice(&batch.mask, shape, &dev)?,
    ))
}

/// Loads an embedder (BERT or conv) and its tokenizer from a directory,
/// computing in `dtype`.
pub fn load_embedder(dir: &Path, dtype: WeightDtype) -> Result<(Embedder, TextTokenizer)> {
    let (kind, cfg) = detect_kind(dir)?;
    let cfg_path = dir.join(CONFIG_FILE);
    let model = match kind {
        ModelKind::Bert => {
            let config: BertConfig = parse_config(&cfg_path, &cfg)?;
            config.validate().map_err(|message| ModelError::Config {
                path: cfg_path.clone(),
                message,
            })?;
            let pooling = sentence_pooling(dir)?;
            let m = AneBert::load(load_vb(dir, dtype)?, config, pooling)
                .map_err(|e| weights_err(dir, e))?;
            Embedder::Bert(Box::new(m))
        }
        ModelKind::ConvEmbedder => {
            let config: ConvEmbedderConfig = parse_config(&cfg_path, &cfg)?;
            Embedder::Conv(
                ConvEmbedder::load(load_vb(dir, dtype)?, config)
                    .map_err(|e| weights_err(dir, e))?,
            )
        }
        ModelKind::ConvClassifier => {
            return Err(ModelError::Unsupported(format!(
                "{} holds a relevance classifier, not an embedder",
                dir.display()
            )))
        }
    };
    let tok = load_tokenizer(dir, model.max_seq(), model.vocab_size())?;
    Ok((model, tok))
}

/// Loads a relevance classifier and its tokenizer.
pub fn load_classifier(dir: &Path, dtype: WeightDtype) -> Result<(ConvClassifier, TextTokenizer)> {
    let (kind, cfg) = detect_kind(dir)?;
    if kind != ModelKind::ConvClassifier {
        return Err(ModelError::Unsupported(format!(
            "{} holds an embedder ({kind:?}), not a relevance classifier",
            dir.display()
        )));
    }
    let config: ConvClassifierConfig = parse_config(&dir.join(CONFIG_FILE), &cfg)?;
    let model =
        ConvClassifier::load(load_vb(dir, dtype)?, config).map_err(|e| weights_err(dir, e))?;
    let tok = load_tokenizer(dir, model.config.max_seq, model.config.vocab_size)?;
    Ok((model, tok))
}

/// Writes a model directory: `config.json`, `model.safetensors` in `dtype`,
/// and a copy of `tokenizer.json`.
pub fn save_model_dir(
    dir: &Path,
    config: &impl Serialize,
    tensors: &[(String, Tensor)],
    dtype: WeightDtype,
    tokenizer_json: &Path,
) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg = serde_json::to_string_pretty(config).map_err(|e| ModelError::Config {
        path: dir.join(CONFIG_FILE),
        message: e.to_string(),
    })?;
    std::fs::write(dir.join(CONFIG_FILE), cfg).map_err(io(&dir.join(CONFIG_FILE)))?;
    weights::save(tensors, &dir.join(WEIGHTS_FILE), dtype)?;
    let dst = dir.join(TOKENIZER_FILE);
    if tokenizer_json != dst {
        std::fs::copy(tokenizer_json, &dst).map_err(io(&dst))?;
    }
    Ok(())
}

/// A summary of a model directory, for `anectx model info`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub dir: PathBuf,
    pub kind: ModelKind,
    pub stored_dtype: Option<WeightDtype>,
    pub parameters: usize,
    pub weights_bytes: u64,
    pub tokenizer_vocab: usize,
    pub model_vocab: usize,
    pub max_seq: usize,
    pub seq_buckets: Vec<usize>,
    pub output_dim: Option<usize>,
    pub config: Value,
}

impl ModelInfo {
    /// Loads the directory fully (so a broken model is reported here, not later).
    pub fn inspect(dir: &Path) -> Result<Self> {
        let (kind, config) = detect_kind(dir)?;
        let wpath = require(dir, WEIGHTS_FILE)?;
        let weights_bytes = std::fs::metadata(&wpath)
            .map_err(|source| ModelError::Io {
                path: wpath.clone(),
                source,
            })?
            .len();
        let stored = weights::stored_dtype(&weights::load(&wpath, &Device::Cpu)?);
        let (tensors, tok, output_dim, vocab, max_seq) = if kind.is_embedder() {
            let (m, tok) = load_embedder(dir, WeightDtype::F32)?;
            (
                m.named_tensors(),
                tok,
                Some(m.dim()),
                m.vocab_size(),
                m.max_seq(),
            )
        } else {
            let (m, tok) = load_classifier(dir, WeightDtype::F32)?;
            let (v, s) = (m.config.vocab_size, m.config.max_seq);
            (m.named_tensors(), tok, None, v, s)
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            kind,
            stored_dtype: stored,
            parameters: weights::param_count(&tensors),
            weights_bytes,
            tokenizer_vocab: tok.vocab_size(),
            model_vocab: vocab,
            max_seq,
            seq_buckets: tok.buckets().to_vec(),
            output_dim,
            config,
        })
    }
}

/// Loads a conv embedder and its tokenizer from in-memory files (`config.json`,
/// `model.safetensors`, `tokenizer.json`), e.g. ones embedded in the binary.
/// `name` is used in error messages.
pub fn load_conv_embedder_from_bytes(
    name: &str,
    config_json: &[u8],
    safetensors: &[u8],
    tokenizer_json: &[u8],
    dtype: WeightDtype,
) -> Result<(Embedder, TextTokenizer)> {
    let path = PathBuf::from(format!("{name}/{CONFIG_FILE}"));
    let config: ConvEmbedderConfig =
        serde_json::from_slice(config_json).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let tensors =
        candle_core::safetensors::load_buffer(safetensors, &Device::Cpu).map_err(|e| {
            ModelError::Weights {
                path: PathBuf::from(format!("{name}/{WEIGHTS_FILE}")),
                message: e.to_string(),
            }
        })?;
    let vb = VarBuilder::from_tensors(tensors, dtype.into(), &Device::Cpu);
    let model = ConvEmbedder::load(vb, config).map_err(|e| weights_err(Path::new(name), e))?;
    let tok = TextTokenizer::from_bytes(tokenizer_json, model.config.max_seq)?;
    if tok.id_bound() > model.config.vocab_size {
        return Err(ModelError::VocabMismatch {
            tokenizer: tok.id_bound(),
            model: model.config.vocab_size,
        });
    }
    Ok((Embedder::Conv(model), tok))
}
