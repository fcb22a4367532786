//! `ConvEmbedder`: a small convolutional sentence embedder in ANE layout.
//!
//! Token embeddings are looked up outside the model graph; the graph takes
//! `(B, E, 1, S)` plus a mask and runs k-wide convolutions (each followed by
//! a channel LayerNorm and GELU, residual where widths match), masked mean
//! pooling, a 1×1 projection and L2 normalisation.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::layers::{
    from_ane, gelu, l2_normalize, to_ane, Conv1x1, Embedding, KConv, LayerNormChannels,
};
use crate::weights::{randn, Rng};
use crate::{ModelError, Result};

pub const CONV_EMBEDDER_ARCH: &str = "conv_embedder";

/// Configuration of a [`ConvEmbedder`] (`config.json` in its directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvEmbedderConfig {
    /// Always `"conv_embedder"`; identifies the directory's model type.
    pub anectx_architecture: String,
    pub vocab_size: usize,
    pub embed_dim: usize,
    /// Output channels of each convolution block.
    pub widths: Vec<usize>,
    /// Kernel width of each convolution block (odd).
    pub kernel_sizes: Vec<usize>,
    pub output_dim: usize,
    #[serde(default = "default_max_seq")]
    pub max_seq: usize,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

pub(crate) fn default_max_seq() -> usize {
    512
}
pub(crate) fn default_eps() -> f64 {
    1e-5
}

impl Default for ConvEmbedderConfig {
    /// The seed defaults: embeddings 256, widths 512, kernels 3, 3, 5, output 384,
    /// over the BERT uncased vocabulary.
    fn default() -> Self {
        Self {
            anectx_architecture: CONV_EMBEDDER_ARCH.into(),
            vocab_size: 30522,
            embed_dim: 256,
            widths: vec![512, 512, 512],
            kernel_sizes: vec![3, 3, 5],
            output_dim: 384,
            max_seq: 512,
            pad_token_id: 0,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ConvEmbedderConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        validate_stack(
            &self.anectx_architecture,
            CONV_EMBEDDER_ARCH,
            self.vocab_size,
            self.embed_dim,
            &self.widths,
            &self.kernel_sizes,
        )?;
        if self.output_dim == 0 {
            return Err("output_dim must be positive".into());
        }
        Ok(())
    }
}

pub(crate) fn validate_stack(
    arch: &str,
    expected: &str,
    vocab: usize,
    embed_dim: usize,
    widths: &[usize],
    kernels: &[usize],
) -> std::result::Result<(), String> {
    if arch != expected {
        return Err(format!(
            "anectx_architecture is {arch:?}, expected {expected:?}"
        ));
    }
    if vocab == 0 || embed_dim == 0 {
        return Err("vocab_size and embed_dim must be positive".into());
    }
    if widths.is_empty() || widths.len() != kernels.len() {
        return Err(format!(
            "widths ({}) and kernel_sizes ({}) must be non-empty and of equal length",
            widths.len(),
            kernels.len()
        ));
    }
    if let Some(k) = kernels.iter().find(|&&k| k % 2 == 0) {
        return Err(format!("kernel size {k} must be odd"));
    }
    if widths.contains(&0) {
        return Err("widths must be positive".into());
    }
    Ok(())
}

/// One convolution block: conv → channel LayerNorm → GELU (+ residual).
#[derive(Debug, Clone)]
pub(crate) struct ConvBlock {
    pub conv: KConv,
    pub norm: LayerNormChannels,
    pub residual: bool,
}

impl ConvBlock {
    /// `x (C, B, S)` (batch folded next to the sequence axis) and
    /// `mask (1, B, S)` → `(C_out, B, S)`, padded positions zeroed.
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let y = self.conv.forward_folded(x)?;
        let (co, b, s) = y.dims3()?;
        let y = self
            .norm
            .forward(&y.reshape((co, b * s))?)?
            .reshape((co, b, s))?;
        let y = gelu(&y)?;
        let y = if self.residual { (y + x)? } else { y };
        Ok(y.broadcast_mul(mask)?)
    }

    /// Runs a block stack on `(B, E, 1, S)` embeddings with a `(B, S)` mask and
    /// mean-pools the real positions → `(W, B)` (channels first).
    pub fn run_stack(blocks: &[ConvBlock], x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = from_ane(x)?;
        let (b, _e, s) = x.dims3()?;
        let m = mask.to_dtype(x.dtype())?.reshape((1, b, s))?;
        let mut h = x.transpose(0, 1)?.contiguous()?.broadcast_mul(&m)?; // (E, B, S)
        for blk in blocks {
            h = blk.forward(&h, &m)?;
        }
        let count = mask
            .to_dtype(DType::F32)?
            .sum_keepdim(1)?
            .clamp(1f32, f32::MAX)?
            .to_dtype(h.dtype())?
            .reshape((1, b))?;
        Ok(h.sum(2)?.broadcast_div(&count)?) // (W, B)
    }

    pub fn load_stack(
        vb: &VarBuilder,
        c_in: usize,
        widths: &[usize],
        kernels: &[usize],
        eps: f64,
    ) -> Result<Vec<ConvBlock>> {
        let mut c = c_in;
        let mut blocks = Vec::new();
        for (i, (&w, &k)) in widths.iter().zip(kernels).enumerate() {
            let b = vb.pp(format!("blocks.{i}"));
            blocks.push(ConvBlock {
                conv: KConv::load(b.pp("conv"), c, w, k)?,
                norm: LayerNormChannels::load(b.pp("norm"), w, eps)?,
                residual: c == w,
            });
            c = w;
        }
        Ok(blocks)
    }

