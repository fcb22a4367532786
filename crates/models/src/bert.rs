//! `AneBert`: a BERT encoder in ANE layout, loaded from a standard Hugging
//! Face directory, pooled as sentence-transformers does.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::layers::{
    additive_mask, attention_folded, attention_split, from_ane, gelu, l2_normalize,
    masked_mean_pool, to_ane, Conv1x1, Embedding, LayerNormChannels,
};
use crate::{ModelError, Result};

/// The fields of a Hugging Face BERT `config.json` that the encoder needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only the exact 'gelu' BERT uses)",
                self.hidden_act
            ));
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(format!("position_embedding_type {p:?} is not supported"));
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How token states become a sentence vector (sentence-transformers'
/// `1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    Mean,
    Cls,
}

#[derive(Debug, Clone)]
struct Layer {
    q: Conv1x1,
    k: Conv1x1,
    v: Conv1x1,
    attn_out: Conv1x1,
    attn_norm: LayerNormChannels,
    inter: Conv1x1,
    out: Conv1x1,
    out_norm: LayerNormChannels,
}

/// A BERT encoder whose activations are `(B, C, 1, S)` and whose linear
/// layers are 1×1 convolutions.
#[derive(Debug, Clone)]
pub struct AneBert {
    pub config: BertConfig,
    pub pooling: Pooling,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNormChannels,
    layers: Vec<Layer>,
    dtype: DType,
    /// Compute attention head by head (the exported graph) instead of the
    /// batched CPU kernel. Both give the same numbers.
    pub split_heads: bool,
}

