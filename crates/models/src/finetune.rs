//! Contrastive fine-tuning of a [`ConvEmbedder`] on weighted (query,
//! positive, hard negatives) triples — e.g. a query and the chunk an LLM used
//! from its context, against the shown chunks it ignored.
//!
//! The loss is a weighted InfoNCE: each query's positive must outscore every
//! other positive and every hard negative in the batch (temperature τ);
//! candidates that are positives of the same query are masked out. Weights
//! carry inverse-propensity corrections from the caller. Trains on whatever
//! device the tensors live on (CPU here); the convolutions are im2col/matmul
//! ([`crate::layers`]), whose gradients are checked by finite differences.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::conv_embedder::{ConvEmbedder, ConvEmbedderConfig};
use crate::io::batch_tensors;
use crate::{ModelError, Result, TextTokenizer};

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Triple {
    pub query: String,
    pub positive: String,
    /// Hard negatives for this query (e.g. shown chunks the answer ignored).
    pub negatives: Vec<String>,
    /// Loss weight (e.g. a clipped inverse propensity).
    pub weight: f32,
}

/// Settings of [`fine_tune`].
#[derive(Debug, Clone, PartialEq)]
pub struct FineTuneOptions {
    pub steps: usize,
    pub batch_size: usize,
    /// Hard negatives drawn per triple per step.
    pub negatives_per_triple: usize,
    pub lr: f64,
    pub temperature: f64,
    /// Whether the token-embedding table trains too (most parameters).
    pub train_embeddings: bool,
    pub seed: u64,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 32,
            negatives_per_triple: 1,
            lr: 2e-4,
            temperature: 0.05,
            train_embeddings: true,
            seed: 29,
        }
    }
}

/// Result of [`fine_tune`]: f32 weights by name and the loss trace.
#[derive(Debug, Clone)]
pub struct FineTuned {
    pub weights: HashMap<String, Tensor>,
    /// Mean loss of the first and the last tenth of the steps.
    pub first_loss: f32,
    pub last_loss: f32,
}

