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
    /// `(C_out, C_in, 1, k)`, the Core ML conv weight layout. Read it freely;
    /// to change the weights build a new `KConv` (the im2col matrix of
    /// untrained weights is computed once, in [`KConv::new`]).
    pub weight: Tensor,
    pub bias: Tensor,
    pub k: usize,
    /// [`KConv::weight_matrix`] computed once, for weights that are not
    /// trained (a trained weight must be reshaped on every call so that its
    /// gradient flows and its updates show).
    matrix: Option<Tensor>,
}

impl KConv {
    /// A convolution of kernel width `k` over `(C_out, C_in, 1, k)` weights.
    pub fn new(weight: Tensor, bias: Tensor, k: usize) -> Result<Self> {
        let mut conv = Self {
            weight,
            bias,
            k,
            matrix: None,
        };
        if !conv.weight.is_variable() {
            conv.matrix = Some(conv.weight_matrix()?);
        }
        Ok(conv)
    }

    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        if k == 0 || k.is_multiple_of(2) {
            return Err(crate::ModelError::Unsupported(format!(
                "kernel size {k}: only odd kernel sizes keep 'same' padding symmetric"
            )));
        }
        let weight = vb.get((c_out, c_in, 1, k), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        Self::new(weight, bias, k)
    }

    /// The kernel as the `(C_out, k·C_in)` matrix that multiplies im2col
    /// columns whose row index is `j·C_in + ci`.
    fn weight_matrix(&self) -> Result<Tensor> {
        if let Some(m) = &self.matrix {
            return Ok(m.clone());
        }
        let (c_out, c_in) = (self.weight.dims()[0], self.weight.dims()[1]);
        Ok(self
            .weight
            .reshape((c_out, c_in, self.k))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((c_out, self.k * c_in))?)
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
            self.weight_matrix()?.broadcast_matmul(&cols)?
        };
        Ok(y.broadcast_add(&self.bias.reshape((c_out, 1))?)?)
    }
}

