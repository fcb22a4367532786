//! ANE-layout building blocks.
//!
//! Public shapes are the ANE's `(B, C, 1, S)`; on CPU the blocks work on the
//! equivalent `(B, C, S)` view (the height axis of size 1 costs nothing to
//! drop or restore, see [`to_ane`] / [`from_ane`]).

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::Result;

/// The smallest LayerNorm epsilon that is safe in fp16. Larger values from a
/// config are kept; smaller ones (BERT ships 1e-12, which underflows to 0 in
/// fp16) are raised to this.
pub const MIN_FP16_EPS: f64 = 1e-7;

/// Additive mask value for padded keys: large enough to zero a softmax
/// weight, small enough to stay finite in fp16 (never `-inf`).
pub const MASK_NEG: f32 = -1e4;

/// `(B, C, 1, S)` → `(B, C, S)`.
pub fn from_ane(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, s) = x.dims4()?;
    if h != 1 {
        return Err(crate::ModelError::Input(format!(
            "expected a (B, C, 1, S) tensor, got height {h}"
        )));
    }
    Ok(x.reshape((b, c, s))?)
}

/// `(B, C, S)` → `(B, C, 1, S)`.
pub fn to_ane(x: &Tensor) -> Result<Tensor> {
    let (b, c, s) = x.dims3()?;
    Ok(x.reshape((b, c, 1, s))?)
}