impl AneBert {
    /// Loads from Hugging Face tensor names (`embeddings.*`, `encoder.layer.N.*`,
    /// optionally under a `bert.` prefix).
    pub fn load(vb: VarBuilder, config: BertConfig, pooling: Pooling) -> Result<Self> {
        config.validate().map_err(|m| ModelError::Config {
            path: "config.json".into(),
            message: m,
        })?;
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let e = vb.pp("embeddings");
        let word = Embedding::load(e.pp("word_embeddings"), config.vocab_size, h)?;
        let position = Embedding::load(
            e.pp("position_embeddings"),
            config.max_position_embeddings,
            h,
        )?;
        let token_type = Embedding::load(e.pp("token_type_embeddings"), config.type_vocab_size, h)?;
        let emb_norm = LayerNormChannels::load(e.pp("LayerNorm"), h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                q: Conv1x1::load(a.pp("self.query"), h, h, true)?,
                k: Conv1x1::load(a.pp("self.key"), h, h, true)?,
                v: Conv1x1::load(a.pp("self.value"), h, h, true)?,
                attn_out: Conv1x1::load(a.pp("output.dense"), h, h, true)?,
                attn_norm: LayerNormChannels::load(a.pp("output.LayerNorm"), h, eps)?,
                inter: Conv1x1::load(
                    l.pp("intermediate.dense"),
                    h,
                    config.intermediate_size,
                    true,
                )?,
                out: Conv1x1::load(l.pp("output.dense"), config.intermediate_size, h, true)?,
                out_norm: LayerNormChannels::load(l.pp("output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            dtype: word.table.dtype(),
            config,
            pooling,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            split_heads: false,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        self.word.table.device()
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The embedding lookup that stays outside the ANE graph:
    /// word + position + token-type embeddings, `(B, S)` ids → `(B, C, 1, S)`.
    pub fn embed_tokens(&self, ids: &Tensor, type_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        if s > self.config.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "sequence of {s} tokens exceeds the model's {} positions",
                self.config.max_position_embeddings
            )));
        }
        let pos = Tensor::arange(0u32, s as u32, ids.device())?
            .unsqueeze(0)?
            .broadcast_as((b, s))?
            .contiguous()?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.position.forward(&pos)?)?
            .add(&self.token_type.forward(type_ids)?)?;
        to_ane(&x.transpose(1, 2)?.contiguous()?)
    }

    /// The encoder graph: `(B, C, 1, S)` embeddings and a `(B, S)` 0/1 mask →
    /// `(B, C, 1, S)` token states.
    ///
    /// On CPU the batch is folded into the sequence axis — `(1, C, 1, B·S)`,
    /// still the ANE layout — so each 1×1 convolution is one large matrix
    /// product; attention stays per sequence and per head. With
    /// [`AneBert::split_heads`] set, the literal exported graph is run instead
    /// (batch by batch, head by head); both give the same numbers.
    pub fn encode(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        if self.split_heads {
            return self.encode_split(x, mask);
        }
        let (b, c, s) = from_ane(x)?.dims3()?;
        let heads = self.config.num_attention_heads;
        let all_real = mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize == b * s;
        let madd = if all_real {
            None
        } else {
            Some(additive_mask(mask, self.dtype)?.reshape((b, 1, 1, s))?)
        };
        // (B, C, 1, S) -> (C, B·S)
        let mut h = x
            .reshape((b, c, s))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((c, b * s))?;
        h = self.emb_norm.forward(&h)?;
        for l in &self.layers {
            let q = l.q.forward(&h)?;
            let k = l.k.forward(&h)?;
            let v = l.v.forward(&h)?;
            let a = attention_folded(&q, &k, &v, madd.as_ref(), heads, b, s)?;
            h = l.attn_norm.forward(&(l.attn_out.forward(&a)? + &h)?)?;
            let g = gelu(&l.inter.forward(&h)?)?;
            h = l.out_norm.forward(&(l.out.forward(&g)? + &h)?)?;
        }
        to_ane(&h.reshape((c, b, s))?.transpose(0, 1)?.contiguous()?)
    }

    /// The exported graph, literally: per batch row `(B, C, S)`, attention
    /// sliced head by head.
    fn encode_split(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let heads = self.config.num_attention_heads;
        let madd = additive_mask(mask, self.dtype)?;
        let mut x = self.emb_norm.forward(&from_ane(x)?)?;
        for l in &self.layers {
            let q = l.q.forward(&x)?;
            let k = l.k.forward(&x)?;
            let v = l.v.forward(&x)?;
            let a = attention_split(&q, &k, &v, &madd, heads)?;
            x = l.attn_norm.forward(&(l.attn_out.forward(&a)? + &x)?)?;
            let h = gelu(&l.inter.forward(&x)?)?;
            x = l.out_norm.forward(&(l.out.forward(&h)? + &x)?)?;
        }
        to_ane(&x)
    }

    /// Pooled (not normalised) sentence vectors `(B, C)` from token states.
    pub fn pool(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let states = from_ane(states)?;
        match self.pooling {
            Pooling::Mean => masked_mean_pool(&states, mask),
            Pooling::Cls => Ok(states.narrow(2, 0, 1)?.squeeze(2)?),
        }
    }

    /// ids, type ids and mask `(B, S)` → pooled sentence vectors `(B, C)`.
    pub fn forward_pooled(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = self.embed_tokens(ids, type_ids)?;
        let states = self.encode(&x, mask)?;
        self.pool(&states, mask)
    }

    /// L2-normalised sentence embeddings `(B, C)`.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.forward_pooled(ids, type_ids, mask)?)
    }

    /// All weights under their Hugging Face names.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                self.word.table.clone(),
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                self.position.table.clone(),
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                self.token_type.table.clone(),
            ),
            (
                "embeddings.LayerNorm.weight".into(),
                self.emb_norm.weight.clone(),
            ),
            (
                "embeddings.LayerNorm.bias".into(),
                self.emb_norm.bias.clone(),
            ),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{i}");
            for (name, c) in [
                ("attention.self.query", &l.q),
                ("attention.self.key", &l.k),
                ("attention.self.value", &l.v),
                ("attention.output.dense", &l.attn_out),
                ("intermediate.dense", &l.inter),
                ("output.dense", &l.out),
            ] {
                out.push((format!("{p}.{name}.weight"), c.weight.clone()));
                if let Some(b) = &c.bias {
                    out.push((format!("{p}.{name}.bias"), b.clone()));
                }
            }
            for (name, n) in [
                ("attention.output.LayerNorm", &l.attn_norm),
                ("output.LayerNorm", &l.out_norm),
            ] {
                out.push((format!("{p}.{name}.weight"), n.weight.clone()));
                out.push((format!("{p}.{name}.bias"), n.bias.clone()));
            }
        }
        out
    }
}