impl KConv {
    /// The same convolution on a batch laid out `(C_in, B, S)` (channels
    /// first, batch folded next to the sequence): zero padding is added per
    /// sequence, and the whole batch is one matrix product
    /// `(C_out, k·C_in) × (k·C_in, B·S)`. Returns `(C_out, B, S)`.
    pub fn forward_folded(&self, x: &Tensor) -> Result<Tensor> {
        let (c_in, b, s) = x.dims3()?;
        let c_out = self.weight.dims()[0];
        let cols = if self.k == 1 {
            x.reshape((c_in, b * s))?
        } else {
            let half = self.k / 2;
            let xp = x.pad_with_zeros(2, half, half)?;
            let parts: Vec<Tensor> = (0..self.k)
                .map(|j| xp.narrow(2, j, s))
                .collect::<candle_core::Result<_>>()?;
            // (k·C_in, B, S), row index j·C_in + ci.
            Tensor::cat(&parts, 0)?.reshape((self.k * c_in, b * s))?
        };
        let y = self
            .weight_matrix()?
            .matmul(&cols)?
            .broadcast_add(&self.bias.reshape((c_out, 1))?)?;
        Ok(y.reshape((c_out, b, s))?)
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

    /// Normalises `(B, C, S)` over `C`, or `(C, N)` (a batch folded into the
    /// sequence axis) over `C`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x3 = match x.rank() {
            2 => x.unsqueeze(0)?,
            _ => x.clone(),
        };
        let y = if x3.track_op() || self.weight.track_op() || self.bias.track_op() {
            // Differentiable composite form (training).
            self.forward_composite(&x3)?
        } else {
            let op = ChannelLayerNorm {
                weight: self.weight.to_dtype(DType::F32)?.to_vec1()?,
                bias: self.bias.to_dtype(DType::F32)?.to_vec1()?,
                eps: self.eps as f32,
            };
            x3.contiguous()?.apply_op1_no_bwd(&op)?
        };
        Ok(if x.rank() == 2 { y.squeeze(0)? } else { y })
    }

    /// The same normalisation from differentiable tensor ops.
    pub fn forward_composite(&self, x: &Tensor) -> Result<Tensor> {
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

/// CPU kernel for LayerNorm over the channel axis of a contiguous
/// `(B, C, S)` tensor: statistics in f32 (also for f16 inputs), two passes
/// over rows so that every access is a contiguous run of positions, and
/// blocks of positions spread over threads.
struct ChannelLayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl candle_core::CustomOp1 for ChannelLayerNorm {
    fn name(&self) -> &'static str {
        "channel-layer-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        use rayon::prelude::*;
        use std::borrow::Cow;

        let (b, c, n) = layout.shape().dims3()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("channel-layer-norm needs a contiguous input")
        };
        if self.weight.len() != c || self.bias.len() != c {
            candle_core::bail!(
                "channel-layer-norm: {c} channels but {} weights",
                self.weight.len()
            )
        }
        let src: Cow<[f32]> = match storage {
            CpuStorage::F32(v) => Cow::Borrowed(&v[start..end]),
            CpuStorage::F16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
            CpuStorage::BF16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
            _ => candle_core::bail!("channel-layer-norm supports f32, f16 and bf16"),
        };
        const BLOCK: usize = 64;
        let blocks_per_batch = n.div_ceil(BLOCK);
        // Each task normalises BLOCK positions of one batch row and returns them
        // channel-major; results are scattered back afterwards.
        let parts: Vec<(usize, usize, usize, Vec<f32>)> = (0..b * blocks_per_batch)
            .into_par_iter()
            .map(|t| {
                let (bi, blk) = (t / blocks_per_batch, t % blocks_per_batch);
                let j0 = blk * BLOCK;
                let w = BLOCK.min(n - j0);
                let base = bi * c * n;
                let row = |ci: usize| &src[base + ci * n + j0..base + ci * n + j0 + w];
                let mut mean = vec![0f32; w];
                for ci in 0..c {
                    for (m, &x) in mean.iter_mut().zip(row(ci)) {
                        *m += x;
                    }
                }
                let inv_c = 1.0 / c as f32;
                mean.iter_mut().for_each(|m| *m *= inv_c);
                let mut var = vec![0f32; w];
                for ci in 0..c {
                    for ((v, &x), &m) in var.iter_mut().zip(row(ci)).zip(&mean) {
                        let d = x - m;
                        *v += d * d;
                    }
                }
                let inv: Vec<f32> = var
                    .iter()
                    .map(|v| 1.0 / (v * inv_c + self.eps).sqrt())
                    .collect();
                let mut out = vec![0f32; c * w];
                for ci in 0..c {
                    let (g, bb) = (self.weight[ci], self.bias[ci]);
                    let dst = &mut out[ci * w..(ci + 1) * w];
                    for (((o, &x), &m), &s) in dst.iter_mut().zip(row(ci)).zip(&mean).zip(&inv) {
                        *o = (x - m) * s * g + bb;
                    }
                }
                (bi, j0, w, out)
            })
            .collect();
        let mut out = vec![0f32; b * c * n];
        for (bi, j0, w, part) in parts {
            for ci in 0..c {
                let o = bi * c * n + ci * n + j0;
                out[o..o + w].copy_from_slice(&part[ci * w..(ci + 1) * w]);
            }
        }
        let shape = candle_core::Shape::from((b, c, n));
        Ok(match storage {
            CpuStorage::F16(_) => (
                CpuStorage::F16(out.into_iter().map(half::f16::from_f32).collect()),
                shape,
            ),
            CpuStorage::BF16(_) => (
                CpuStorage::BF16(out.into_iter().map(half::bf16::from_f32).collect()),
                shape,
            ),
            _ => (CpuStorage::F32(out), shape),
        })
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

/// Per-head attention over a batch folded into the sequence axis: `q`, `k`,
/// `v` are `(C, B·S)` — the ANE's `(1, C, 1, S)` layout with the batch laid
/// end to end — and each sequence attends only within itself. `mask_add` is
/// `(B, 1, 1, S)` or `None` when no position is padded. Returns `(C, B·S)`.
/// On CPU this is the fast path: every 1×1 convolution around it becomes a
/// single large matrix product.
pub fn attention_folded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_add: Option<&Tensor>,
    heads: usize,
    batch: usize,
    seq: usize,
) -> Result<Tensor> {
    let (c, _n) = q.dims2()?;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    // (C, N) = (H, D, B, S) -> (B, H, D, S)
    let split = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.reshape((heads, d, batch, seq))?
            .permute((2, 0, 1, 3))?
            .contiguous()
    };
    let q = split(&(q * scale)?)?;
    let k = split(k)?;
    let v = split(v)?;
    let mut scores = q.transpose(2, 3)?.matmul(&k)?; // (B, H, S_q, S_k)
    if let Some(m) = mask_add {
        scores = scores.broadcast_add(m)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = v.matmul(&probs.transpose(2, 3)?)?; // (B, H, D, S_q)
    Ok(out
        .permute((1, 2, 0, 3))?
        .contiguous()?
        .reshape((c, batch * seq))?)
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

/// Exact (erf) GELU, as BERT uses. Without gradient tracking it runs a
/// multi-threaded CPU kernel (erf to within 1.5e-7); with tracking, candle's
/// differentiable `gelu_erf`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.track_op() || x.dtype() != DType::F32 {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.contiguous()?.apply_op1_no_bwd(&GeluErf)?)
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7).
#[inline]
fn erf_as(x: f32) -> f32 {
    let s = x.signum();
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    s * (1.0 - poly * (-a * a).exp())
}

