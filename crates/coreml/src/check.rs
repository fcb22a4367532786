//! A static ANE-residency checker for ML Program packages (ours or written by
//! coremltools). It predicts, op by op, whether the Neural Engine can run it,
//! groups the prediction into device islands, and reports every rule it
//! trips with a severity, a reason and a source (the rules and sources are in
//! `shared/notes/ane-rules.md`). It cannot replace `MLComputePlan` on a Mac —
//! rule `size-floor` says so — but it catches what is decidable offline.

use std::collections::BTreeMap;

use anectx_core::placement::{islands, Device, Island, IslandPosition};
use serde::Serialize;

use crate::program::{
    Binding, DataType, Dim, FeatureType, Model, Operation, ShapeFlexibility, TensorData,
};

/// Apple silicon generations with different ANE limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Chip {
    M1,
    M2,
    M3,
    M4,
    M5,
}

impl Chip {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "m1" => Some(Self::M1),
            "m2" => Some(Self::M2),
            "m3" => Some(Self::M3),
            "m4" => Some(Self::M4),
            "m5" => Some(Self::M5),
            _ => None,
        }
    }

    /// Largest spatial / contraction dimension (H13–H15: 16384; H16+: 65536).
    pub fn max_dim(self) -> u64 {
        match self {
            Self::M1 | Self::M2 | Self::M3 => 16384,
            Self::M4 | Self::M5 => 65536,
        }
    }

    /// Largest convolution kernel width (13, 15 on M5).
    pub fn max_kernel(self) -> u64 {
        match self {
            Self::M5 => 15,
            _ => 13,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One problem found, tied to an op when it concerns one.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    /// Index of the op in the main function's block.
    pub op_index: Option<usize>,
    pub op: Option<String>,
    pub op_type: Option<String>,
    pub message: String,
    pub reason: &'static str,
    pub source: &'static str,
}

/// The predicted device of one op.
#[derive(Debug, Clone, Serialize)]
pub struct OpPrediction {
    pub index: usize,
    pub op_type: String,
    pub name: String,
    pub device: Device,
}

/// The checker's report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub chip: Chip,
    pub ops: Vec<OpPrediction>,
    pub islands: Vec<Island>,
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub warnings: usize,
    /// Share of non-const ops predicted on the Neural Engine.
    pub predicted_ane_share: f64,
    /// Cost-weighted share predicted on the Neural Engine: each op weighs
    /// its estimated work (multiply-adds for conv / matmul / linear, output
    /// elements otherwise; unknown sequence axes at the largest enumerated
    /// length), as `MLComputePlan`'s cost weights do on a Mac.
    pub predicted_ane_residency: f64,
    pub weight_bytes: u64,
}

/// The default `--min-residency`: 90 % of the estimated cost on the ANE.
pub const DEFAULT_MIN_RESIDENCY: f64 = 0.9;

/// The answer to "will it stay on the Neural Engine?".
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub passed: bool,
    /// Predicted cost-weighted residency (0..=1).
    pub residency: f64,
    /// The threshold it was held to (0..=1).
    pub min_residency: f64,
    pub errors: usize,
    /// One line: what was decided and why.
    pub summary: String,
}

impl CheckReport {
    /// No rule failed with an error (residency not considered; see [`Self::verdict`]).
    pub fn passed(&self) -> bool {
        self.errors == 0
    }

    /// Passes when no rule fails with an error and the predicted
    /// cost-weighted residency is at least `min_residency` (0..=1).
    pub fn verdict(&self, min_residency: f64) -> Verdict {
        let low = self.predicted_ane_residency + 1e-12 < min_residency;
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        let summary = match (self.errors, low) {
            (0, false) => format!(
                "PASS: predicted to stay on the Neural Engine ({} of the estimated cost on the ANE, \
                 at least {}; 0 errors)",
                pct(self.predicted_ane_residency),
                pct(min_residency)
            ),
            (0, true) => format!(
                "FAIL: predicted not to stay on the Neural Engine: {} of the estimated cost on the \
                 ANE, below the minimum of {} (--min-residency), although no rule failed",
                pct(self.predicted_ane_residency),
                pct(min_residency)
            ),
            (e, false) => format!(
                "FAIL: {e} error(s) (see above); {} of the estimated cost predicted on the ANE",
                pct(self.predicted_ane_residency)
            ),
            (e, true) => format!(
                "FAIL: {e} error(s) (see above), and {} of the estimated cost on the ANE is below \
                 the minimum of {} (--min-residency)",
                pct(self.predicted_ane_residency),
                pct(min_residency)
            ),
        };
        Verdict {
            passed: self.errors == 0 && !low,
            residency: self.predicted_ane_residency,
            min_residency,
            errors: self.errors,
            summary,
        }
    }
}

