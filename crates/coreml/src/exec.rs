//! A reference executor for MIL programs, computing in f32 on CPU.
//!
//! It runs the ops the exporters emit (and a few neighbours) with the
//! semantics of coremltools' op definitions, so an exported package can be
//! checked numerically on Linux. Inputs are rounded to their declared type
//! (fp16 inputs become fp16 values, as Core ML would receive them), every
//! intermediate is f32 (integers are i64, bools u8), and outputs are rounded
//! to their declared type. Float tensors use candle for the heavy kernels.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, D};

use crate::error::{CoremlError, Result};
use crate::program::*;

/// Ops [`run`] implements.
pub const SUPPORTED_OPS: &[&str] = &[
    "const",
    "identity",
    "add",
    "sub",
    "mul",
    "real_div",
    "maximum",
    "minimum",
    "pow",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "sign",
    "relu",
    "sigmoid",
    "tanh",
    "sqrt",
    "rsqrt",
    "exp",
    "square",
    "abs",
    "erf",
    "gelu",
    "softmax",
    "layer_norm",
    "conv",
    "reduce_mean",
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "matmul",
    "split",
    "concat",
    "reshape",
    "l2_norm",
    "gather",
    "transpose",
    "expand_dims",
    "squeeze",
    "slice_by_index",
    "shape",
    "cast",
];

#[derive(Debug, Clone)]
enum Val {
    T(Tensor),
    Str(String),
}

struct Ctx<'a> {
    op: &'a Operation,
    env: &'a HashMap<String, Val>,
}

impl Ctx<'_> {
    fn fail(&self, message: impl Into<String>) -> CoremlError {
        CoremlError::Exec {
            op: self.op.display_name().to_string(),
            op_type: self.op.op_type.clone(),
            message: message.into(),
        }
    }

    fn all(&self, param: &str) -> Result<Vec<Val>> {
        let bs = self
            .op
            .inputs
            .get(param)
            .ok_or_else(|| self.fail(format!("parameter {param:?} is not bound")))?;
        bs.iter()
            .map(|b| match b {
                Binding::Var(v) => self
                    .env
                    .get(v)
                    .cloned()
                    .ok_or_else(|| self.fail(format!("variable {v:?} has no value"))),
                Binding::Value(v) => value_to_val(v).map_err(|m| self.fail(m)),
            })
            .collect()
    }

    fn opt(&self, param: &str) -> Result<Option<Val>> {
        if !self.op.inputs.contains_key(param) {
            return Ok(None);
        }
        let mut v = self.all(param)?;
        if v.len() != 1 {
            return Err(self.fail(format!("parameter {param:?} has {} bindings", v.len())));
        }
        Ok(v.pop())
    }

    fn t(&self, param: &str) -> Result<Tensor> {
        match self.opt(param)? {
            Some(Val::T(t)) => Ok(t),
            Some(Val::Str(_)) => Err(self.fail(format!("parameter {param:?} is a string"))),
            None => Err(self.fail(format!("parameter {param:?} is not bound"))),
        }
    }

    fn opt_t(&self, param: &str) -> Result<Option<Tensor>> {
        match self.opt(param)? {
            Some(Val::T(t)) => Ok(Some(t)),
            Some(Val::Str(_)) => Err(self.fail(format!("parameter {param:?} is a string"))),
            None => Ok(None),
        }
    }

    fn ints(&self, param: &str) -> Result<Option<Vec<i64>>> {
        match self.opt_t(param)? {
            Some(t) => Ok(Some(
                t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?,
            )),
            None => Ok(None),
        }
    }

    fn int(&self, param: &str) -> Result<Option<i64>> {
        Ok(self.ints(param)?.and_then(|v| v.first().copied()))
    }

    fn float(&self, param: &str) -> Result<Option<f32>> {
        match self.opt_t(param)? {
            Some(t) => Ok(t
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .first()
                .copied()),
            None => Ok(None),
        }
    }

    fn flag(&self, param: &str) -> Result<Option<bool>> {
        Ok(self.int(param)?.map(|v| v != 0))
    }

    fn bools(&self, param: &str) -> Result<Option<Vec<bool>>> {
        Ok(self
            .ints(param)?
            .map(|v| v.into_iter().map(|x| x != 0).collect()))
    }

    fn string(&self, param: &str) -> Result<Option<String>> {
        match self.opt(param)? {
            Some(Val::Str(s)) => Ok(Some(s)),
            Some(Val::T(_)) => Err(self.fail(format!("parameter {param:?} is not a string"))),
            None => Ok(None),
        }
    }

    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(self.fail(format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(a as usize)
    }
}