struct GeluErf;

impl candle_core::CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-fast"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu needs a contiguous input")
        };
        let candle_core::CpuStorage::F32(v) = storage else {
            candle_core::bail!("gelu kernel expects f32")
        };
        let src = &v[start..end];
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(16384)
            .zip(src.par_chunks(16384))
            .for_each(|(o, i)| {
                for (o, &x) in o.iter_mut().zip(i) {
                    *o = 0.5 * x * (1.0 + erf_as(x * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
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
        let y = ln.forward(&x).unwrap();
        // Reference: candle's last-axis layer norm on (B, S, C).
        let xt = x.transpose(1, 2).unwrap().contiguous().unwrap();
        let r = candle_nn::ops::layer_norm(&xt, &w, &bias, 1e-12).unwrap();
        let r = r.transpose(1, 2).unwrap();
        assert!(max_abs_diff(&y, &r) < 1e-4);
    }

    /// `LayerNormChannels::load` from weight 1, bias 0.
    fn loaded_norm(c: usize, eps: f64) -> LayerNormChannels {
        let mut m = std::collections::HashMap::new();
        m.insert(
            "ln.weight".to_string(),
            Tensor::ones(c, DType::F32, &Device::Cpu).unwrap(),
        );
        m.insert(
            "ln.bias".to_string(),
            Tensor::zeros(c, DType::F32, &Device::Cpu).unwrap(),
        );
        let vb = VarBuilder::from_tensors(m, DType::F32, &Device::Cpu);
        LayerNormChannels::load(vb.pp("ln"), c, eps).unwrap()
    }

    #[test]
    fn load_raises_a_tiny_eps_and_both_forms_apply_it() {
        // One position whose four channels are ±1e-4 around 0: variance 1e-8,
        // of the order of the epsilons, so the output shows which one was used.
        let x = Tensor::new(&[[[-1e-4f32], [-1e-4], [1e-4], [1e-4]]], &Device::Cpu).unwrap();
        // y = x / sqrt(var + eps), by hand.
        let expect = |eps: f64| 1e-4 / (1e-8 + eps).sqrt();
        for (given, used) in [(1e-12, MIN_FP16_EPS), (1e-5, 1e-5)] {
            let ln = loaded_norm(4, given);
            let want = expect(used);
            // Had `given` been used instead, the output would be this far off.
            assert!((want - expect(given)).abs() > 0.02 || given == used);
            for (form, y) in [
                ("kernel", ln.forward(&x).unwrap()),
                ("composite", ln.forward_composite(&x).unwrap()),
            ] {
                let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
                for (k, v) in y.iter().enumerate() {
                    let w = if k < 2 { -want } else { want };
                    assert!(
                        (f64::from(*v) - w).abs() < 1e-3,
                        "{form}, eps {given}: channel {k} is {v}, want {w} (eps {used})"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_layer_norm_kernel_matches_composite_form() {
        let x = rand(&[3, 16, 70], 12);
        let ln = LayerNormChannels {
            weight: rand(&[16], 13),
            bias: rand(&[16], 14),
            eps: 1e-7,
        };
        let fast = ln.forward(&x).unwrap();
        let slow = ln.forward_composite(&x).unwrap();
        assert!(max_abs_diff(&fast, &slow) < 1e-4);
        // (C, N) input is normalised over C too.
        let folded = x.get(1).unwrap();
        let f2 = ln.forward(&folded).unwrap();
        assert!(max_abs_diff(&f2, &slow.get(1).unwrap()) < 1e-4);
        // f16 in, f16 out, statistics in f32.
        let x16 = x.to_dtype(DType::F16).unwrap();
        let ln16 = LayerNormChannels {
            weight: ln.weight.to_dtype(DType::F16).unwrap(),
            bias: ln.bias.to_dtype(DType::F16).unwrap(),
            eps: 1e-7,
        };
        let h = ln16.forward(&x16).unwrap();
        assert_eq!(h.dtype(), DType::F16);
        assert!(max_abs_diff(&h.to_dtype(DType::F32).unwrap(), &slow) < 2e-2);
        // Variables take the differentiable path and get gradients.
        let v = candle_core::Var::from_tensor(&x).unwrap();
        let y = ln.forward(v.as_tensor()).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(v.as_tensor()).is_some());
    }

    #[test]
    fn folded_attention_matches_per_row_split_attention() {
        let (b, c, s, h) = (3, 16, 6, 4);
        let q = rand(&[b, c, s], 15);
        let k = rand(&[b, c, s], 16);
        let v = rand(&[b, c, s], 17);
        let mask = Tensor::from_vec(
            vec![1u32, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0],
            (b, s),
            &Device::Cpu,
        )
        .unwrap();
        let madd = additive_mask(&mask, DType::F32).unwrap();
        let want = attention_split(&q, &k, &v, &madd, h).unwrap();
        let fold = |t: &Tensor| {
            t.transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((c, b * s))
                .unwrap()
        };
        let m4 = madd.reshape((b, 1, 1, s)).unwrap();
        let got = attention_folded(&fold(&q), &fold(&k), &fold(&v), Some(&m4), h, b, s).unwrap();
        let got = got.reshape((c, b, s)).unwrap().transpose(0, 1).unwrap();
        assert!(max_abs_diff(&want, &got) < 1e-5);
    }

    /// Finite-difference check of every trained layer (k-wide conv in its
    /// folded form, channel LayerNorm, 1×1 conv) with batch > 1, in f64.
    /// candle's CPU conv1d backward is wrong for batch > 1; ours must not be.
    #[test]
    fn trained_layers_have_correct_gradients() {
        use candle_core::Var;
        let (c_in, c_out, b, s, k) = (3, 4, 3, 5, 3);
        let f64t = |shape: &[usize], seed| rand(shape, seed).to_dtype(DType::F64).unwrap();
        let x = f64t(&[c_in, b, s], 20);
        let r = f64t(&[c_out, b * s], 21);
        let w = Var::from_tensor(&f64t(&[c_out, c_in, 1, k], 22)).unwrap();
        let bias = Var::from_tensor(&f64t(&[c_out], 23)).unwrap();
        let g = Var::from_tensor(&f64t(&[c_out], 24)).unwrap();
        let p = Var::from_tensor(&f64t(&[c_out, c_out], 25)).unwrap();
        let loss = |w: &Tensor, bias: &Tensor, g: &Tensor, p: &Tensor| -> Tensor {
            let conv = KConv::new(w.clone(), bias.clone(), k).unwrap();
            let y = conv
                .forward_folded(&x)
                .unwrap()
                .reshape((c_out, b * s))
                .unwrap();
            let ln = LayerNormChannels {
                weight: g.clone(),
                bias: bias.clone(),
                eps: 1e-5,
            };
            let y = ln.forward(&y).unwrap();
            let y = Conv1x1 {
                weight: p.clone(),
                bias: None,
            }
            .forward(&y)
            .unwrap();
            (y.gelu_erf().unwrap() * &r).unwrap().sum_all().unwrap()
        };
        let l = loss(
            w.as_tensor(),
            bias.as_tensor(),
            g.as_tensor(),
            p.as_tensor(),
        );
        let grads = l.backward().unwrap();
        let eps = 1e-6;
        for (which, var) in [("conv", &w), ("bias", &bias), ("gamma", &g), ("proj", &p)] {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in (0..base.len()).step_by(3) {
                let eval = |delta: f64| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let t = Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap();
                    let (w2, b2, g2, p2) = match which {
                        "conv" => (
                            t,
                            bias.as_tensor().clone(),
                            g.as_tensor().clone(),
                            p.as_tensor().clone(),
                        ),
                        "bias" => (
                            w.as_tensor().clone(),
                            t,
                            g.as_tensor().clone(),
                            p.as_tensor().clone(),
                        ),
                        "gamma" => (
                            w.as_tensor().clone(),
                            bias.as_tensor().clone(),
                            t,
                            p.as_tensor().clone(),
                        ),
                        _ => (
                            w.as_tensor().clone(),
                            bias.as_tensor().clone(),
                            g.as_tensor().clone(),
                            t,
                        ),
                    };
                    loss(&w2, &b2, &g2, &p2).to_scalar::<f64>().unwrap()
                };
                let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
                let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
                assert!(
                    err < 1e-5,
                    "{which}[{i}]: numeric {numeric} vs analytic {}",
                    analytic[i]
                );
            }
        }
    }

    #[test]
    fn fast_gelu_matches_candle_gelu_erf() {
        let x = (rand(&[4, 1000], 30) * 4.0).unwrap();
        let fast = gelu(&x).unwrap();
        let exact = x.gelu_erf().unwrap();
        assert!(max_abs_diff(&fast, &exact) < 1e-6);
    }

    #[test]
    fn kconv_matches_candle_conv1d() {
        let (b, ci, co, s, k) = (3, 4, 5, 9, 5);
        let x = rand(&[b, ci, s], 7);
        let w = rand(&[co, ci, 1, k], 8);
        let bias = rand(&[co], 9);
        let conv = KConv::new(w.clone(), bias.clone(), k).unwrap();
        let y = conv.forward(&x).unwrap();
        let folded = conv
            .forward_folded(&x.transpose(0, 1).unwrap().contiguous().unwrap())
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        assert!(max_abs_diff(&y, &folded) < 1e-4);
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