/// Estimated work of one op: multiply-adds for conv, matmul and linear,
/// output elements for the rest (at least 1). `types` maps value names to
/// their types; `unknown` stands for a dimension the program leaves open.
fn op_cost(
    op: &Operation,
    types: &BTreeMap<&str, &crate::program::TensorType>,
    consts: &BTreeMap<&str, &Operation>,
    unknown: u64,
) -> f64 {
    let dims = |t: &crate::program::TensorType| -> Vec<u64> {
        t.shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                _ => unknown,
            })
            .collect()
    };
    let out: f64 = op
        .outputs
        .iter()
        .filter_map(|o| o.ty.as_tensor())
        .map(|t| dims(t).iter().product::<u64>() as f64)
        .sum();
    let weight_dims = |param: &str| -> Option<Vec<u64>> {
        let name = op.input_var(param)?;
        let t = consts
            .get(name)
            .and_then(|c| c.const_value())
            .and_then(|v| v.as_tensor())
            .map(|v| &v.ty)
            .or_else(|| types.get(name).copied())?;
        Some(dims(t))
    };
    let factor = match op.op_type.as_str() {
        // weight (C_out, C_in / groups, kh, kw)
        "conv" => weight_dims("weight").map(|d| d.iter().skip(1).product::<u64>()),
        // weight (out, in)
        "linear" => weight_dims("weight").and_then(|d| d.get(1).copied()),
        "matmul" => {
            let tx = op
                .input_var("transpose_x")
                .and_then(|n| consts.get(n))
                .and_then(|c| c.const_value())
                .and_then(|v| v.as_tensor())
                .and_then(|t| t.to_i64_vec())
                .and_then(|v| v.first().copied())
                .is_some_and(|v| v != 0);
            weight_dims("x").and_then(|d| {
                let n = d.len();
                if n == 0 {
                    None
                } else if tx && n >= 2 {
                    Some(d[n - 2])
                } else {
                    Some(d[n - 1])
                }
            })
        }
        _ => None,
    };
    (out * factor.unwrap_or(1).max(1) as f64).max(1.0)
}

struct Rule {
    id: &'static str,
    reason: &'static str,
    source: &'static str,
}