fn value_to_val(v: &Value) -> std::result::Result<Val, String> {
    let t = v
        .as_tensor()
        .ok_or_else(|| "only tensor values are supported".to_string())?;
    tensor_value_to_val(t)
}

fn tensor_value_to_val(t: &TensorValue) -> std::result::Result<Val, String> {
    let shape =
        t.ty.fixed_shape()
            .ok_or_else(|| format!("const of type {} has no fixed shape", t.ty))?;
    let n =
        t.ty.elem_count()
            .ok_or_else(|| format!("const of type {} is too large", t.ty))?;
    if !matches!(t.data, TensorData::Strings(_) | TensorData::Bytes(_)) && t.data.len() != n {
        return Err(format!(
            "const of type {} holds {} values",
            t.ty,
            t.data.len()
        ));
    }
    let dev = &Device::Cpu;
    let mk = |r: candle_core::Result<Tensor>| r.map(Val::T).map_err(|e| e.to_string());
    match &t.data {
        TensorData::Strings(s) if s.len() == 1 => Ok(Val::Str(s[0].clone())),
        TensorData::Strings(_) => Err("string tensors are not supported".into()),
        _ if t.ty.dtype.is_float() => {
            let v = t
                .to_f32_vec()
                .ok_or_else(|| format!("cannot read {} values", t.ty.dtype.mil_name()))?;
            mk(Tensor::from_vec(v, shape.as_slice(), dev))
        }
        TensorData::Bools(b) => mk(Tensor::from_vec(
            b.iter().map(|&x| x as u8).collect::<Vec<u8>>(),
            shape.as_slice(),
            dev,
        )),
        _ => {
            let v = t
                .to_i64_vec()
                .ok_or_else(|| format!("cannot read {} values", t.ty.dtype.mil_name()))?;
            mk(Tensor::from_vec(v, shape.as_slice(), dev))
        }
    }
}

/// Rounds a value to a declared element type (fp16 through half precision).
fn to_declared(t: &Tensor, dtype: DataType) -> Result<Tensor> {
    Ok(match dtype {
        DataType::F16 => t.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
        DataType::BF16 => t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?,
        d if d.is_float() => t.to_dtype(DType::F32)?,
        DataType::Bool => t.ne(0f64)?.to_dtype(DType::U8)?,
        _ => t.to_dtype(DType::I64)?,
    })
}

/// The operands of a binary op, both f32 when their element types differ.
fn same_dtype(x: Tensor, y: Tensor) -> Result<(Tensor, Tensor)> {
    if x.dtype() == y.dtype() {
        return Ok((x, y));
    }
    Ok((x.to_dtype(DType::F32)?, y.to_dtype(DType::F32)?))
}

fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let m = x.max_keepdim(axis)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(axis)?;
    Ok(e.broadcast_div(&s)?)
}

fn gelu(x: &Tensor, mode: &str) -> std::result::Result<Tensor, String> {
    let r = match mode {
        "EXACT" => x.gelu_erf(),
        "TANH_APPROXIMATION" => x.gelu(),
        "SIGMOID_APPROXIMATION" => (x * 1.702).and_then(|y| sigmoid(&y)).and_then(|s| x * s),
        other => return Err(format!("unknown gelu mode {other:?}")),
    };
    r.map_err(|e| e.to_string())
}

fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

