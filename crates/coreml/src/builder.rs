//! A typed MIL builder: declares function inputs, const weights and ops, and
//! infers every output type, so the program it produces is type-correct by
//! construction (coremltools re-infers each op's type and rejects
//! mismatches).
//!
//! Like coremltools, every optional parameter the exporters rely on is
//! materialised as its own `const` op and bound by name.

use std::collections::{BTreeMap, HashSet};

use crate::error::{CoremlError, Result};
use crate::program::*;

/// A typed variable of the program being built.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    pub name: String,
    pub ty: TensorType,
}

impl Var {
    pub fn shape(&self) -> &[Dim] {
        &self.ty.shape
    }
    pub fn rank(&self) -> usize {
        self.ty.rank()
    }
}

fn err(msg: impl Into<String>) -> CoremlError {
    CoremlError::Export(msg.into())
}

/// Opsets the builder can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opset {
    /// iOS 16 / macOS 13, specification version 7.
    CoreML6,
    /// iOS 17 / macOS 14, specification version 8.
    CoreML7,
    /// iOS 18 / macOS 15, specification version 9.
    CoreML8,
}

impl Opset {
    pub fn from_spec_version(v: i32) -> Result<Self> {
        match v {
            7 => Ok(Self::CoreML6),
            8 => Ok(Self::CoreML7),
            9 => Ok(Self::CoreML8),
            other => Err(CoremlError::Unsupported(format!(
                "specification version {other}: the exporters target 7 (iOS 16 / macOS 13, the \
                 default), 8 or 9; 6 lacks fp16 inputs and outputs"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::CoreML6 => "CoreML6",
            Self::CoreML7 => "CoreML7",
            Self::CoreML8 => "CoreML8",
        }
    }
    pub fn spec_version(self) -> i32 {
        match self {
            Self::CoreML6 => 7,
            Self::CoreML7 => 8,
            Self::CoreML8 => 9,
        }
    }
}

/// Builds one function.
#[derive(Debug)]
pub struct MilBuilder {
    opset: Opset,
    inputs: Vec<NamedType>,
    ops: Vec<Operation>,
    names: HashSet<String>,
}

fn broadcast_dim(a: Dim, b: Dim) -> Option<Dim> {
    match (a, b) {
        (x, y) if x == y => Some(x),
        (Dim::Fixed(1), y) => Some(y),
        (x, Dim::Fixed(1)) => Some(x),
        // One symbolic sequence length per program: unknown dims agree.
        (Dim::Unknown { .. }, Dim::Unknown { .. }) => Some(a),
        _ => None,
    }
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = vec![Dim::Fixed(1); n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            Dim::Fixed(1)
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            Dim::Fixed(1)
        };
        out[i] = broadcast_dim(da, db)?;
    }
    Some(out)
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

impl MilBuilder {
    pub fn new(opset: Opset) -> Self {
        Self {
            opset,
            inputs: Vec::new(),
            ops: Vec::new(),
            names: HashSet::new(),
        }
    }

    pub fn opset(&self) -> Opset {
        self.opset
    }

    fn claim(&mut self, name: &str) -> Result<String> {
        if !is_identifier(name) {
            return Err(err(format!("{name:?} is not a MIL identifier")));
        }
        if !self.names.insert(name.to_string()) {
            return Err(err(format!("name {name:?} is used twice")));
        }
        Ok(name.to_string())
    }

    /// A fresh name starting with `base`.
    fn fresh(&mut self, base: &str) -> String {
        if !self.names.contains(base) {
            self.names.insert(base.to_string());
            return base.to_string();
        }
        let mut i = 1;
        loop {
            let n = format!("{base}_{i}");
            if self.names.insert(n.clone()) {
                return n;
            }
            i += 1;
        }
    }

    /// Declares a function input.
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<Var> {
        let name = self.claim(name)?;
        self.inputs.push(NamedType::tensor(&name, ty.clone()));
        Ok(Var { name, ty })
    }

    /// A `const` op holding `value`.
    pub fn constant(&mut self, name: &str, value: TensorValue) -> Result<Var> {
        let name = self.fresh(name);
        let ty = value.ty.clone();
        self.ops.push(Operation {
            op_type: "const".into(),
            name: Some(name.clone()),
            inputs: BTreeMap::new(),
            outputs: vec![NamedType::tensor(&name, ty.clone())],
            blocks: Vec::new(),
            attributes: [("val".to_string(), Value::Tensor(value))]
                .into_iter()
                .collect(),
        });
        Ok(Var { name, ty })
    }

    fn c_i32s(&mut self, name: &str, v: &[i64]) -> Result<Var> {
        self.constant(
            name,
            TensorValue::i32s(v.iter().map(|&x| x as i32).collect()),
        )
    }
    fn c_i32(&mut self, name: &str, v: i64) -> Result<Var> {
        self.constant(name, TensorValue::i32_scalar(v as i32))
    }
    fn c_bool(&mut self, name: &str, v: bool) -> Result<Var> {
        self.constant(name, TensorValue::bool_scalar(v))
    }
    fn c_str(&mut self, name: &str, v: &str) -> Result<Var> {
        self.constant(name, TensorValue::string(v))
    }
    /// An fp16 scalar const.
    pub fn c_f16(&mut self, name: &str, v: f32) -> Result<Var> {
        self.constant(name, TensorValue::f16_scalar(v))
    }

    /// Appends an op with explicitly typed outputs.
    fn push(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: Vec<(&str, Vec<&Var>)>,
        out_types: Vec<TensorType>,
    ) -> Result<Vec<Var>> {
        let name = self.claim(name)?;
        let outs: Vec<Var> = if out_types.len() == 1 {
            vec![Var {
                name: name.clone(),
                ty: out_types[0].clone(),
            }]
        } else {
            let mut v = Vec::new();
            for (i, t) in out_types.into_iter().enumerate() {
                let n = self.claim(&format!("{name}_{i}"))?;
                v.push(Var { name: n, ty: t });
            }
            v
        };
        self.ops.push(Operation {
            op_type: op_type.into(),
            name: Some(name),
            inputs: inputs
                .into_iter()
                .map(|(p, vs)| {
                    (
                        p.to_string(),
                        vs.into_iter()
                            .map(|v| Binding::Var(v.name.clone()))
                            .collect(),
                    )
                })
                .collect(),
            outputs: outs
                .iter()
                .map(|v| NamedType::tensor(&v.name, v.ty.clone()))
                .collect(),
            blocks: Vec::new(),
            attributes: BTreeMap::new(),
        });
        Ok(outs)
    }

    fn push1(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: Vec<(&str, Vec<&Var>)>,
        ty: TensorType,
    ) -> Result<Var> {
        Ok(self.push(op_type, name, inputs, vec![ty])?.remove(0))
    }

    /// Element-wise binary op (`add`, `sub`, `mul`, `real_div`, `maximum`, …)
    /// with NumPy broadcasting.
    pub fn binary(&mut self, op: &str, name: &str, x: &Var, y: &Var) -> Result<Var> {
        if x.ty.dtype != y.ty.dtype {
            return Err(err(format!(
                "{op} {name}: operand types differ ({} vs {})",
                x.ty, y.ty
            )));
        }
        let shape = broadcast_shapes(x.shape(), y.shape()).ok_or_else(|| {
            err(format!(
                "{op} {name}: shapes {} and {} do not broadcast",
                x.ty, y.ty
            ))
        })?;
        self.push1(
            op,
            name,
            vec![("x", vec![x]), ("y", vec![y])],
            TensorType::new(x.ty.dtype, shape),
        )
    }

    /// Element-wise binary op whose result has type `dtype` (comparisons:
    /// `not_equal`, `equal`, `less`, … give `bool`).
    pub fn binary_to(
        &mut self,
        op: &str,
        name: &str,
        x: &Var,
        y: &Var,
        dtype: DataType,
    ) -> Result<Var> {
        let v = self.binary(op, name, x, y)?;
        let last = self
            .ops
            .last_mut()
            .and_then(|o| o.outputs.first_mut())
            .ok_or_else(|| err(format!("{op} {name}: no output")))?;
        let ty = TensorType::new(dtype, v.ty.shape.clone());
        *last = NamedType::tensor(&v.name, ty.clone());
        Ok(Var { name: v.name, ty })
    }

    /// `cast` to `dtype` (fp16, fp32, int32 or bool).
    pub fn cast(&mut self, name: &str, x: &Var, dtype: DataType) -> Result<Var> {
        let d = self.c_str(&format!("{name}_dtype"), dtype.mil_name())?;
        self.push1(
            "cast",
            name,
            vec![("x", vec![x]), ("dtype", vec![&d])],
            TensorType::new(dtype, x.shape().to_vec()),
        )
    }

    /// Element-wise unary op with only `x` (`relu`, `sigmoid`, `sqrt`, …).
    pub fn unary(&mut self, op: &str, name: &str, x: &Var) -> Result<Var> {
        self.push1(op, name, vec![("x", vec![x])], x.ty.clone())
    }

    /// `gelu` with `mode` (`"EXACT"`, `"TANH_APPROXIMATION"`, `"SIGMOID_APPROXIMATION"`).
    pub fn gelu(&mut self, name: &str, x: &Var, mode: &str) -> Result<Var> {
        let m = self.c_str(&format!("{name}_mode"), mode)?;
        self.push1(
            "gelu",
            name,
            vec![("x", vec![x]), ("mode", vec![&m])],
            x.ty.clone(),
        )
    }

    /// 2-D convolution, stride 1, dilation 1, one group, custom padding
    /// `[top, bottom, left, right]`.
    pub fn conv(
        &mut self,
        name: &str,
        x: &Var,
        weight: &Var,
        bias: Option<&Var>,
        pad: [i64; 4],
    ) -> Result<Var> {
        if x.rank() != 4 || weight.rank() != 4 {
            return Err(err(format!(
                "conv {name}: x {} and weight {} must be rank 4",
                x.ty, weight.ty
            )));
        }
        let ws = weight
            .ty
            .fixed_shape()
            .ok_or_else(|| err(format!("conv {name}: weight shape must be fixed")))?;
        if x.shape()[1] != Dim::Fixed(ws[1] as u64) {
            return Err(err(format!(
                "conv {name}: x has {} channels, weight expects {}",
                x.shape()[1],
                ws[1]
            )));
        }
        let spatial = |d: Dim, before: i64, after: i64, k: usize| -> Dim {
            match d {
                Dim::Fixed(n) => Dim::Fixed((n as i64 + before + after - k as i64 + 1) as u64),
                u if before + after == k as i64 - 1 => u,
                u => u,
            }
        };
        let out = TensorType::new(
            x.ty.dtype,
            vec![
                x.shape()[0],
                Dim::Fixed(ws[0] as u64),
                spatial(x.shape()[2], pad[0], pad[1], ws[2]),
                spatial(x.shape()[3], pad[2], pad[3], ws[3]),
            ],
        );
        let strides = self.c_i32s(&format!("{name}_strides"), &[1, 1])?;
        let pad_type = self.c_str(&format!("{name}_pad_type"), "custom")?;
        let padv = self.c_i32s(&format!("{name}_pad"), &pad)?;
        let dil = self.c_i32s(&format!("{name}_dilations"), &[1, 1])?;
        let groups = self.c_i32(&format!("{name}_groups"), 1)?;
        let mut inputs = vec![
            ("x", vec![x]),
            ("weight", vec![weight]),
            ("strides", vec![&strides]),
            ("pad_type", vec![&pad_type]),
            ("pad", vec![&padv]),
            ("dilations", vec![&dil]),
            ("groups", vec![&groups]),
        ];
        if let Some(b) = bias {
            inputs.push(("bias", vec![b]));
        }
        self.push1("conv", name, inputs, out)
    }

    /// `layer_norm` over `axes` with `gamma`/`beta` of shape `x.shape[axes]`.
    pub fn layer_norm(
        &mut self,
        name: &str,
        x: &Var,
        axes: &[i64],
        gamma: &Var,
        beta: &Var,
        eps: f32,
    ) -> Result<Var> {
        let ax = self.c_i32s(&format!("{name}_axes"), axes)?;
        let e = self.c_f16(&format!("{name}_epsilon"), eps)?;
        self.push1(
            "layer_norm",
            name,
            vec![
                ("x", vec![x]),
                ("axes", vec![&ax]),
                ("gamma", vec![gamma]),
                ("beta", vec![beta]),
                ("epsilon", vec![&e]),
            ],
            x.ty.clone(),
        )
    }

    /// `reduce_mean`, `reduce_sum`, `reduce_max`, … over `axes`.
    pub fn reduce(
        &mut self,
        op: &str,
        name: &str,
        x: &Var,
        axes: &[i64],
        keep_dims: bool,
    ) -> Result<Var> {
        let r = x.rank();
        let axs: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, r))
            .collect::<Result<_>>()?;
        let mut shape = Vec::new();
        for (i, d) in x.shape().iter().enumerate() {
            if axs.contains(&i) {
                if keep_dims {
                    shape.push(Dim::Fixed(1));
                }
            } else {
                shape.push(*d);
            }
        }
        let a = self.c_i32s(&format!("{name}_axes"), axes)?;
        let k = self.c_bool(&format!("{name}_keep_dims"), keep_dims)?;
        self.push1(
            op,
            name,
            vec![("x", vec![x]), ("axes", vec![&a]), ("keep_dims", vec![&k])],
            TensorType::new(x.ty.dtype, shape),
        )
    }

    pub fn softmax(&mut self, name: &str, x: &Var, axis: i64) -> Result<Var> {
        norm_axis(axis, x.rank())?;
        let a = self.c_i32(&format!("{name}_axis"), axis)?;
        self.push1(
            "softmax",
            name,
            vec![("x", vec![x]), ("axis", vec![&a])],
            x.ty.clone(),
        )
    }

    /// `matmul` over the last two axes, with optional transposes.
    pub fn matmul(&mut self, name: &str, x: &Var, y: &Var, tx: bool, ty: bool) -> Result<Var> {
        if x.rank() < 2 || y.rank() < 2 {
            return Err(err(format!("matmul {name}: operands must have rank >= 2")));
        }
        let (xs, ys) = (x.shape(), y.shape());
        let (xr, yr) = (xs.len(), ys.len());
        let (m, kx) = if tx {
            (xs[xr - 1], xs[xr - 2])
        } else {
            (xs[xr - 2], xs[xr - 1])
        };
        let (ky, n) = if ty {
            (ys[yr - 1], ys[yr - 2])
        } else {
            (ys[yr - 2], ys[yr - 1])
        };
        if broadcast_dim(kx, ky).is_none()
            || (kx != ky && kx.fixed().is_some() && ky.fixed().is_some())
        {
            return Err(err(format!(
                "matmul {name}: inner dims {kx} and {ky} differ"
            )));
        }
        let mut shape = broadcast_shapes(&xs[..xr - 2], &ys[..yr - 2])
            .ok_or_else(|| err(format!("matmul {name}: batch dims do not broadcast")))?;
        shape.push(m);
        shape.push(n);
        let a = self.c_bool(&format!("{name}_transpose_x"), tx)?;
        let b = self.c_bool(&format!("{name}_transpose_y"), ty)?;
        self.push1(
            "matmul",
            name,
            vec![
                ("x", vec![x]),
                ("y", vec![y]),
                ("transpose_x", vec![&a]),
                ("transpose_y", vec![&b]),
            ],
            TensorType::new(x.ty.dtype, shape),
        )
    }

    /// `split` into `n` equal parts along `axis`; outputs are `{name}_{i}`.
    pub fn split(&mut self, name: &str, x: &Var, n: usize, axis: i64) -> Result<Vec<Var>> {
        let a = norm_axis(axis, x.rank())?;
        let size = x.shape()[a]
            .fixed()
            .ok_or_else(|| err(format!("split {name}: axis {axis} is not fixed")))?;
        if n == 0 || size % n as u64 != 0 {
            return Err(err(format!(
                "split {name}: {size} does not split into {n} parts"
            )));
        }
        let mut t = x.ty.clone();
        t.shape[a] = Dim::Fixed(size / n as u64);
        let ns = self.c_i32(&format!("{name}_num_splits"), n as i64)?;
        let ax = self.c_i32(&format!("{name}_axis"), axis)?;
        self.push(
            "split",
            name,
            vec![
                ("x", vec![x]),
                ("num_splits", vec![&ns]),
                ("axis", vec![&ax]),
            ],
            vec![t; n],
        )
    }

    /// `concat` along `axis`.
    pub fn concat(&mut self, name: &str, values: &[Var], axis: i64) -> Result<Var> {
        let first = values
            .first()
            .ok_or_else(|| err(format!("concat {name}: no values")))?;
        let a = norm_axis(axis, first.rank())?;
        let mut t = first.ty.clone();
        let mut total = 0u64;
        for v in values {
            if v.rank() != first.rank() || v.ty.dtype != first.ty.dtype {
                return Err(err(format!(
                    "concat {name}: {} does not match {}",
                    v.ty, first.ty
                )));
            }
            total += v.shape()[a]
                .fixed()
                .ok_or_else(|| err(format!("concat {name}: axis {axis} is not fixed")))?;
        }
        t.shape[a] = Dim::Fixed(total);
        let ax = self.c_i32(&format!("{name}_axis"), axis)?;
        let il = self.c_bool(&format!("{name}_interleave"), false)?;
        self.push1(
            "concat",
            name,
            vec![
                ("values", values.iter().collect()),
                ("axis", vec![&ax]),
                ("interleave", vec![&il]),
            ],
            t,
        )
    }

    /// `reshape` to `shape`, where one entry may be -1 (inferred).
    pub fn reshape(&mut self, name: &str, x: &Var, shape: &[i64]) -> Result<Var> {
        let known: Option<u64> = x.ty.elem_count().map(|n| n as u64);
        let fixed_prod: i64 = shape.iter().filter(|&&d| d > 0).product();
        let dims: Vec<Dim> = shape
            .iter()
            .map(|&d| {
                if d == -1 {
                    match known {
                        Some(n) => Dim::Fixed(n / fixed_prod.max(1) as u64),
                        None => Dim::Unknown { variadic: false },
                    }
                } else {
                    Dim::Fixed(d as u64)
                }
            })
            .collect();
        let s = self.c_i32s(&format!("{name}_shape"), shape)?;
        self.push1(
            "reshape",
            name,
            vec![("x", vec![x]), ("shape", vec![&s])],
            TensorType::new(x.ty.dtype, dims),
        )
    }

    /// `l2_norm` over the last three axes.
    pub fn l2_norm(&mut self, name: &str, x: &Var, eps: f32) -> Result<Var> {
        if x.rank() < 3 {
            return Err(err(format!("l2_norm {name}: rank must be >= 3")));
        }
        let e = self.c_f16(&format!("{name}_epsilon"), eps)?;
        self.push1(
            "l2_norm",
            name,
            vec![("x", vec![x]), ("epsilon", vec![&e])],
            x.ty.clone(),
        )
    }

    /// `gather` along `axis` (batch_dims 0).
    pub fn gather(&mut self, name: &str, x: &Var, indices: &Var, axis: i64) -> Result<Var> {
        let a = norm_axis(axis, x.rank())?;
        let mut shape: Vec<Dim> = x.shape()[..a].to_vec();
        shape.extend_from_slice(indices.shape());
        shape.extend_from_slice(&x.shape()[a + 1..]);
        let ax = self.c_i32(&format!("{name}_axis"), axis)?;
        let bd = self.c_i32(&format!("{name}_batch_dims"), 0)?;
        let mut inputs = vec![
            ("x", vec![x]),
            ("indices", vec![indices]),
            ("axis", vec![&ax]),
            ("batch_dims", vec![&bd]),
        ];
        let vi;
        if self.opset != Opset::CoreML6 {
            vi = self.c_bool(&format!("{name}_validate_indices"), false)?;
            inputs.push(("validate_indices", vec![&vi]));
        }
        self.push1("gather", name, inputs, TensorType::new(x.ty.dtype, shape))
    }

    pub fn transpose(&mut self, name: &str, x: &Var, perm: &[i64]) -> Result<Var> {
        if perm.len() != x.rank() {
            return Err(err(format!(
                "transpose {name}: perm {perm:?} for rank {}",
                x.rank()
            )));
        }
        let shape = perm
            .iter()
            .map(|&p| Ok(x.shape()[norm_axis(p, x.rank())?]))
            .collect::<Result<Vec<_>>>()?;
        let p = self.c_i32s(&format!("{name}_perm"), perm)?;
        self.push1(
            "transpose",
            name,
            vec![("x", vec![x]), ("perm", vec![&p])],
            TensorType::new(x.ty.dtype, shape),
        )
    }

    pub fn expand_dims(&mut self, name: &str, x: &Var, axes: &[i64]) -> Result<Var> {
        let out_rank = x.rank() + axes.len();
        let mut axs: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, out_rank))
            .collect::<Result<_>>()?;
        axs.sort_unstable();
        let mut shape = x.shape().to_vec();
        for a in axs {
            shape.insert(a, Dim::Fixed(1));
        }
        let a = self.c_i32s(&format!("{name}_axes"), axes)?;
        self.push1(
            "expand_dims",
            name,
            vec![("x", vec![x]), ("axes", vec![&a])],
            TensorType::new(x.ty.dtype, shape),
        )
    }

    /// `slice_by_index` with constant `begin`/`end` (stride 1, no masks).
    pub fn slice(&mut self, name: &str, x: &Var, begin: &[i64], end: &[i64]) -> Result<Var> {
        if begin.len() != x.rank() || end.len() != x.rank() {
            return Err(err(format!(
                "slice {name}: begin/end must have rank {}",
                x.rank()
            )));
        }
        let shape = begin
            .iter()
            .zip(end)
            .map(|(&b, &e)| Dim::Fixed((e - b).max(0) as u64))
            .collect();
        let b = self.c_i32s(&format!("{name}_begin"), begin)?;
        let e = self.c_i32s(&format!("{name}_end"), end)?;
        self.push1(
            "slice_by_index",
            name,
            vec![("x", vec![x]), ("begin", vec![&b]), ("end", vec![&e])],
            TensorType::new(x.ty.dtype, shape),
        )
    }

    /// `slice_by_index` with a computed `end` (an int32 vector) and begin 0:
    /// the result takes its sizes from `end`, here given as `out_shape`.
    pub fn slice_to(&mut self, name: &str, x: &Var, end: &Var, out_shape: Vec<Dim>) -> Result<Var> {
        let zeros = vec![0i64; x.rank()];
        let b = self.c_i32s(&format!("{name}_begin"), &zeros)?;
        self.push1(
            "slice_by_index",
            name,
            vec![("x", vec![x]), ("begin", vec![&b]), ("end", vec![end])],
            TensorType::new(x.ty.dtype, out_shape),
        )
    }

    /// `shape` of `x` as an int32 vector.
    pub fn shape_of(&mut self, name: &str, x: &Var) -> Result<Var> {
        self.push1(
            "shape",
            name,
            vec![("x", vec![x])],
            TensorType::fixed(DataType::I32, &[x.rank() as u64]),
        )
    }

    /// Finishes the function with the given output variables.
    pub fn finish(self, outputs: &[&Var]) -> Result<Function> {
        for o in outputs {
            if !self.names.contains(&o.name) {
                return Err(err(format!(
                    "output {:?} is not a variable of this function",
                    o.name
                )));
            }
        }
        Ok(Function {
            inputs: self.inputs,
            opset: self.opset.name().into(),
            block: Block {
                inputs: Vec::new(),
                outputs: outputs.iter().map(|o| o.name.clone()).collect(),
                operations: self.ops,
                attributes: BTreeMap::new(),
            },
            attributes: BTreeMap::new(),
        })
    }
}