/// Fine-tunes `init` (weights of a ConvEmbedder with `config`) on `triples`.
/// `tok` tokenises (its buckets bound the sequence length).
pub fn fine_tune(
    config: &ConvEmbedderConfig,
    init: &HashMap<String, Tensor>,
    tok: &TextTokenizer,
    triples: &[Triple],
    o: &FineTuneOptions,
) -> Result<FineTuned> {
    if triples.len() < 2 {
        return Err(ModelError::Input(format!(
            "fine-tuning needs at least 2 (query, positive) pairs, got {}",
            triples.len()
        )));
    }
    if o.batch_size < 2 || !(o.lr > 0.0 && o.temperature > 0.0) {
        return Err(ModelError::Input(
            "batch_size must be ≥ 2 and lr, temperature positive".into(),
        ));
    }
    let dev = Device::Cpu;
    let mut varmap = VarMap::new();
    let model = ConvEmbedder::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        config.clone(),
    )?;
    for (name, t) in init {
        varmap.set_one(name, t.to_dtype(DType::F32)?)?;
    }
    let vars: Vec<_> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Input("weights lock poisoned".into()))?;
        let mut named: Vec<_> = data.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named
            .into_iter()
            .filter(|(n, _)| o.train_embeddings || !n.starts_with("embeddings"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: o.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let embed = |texts: &[&str]| -> Result<Tensor> {
        let b = tok.encode_batch(texts)?;
        let (ids, _, mask) = batch_tensors(&b, config.vocab_size)?;
        model.forward(&ids, &mask)
    };
    let mut rng = anectx_core::rng::Rng::new(o.seed);
    let bsz = o.batch_size.min(triples.len());
    let mut losses = Vec::with_capacity(o.steps);
    for _ in 0..o.steps {
        // A batch of distinct triples.
        let mut pick: Vec<usize> = Vec::with_capacity(bsz);
        while pick.len() < bsz {
            let i = rng.below(triples.len());
            if !pick.contains(&i) {
                pick.push(i);
            }
        }
        let batch: Vec<&Triple> = pick.iter().map(|&i| &triples[i]).collect();
        let queries: Vec<&str> = batch.iter().map(|t| t.query.as_str()).collect();
        // Candidates: the positives, then sampled hard negatives; `owner`
        // is the query each candidate belongs to (for masking).
        let mut cands: Vec<&str> = batch.iter().map(|t| t.positive.as_str()).collect();
        let mut owner: Vec<&str> = queries.clone();
        for t in &batch {
            for _ in 0..o.negatives_per_triple.min(t.negatives.len()) {
                cands.push(t.negatives[rng.below(t.negatives.len())].as_str());
                owner.push(t.query.as_str());
            }
        }
        let q = embed(&queries)?;
        let c = embed(&cands)?;
        let logits = (q.matmul(&c.t()?)? / o.temperature)?;
        let n = cands.len();
        let mut mask = vec![0f32; bsz * n];
        for i in 0..bsz {
            for j in 0..bsz {
                // Another positive of the same query (or the same text) is
                // not a negative.
                if i != j && (owner[j] == queries[i] || cands[j] == cands[i]) {
                    mask[i * n + j] = -1e4;
                }
            }
            for j in bsz..n {
                if cands[j] == cands[i] {
                    mask[i * n + j] = -1e4;
                }
            }
        }
        let logits = (logits + Tensor::from_vec(mask, (bsz, n), &dev)?)?;
        let logp = candle_nn::ops::log_softmax(&logits, 1)?;
        let diag: Vec<u32> = (0..bsz as u32).collect();
        let picked = logp
            .gather(&Tensor::new(diag.as_slice(), &dev)?.unsqueeze(1)?, 1)?
            .squeeze(1)?;
        let w: Vec<f32> = batch.iter().map(|t| t.weight.max(0.0)).collect();
        let wsum = w.iter().sum::<f32>().max(1e-6);
        let loss = ((picked * Tensor::new(w.as_slice(), &dev)?)?.sum_all()? / (-wsum as f64))?;
        let l = loss.to_scalar::<f32>()?;
        if !l.is_finite() {
            return Err(ModelError::Input(format!(
                "fine-tuning diverged (loss {l}); lower the learning rate"
            )));
        }
        opt.backward_step(&loss)?;
        losses.push(l);
    }
    let tenth = (losses.len() / 10).max(1);
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
    let weights = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Input("weights lock poisoned".into()))?
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    Ok(FineTuned {
        weights,
        first_loss: mean(&losses[..tenth.min(losses.len())]),
        last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (ConvEmbedderConfig, HashMap<String, Tensor>, TextTokenizer) {
        let tok = crate::default_model::tokenizer()
            .unwrap()
            .with_buckets(vec![16]);
        let config = ConvEmbedderConfig {
            anectx_architecture: crate::conv_embedder::CONV_EMBEDDER_ARCH.into(),
            vocab_size: tok.id_bound(),
            embed_dim: 16,
            widths: vec![16],
            kernel_sizes: vec![3],
            output_dim: 8,
            max_seq: 16,
            pad_token_id: 0,
            layer_norm_eps: 1e-5,
        };
        let w = ConvEmbedder::init_weights(&config, 3).unwrap();
        (config, w, tok)
    }

    fn cos_gap(
        config: &ConvEmbedderConfig,
        w: &HashMap<String, Tensor>,
        tok: &TextTokenizer,
    ) -> f32 {
        let m = ConvEmbedder::load(
            VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu),
            config.clone(),
        )
        .unwrap();
        let e = |t: &str| {
            let b = tok.encode_batch(&[t]).unwrap();
            let (i, _, k) = batch_tensors(&b, config.vocab_size).unwrap();
            m.forward(&i, &k)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let q = e("wing flutter");
        dot(&q, &e("aeroelastic vibration")) - dot(&q, &e("library catalogue"))
    }

    #[test]
    fn fine_tuning_pulls_positives_closer_than_negatives() {
        let (config, w, tok) = tiny();
        let t = |q: &str, p: &str, n: &str| Triple {
            query: q.into(),
            positive: p.into(),
            negatives: vec![n.into()],
            weight: 1.0,
        };
        let triples = vec![
            t("wing flutter", "aeroelastic vibration", "library catalogue"),
            t(
                "book indexing",
                "library catalogue",
                "aeroelastic vibration",
            ),
            t(
                "heat transfer",
                "boundary layer temperature",
                "citation analysis",
            ),
            t(
                "citation counts",
                "citation analysis",
                "boundary layer temperature",
            ),
        ];
        let before = cos_gap(&config, &w, &tok);
        let o = FineTuneOptions {
            steps: 60,
            batch_size: 4,
            lr: 1e-2,
            temperature: 0.1,
            ..Default::default()
        };
        let out = fine_tune(&config, &w, &tok, &triples, &o).unwrap();
        assert!(out.last_loss < out.first_loss, "{out:?}");
        let after = cos_gap(&config, &out.weights, &tok);
        assert!(after > before + 0.1, "gap {before} → {after}");
    }

    #[test]
    fn too_few_pairs_or_bad_settings_are_errors() {
        let (config, w, tok) = tiny();
        let one = vec![Triple {
            query: "a b".into(),
            positive: "c d".into(),
            negatives: vec![],
            weight: 1.0,
        }];
        assert!(fine_tune(&config, &w, &tok, &one, &FineTuneOptions::default()).is_err());
        let two = vec![one[0].clone(), one[0].clone()];
        let bad = FineTuneOptions {
            lr: 0.0,
            ..Default::default()
        };
        assert!(fine_tune(&config, &w, &tok, &two, &bad).is_err());
    }
}