fn reduce(x: &Tensor, axes: &[usize], keep: bool, kind: &str) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &a in &sorted {
        y = match kind {
            "reduce_mean" => y.mean_keepdim(a)?,
            "reduce_sum" => y.sum_keepdim(a)?,
            "reduce_max" => y.max_keepdim(a)?,
            _ => y.min_keepdim(a)?,
        };
    }
    if !keep {
        for &a in sorted.iter().rev() {
            y = y.squeeze(a)?;
        }
    }
    Ok(y)
}

fn exec_op(cx: &Ctx<'_>) -> Result<Vec<Val>> {
    let op = cx.op;
    let one = |t: Tensor| Ok(vec![Val::T(t)]);
    match op.op_type.as_str() {
        "const" => {
            let v = op
                .const_value()
                .ok_or_else(|| cx.fail("const op without a value"))?;
            Ok(vec![value_to_val(v).map_err(|m| cx.fail(m))?])
        }
        "identity" => Ok(vec![cx
            .opt("x")?
            .ok_or_else(|| cx.fail("x is not bound"))?]),
        "add" | "sub" | "mul" | "real_div" | "maximum" | "minimum" | "pow" => {
            let (x, y) = same_dtype(cx.t("x")?, cx.t("y")?)?;
            one(match op.op_type.as_str() {
                "add" => x.broadcast_add(&y)?,
                "sub" => x.broadcast_sub(&y)?,
                "mul" => x.broadcast_mul(&y)?,
                "real_div" => x
                    .to_dtype(DType::F32)?
                    .broadcast_div(&y.to_dtype(DType::F32)?)?,
                "maximum" => x.broadcast_maximum(&y)?,
                "minimum" => x.broadcast_minimum(&y)?,
                _ => x.broadcast_pow(&y)?,
            })
        }
        "equal" | "not_equal" | "less" | "less_equal" | "greater" | "greater_equal" => {
            let (x, y) = same_dtype(cx.t("x")?, cx.t("y")?)?;
            one(match op.op_type.as_str() {
                "equal" => x.broadcast_eq(&y)?,
                "not_equal" => x.broadcast_ne(&y)?,
                "less" => x.broadcast_lt(&y)?,
                "less_equal" => x.broadcast_le(&y)?,
                "greater" => x.broadcast_gt(&y)?,
                _ => x.broadcast_ge(&y)?,
            })
        }
        "sign" => {
            let x = cx.t("x")?.to_dtype(DType::F32)?;
            let pos = x.gt(0f64)?.to_dtype(DType::F32)?;
            let neg = x.lt(0f64)?.to_dtype(DType::F32)?;
            one((pos - neg)?)
        }
        "relu" => one(cx.t("x")?.relu()?),
        "sigmoid" => one(sigmoid(&cx.t("x")?)?),
        "tanh" => one(cx.t("x")?.tanh()?),
        "sqrt" => one(cx.t("x")?.sqrt()?),
        "exp" => one(cx.t("x")?.exp()?),
        "square" => one(cx.t("x")?.sqr()?),
        "abs" => one(cx.t("x")?.abs()?),
        "erf" => one(cx.t("x")?.erf()?),
        "rsqrt" => {
            let eps = cx.float("epsilon")?.unwrap_or(1e-12) as f64;
            one((cx.t("x")? + eps)?.sqrt()?.recip()?)
        }
        "gelu" => {
            let mode = cx.string("mode")?.unwrap_or_else(|| "EXACT".into());
            one(gelu(&cx.t("x")?, &mode).map_err(|m| cx.fail(m))?)
        }
        "softmax" => {
            let x = cx.t("x")?;
            let a = cx.axis(cx.int("axis")?.unwrap_or(-1), x.rank())?;
            one(softmax(&x, a)?)
        }
        "layer_norm" => {
            let x = cx.t("x")?;
            let r = x.rank();
            let axes: Vec<usize> = match cx.ints("axes")? {
                Some(a) => a.iter().map(|&a| cx.axis(a, r)).collect::<Result<_>>()?,
                None => (0..r).collect(),
            };
            let eps = cx.float("epsilon")?.unwrap_or(1e-5) as f64;
            let mean = reduce(&x, &axes, true, "reduce_mean")?;
            let xc = x.broadcast_sub(&mean)?;
            let var = reduce(&xc.sqr()?, &axes, true, "reduce_mean")?;
            let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
            // gamma/beta have shape x.shape[axes]: place them on those axes.
            let bshape: Vec<usize> = (0..r)
                .map(|i| if axes.contains(&i) { x.dims()[i] } else { 1 })
                .collect();
            if let Some(g) = cx.opt_t("gamma")? {
                y = y.broadcast_mul(&g.reshape(bshape.as_slice())?)?;
            }
            if let Some(b) = cx.opt_t("beta")? {
                y = y.broadcast_add(&b.reshape(bshape.as_slice())?)?;
            }
            one(y)
        }
        "conv" => {
            let x = cx.t("x")?;
            let w = cx.t("weight")?;
            if x.rank() != 4 || w.rank() != 4 {
                return Err(cx.fail("only 2-D convolutions (rank-4 x and weight) are supported"));
            }
            let (kh, kw) = (w.dims()[2], w.dims()[3]);
            let strides = cx.ints("strides")?.unwrap_or(vec![1, 1]);
            let dil = cx.ints("dilations")?.unwrap_or(vec![1, 1]);
            let groups = cx.int("groups")?.unwrap_or(1) as usize;
            if strides.len() != 2 || dil.len() != 2 || strides[0] != strides[1] || dil[0] != dil[1]
            {
                return Err(cx.fail(format!(
                    "strides {strides:?} / dilations {dil:?}: only equal values per axis are supported"
                )));
            }
            let pad_type = cx.string("pad_type")?.unwrap_or_else(|| "valid".into());
            let pad: Vec<i64> = match pad_type.as_str() {
                "valid" => vec![0; 4],
                "custom" => cx.ints("pad")?.unwrap_or(vec![0; 4]),
                "same" | "same_lower" => {
                    let mut p = Vec::new();
                    for (i, k) in [kh, kw].into_iter().enumerate() {
                        let n = x.dims()[2 + i] as i64;
                        let s = strides[i];
                        let ke = (k as i64 - 1) * dil[i] + 1;
                        let out = (n + s - 1) / s;
                        let total = ((out - 1) * s + ke - n).max(0);
                        let (lo, hi) = if pad_type == "same" {
                            (total / 2, total - total / 2)
                        } else {
                            (total - total / 2, total / 2)
                        };
                        p.extend([lo, hi]);
                    }
                    p
                }
                other => return Err(cx.fail(format!("unknown pad_type {other:?}"))),
            };
            if pad.len() != 4 || pad.iter().any(|&p| p < 0) {
                return Err(cx.fail(format!("bad pad {pad:?}")));
            }
            let xp = x
                .pad_with_zeros(2, pad[0] as usize, pad[1] as usize)?
                .pad_with_zeros(3, pad[2] as usize, pad[3] as usize)?;
            let y = xp.conv2d(&w, 0, strides[0] as usize, dil[0] as usize, groups)?;
            let y = match cx.opt_t("bias")? {
                Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
                None => y,
            };
            one(y)
        }
        "reduce_mean" | "reduce_sum" | "reduce_max" | "reduce_min" => {
            let x = cx.t("x")?;
            let r = x.rank();
            let axes: Vec<usize> = match cx.ints("axes")? {
                Some(a) => a.iter().map(|&a| cx.axis(a, r)).collect::<Result<_>>()?,
                None => (0..r).collect(),
            };
            let keep = cx.flag("keep_dims")?.unwrap_or(false);
            one(reduce(&x, &axes, keep, &op.op_type)?)
        }
        "matmul" => {
            let mut x = cx.t("x")?;
            let mut y = cx.t("y")?;
            if x.rank() < 2 || y.rank() < 2 {
                return Err(cx.fail("rank-1 matmul operands are not supported"));
            }
            if cx.flag("transpose_x")?.unwrap_or(false) {
                x = x.transpose(D::Minus1, D::Minus2)?;
            }
            if cx.flag("transpose_y")?.unwrap_or(false) {
                y = y.transpose(D::Minus1, D::Minus2)?;
            }
            one(x.contiguous()?.broadcast_matmul(&y.contiguous()?)?)
        }
        "split" => {
            let x = cx.t("x")?;
            let a = cx.axis(cx.int("axis")?.unwrap_or(0), x.rank())?;
            let n = x.dims()[a];
            let sizes: Vec<usize> = match (cx.ints("split_sizes")?, cx.int("num_splits")?) {
                (Some(s), _) => s.iter().map(|&v| v.max(0) as usize).collect(),
                (None, Some(k)) if k > 0 && n % k as usize == 0 => vec![n / k as usize; k as usize],
                _ => return Err(cx.fail(format!("cannot split {n} as requested"))),
            };
            if sizes.iter().sum::<usize>() != n {
                return Err(cx.fail(format!("split sizes {sizes:?} do not add up to {n}")));
            }
            let mut start = 0;
            let mut out = Vec::new();
            for s in sizes {
                out.push(Val::T(x.narrow(a, start, s)?));
                start += s;
            }
            Ok(out)
        }
        "concat" => {
            let vals = cx.all("values")?;
            let ts: Vec<Tensor> = vals
                .into_iter()
                .map(|v| match v {
                    Val::T(t) => Ok(t),
                    Val::Str(_) => Err(cx.fail("cannot concat strings")),
                })
                .collect::<Result<_>>()?;
            let first = ts.first().ok_or_else(|| cx.fail("no values"))?;
            if cx.flag("interleave")?.unwrap_or(false) {
                return Err(cx.fail("interleaved concat is not supported"));
            }
            let a = cx.axis(cx.int("axis")?.unwrap_or(0), first.rank())?;
            one(Tensor::cat(&ts, a)?)
        }
        "reshape" => {
            let x = cx.t("x")?;
            let shape = cx
                .ints("shape")?
                .ok_or_else(|| cx.fail("shape is not bound"))?;
            let n = x.elem_count();
            let known: i64 = shape.iter().filter(|&&d| d > 0).product();
            let mut dims = Vec::with_capacity(shape.len());
            for (i, &d) in shape.iter().enumerate() {
                dims.push(match d {
                    -1 if known > 0 => n / known as usize,
                    0 if i < x.rank() => x.dims()[i],
                    d if d > 0 => d as usize,
                    _ => return Err(cx.fail(format!("bad shape {shape:?}"))),
                });
            }
            if dims.iter().product::<usize>() != n {
                return Err(cx.fail(format!("cannot reshape {:?} to {shape:?}", x.dims())));
            }
            one(x.reshape(dims)?)
        }
        "l2_norm" => {
            let x = cx.t("x")?;
            let r = x.rank();
            if r < 3 {
                return Err(cx.fail("l2_norm needs rank >= 3"));
            }
            let eps = cx.float("epsilon")?.unwrap_or(1e-6) as f64;
            let ss = reduce(&x.sqr()?, &[r - 3, r - 2, r - 1], true, "reduce_sum")?;
            one(x.broadcast_div(&(ss + eps)?.sqrt()?)?)
        }
        "gather" => {
            let x = cx.t("x")?;
            let idx = cx.t("indices")?.to_dtype(DType::I64)?;
            if cx.int("batch_dims")?.unwrap_or(0) != 0 {
                return Err(cx.fail("batch_dims other than 0 is not supported"));
            }
            let a = cx.axis(cx.int("axis")?.unwrap_or(0), x.rank())?;
            let n = x.dims()[a] as i64;
            let flat = idx.flatten_all()?;
            let v = flat.to_vec1::<i64>()?;
            if let Some(bad) = v.iter().find(|&&i| i < -n || i >= n) {
                return Err(cx.fail(format!("index {bad} is out of range for axis size {n}")));
            }
            let fixed: Vec<i64> = v.iter().map(|&i| if i < 0 { i + n } else { i }).collect();
            let fi = Tensor::from_vec(fixed, flat.dims(), &Device::Cpu)?;
            let g = x.index_select(&fi, a)?;
            let mut shape: Vec<usize> = x.dims()[..a].to_vec();
            shape.extend_from_slice(idx.dims());
            shape.extend_from_slice(&x.dims()[a + 1..]);
            one(g.reshape(shape)?)
        }
        "transpose" => {
            let x = cx.t("x")?;
            let perm = cx
                .ints("perm")?
                .ok_or_else(|| cx.fail("perm is not bound"))?;
            let p: Vec<usize> = perm
                .iter()
                .map(|&a| cx.axis(a, x.rank()))
                .collect::<Result<_>>()?;
            one(x.permute(p)?.contiguous()?)
        }
        "expand_dims" => {
            let x = cx.t("x")?;
            let axes = cx
                .ints("axes")?
                .ok_or_else(|| cx.fail("axes is not bound"))?;
            let out_rank = x.rank() + axes.len();
            let mut a: Vec<usize> = axes
                .iter()
                .map(|&v| cx.axis(v, out_rank))
                .collect::<Result<_>>()?;
            a.sort_unstable();
            let mut y = x;
            for ax in a {
                y = y.unsqueeze(ax)?;
            }
            one(y)
        }
        "squeeze" => {
            let x = cx.t("x")?;
            let axes: Vec<usize> = match cx.ints("axes")? {
                Some(a) => a
                    .iter()
                    .map(|&v| cx.axis(v, x.rank()))
                    .collect::<Result<_>>()?,
                None => (0..x.rank()).filter(|&i| x.dims()[i] == 1).collect(),
            };
            let mut a = axes;
            a.sort_unstable();
            let mut y = x;
            for ax in a.into_iter().rev() {
                y = y.squeeze(ax)?;
            }
            one(y)
        }
        "slice_by_index" => {
            let x = cx.t("x")?;
            let r = x.rank();
            let begin = cx
                .ints("begin")?
                .ok_or_else(|| cx.fail("begin is not bound"))?;
            let end = cx.ints("end")?.ok_or_else(|| cx.fail("end is not bound"))?;
            let stride = cx.ints("stride")?.unwrap_or(vec![1; r]);
            let bm = cx.bools("begin_mask")?.unwrap_or(vec![false; r]);
            let em = cx.bools("end_mask")?.unwrap_or(vec![false; r]);
            let sm = cx.bools("squeeze_mask")?.unwrap_or(vec![false; r]);
            if [
                begin.len(),
                end.len(),
                stride.len(),
                bm.len(),
                em.len(),
                sm.len(),
            ]
            .iter()
            .any(|&l| l != r)
            {
                return Err(cx.fail(format!("begin/end/stride/masks must have {r} entries")));
            }
            if stride.iter().any(|&s| s != 1) {
                return Err(cx.fail(format!("stride {stride:?}: only stride 1 is supported")));
            }
            let mut y = x.clone();
            for i in 0..r {
                let n = x.dims()[i] as i64;
                let norm = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n);
                let b = if bm[i] { 0 } else { norm(begin[i]) };
                let e = if em[i] { n } else { norm(end[i]) };
                let len = (e - b).max(0) as usize;
                y = y.narrow(i, b as usize, len)?;
            }
            for i in (0..r).rev() {
                if sm[i] {
                    y = y.squeeze(i)?;
                }
            }
            one(y)
        }
        "shape" => {
            let x = cx.t("x")?;
            let d: Vec<i64> = x.dims().iter().map(|&v| v as i64).collect();
            let n = d.len();
            one(Tensor::from_vec(d, n, &Device::Cpu)?)
        }
        "cast" => {
            let x = cx.t("x")?;
            let dt = cx
                .string("dtype")?
                .ok_or_else(|| cx.fail("dtype is not bound"))?;
            one(match dt.as_str() {
                "fp16" => x
                    .to_dtype(DType::F32)?
                    .to_dtype(DType::F16)?
                    .to_dtype(DType::F32)?,
                "fp32" => x.to_dtype(DType::F32)?,
                "int32" | "int16" | "int8" | "uint8" | "uint16" => {
                    x.to_dtype(DType::F32)?.to_dtype(DType::I64)?
                }
                "bool" => x.to_dtype(DType::F32)?.ne(0f64)?.to_dtype(DType::U8)?,
                other => return Err(cx.fail(format!("cast to {other:?} is not supported"))),
            })
        }
        other => Err(cx.fail(format!(
            "the reference executor does not implement {other:?}"
        ))),
    }
}