const FP16: Rule = Rule {
    id: "fp16-compute",
    reason: "the ANE computes in fp16; fp32 ops fall back to the GPU or CPU",
    source: "apple/coreai-models neural_engine_rules.md; coremltools Typed Execution",
};
const INT32: Rule = Rule {
    id: "int32-island",
    reason: "int32 tensors are not an ANE data type; keep them in a leading CPU island (token ids, gather)",
    source: "apple/coreai-models; Anemll/anemll-profile; ANEForge capabilities.md",
};
const RANK: Rule = Rule {
    id: "rank-max-5",
    reason: "ANE tensors are at most 5-D; rank-6+ intermediates are rejected",
    source: "apple/coreai-models; tinygrad extra/accel/ane",
};
const SHAPES: Rule = Rule {
    id: "static-shapes",
    reason: "with range flexibility only the default shape runs on the ANE; use fixed or enumerated shapes",
    source: "developer.apple.com/forums/thread/724930; coremltools Flexible Input Shapes",
};
const ENUMERATED: Rule = Rule {
    id: "enumerated-inputs",
    reason:
        "before spec 9 (iOS 18 / macOS 15) Core ML allows enumerated shapes on one input only; \
             compute the mask in the graph, or export one static package per length",
    source: "coremltools Flexible Input Shapes guide (ct.convert refuses several EnumeratedShapes \
             inputs below iOS 18)",
};
const DIMCAP: Rule = Rule {
    id: "dim-cap",
    reason: "per-chip cap on spatial/contraction dimensions (16384 on M1-M3, 65536 on M4/M5)",
    source: "ANEForge capabilities.md; ncdrone/rustane#13; maderix/ANE PR #26",
};
const DENIED: Rule = Rule {
    id: "denied-op",
    reason: "this op has no ANE kernel (or is rejected on this chip) and runs on the CPU",
    source:
        "FluidAudio; anemll-profile; apple/coreai-models; ANEForge; hollance unsupported-layers.md",
};
const ALIGN: Rule = Rule {
    id: "last-axis-alignment",
    reason: "the last axis is stored 64-byte aligned; fp16 last dims below 32 or not a multiple of 32 waste memory bandwidth",
    source: "apple/coreai-models; Apple 'Deploying Transformers on the ANE'; tinygrad",
};
const KERNEL: Rule = Rule {
    id: "kernel-stride",
    reason: "conv kernel width is capped (13; 15 on M5); strides above 2 are slow or fall back",
    source: "ANEForge capabilities.md; hollance unsupported-layers.md",
};
const NEG_INF: Rule = Rule {
    id: "mask-neg-inf",
    reason: "the ANE softmax mishandles -inf; use -1e4 for masks",
    source: "apple/coreai-models; ANEForge; vx-lang/Vx#437",
};
const SDPA: Rule = Rule {
    id: "fused-attention",
    reason: "scaled_dot_product_attention reaches the ANE only at large shapes; use per-head matmul/einsum",
    source: "ANEForge; vx-lang/Vx#437",
};
const EPS: Rule = Rule {
    id: "norm-epsilon",
    reason: "epsilons below ~1e-7 underflow to 0 in fp16 and can divide by zero",
    source: "apple/ml-ane-transformers distilbert.py; anemll notes",
};
const LINEAR: Rule = Rule {
    id: "linear-vs-conv",
    reason: "prefer a 1x1 conv on (B, C, 1, S) to linear/matmul with a constant weight, which may fall back",
    source: "apple/coreai-models; john-rocky/coreai-model-zoo",
};
const TRANSPOSE: Rule = Rule {
    id: "transpose-last-axis",
    reason: "a transpose that moves the last axis rewrites the whole tensor on the ANE",
    source: "apple/coreai-models",
};
const ISLAND: Rule = Rule {
    id: "mid-graph-island",
    reason:
        "an island off the ANE in the middle of the graph costs two device round trips per call",
    source: "Anemll/anemll-embeddings (begin/mid/end classification); hollance",
};
const SIZE: Rule = Rule {
    id: "size-floor",
    reason:
        "small models and ops are often planned on the CPU; only MLComputePlan on a Mac can tell",
    source: "FluidAudio; aosama/astronomical#540; vx-lang/Vx#437",
};

/// Ops with no ANE kernel on any chip.
const DENIED_OPS: &[&str] = &[
    "lstm",
    "gru",
    "rnn",
    "gather",
    "gather_nd",
    "gather_along_axis",
    "scatter",
    "scatter_nd",
    "scatter_along_axis",
    "slice_update",
    "non_zero",
    "cumsum",
    "reduce_prod",
    "sliding_windows",
    "acos",
    "asin",
    "sinh",
    "cosh",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "bitwise_not",
    "custom",
    "while_loop",
    "cond",
];
/// Ops rejected on M1 only.
const DENIED_M1: &[&str] = &["topk", "sort", "argsort", "dynamic_slice", "sin", "cos"];

fn finding(
    r: &Rule,
    severity: Severity,
    op: Option<(usize, &Operation)>,
    message: String,
) -> Finding {
    Finding {
        rule: r.id,
        severity,
        op_index: op.map(|(i, _)| i),
        op: op.map(|(_, o)| o.display_name().to_string()),
        op_type: op.map(|(_, o)| o.op_type.clone()),
        message,
        reason: r.reason,
        source: r.source,
    }
}

fn float_values(op: &Operation) -> Option<Vec<f32>> {
    op.const_value()?.as_tensor()?.to_f32_vec()
}

fn scalar_input(op: &Operation, param: &str, consts: &BTreeMap<&str, &Operation>) -> Option<f32> {
    match op.inputs.get(param)?.first()? {
        Binding::Value(v) => v.as_tensor()?.to_f32_vec()?.first().copied(),
        Binding::Var(name) => float_values(consts.get(name.as_str())?)?.first().copied(),
    }
}

fn ints_input(
    op: &Operation,
    param: &str,
    consts: &BTreeMap<&str, &Operation>,
) -> Option<Vec<i64>> {
    let t = match op.inputs.get(param)?.first()? {
        Binding::Value(v) => v.as_tensor()?.clone(),
        Binding::Var(name) => consts
            .get(name.as_str())?
            .const_value()?
            .as_tensor()?
            .clone(),
    };
    t.to_i64_vec()
}

