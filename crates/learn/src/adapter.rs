//! The text-level part of a learned relevance model: a copy of the built-in
//! sentence embedder fine-tuned on what the LLM used (query → used chunk,
//! against shown chunks it ignored).
//!
//! Retrieval features alone say little that carries over to new queries; a
//! domain-tuned embedder does (it learns the collection's vocabulary). Its
//! query–chunk cosine becomes one more feature of the [`crate::FeatureModel`]
//! (`adapted_dense`). It reranks the candidate pool only, so the index and
//! its vectors stay as they are and a version swaps in without re-embedding.
//! Chunk vectors are cached per adapter (a version never changes).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anectx_models::conv_embedder::{ConvEmbedder, ConvEmbedderConfig};
use anectx_models::finetune::{fine_tune, FineTuneOptions, FineTuned, Triple};
use anectx_models::io::batch_tensors;
use anectx_models::TextTokenizer;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{LearnError, Result};

/// Files of an adapter directory.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";

/// Tokens kept per text (queries and chunks).
pub const MAX_TOKENS: usize = 128;

/// Chunk vectors kept in memory per adapter.
const CACHE_CAP: usize = 50_000;

fn model_err(e: impl std::fmt::Display) -> LearnError {
    LearnError::Invalid(format!("adapter: {e}"))
}

/// A fine-tuned embedder that scores query–chunk pairs.
pub struct Adapter {
    config: ConvEmbedderConfig,
    model: ConvEmbedder,
    tok: TextTokenizer,
    tokenizer_json: Vec<u8>,
    cache: Mutex<HashMap<[u8; 16], Vec<f32>>>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn buckets() -> Vec<usize> {
    vec![16, 32, 64, MAX_TOKENS]
}

impl Adapter {
    fn from_parts(
        config: ConvEmbedderConfig,
        weights: HashMap<String, Tensor>,
        tokenizer_json: Vec<u8>,
    ) -> Result<Self> {
        for t in weights.values() {
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(model_err("non-finite weights"));
            }
        }
        let model = ConvEmbedder::load(
            VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
            config.clone(),
        )
        .map_err(model_err)?;
        let tok = TextTokenizer::from_bytes(&tokenizer_json, config.max_seq)
            .map_err(model_err)?
            .with_buckets(buckets());
        if tok.id_bound() > config.vocab_size {
            return Err(model_err("the tokenizer does not match the weights"));
        }
        Ok(Self {
            config,
            model,
            tok,
            tokenizer_json,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Fine-tunes the built-in embedder on `triples`.
    pub fn train(triples: &[Triple], o: &FineTuneOptions) -> Result<(Self, FineTuned)> {
        use anectx_models::default_model as dm;
        let config: ConvEmbedderConfig = serde_json::from_slice(dm::CONFIG_JSON)
            .map_err(|e| model_err(format!("built-in config: {e}")))?;
        let init = candle_core::safetensors::load_buffer(dm::WEIGHTS, &Device::Cpu)?;
        let tok = TextTokenizer::from_bytes(dm::TOKENIZER_JSON, config.max_seq)
            .map_err(model_err)?
            .with_buckets(buckets());
        let out = fine_tune(&config, &init, &tok, triples, o).map_err(model_err)?;
        let a = Self::from_parts(config, out.weights.clone(), dm::TOKENIZER_JSON.to_vec())?;
        Ok((a, out))
    }

    /// Loads an adapter directory (as written by [`Adapter::save`]).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| LearnError::io(&p, e))
        };
        let config: ConvEmbedderConfig = serde_json::from_slice(&read(CONFIG)?)
            .map_err(|e| model_err(format!("{}: {e}", dir.join(CONFIG).display())))?;
        let weights = candle_core::safetensors::load_buffer(&read(WEIGHTS)?, &Device::Cpu)
            .map_err(|e| model_err(format!("{}: {e}", dir.join(WEIGHTS).display())))?;
        Self::from_parts(config, weights, read(TOKENIZER)?)
    }

    /// Writes `config.json`, `model.safetensors` (fp16) and `tokenizer.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| LearnError::io(dir, e))?;
        let cfg = serde_json::to_vec_pretty(&self.config).map_err(model_err)?;
        let w = dir.join(CONFIG);
        std::fs::write(&w, cfg).map_err(|e| LearnError::io(&w, e))?;
        let mut tensors = HashMap::new();
        for (name, t) in self.model.named_tensors() {
            tensors.insert(name, t.to_dtype(DType::F16)?);
        }
        let w = dir.join(WEIGHTS);
        candle_core::safetensors::save(&tensors, &w)?;
        let t = dir.join(TOKENIZER);
        std::fs::write(&t, &self.tokenizer_json).map_err(|e| LearnError::io(&t, e))?;
        Ok(())
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            let b = self.tok.encode_batch(chunk).map_err(model_err)?;
            let (ids, _, mask) = batch_tensors(&b, self.config.vocab_size).map_err(model_err)?;
            let e = self.model.forward(&ids, &mask).map_err(model_err)?;
            out.extend(e.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// Cosine of `query` with each text (chunk vectors are cached).
    pub fn cosines(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>> {
        let key = |t: &str| -> [u8; 16] {
            let h = blake3::hash(t.as_bytes());
            h.as_bytes()[..16].try_into().unwrap_or([0; 16])
        };
        let keys: Vec<[u8; 16]> = texts.iter().map(|t| key(t)).collect();
        let missing: Vec<usize> = {
            let cache = self.cache.lock().map_err(|_| model_err("cache lock"))?;
            (0..texts.len())
                .filter(|&i| !cache.contains_key(&keys[i]))
                .collect()
        };
        // Texts that are empty (no chunk text known) score 0.
        let todo: Vec<usize> = missing
            .into_iter()
            .filter(|&i| !texts[i].trim().is_empty())
            .collect();
        let fresh = if todo.is_empty() {
            Vec::new()
        } else {
            let t: Vec<&str> = todo.iter().map(|&i| texts[i]).collect();
            self.embed(&t)?
        };
        let q = if query.trim().is_empty() {
            vec![0f32; self.config.output_dim]
        } else {
            self.embed(&[query])?.pop().unwrap_or_default()
        };
        let mut cache = self.cache.lock().map_err(|_| model_err("cache lock"))?;
        if cache.len() + fresh.len() > CACHE_CAP {
            cache.clear();
        }
        for (&i, v) in todo.iter().zip(fresh) {
            cache.insert(keys[i], v);
        }
        Ok(keys
            .iter()
            .map(|k| {
                cache
                    .get(k)
                    .map(|v| v.iter().zip(&q).map(|(a, b)| a * b).sum())
                    .unwrap_or(0.0)
            })
            .collect())
    }
}