fn run_block(b: &Block, env: &mut HashMap<String, Val>) -> Result<()> {
    for op in &b.operations {
        if !op.blocks.is_empty() {
            return Err(CoremlError::Exec {
                op: op.display_name().into(),
                op_type: op.op_type.clone(),
                message: "control flow is not supported".into(),
            });
        }
        let outs = exec_op(&Ctx { op, env })?;
        if outs.len() != op.outputs.len() {
            return Err(CoremlError::Exec {
                op: op.display_name().into(),
                op_type: op.op_type.clone(),
                message: format!(
                    "produced {} outputs, declares {}",
                    outs.len(),
                    op.outputs.len()
                ),
            });
        }
        for (o, v) in op.outputs.iter().zip(outs) {
            // Check the result against the declared type's fixed dims.
            if let (Val::T(t), ValueType::Tensor(tt)) = (&v, &o.ty) {
                let ok = tt.rank() == t.rank()
                    && tt
                        .shape
                        .iter()
                        .zip(t.dims())
                        .all(|(d, &n)| d.fixed().is_none_or(|f| f as usize == n));
                if !ok {
                    return Err(CoremlError::Exec {
                        op: op.display_name().into(),
                        op_type: op.op_type.clone(),
                        message: format!(
                            "output {:?} has shape {:?}, declared {tt}",
                            o.name,
                            t.dims()
                        ),
                    });
                }
            }
            env.insert(o.name.clone(), v);
        }
    }
    Ok(())
}