/// A 1×1 convolution standing in for a linear layer. The weight is kept as
/// `(C_out, C_in)`, the layout of a Hugging Face linear layer, which is also a
/// 1×1 conv kernel `(C_out, C_in, 1, 1)` with its unit axes dropped.
#[derive(Debug, Clone)]
pub struct Conv1x1 {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Conv1x1 {
    /// Loads `{prefix}.weight` `(out, in)` and, if `bias`, `{prefix}.bias` `(out,)`.
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((c_out, c_in), "weight")?;
        let bias = if bias {
            Some(vb.get(c_out, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn c_out(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `(B, C_in, S)` → `(B, C_out, S)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.broadcast_matmul(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((self.c_out(), 1))?)?,
            None => y,
        })
    }
}

/// A k-wide convolution over the sequence axis with "same" zero padding —
/// on the ANE a `(1, k)` conv2d over `(B, C, 1, S)`. Computed on CPU as
/// im2col + one matrix product, which is also what makes its gradient right
/// (candle's CPU `conv1d` backward is wrong for batch > 1).
#[derive(Debug, Clone)]
pub struct KConv {
    /// `(C_out, C_in, 1, k)`, the Core ML conv weight layout.
    pub weight: Tensor,
    pub bias: Tensor,
    pub k: usize,
}

impl KConv {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        if k == 0 || k % 2 == 0 {
            return Err(crate::ModelError::Unsupported(format!(
                "kernel size {k}: only odd kernel sizes keep 'same' padding symmetric"
            )));
        }
        let weight = vb.get((c_out, c_in, 1, k), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        Ok(Self { weight, bias, k })
    }

    /// `(B, C_in, S)` → `(B, C_out, S)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_b, c_in, s) = x.dims3()?;
        let c_out = self.weight.dims()[0];
        let y = if self.k == 1 {
            self.weight.reshape((c_out, c_in))?.broadcast_matmul(x)?
        } else {
            let half = self.k / 2;
            let xp = x.pad_with_zeros(2, half, half)?;
            let cols: Vec<Tensor> = (0..self.k)
                .map(|j| xp.narrow(2, j, s))
                .collect::<candle_core::Result<_>>()?;
            // (B, k*C_in, S), row index j*C_in + ci.
            let cols = Tensor::cat(&cols, 1)?;
            // (C_out, C_in, 1, k) -> (C_out, k, C_in) -> (C_out, k*C_in).
            let w = self
                .weight
                .reshape((c_out, c_in, self.k))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((c_out, self.k * c_in))?;
            w.broadcast_matmul(&cols)?
        };
        Ok(y.broadcast_add(&self.bias.reshape((c_out, 1))?)?)
    }
}

/// LayerNorm over the channel axis of `(B, C, S)`, as Apple's
/// `LayerNormANE`: subtract the channel mean, divide by the root mean square
/// of the centred values plus an fp16-safe epsilon, then scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNormChannels {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNormChannels {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, each `(C,)`. `eps` is
    /// raised to [`MIN_FP16_EPS`] if smaller.
    pub fn load(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(c, "weight")?,
            bias: vb.get(c, "bias")?,
            eps: eps.max(MIN_FP16_EPS),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_b, c, _s) = x.dims3()?;
        // Channel means as a (1, C) × (B, C, S) product: a reduction over a
        // non-last axis that runs at matmul speed on CPU.
        let avg = Tensor::full(1f32 / c as f32, (1, c), x.device())?.to_dtype(x.dtype())?;
        let mean = avg.broadcast_matmul(x)?; // (B, 1, S)
        let xc = x.broadcast_sub(&mean)?;
        let var = avg.broadcast_matmul(&xc.sqr()?)?;
        let denom = (var + self.eps)?.sqrt()?;
        let y = xc.broadcast_div(&denom)?;
        let w = self.weight.reshape((c, 1))?;
        let b = self.bias.reshape((c, 1))?;
        Ok(y.broadcast_mul(&w)?.broadcast_add(&b)?)
    }
}

/// Builds the additive key mask `(B, 1, S)` from a 0/1 mask `(B, S)`:
/// 0 where a token is real, [`MASK_NEG`] where it is padding.
pub fn additive_mask(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    let add = ((m - 1.0)? * (-(MASK_NEG as f64)))?;
    Ok(add.reshape((b, 1, s))?.to_dtype(dtype)?)
}

/// Scaled dot-product attention computed per head. `q`, `k`, `v` are
/// `(B, C, S)` with `C = heads * head_dim`; `mask_add` is `(B, 1, S)` over
/// keys. Returns `(B, C, S)`.
///
/// This is the split form: each head is sliced out of the channel axis and
/// attended on its own, exactly the graph the Core ML exporter emits (no
/// fused multi-head op, no 5-D tensors).
pub fn attention_split(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_add: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    let (_b, c, _s) = q.dims3()?;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut outs = Vec::with_capacity(heads);
    for h in 0..heads {
        let qh = (q.narrow(1, h * d, d)? * scale)?;
        let kh = k.narrow(1, h * d, d)?;
        let vh = v.narrow(1, h * d, d)?;
        // (B, S_q, D) x (B, D, S_k) -> (B, S_q, S_k)
        let scores = qh.transpose(1, 2)?.matmul(&kh)?.broadcast_add(mask_add)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // (B, D, S_k) x (B, S_k, S_q) -> (B, D, S_q)
        outs.push(vh.matmul(&probs.transpose(1, 2)?)?);
    }
    Ok(Tensor::cat(&outs, 1)?)
}

/// The same per-head attention as [`attention_split`], with the heads laid
/// side by side in one batched product: `(B, C, S)` is viewed as
/// `(B, H, D, S)` (free in channels-first layout). Each head still has its own
/// softmax; only the CPU kernel differs. Used on CPU because it is faster.
pub fn attention_heads_batched(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_add: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    let (b, c, s) = q.dims3()?;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let q = (q.reshape((b, heads, d, s))? * scale)?;
    let k = k.reshape((b, heads, d, s))?;
    let v = v.reshape((b, heads, d, s))?;
    let mask = mask_add.reshape((b, 1, 1, s))?;
    let scores = q.transpose(2, 3)?.matmul(&k)?.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = v.matmul(&probs.transpose(2, 3)?)?;
    Ok(out.reshape((b, c, s))?)
}

/// Masked mean over the sequence axis: `x (B, C, S)`, `mask (B, S)` 0/1 →
/// `(B, C)`. Padded positions contribute nothing, so a sentence pooled alone
/// and in a padded batch gives the same vector.
pub fn masked_mean_pool(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, c, s) = x.dims3()?;
    let m = mask.to_dtype(x.dtype())?.reshape((b, s, 1))?;
    let sum = x.matmul(&m)?.reshape((b, c))?;
    let count = mask
        .to_dtype(DType::F32)?
        .sum_keepdim(1)?
        .clamp(1f32, f32::MAX)?
        .to_dtype(x.dtype())?;
    Ok(sum.broadcast_div(&count)?)
}

/// Zeroes padded positions of `x (B, C, S)` given `mask (B, S)`.
pub fn apply_mask(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let m = mask.to_dtype(x.dtype())?.reshape((b, 1, s))?;
    Ok(x.broadcast_mul(&m)?)
}

/// Row-wise L2 normalisation of `(N, D)`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?
        .to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&norm)?)
}

/// Exact (erf) GELU, as BERT uses.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

/// An embedding table `(V, E)` looked up outside the model graph.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub table: Tensor,
}

