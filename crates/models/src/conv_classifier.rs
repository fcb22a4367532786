//! `ConvClassifier`: a convolutional (query, chunk) relevance classifier in
//! ANE layout. The pair is tokenised as one sequence with segment ids; token
//! and segment embeddings are looked up outside the graph; the graph runs a
//! convolution stack, masked mean pooling and a two-layer 1×1 head to one
//! logit. The relevance score is its sigmoid.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::conv_embedder::{default_eps, default_max_seq, validate_stack, ConvBlock};
use crate::layers::{gelu, to_ane, Conv1x1, Embedding};
use crate::weights::{randn, Rng};
use crate::{ModelError, Result};

pub const CONV_CLASSIFIER_ARCH: &str = "conv_classifier";

/// Configuration of a [`ConvClassifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvClassifierConfig {
    /// Always `"conv_classifier"`.
    pub anectx_architecture: String,
    pub vocab_size: usize,
    pub embed_dim: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    pub widths: Vec<usize>,
    pub kernel_sizes: Vec<usize>,
    /// Width of the hidden 1×1 layer of the head.
    pub hidden_dim: usize,
    #[serde(default = "default_max_seq")]
    pub max_seq: usize,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_type_vocab() -> usize {
    2
}

impl Default for ConvClassifierConfig {
    fn default() -> Self {
        Self {
            anectx_architecture: CONV_CLASSIFIER_ARCH.into(),
            vocab_size: 30522,
            embed_dim: 128,
            type_vocab_size: 2,
            widths: vec![256, 256],
            kernel_sizes: vec![3, 3],
            hidden_dim: 128,
            max_seq: 512,
            pad_token_id: 0,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ConvClassifierConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        validate_stack(
            &self.anectx_architecture,
            CONV_CLASSIFIER_ARCH,
            self.vocab_size,
            self.embed_dim,
            &self.widths,
            &self.kernel_sizes,
        )?;
        if self.hidden_dim == 0 || self.type_vocab_size == 0 {
            return Err("hidden_dim and type_vocab_size must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ConvClassifier {
    pub config: ConvClassifierConfig,
    tokens: Embedding,
    segments: Embedding,
    blocks: Vec<ConvBlock>,
    head_hidden: Conv1x1,
    head_out: Conv1x1,
}

impl ConvClassifier {
    pub fn load(vb: VarBuilder, config: ConvClassifierConfig) -> Result<Self> {
        config.validate().map_err(|m| ModelError::Config {
            path: "config.json".into(),
            message: m,
        })?;
        let tokens = Embedding::load(vb.pp("embeddings"), config.vocab_size, config.embed_dim)?;
        let segments = Embedding::load(
            vb.pp("segment_embeddings"),
            config.type_vocab_size,
            config.embed_dim,
        )?;
        let blocks = ConvBlock::load_stack(
            &vb,
            config.embed_dim,
            &config.widths,
            &config.kernel_sizes,
            config.layer_norm_eps,
        )?;
        let last = *config.widths.last().unwrap_or(&config.embed_dim);
        let head_hidden = Conv1x1::load(vb.pp("head.hidden"), last, config.hidden_dim, true)?;
        let head_out = Conv1x1::load(vb.pp("head.out"), config.hidden_dim, 1, true)?;
        Ok(Self {
            config,
            tokens,
            segments,
            blocks,
            head_hidden,
            head_out,
        })
    }

    pub fn init_weights(
        config: &ConvClassifierConfig,
        seed: u64,
    ) -> Result<HashMap<String, Tensor>> {
        config.validate().map_err(|m| ModelError::Config {
            path: "config".into(),
            message: m,
        })?;
        let mut rng = Rng::new(seed);
        let mut map = HashMap::new();
        map.insert(
            "embeddings.weight".into(),
            randn(&[config.vocab_size, config.embed_dim], 0.5, &mut rng)?,
        );
        map.insert(
            "segment_embeddings.weight".into(),
            randn(&[config.type_vocab_size, config.embed_dim], 0.5, &mut rng)?,
        );
        ConvBlock::init_stack(
            &mut map,
            config.embed_dim,
            &config.widths,
            &config.kernel_sizes,
            &mut rng,
        )?;
        let last = *config.widths.last().unwrap_or(&config.embed_dim);
        let h = config.hidden_dim;
        map.insert(
            "head.hidden.weight".into(),
            randn(&[h, last], (1.0 / last as f32).sqrt(), &mut rng)?,
        );
        map.insert(
            "head.hidden.bias".into(),
            Tensor::zeros(h, DType::F32, &Device::Cpu)?,
        );
        map.insert(
            "head.out.weight".into(),
            randn(&[1, h], (1.0 / h as f32).sqrt(), &mut rng)?,
        );
        map.insert(
            "head.out.bias".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu)?,
        );
        Ok(map)
    }

    pub fn new_random(config: ConvClassifierConfig, seed: u64, dtype: DType) -> Result<Self> {
        let map = Self::init_weights(&config, seed)?;
        Self::load(VarBuilder::from_tensors(map, dtype, &Device::Cpu), config)
    }

    pub fn dtype(&self) -> DType {
        self.tokens.table.dtype()
    }

    /// The lookup outside the graph: token + segment embeddings, `(B, S)` → `(B, E, 1, S)`.
    pub fn embed_tokens(&self, ids: &Tensor, type_ids: &Tensor) -> Result<Tensor> {
        let x = (self.tokens.forward(ids)? + self.segments.forward(type_ids)?)?;
        to_ane(&x.transpose(1, 2)?.contiguous()?)
    }

    /// The graph: `(B, E, 1, S)` and mask `(B, S)` → logits `(B,)`.
    pub fn logits_from_embeddings(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let pooled = ConvBlock::run_stack(&self.blocks, x, mask)?; // (W, B)
        let b = pooled.dims()[1];
        let z = gelu(&self.head_hidden.forward(&pooled)?)?;
        Ok(self.head_out.forward(&z)?.reshape(b)?)
    }

    /// Logits `(B,)` for tokenised pairs.
    pub fn logits(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.logits_from_embeddings(&self.embed_tokens(ids, type_ids)?, mask)
    }

    /// Relevance scores in `[0, 1]`.
    pub fn scores(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::sigmoid(
            &self.logits(ids, type_ids, mask)?.to_dtype(DType::F32)?,
        )?)
    }

    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("embeddings.weight".to_string(), self.tokens.table.clone()),
            (
                "segment_embeddings.weight".into(),
                self.segments.table.clone(),
            ),
        ];
        ConvBlock::push_named(&self.blocks, &mut out);
        for (n, c) in [
            ("head.hidden", &self.head_hidden),
            ("head.out", &self.head_out),
        ] {
            out.push((format!("{n}.weight"), c.weight.clone()));
            if let Some(b) = &c.bias {
                out.push((format!("{n}.bias"), b.clone()));
            }
        }
        out
    }
}