/// Runs the model's main function on `inputs` (by input name) and returns
/// every block output by name. Input shapes are checked against the
/// program and, for flexible inputs, the description's enumerated shapes.
pub fn run(model: &Model, inputs: &HashMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
    let (_, f) = model
        .main_function()
        .ok_or_else(|| CoremlError::Input("the model has no main function".into()))?;
    let mut env: HashMap<String, Val> = HashMap::new();
    for i in &f.inputs {
        let tt =
            i.ty.as_tensor()
                .ok_or_else(|| CoremlError::Input(format!("input {:?} is not a tensor", i.name)))?;
        let t = inputs
            .get(&i.name)
            .ok_or_else(|| CoremlError::Input(format!("input {:?} is missing", i.name)))?;
        let fits = tt.rank() == t.rank()
            && tt
                .shape
                .iter()
                .zip(t.dims())
                .all(|(d, &n)| d.fixed().is_none_or(|f| f as usize == n));
        if !fits {
            return Err(CoremlError::Input(format!(
                "input {:?} has shape {:?}, the program declares {tt}",
                i.name,
                t.dims()
            )));
        }
        if let Some(feat) = model.description.inputs.iter().find(|x| x.name == i.name) {
            if let Some(shapes) = feat.as_array().and_then(|a| a.enumerated_shapes()) {
                let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
                if !shapes.contains(&dims) {
                    return Err(CoremlError::Input(format!(
                        "input {:?} has shape {dims:?}; the model accepts {shapes:?}",
                        i.name
                    )));
                }
            }
        }
        env.insert(i.name.clone(), Val::T(to_declared(t, tt.dtype)?));
    }
    for k in inputs.keys() {
        if !f.inputs.iter().any(|i| &i.name == k) {
            return Err(CoremlError::Input(format!("the model has no input {k:?}")));
        }
    }
    run_block(&f.block, &mut env)?;
    let types = crate::validate::var_types(f);
    let mut out = BTreeMap::new();
    for name in &f.block.outputs {
        let v = match env.remove(name) {
            Some(Val::T(t)) => t,
            _ => {
                return Err(CoremlError::Input(format!(
                    "output {name:?} was not computed as a tensor"
                )))
            }
        };
        let v = match types.get(name).and_then(|t| t.as_tensor()) {
            Some(tt) => to_declared(&v, tt.dtype)?,
            None => v,
        };
        out.insert(name.clone(), v.to_dtype(DType::F32)?);
    }
    Ok(out)
}