impl Embedding {
    pub fn load(vb: VarBuilder, vocab: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            table: vb.get((vocab, dim), "weight")?,
        })
    }

    pub fn vocab(&self) -> usize {
        self.table.dims()[0]
    }

    /// `ids (B, S)` u32 → `(B, S, E)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::Embedding::new(self.table.clone(), self.table.dims()[1]).forward(ids)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut r = crate::weights::Rng::new(seed);
        let v: Vec<f32> = (0..n).map(|_| r.normal()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn split_and_batched_attention_agree_and_respect_mask() {
        let (b, c, s, h) = (2, 16, 7, 4);
        let q = rand(&[b, c, s], 1);
        let k = rand(&[b, c, s], 2);
        let v = rand(&[b, c, s], 3);
        let mask = Tensor::from_vec(
            vec![1u32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
            (b, s),
            &Device::Cpu,
        )
        .unwrap();
        let madd = additive_mask(&mask, DType::F32).unwrap();
        let a = attention_split(&q, &k, &v, &madd, h).unwrap();
        let bb = attention_heads_batched(&q, &k, &v, &madd, h).unwrap();
        assert!(max_abs_diff(&a, &bb) < 1e-5);
        // Changing a padded key/value must not change the second row's output.
        let mut vv = v.to_vec3::<f32>().unwrap();
        vv[1][0][6] += 100.0;
        let v2 = Tensor::new(vv, &Device::Cpu).unwrap();
        let a2 = attention_split(&q, &k, &v2, &madd, h).unwrap();
        let row = |t: &Tensor| t.narrow(0, 1, 1).unwrap().narrow(2, 0, 3).unwrap();
        assert!(max_abs_diff(&row(&a), &row(&a2)) < 1e-4);
    }

    #[test]
    fn layer_norm_over_channels_matches_definition() {
        let x = rand(&[2, 8, 5], 4);
        let w = rand(&[8], 5);
        let bias = rand(&[8], 6);
        let ln = LayerNormChannels {
            weight: w.clone(),
            bias: bias.clone(),
            eps: 1e-12,
        };
        assert_eq!(ln.eps, 1e-12, "the struct keeps what it is given");
        let y = ln.forward(&x).unwrap();
        // Reference: candle's last-axis layer norm on (B, S, C).
        let xt = x.transpose(1, 2).unwrap().contiguous().unwrap();
        let r = candle_nn::ops::layer_norm(&xt, &w, &bias, 1e-12).unwrap();
        let r = r.transpose(1, 2).unwrap();
        assert!(max_abs_diff(&y, &r) < 1e-4);
    }

    #[test]
    fn kconv_matches_candle_conv1d() {
        let (b, ci, co, s, k) = (3, 4, 5, 9, 5);
        let x = rand(&[b, ci, s], 7);
        let w = rand(&[co, ci, 1, k], 8);
        let bias = rand(&[co], 9);
        let conv = KConv {
            weight: w.clone(),
            bias: bias.clone(),
            k,
        };
        let y = conv.forward(&x).unwrap();
        let r = x
            .conv1d(&w.reshape((co, ci, k)).unwrap(), k / 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((co, 1)).unwrap())
            .unwrap();
        assert!(max_abs_diff(&y, &r) < 1e-4);
    }

    #[test]
    fn pooling_ignores_padding_and_l2_is_unit() {
        let x = rand(&[2, 3, 4], 10);
        let mask = Tensor::from_vec(vec![1u32, 1, 0, 0, 1, 1, 1, 1], (2, 4), &Device::Cpu).unwrap();
        let p = masked_mean_pool(&x, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let xv = x.to_vec3::<f32>().unwrap();
        for c in 0..3 {
            assert!((p[0][c] - (xv[0][c][0] + xv[0][c][1]) / 2.0).abs() < 1e-5);
            let all: f32 = xv[1][c].iter().sum::<f32>() / 4.0;
            assert!((p[1][c] - all).abs() < 1e-5);
        }
        let n = l2_normalize(&Tensor::new(&[[3f32, 4.0]], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(n.to_vec2::<f32>().unwrap(), vec![vec![0.6, 0.8]]);
    }

    #[test]
    fn ane_layout_round_trip_and_rejects_height() {
        let x = rand(&[2, 3, 4], 11);
        let a = to_ane(&x).unwrap();
        assert_eq!(a.dims(), &[2, 3, 1, 4]);
        assert_eq!(from_ane(&a).unwrap().dims(), &[2, 3, 4]);
        assert!(from_ane(&rand(&[2, 3, 2, 4], 1)).is_err());
    }
}