    pub fn push_named(blocks: &[ConvBlock], out: &mut Vec<(String, Tensor)>) {
        for (i, b) in blocks.iter().enumerate() {
            out.push((format!("blocks.{i}.conv.weight"), b.conv.weight.clone()));
            out.push((format!("blocks.{i}.conv.bias"), b.conv.bias.clone()));
            out.push((format!("blocks.{i}.norm.weight"), b.norm.weight.clone()));
            out.push((format!("blocks.{i}.norm.bias"), b.norm.bias.clone()));
        }
    }

    pub fn init_stack(
        map: &mut HashMap<String, Tensor>,
        c_in: usize,
        widths: &[usize],
        kernels: &[usize],
        rng: &mut Rng,
    ) -> Result<()> {
        let mut c = c_in;
        for (i, (&w, &k)) in widths.iter().zip(kernels).enumerate() {
            let std = (1.0 / (c * k) as f32).sqrt();
            map.insert(
                format!("blocks.{i}.conv.weight"),
                randn(&[w, c, 1, k], std, rng)?,
            );
            map.insert(
                format!("blocks.{i}.conv.bias"),
                Tensor::zeros(w, DType::F32, &Device::Cpu)?,
            );
            map.insert(
                format!("blocks.{i}.norm.weight"),
                Tensor::ones(w, DType::F32, &Device::Cpu)?,
            );
            map.insert(
                format!("blocks.{i}.norm.bias"),
                Tensor::zeros(w, DType::F32, &Device::Cpu)?,
            );
            c = w;
        }
        Ok(())
    }
}

/// The convolutional sentence embedder.
#[derive(Debug, Clone)]
pub struct ConvEmbedder {
    pub config: ConvEmbedderConfig,
    embeddings: Embedding,
    blocks: Vec<ConvBlock>,
    proj: Conv1x1,
}

impl ConvEmbedder {
    pub fn load(vb: VarBuilder, config: ConvEmbedderConfig) -> Result<Self> {
        config.validate().map_err(|m| ModelError::Config {
            path: "config.json".into(),
            message: m,
        })?;
        let embeddings = Embedding::load(vb.pp("embeddings"), config.vocab_size, config.embed_dim)?;
        let blocks = ConvBlock::load_stack(
            &vb,
            config.embed_dim,
            &config.widths,
            &config.kernel_sizes,
            config.layer_norm_eps,
        )?;
        let last = *config.widths.last().unwrap_or(&config.embed_dim);
        let proj = Conv1x1::load(vb.pp("proj"), last, config.output_dim, true)?;
        Ok(Self {
            config,
            embeddings,
            blocks,
            proj,
        })
    }

    /// Deterministic random initial weights (f32) for `config`.
    pub fn init_weights(config: &ConvEmbedderConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
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
        ConvBlock::init_stack(
            &mut map,
            config.embed_dim,
            &config.widths,
            &config.kernel_sizes,
            &mut rng,
        )?;
        let last = *config.widths.last().unwrap_or(&config.embed_dim);
        map.insert(
            "proj.weight".into(),
            randn(
                &[config.output_dim, last],
                (1.0 / last as f32).sqrt(),
                &mut rng,
            )?,
        );
        map.insert(
            "proj.bias".into(),
            Tensor::zeros(config.output_dim, DType::F32, &Device::Cpu)?,
        );
        Ok(map)
    }

    /// A randomly initialised model computing in `dtype`.
    pub fn new_random(config: ConvEmbedderConfig, seed: u64, dtype: DType) -> Result<Self> {
        let map = Self::init_weights(&config, seed)?;
        Self::load(VarBuilder::from_tensors(map, dtype, &Device::Cpu), config)
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.table.dtype()
    }

    pub fn output_dim(&self) -> usize {
        self.config.output_dim
    }

    /// The lookup outside the graph: `(B, S)` ids → `(B, E, 1, S)`.
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embeddings.forward(ids)?;
        to_ane(&x.transpose(1, 2)?.contiguous()?)
    }

    /// The graph: `(B, E, 1, S)` and a `(B, S)` 0/1 mask → pooled, projected,
    /// not yet normalised `(B, D)`.
    pub fn encode_unnormalized(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let pooled = ConvBlock::run_stack(&self.blocks, x, mask)?; // (W, B)
        Ok(self.proj.forward(&pooled)?.t()?) // (B, D)
    }

    /// L2-normalised embeddings `(B, D)` from `(B, E, 1, S)` and a mask.
    pub fn encode(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.encode_unnormalized(x, mask)?)
    }

    /// ids and mask `(B, S)` → L2-normalised embeddings `(B, D)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.encode(&self.embed_tokens(ids)?, mask)
    }

    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "embeddings.weight".to_string(),
            self.embeddings.table.clone(),
        )];
        ConvBlock::push_named(&self.blocks, &mut out);
        out.push(("proj.weight".into(), self.proj.weight.clone()));
        if let Some(b) = &self.proj.bias {
            out.push(("proj.bias".into(), b.clone()));
        }
        out
    }
}