/// Checks a model for `chip`.
pub fn check_model(model: &Model, chip: Chip) -> CheckReport {
    let mut findings = Vec::new();
    let empty = Vec::new();
    let ops: &Vec<Operation> = model
        .main_function()
        .map(|(_, f)| &f.block.operations)
        .unwrap_or(&empty);
    let consts: BTreeMap<&str, &Operation> = ops
        .iter()
        .filter(|o| o.op_type == "const")
        .filter_map(|o| o.outputs.first().map(|v| (v.name.as_str(), o)))
        .collect();

    // Rule: static or enumerated shapes on every input.
    for f in &model.description.inputs {
        if let FeatureType::MultiArray(a) = &f.ty {
            if let Some(ShapeFlexibility::Range(r)) = &a.flexibility {
                findings.push(finding(
                    &SHAPES,
                    Severity::Error,
                    None,
                    format!("input {:?} has range-flexible shape {r:?}", f.name),
                ));
            }
        }
    }

    // Rule: one enumerated input below spec 9.
    let enumerated: Vec<&str> = model
        .description
        .inputs
        .iter()
        .filter(|f| {
            matches!(&f.ty, FeatureType::MultiArray(a)
                if matches!(a.flexibility, Some(ShapeFlexibility::Enumerated(_))))
        })
        .map(|f| f.name.as_str())
        .collect();
    if enumerated.len() > 1 && model.spec_version < crate::export::MULTI_ENUMERATED_SPEC {
        findings.push(finding(
            &ENUMERATED,
            Severity::Error,
            None,
            format!(
                "{} inputs have enumerated shapes ({}) at specification version {}; \
                 one is allowed below {}",
                enumerated.len(),
                enumerated.join(", "),
                model.spec_version,
                crate::export::MULTI_ENUMERATED_SPEC
            ),
        ));
    }

    let mut devices = Vec::with_capacity(ops.len());
    let mut preds = Vec::with_capacity(ops.len());
    let mut int32_ops = Vec::new();
    let mut fp32_ops = Vec::new();
    let mut weight_bytes = 0u64;
    for (i, op) in ops.iter().enumerate() {
        let at = Some((i, op));
        let mut off_ane = false;
        if op.op_type == "const" {
            if let Some(t) = op.const_value().and_then(|v| v.as_tensor()) {
                let bits = t.ty.dtype.bits().unwrap_or(0) as u64;
                weight_bytes += t.ty.elem_count().unwrap_or(0) as u64 * bits / 8;
                if t.ty.dtype.is_float() {
                    if let Some(v) = t.to_f32_vec() {
                        if v.iter().any(|x| x.is_infinite() && *x < 0.0) {
                            findings.push(finding(
                                &NEG_INF,
                                Severity::Error,
                                at,
                                "a constant holds -inf (a mask?)".into(),
                            ));
                        }
                    }
                }
                if matches!(t.data, TensorData::F32(_)) && t.ty.elem_count().unwrap_or(0) > 1 {
                    findings.push(finding(
                        &FP16,
                        Severity::Warning,
                        at,
                        "fp32 constant: weights should be stored in fp16".into(),
                    ));
                }
            }
            devices.push(Device::None);
            preds.push(OpPrediction {
                index: i,
                op_type: op.op_type.clone(),
                name: op.display_name().to_string(),
                device: Device::None,
            });
            continue;
        }
        let name = op.display_name();
        if DENIED_OPS.contains(&op.op_type.as_str())
            || (chip == Chip::M1 && DENIED_M1.contains(&op.op_type.as_str()))
        {
            off_ane = true;
            // gather in a leading CPU island is the expected shape of an
            // in-graph embedding lookup; the island rule judges its position.
            let sev = if op.op_type == "gather" {
                Severity::Info
            } else {
                Severity::Error
            };
            findings.push(finding(
                &DENIED,
                sev,
                at,
                format!("{} runs on the CPU", op.op_type),
            ));
        }
        if op.op_type == "scaled_dot_product_attention" {
            findings.push(finding(
                &SDPA,
                Severity::Warning,
                at,
                "fused attention op".into(),
            ));
        }
        if op.op_type == "linear" {
            findings.push(finding(
                &LINEAR,
                Severity::Warning,
                at,
                "linear layer".into(),
            ));
        }
        if op.op_type == "matmul" {
            let const_side = ["x", "y"]
                .iter()
                .any(|p| op.input_var(p).is_some_and(|v| consts.contains_key(v)));
            if const_side {
                findings.push(finding(
                    &LINEAR,
                    Severity::Warning,
                    at,
                    "matmul with a constant weight".into(),
                ));
            }
        }
        if op.op_type == "transpose" {
            if let Some(perm) = ints_input(op, "perm", &consts) {
                let last = perm.len() as i64 - 1;
                if perm.last().is_some_and(|&p| p != last && p != -1) {
                    findings.push(finding(
                        &TRANSPOSE,
                        Severity::Warning,
                        at,
                        format!("perm {perm:?} moves the last axis"),
                    ));
                }
            }
        }
        if matches!(
            op.op_type.as_str(),
            "layer_norm" | "batch_norm" | "instance_norm" | "l2_norm"
        ) {
            if let Some(eps) = scalar_input(op, "epsilon", &consts) {
                if eps < 1e-7 {
                    findings.push(finding(
                        &EPS,
                        Severity::Error,
                        at,
                        format!("epsilon {eps:e} < 1e-7"),
                    ));
                }
            }
        }
        if op.op_type == "conv" {
            if let Some(w) = op.input_var("weight").and_then(|v| consts.get(v)) {
                if let Some(t) = w.const_value().and_then(|v| v.as_tensor()) {
                    if let Some(Dim::Fixed(k)) = t.ty.shape.last() {
                        if *k > chip.max_kernel() {
                            off_ane = true;
                            findings.push(finding(
                                &KERNEL,
                                Severity::Error,
                                at,
                                format!("kernel width {k} > {} on {chip:?}", chip.max_kernel()),
                            ));
                        }
                    }
                }
            }
            if let Some(strides) = ints_input(op, "strides", &consts) {
                if strides.iter().any(|&s| s > 2) {
                    findings.push(finding(
                        &KERNEL,
                        Severity::Warning,
                        at,
                        format!("strides {strides:?}"),
                    ));
                }
            }
        }
        for out in &op.outputs {
            let Some(t) = out.ty.as_tensor() else {
                continue;
            };
            if t.rank() > 5 {
                off_ane = true;
                findings.push(finding(
                    &RANK,
                    Severity::Error,
                    at,
                    format!("{} has rank {}", out.name, t.rank()),
                ));
            }
            for d in &t.shape {
                if let Dim::Fixed(n) = d {
                    if *n > chip.max_dim() {
                        off_ane = true;
                        findings.push(finding(
                            &DIMCAP,
                            Severity::Error,
                            at,
                            format!(
                                "{} has a dimension of {n} > {} on {chip:?}",
                                out.name,
                                chip.max_dim()
                            ),
                        ));
                        break;
                    }
                }
            }
            match t.dtype {
                DataType::F32 | DataType::F64 => {
                    off_ane = true;
                    fp32_ops.push(i);
                }
                // Integer and bool tensors (token ids, a mask compared from
                // them) are not ANE data types.
                DataType::I32 | DataType::I64 | DataType::Bool => {
                    off_ane = true;
                    int32_ops.push(i);
                }
                _ => {}
            }
            if t.dtype == DataType::F16 && t.rank() >= 2 {
                if let Some(Dim::Fixed(n)) = t.shape.last() {
                    if *n < 32 || n % 32 != 0 {
                        findings.push(finding(
                            &ALIGN,
                            Severity::Info,
                            at,
                            format!("{} has last dimension {n}", out.name),
                        ));
                    }
                }
            }
        }
        let device = if off_ane {
            Device::Cpu
        } else {
            Device::NeuralEngine
        };
        devices.push(device);
        preds.push(OpPrediction {
            index: i,
            op_type: op.op_type.clone(),
            name: name.to_string(),
            device,
        });
    }

    let isl = islands(&devices);
    let island_of = |i: usize| isl.iter().find(|s| s.first <= i && i <= s.last);
    for &i in &fp32_ops {
        let mid = island_of(i).is_some_and(|s| s.position == IslandPosition::Middle);
        let sev = if mid {
            Severity::Error
        } else {
            Severity::Warning
        };
        findings.push(finding(
            &FP16,
            sev,
            Some((i, &ops[i])),
            "computes in fp32".into(),
        ));
    }
    for &i in &int32_ops {
        let leading = island_of(i)
            .is_some_and(|s| matches!(s.position, IslandPosition::Begin | IslandPosition::Whole));
        if !leading {
            findings.push(finding(
                &INT32,
                Severity::Error,
                Some((i, &ops[i])),
                "int32 or bool tensor after the leading CPU island".into(),
            ));
        }
    }
    for s in &isl {
        if s.position == IslandPosition::Middle && s.device != Device::NeuralEngine {
            findings.push(finding(
                &ISLAND,
                Severity::Error,
                Some((s.first, &ops[s.first])),
                format!(
                    "{} ops (#{}..#{}) on the {} in the middle of the graph",
                    s.ops,
                    s.first,
                    s.last,
                    s.device.label()
                ),
            ));
        }
    }
    if weight_bytes < 50_000_000 {
        findings.push(finding(
            &SIZE,
            Severity::Info,
            None,
            format!(
                "{:.1} MB of weights: below ~50 MB Core ML sometimes plans models on the CPU; confirm with MLComputePlan",
                weight_bytes as f64 / 1e6
            ),
        ));
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.op_index.cmp(&b.op_index))
    });
    // Cost-weighted residency.
    let mut types: BTreeMap<&str, &crate::program::TensorType> = BTreeMap::new();
    if let Some((_, f)) = model.main_function() {
        for i in &f.inputs {
            if let Some(t) = i.ty.as_tensor() {
                types.insert(i.name.as_str(), t);
            }
        }
    }
    for op in ops {
        for o in &op.outputs {
            if let Some(t) = o.ty.as_tensor() {
                types.insert(o.name.as_str(), t);
            }
        }
    }
    let unknown = model
        .description
        .inputs
        .iter()
        .filter_map(|f| match &f.ty {
            FeatureType::MultiArray(a) => match &a.flexibility {
                Some(ShapeFlexibility::Enumerated(shapes)) => shapes
                    .iter()
                    .filter_map(|s| s.last().copied())
                    .max()
                    .map(|v| v.max(1) as u64),
                _ => a.shape.last().map(|&v| v.max(1) as u64),
            },
            _ => None,
        })
        .max()
        .unwrap_or(128);
    let (mut cost_all, mut cost_ane) = (0f64, 0f64);
    for (op, p) in ops.iter().zip(&preds) {
        if p.device == Device::None {
            continue;
        }
        let c = op_cost(op, &types, &consts, unknown);
        cost_all += c;
        if p.device == Device::NeuralEngine {
            cost_ane += c;
        }
    }
    let real = preds.iter().filter(|p| p.device != Device::None).count();
    let on_ane = preds
        .iter()
        .filter(|p| p.device == Device::NeuralEngine)
        .count();
    CheckReport {
        chip,
        errors: findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count(),
        warnings: findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count(),
        predicted_ane_share: if real == 0 {
            0.0
        } else {
            on_ane as f64 / real as f64
        },
        predicted_ane_residency: if cost_all > 0.0 {
            cost_ane / cost_all
        } else {
            0.0
        },
        ops: preds,
        islands: isl,
        findings,
        weight_bytes,
    }
}

/// Human-readable report ending in the verdict line for `min_residency`.
pub fn render(report: &CheckReport, package: &str, min_residency: f64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let real = report
        .ops
        .iter()
        .filter(|p| p.device != Device::None)
        .count();
    let _ = writeln!(
        s,
        "{package}: {} ops ({} const), predicted on the Neural Engine: {:.0}% of the estimated \
         cost, {:.0}% of the ops ({:?})",
        report.ops.len(),
        report.ops.len() - real,
        report.predicted_ane_residency * 100.0,
        report.predicted_ane_share * 100.0,
        report.chip
    );
    let _ = writeln!(s, "islands:");
    for i in &report.islands {
        let _ = writeln!(
            s,
            "  {:<6} {:?}: {} ops, #{}..#{}",
            i.device.label(),
            i.position,
            i.ops,
            i.first,
            i.last
        );
    }
    if report.findings.is_empty() {
        let _ = writeln!(s, "no findings");
    }
    for f in &report.findings {
        let at = match (&f.op_index, &f.op, &f.op_type) {
            (Some(i), Some(n), Some(t)) => format!(" op #{i} {t} {n:?}:"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<7} [{}]{at} {}",
            format!("{:?}", f.severity).to_lowercase(),
            f.rule,
            f.message
        );
        let _ = writeln!(s, "        why: {} (source: {})", f.reason, f.source);
    }
    let _ = writeln!(
        s,
        "{} error(s), {} warning(s)",
        report.errors, report.warnings
    );
    let _ = writeln!(s, "verdict: {}", report.verdict(min_residency).summary);
    s
}
