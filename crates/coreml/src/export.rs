//! Exporters: anectx models → ML Program packages for the Neural Engine.
//!
//! Every exported graph follows Apple's ANE recipe: fp16 weights and fp16
//! compute, activations `(1, C, 1, S)`, 1×1 and 1×k convolutions for every
//! projection, `layer_norm` over the channel axis (axis 1) with an fp16-safe
//! epsilon (≥ 1e-7), attention computed head by head (`split` on the channel
//! axis, `matmul`, `softmax` over keys) with an additive `-1e4` key mask
//! (never `-inf`), masked mean pooling as `reduce_mean` ratios (no fp16
//! overflow), rank ≤ 4 everywhere and no transpose of the last axis.
//!
//! **Inputs** (default): `embeddings` `(1, E, 1, S)` fp16, the token
//! embeddings looked up outside the model (as Apple's reference does; the
//! lookup tables travel in the package, see [`crate::runtime`]), and `mask`
//! `(1, 1, 1, S)` fp16, 1 for real tokens and 0 for padding. With
//! [`ExportOptions::ids_input`] the lookup moves into the graph: `input_ids`
//! `(1, S)` int32 (plus `token_type_ids` `(1, S)` int32 for BERT and the
//! classifier) are gathered in-graph, then transposed once to `(1, E, 1, S)`.
//!
//! **Outputs**:
//! - `ConvEmbedder`: `embedding` `(1, D, 1, 1)` fp16, L2-normalised;
//! - `ConvClassifier`: `logit` `(1, 1, 1, 1)` and `score` = sigmoid(logit);
//! - `AneBert`: `embedding` `(1, C, 1, 1)` (pooled as the model pools, L2
//!   normalised) and `hidden_states` `(1, C, 1, S)`, the encoder output.
//!
//! **Shapes**: one sequence length gives static shapes; several give
//! enumerated shapes (each can be planned on the ANE) with `S` unknown in
//! the program. Below specification 9 (iOS 18 / macOS 15) Core ML allows
//! only one input with enumerated shapes, so with several lengths the
//! exporter writes one: the token input (`input_ids` or `embeddings`), and
//! computes the mask in the graph instead of taking it as an input: from the
//! ids (`input_ids != pad_token_id`), or from the embeddings, whose padding
//! positions the host must then zero (a position is real when any channel is
//! non-zero). BERT's `token_type_ids` are then all 0 (one segment, as every
//! embedder call uses) and folded into a constant; the relevance classifier
//! needs segment ids, so its ids-input export with several lengths needs
//! spec 9 (or the embeddings input, or one length). From spec 9 on, every
//! input is enumerated as before. [`SideInfo::mask`] records which it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anectx_models::layers::{MASK_NEG, MIN_FP16_EPS};
use anectx_models::{AneBert, ConvClassifier, ConvEmbedder, ModelKind, Pooling};
use candle_core::{DType, Tensor};
use half::f16;
use serde::{Deserialize, Serialize};

use crate::builder::{MilBuilder, Opset, Var};
use crate::error::{CoremlError, Result};
use crate::package::{write_package, WriteOptions, WrittenPackage};
use crate::program::*;

/// Export settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Sequence lengths: one gives a static shape, several enumerated shapes.
    pub seq_lengths: Vec<usize>,
    /// Take int32 token ids and gather the embeddings in-graph.
    pub ids_input: bool,
    /// Core ML specification version: 7 (iOS 16 / macOS 13, opset CoreML6;
    /// the default, the first with fp16 inputs and outputs), 8 or 9.
    pub spec_version: i32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            seq_lengths: vec![128],
            ids_input: false,
            spec_version: 7,
        }
    }
}

/// What `anectx coreml run` needs besides the program (`anectx.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideInfo {
    /// Format of this record.
    pub format: u32,
    pub kind: ModelKind,
    /// `"embeddings"` or `"ids"`.
    pub input: String,
    pub seq_lengths: Vec<usize>,
    /// Width of the embeddings input (E).
    pub embed_dim: usize,
    /// Positions the model supports (BERT's position table).
    pub max_seq: usize,
    pub pad_token_id: u32,
    pub outputs: Vec<String>,
    /// Where the mask comes from: `"input"` (the `mask` input), `"ids"`
    /// (computed in the graph as `input_ids != pad_token_id`) or
    /// `"embeddings"` (computed in the graph: a position is real when any of
    /// its embedding channels is non-zero; the host zeroes padding).
    #[serde(default = "mask_input")]
    pub mask: String,
}

fn mask_input() -> String {
    MASK_FROM_INPUT.into()
}

/// [`SideInfo::mask`] values.
pub const MASK_FROM_INPUT: &str = "input";
pub const MASK_FROM_IDS: &str = "ids";
pub const MASK_FROM_EMBEDDINGS: &str = "embeddings";

/// The first specification version that allows several inputs with
/// enumerated shapes (iOS 18 / macOS 15); below it Core ML (and coremltools'
/// `ct.convert`) allows one.
pub const MULTI_ENUMERATED_SPEC: i32 = 9;

impl ExportOptions {
    /// Whether only one input may carry enumerated shapes: several lengths
    /// below [`MULTI_ENUMERATED_SPEC`]. The mask is then computed in the graph.
    pub fn single_enumerated_input(&self) -> bool {
        self.seq_lengths.len() > 1 && self.spec_version < MULTI_ENUMERATED_SPEC
    }

    /// [`SideInfo::mask`] for these options.
    pub fn mask_source(&self) -> &'static str {
        match (self.single_enumerated_input(), self.ids_input) {
            (false, _) => MASK_FROM_INPUT,
            (true, true) => MASK_FROM_IDS,
            (true, false) => MASK_FROM_EMBEDDINGS,
        }
    }
}

/// An exported model, ready to write.
#[derive(Debug, Clone)]
pub struct Exported {
    pub model: Model,
    pub side: SideInfo,
    /// Lookup tables the host needs when the input is embeddings
    /// (`word`, `position`, `token_type`, `segment`), fp16.
    pub tables: Vec<(String, Tensor)>,
    /// `tokenizer.json` to ship inside the package.
    pub tokenizer_json: Option<Vec<u8>>,
}

fn err(m: impl Into<String>) -> CoremlError {
    CoremlError::Export(m.into())
}

struct Weights(HashMap<String, Tensor>);

impl Weights {
    fn new(named: Vec<(String, Tensor)>) -> Self {
        Self(named.into_iter().collect())
    }
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.0
            .get(name)
            .ok_or_else(|| err(format!("the model has no tensor {name:?}")))
    }
    fn f16(&self, name: &str) -> Result<Vec<f16>> {
        Ok(self
            .get(name)?
            .to_dtype(DType::F16)?
            .flatten_all()?
            .to_vec1::<f16>()?)
    }
    /// A const with the tensor's values and `shape` (same element count).
    fn constant(&self, b: &mut MilBuilder, name: &str, shape: &[u64]) -> Result<Var> {
        let v = self.f16(name)?;
        let n: u64 = shape.iter().product();
        if v.len() as u64 != n {
            return Err(err(format!(
                "tensor {name:?} has {} values, the graph needs shape {shape:?}",
                v.len()
            )));
        }
        b.constant(&name.replace('.', "_"), TensorValue::f16(shape, v))
    }
    fn dims(&self, name: &str) -> Result<Vec<u64>> {
        Ok(self.get(name)?.dims().iter().map(|&d| d as u64).collect())
    }
}

fn seq_dim(opts: &ExportOptions) -> Result<Dim> {
    match opts.seq_lengths.as_slice() {
        [] => Err(err("at least one sequence length is needed")),
        [s] => Ok(Dim::Fixed(*s as u64)),
        _ => Ok(Dim::Unknown { variadic: false }),
    }
}

fn check_opts(opts: &ExportOptions, max_seq: usize) -> Result<()> {
    if opts.seq_lengths.is_empty() {
        return Err(err("at least one sequence length is needed"));
    }
    if opts.seq_lengths.len() > 128 {
        return Err(err("Core ML allows at most 128 enumerated shapes"));
    }
    let mut seen = std::collections::HashSet::new();
    for &s in &opts.seq_lengths {
        if s == 0 || s > max_seq {
            return Err(err(format!(
                "sequence length {s} is outside 1..={max_seq} (the model's limit)"
            )));
        }
        if !seen.insert(s) {
            return Err(err(format!("sequence length {s} is listed twice")));
        }
    }
    Ok(())
}

fn array_input(
    name: &str,
    doc: &str,
    dtype: ArrayDataType,
    prefix: &[i64],
    opts: &ExportOptions,
) -> Feature {
    // Every input the exporters declare has the sequence as its last axis;
    // below spec 9 with several lengths `front` declares only one of them.
    let shape_for = |s: usize| {
        let mut v = prefix.to_vec();
        v.push(s as i64);
        v
    };
    let flexibility = if opts.seq_lengths.len() > 1 {
        Some(ShapeFlexibility::Enumerated(
            opts.seq_lengths.iter().map(|&s| shape_for(s)).collect(),
        ))
    } else {
        None
    };
    Feature::array(
        name,
        doc,
        ArrayFeature {
            shape: shape_for(opts.seq_lengths[0]),
            dtype,
            flexibility,
        },
    )
}

fn array_output(name: &str, doc: &str, v: &Var) -> Feature {
    // Flexible outputs get no shape, as coremltools writes them.
    let shape =
        v.ty.fixed_shape()
            .map(|s| s.iter().map(|&d| d as i64).collect())
            .unwrap_or_default();
    Feature::array(
        name,
        doc,
        ArrayFeature {
            shape,
            dtype: ArrayDataType::F16,
            flexibility: None,
        },
    )
}

const EMB_DOC: &str = "token embeddings looked up outside the model, ANE layout (1, E, 1, S), fp16";
const EMB_ZERO_DOC: &str =
    "token embeddings looked up outside the model, ANE layout (1, E, 1, S), fp16; \
     padding positions must be all zeros (the mask is computed from them)";
const MASK_DOC: &str = "1 for real tokens, 0 for padding, (1, 1, 1, S), fp16";
const IDS_DOC: &str = "token ids, (1, S), int32";
const TYPES_DOC: &str = "token type (segment) ids, (1, S), int32";

/// Graph inputs and the `(1, E, 1, S)` embeddings they produce.
struct Front {
    x: Var,
    mask: Var,
    features: Vec<Feature>,
}

/// Lookup tables that either go into the graph (ids input) or out to the host.
struct Tables<'a> {
    /// (V, E) token table.
    word: &'a str,
    /// Optional (P, E) position table (BERT).
    position: Option<&'a str>,
    /// Optional (T, E) token-type / segment table.
    types: Option<&'a str>,
    /// Whether the model needs real segment ids (the pair classifier); when
    /// false and only one input may be enumerated, segment 0 is folded in.
    types_required: bool,
    /// The padding id, for a mask computed from the ids.
    pad_id: u32,
}

fn front(
    b: &mut MilBuilder,
    w: &Weights,
    tables: &Tables<'_>,
    embed_dim: u64,
    opts: &ExportOptions,
) -> Result<Front> {
    let s = seq_dim(opts)?;
    let f16t = |shape: Vec<Dim>| TensorType::new(DataType::F16, shape);
    let mask_t = f16t(vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(1), s]);
    // Below spec 9 with several lengths only one input may be enumerated:
    // the mask is computed in the graph (see the module docs).
    let single = opts.single_enumerated_input();
    if !opts.ids_input {
        let x = b.input(
            "embeddings",
            f16t(vec![Dim::Fixed(1), Dim::Fixed(embed_dim), Dim::Fixed(1), s]),
        )?;
        let mut features = vec![array_input(
            "embeddings",
            if single { EMB_ZERO_DOC } else { EMB_DOC },
            ArrayDataType::F16,
            &[1, embed_dim as i64, 1],
            opts,
        )];
        let mask = if single {
            // sign(max_c |x|): 1 where any channel is non-zero, 0 for the
            // zeroed padding; fp16 throughout, so it stays on the ANE.
            let a = b.unary("abs", "mask_abs", &x)?;
            let m = b.reduce("reduce_max", "mask_max", &a, &[1], true)?; // (1, 1, 1, S)
            b.unary("sign", "mask", &m)?
        } else {
            features.push(array_input(
                "mask",
                MASK_DOC,
                ArrayDataType::F16,
                &[1, 1, 1],
                opts,
            ));
            b.input("mask", mask_t)?
        };
        return Ok(Front { x, mask, features });
    }
    if single && tables.types.is_some() && tables.types_required {
        return Err(err(format!(
            "this model takes token_type_ids as well as input_ids, and several sequence lengths \
             would make both inputs enumerated, which Core ML allows only from spec \
             {MULTI_ENUMERATED_SPEC} (iOS 18 / macOS 15) on: pass --spec-version \
             {MULTI_ENUMERATED_SPEC}, one --seq, or leave out --ids (the embeddings input)"
        )));
    }
    let i32t = TensorType::new(DataType::I32, vec![Dim::Fixed(1), s]);
    let ids = b.input("input_ids", i32t.clone())?;
    let mut features = vec![array_input(
        "input_ids",
        IDS_DOC,
        ArrayDataType::I32,
        &[1],
        opts,
    )];
    let type_ids = if tables.types.is_some() && !single {
        features.push(array_input(
            "token_type_ids",
            TYPES_DOC,
            ArrayDataType::I32,
            &[1],
            opts,
        ));
        Some(b.input("token_type_ids", i32t)?)
    } else {
        None
    };
    let mask_in = if single {
        None
    } else {
        let m = b.input("mask", mask_t)?;
        features.push(array_input(
            "mask",
            MASK_DOC,
            ArrayDataType::F16,
            &[1, 1, 1],
            opts,
        ));
        Some(m)
    };

    let wt = w.constant(b, tables.word, &w.dims(tables.word)?)?;
    // Every int32 op (gathers, the position slice's shape arithmetic, the
    // mask comparison) comes before the first fp16 op, so they form one
    // leading CPU island (`anectx coreml check`'s int32-island and
    // mid-graph-island rules).
    let mut sum = b.gather("word_embed", &wt, &ids, 0)?; // (1, S, E)
    let types_embed = match (tables.types, &type_ids) {
        (Some(tn), Some(tids)) => {
            let tt = w.constant(b, tn, &w.dims(tn)?)?;
            Some(b.gather("type_embed", &tt, tids, 0)?)
        }
        (Some(tn), None) => {
            // One segment: every token has type 0, so add row 0 of the table.
            let tdims = w.dims(tn)?;
            let row: Vec<f16> = w.f16(tn)?[..tdims[1] as usize].to_vec();
            Some(b.constant("type_embed", TensorValue::f16(&[1, 1, tdims[1]], row))?)
        }
        _ => None,
    };
    let not_pad = if mask_in.is_none() {
        let pad = b.constant("pad_id", TensorValue::i32_scalar(tables.pad_id as i32))?;
        Some(b.binary_to("not_equal", "mask_not_pad", &ids, &pad, DataType::Bool)?)
    // (1, S)
    } else {
        None
    };
    let mut positions = None;
    if let Some(pn) = tables.position {
        let pdims = w.dims(pn)?;
        let pos = match s {
            Dim::Fixed(n) => {
                // A static length: the first n rows as one (1, n, E) const.
                let all = w.f16(pn)?;
                let rows = all[..(n * pdims[1]) as usize].to_vec();
                b.constant("position_embed", TensorValue::f16(&[1, n, pdims[1]], rows))?
            }
            Dim::Unknown { .. } => {
                // Enumerated lengths: slice the table to the ids' length.
                let table = w
                    .get(pn)?
                    .to_dtype(DType::F16)?
                    .flatten_all()?
                    .to_vec1::<f16>()?;
                let t3 = b.constant(
                    "position_table",
                    TensorValue::f16(&[1, pdims[0], pdims[1]], table),
                )?;
                let shp = b.shape_of("ids_shape", &ids)?; // [1, S]
                let e = b.constant("embed_width", TensorValue::i32s(vec![pdims[1] as i32]))?;
                let end = b.concat("position_end", &[shp, e], 0)?; // [1, S, E]
                b.slice_to(
                    "position_embed",
                    &t3,
                    &end,
                    vec![Dim::Fixed(1), s, Dim::Fixed(pdims[1])],
                )?
            }
        };
        positions = Some(pos);
    }
    if let Some(te) = &types_embed {
        sum = b.binary("add", "embed_add_types", &sum, te)?;
    }
    if let Some(pos) = &positions {
        sum = b.binary("add", "embed_add_positions", &sum, pos)?;
    }
    let t = b.transpose("embed_channels_first", &sum, &[0, 2, 1])?; // (1, E, S)
    let x = b.expand_dims("embed_ane", &t, &[2])?; // (1, E, 1, S)
    let mask = match (mask_in, not_pad) {
        (Some(m), _) => m,
        (None, np) => {
            let np =
                np.ok_or_else(|| err("internal: the mask is neither an input nor computed"))?;
            let m = b.cast("mask_fp16", &np, DataType::F16)?;
            b.expand_dims("mask", &m, &[1, 2])? // (1, 1, 1, S)
        }
    };
    Ok(Front { x, mask, features })
}

/// `(1, C_in, 1, S)` → 1×k conv with "same" zero padding.
fn conv(b: &mut MilBuilder, w: &Weights, prefix: &str, name: &str, x: &Var) -> Result<Var> {
    let wn = format!("{prefix}.weight");
    let mut dims = w.dims(&wn)?;
    if dims.len() == 2 {
        dims.extend([1, 1]); // a linear (out, in) weight as a 1×1 kernel
    }
    let k = dims[3] as i64;
    let weight = w.constant(b, &wn, &dims)?;
    let bias = w.constant(b, &format!("{prefix}.bias"), &[dims[0]])?;
    b.conv(name, x, &weight, Some(&bias), [0, 0, k / 2, k / 2])
}

fn layer_norm(
    b: &mut MilBuilder,
    w: &Weights,
    prefix: &str,
    name: &str,
    x: &Var,
    eps: f64,
) -> Result<Var> {
    let c = w.dims(&format!("{prefix}.weight"))?[0];
    let g = w.constant(b, &format!("{prefix}.weight"), &[c])?;
    let be = w.constant(b, &format!("{prefix}.bias"), &[c])?;
    b.layer_norm(name, x, &[1], &g, &be, eps.max(MIN_FP16_EPS) as f32)
}

/// The conv stack of the conv models: mask, then per block conv → LN → GELU
/// (+ residual) → mask.
fn conv_stack(
    b: &mut MilBuilder,
    w: &Weights,
    x: &Var,
    mask: &Var,
    embed_dim: usize,
    widths: &[usize],
    eps: f64,
) -> Result<Var> {
    let mut h = b.binary("mul", "input_masked", x, mask)?;
    let mut c = embed_dim;
    for (i, &width) in widths.iter().enumerate() {
        let p = format!("blocks.{i}");
        let y = conv(b, w, &format!("{p}.conv"), &format!("block{i}_conv"), &h)?;
        let y = layer_norm(
            b,
            w,
            &format!("{p}.norm"),
            &format!("block{i}_norm"),
            &y,
            eps,
        )?;
        let mut y = b.gelu(&format!("block{i}_gelu"), &y, "EXACT")?;
        if c == width {
            y = b.binary("add", &format!("block{i}_residual"), &y, &h)?;
        }
        h = b.binary("mul", &format!("block{i}_masked"), &y, mask)?;
        c = width;
    }
    Ok(h)
}

/// Masked mean over the sequence: `reduce_mean(x·m) / max(reduce_mean(m), 1e-4)`,
/// which equals `Σ x·m / Σ m` and cannot overflow fp16. `x` must already be masked
/// when `masked` is true.
/// The part ConvEmbedder and ConvClassifier share (as `ConvBlock::run_stack`
/// does in the candle models): inputs and lookup, the conv stack, masked mean
/// pooling. Returns the inputs and the pooled `(1, W, 1, 1)`.
fn conv_trunk(
    b: &mut MilBuilder,
    w: &Weights,
    tables: &Tables<'_>,
    embed_dim: usize,
    widths: &[usize],
    eps: f64,
    opts: &ExportOptions,
) -> Result<(Front, Var)> {
    let f = front(b, w, tables, embed_dim as u64, opts)?;
    let h = conv_stack(b, w, &f.x, &f.mask, embed_dim, widths, eps)?;
    let pooled = masked_mean(b, &h, &f.mask, true)?;
    Ok((f, pooled))
}

fn masked_mean(b: &mut MilBuilder, x: &Var, mask: &Var, masked: bool) -> Result<Var> {
    let xm = if masked {
        x.clone()
    } else {
        b.binary("mul", "pool_masked", x, mask)?
    };
    let num = b.reduce("reduce_mean", "pool_sum", &xm, &[3], true)?;
    let frac = b.reduce("reduce_mean", "pool_fraction", mask, &[3], true)?;
    let floor = b.c_f16("pool_floor", 1e-4)?;
    let frac = b.binary("maximum", "pool_fraction_floor", &frac, &floor)?;
    b.binary("real_div", "pooled", &num, &frac)
}

fn metadata(kind: &str, doc: String, opts: &ExportOptions) -> Metadata {
    let mut user = std::collections::BTreeMap::new();
    user.insert("com.anectx.architecture".into(), kind.into());
    user.insert(
        "com.anectx.seq_lengths".into(),
        opts.seq_lengths
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    user.insert(
        "com.anectx.input".into(),
        if opts.ids_input { "ids" } else { "embeddings" }.into(),
    );
    user.insert(
        "com.anectx.side_data".into(),
        crate::runtime::SIDE_DIR.into(),
    );
    Metadata {
        short_description: doc,
        version: env!("CARGO_PKG_VERSION").into(),
        author: "anectx".into(),
        license: String::new(),
        user_defined: user,
    }
}

fn finish(
    b: MilBuilder,
    front_features: Vec<Feature>,
    outputs: Vec<(&Var, &str)>,
    meta: Metadata,
) -> Result<Model> {
    let opset = b.opset();
    let vars: Vec<&Var> = outputs.iter().map(|(v, _)| *v).collect();
    let out_features = outputs
        .iter()
        .map(|(v, d)| array_output(&v.name, d, v))
        .collect();
    let main = b.finish(&vars)?;
    Ok(Model {
        spec_version: opset.spec_version(),
        description: Description {
            inputs: front_features,
            outputs: out_features,
            metadata: meta,
            ..Default::default()
        },
        program: Program {
            version: 1,
            functions: [("main".to_string(), main)].into_iter().collect(),
            doc_string: String::new(),
            attributes: Default::default(),
        },
        is_updatable: false,
    })
}

fn host_tables(
    w: &Weights,
    names: &[(&str, &str)],
    opts: &ExportOptions,
) -> Result<Vec<(String, Tensor)>> {
    if opts.ids_input {
        return Ok(Vec::new());
    }
    names
        .iter()
        .map(|(src, dst)| Ok((dst.to_string(), w.get(src)?.to_dtype(DType::F16)?)))
        .collect()
}

/// Exports a [`ConvEmbedder`].
pub fn export_conv_embedder(m: &ConvEmbedder, opts: &ExportOptions) -> Result<Exported> {
    let cfg = &m.config;
    check_opts(opts, cfg.max_seq)?;
    let w = Weights::new(m.named_tensors());
    let mut b = MilBuilder::new(Opset::from_spec_version(opts.spec_version)?);
    let tables = Tables {
        word: "embeddings.weight",
        position: None,
        types: None,
        types_required: false,
        pad_id: cfg.pad_token_id,
    };
    let (f, pooled) = conv_trunk(
        &mut b,
        &w,
        &tables,
        cfg.embed_dim,
        &cfg.widths,
        cfg.layer_norm_eps,
        opts,
    )?;
    let proj = conv(&mut b, &w, "proj", "proj", &pooled)?;
    let emb = b.l2_norm("embedding", &proj, 1e-6)?;
    let doc = format!(
        "anectx ConvEmbedder: L2-normalised sentence embedding `embedding` (1, {}, 1, 1) fp16",
        cfg.output_dim
    );
    let model = finish(
        b,
        f.features,
        vec![(&emb, "L2-normalised sentence embedding, (1, D, 1, 1), fp16")],
        metadata("conv_embedder", doc, opts),
    )?;
    Ok(Exported {
        model,
        side: SideInfo {
            format: 1,
            kind: ModelKind::ConvEmbedder,
            input: if opts.ids_input { "ids" } else { "embeddings" }.into(),
            seq_lengths: opts.seq_lengths.clone(),
            embed_dim: cfg.embed_dim,
            max_seq: cfg.max_seq,
            pad_token_id: cfg.pad_token_id,
            mask: opts.mask_source().into(),
            outputs: vec!["embedding".into()],
        },
        tables: host_tables(&w, &[("embeddings.weight", "word")], opts)?,
        tokenizer_json: None,
    })
}

/// Exports a [`ConvClassifier`].
pub fn export_conv_classifier(m: &ConvClassifier, opts: &ExportOptions) -> Result<Exported> {
    let cfg = &m.config;
    check_opts(opts, cfg.max_seq)?;
    let w = Weights::new(m.named_tensors());
    let mut b = MilBuilder::new(Opset::from_spec_version(opts.spec_version)?);
    let tables = Tables {
        word: "embeddings.weight",
        position: None,
        types: Some("segment_embeddings.weight"),
        types_required: true,
        pad_id: cfg.pad_token_id,
    };
    let (f, pooled) = conv_trunk(
        &mut b,
        &w,
        &tables,
        cfg.embed_dim,
        &cfg.widths,
        cfg.layer_norm_eps,
        opts,
    )?;
    let hid = conv(&mut b, &w, "head.hidden", "head_hidden", &pooled)?;
    let hid = b.gelu("head_gelu", &hid, "EXACT")?;
    let logit = conv(&mut b, &w, "head.out", "logit", &hid)?;
    let score = b.unary("sigmoid", "score", &logit)?;
    let model = finish(
        b,
        f.features,
        vec![
            (&logit, "relevance logit, (1, 1, 1, 1), fp16"),
            (&score, "relevance score sigmoid(logit) in [0, 1], (1, 1, 1, 1), fp16"),
        ],
        metadata(
            "conv_classifier",
            "anectx ConvClassifier: relevance `logit` and `score` (1, 1, 1, 1) fp16 for a (query, chunk) pair".into(),
            opts,
        ),
    )?;
    Ok(Exported {
        model,
        side: SideInfo {
            format: 1,
            kind: ModelKind::ConvClassifier,
            input: if opts.ids_input { "ids" } else { "embeddings" }.into(),
            seq_lengths: opts.seq_lengths.clone(),
            embed_dim: cfg.embed_dim,
            max_seq: cfg.max_seq,
            pad_token_id: cfg.pad_token_id,
            mask: opts.mask_source().into(),
            outputs: vec!["logit".into(), "score".into()],
        },
        tables: host_tables(
            &w,
            &[
                ("embeddings.weight", "word"),
                ("segment_embeddings.weight", "token_type"),
            ],
            opts,
        )?,
        tokenizer_json: None,
    })
}

/// Exports an [`AneBert`] encoder with its pooling and L2 normalisation.
pub fn export_bert(m: &AneBert, opts: &ExportOptions) -> Result<Exported> {
    let cfg = &m.config;
    check_opts(opts, cfg.max_position_embeddings)?;
    let w = Weights::new(m.named_tensors());
    let c = cfg.hidden_size as u64;
    let heads = cfg.num_attention_heads;
    let d = cfg.head_dim() as i64;
    let mut b = MilBuilder::new(Opset::from_spec_version(opts.spec_version)?);
    let tables = Tables {
        word: "embeddings.word_embeddings.weight",
        position: Some("embeddings.position_embeddings.weight"),
        types: Some("embeddings.token_type_embeddings.weight"),
        types_required: false,
        pad_id: cfg.pad_token_id,
    };
    let f = front(&mut b, &w, &tables, c, opts)?;
    let eps = cfg.layer_norm_eps;

    // Additive key mask: (mask - 1) * 1e4 → 0 for tokens, -1e4 for padding.
    let one = b.c_f16("one", 1.0)?;
    let neg = b.c_f16("mask_scale", -MASK_NEG)?;
    let mm1 = b.binary("sub", "mask_minus_one", &f.mask, &one)?;
    let madd = b.binary("mul", "mask_additive", &mm1, &neg)?; // (1, 1, 1, S)
    let scale = b.c_f16("attn_scale", 1.0 / (d as f32).sqrt())?;

    let mut x = layer_norm(&mut b, &w, "embeddings.LayerNorm", "embed_norm", &f.x, eps)?;
    for i in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        let l = format!("l{i}");
        let q = conv(
            &mut b,
            &w,
            &format!("{p}.attention.self.query"),
            &format!("{l}_q"),
            &x,
        )?;
        let q = b.binary("mul", &format!("{l}_q_scaled"), &q, &scale)?;
        let k = conv(
            &mut b,
            &w,
            &format!("{p}.attention.self.key"),
            &format!("{l}_k"),
            &x,
        )?;
        let v = conv(
            &mut b,
            &w,
            &format!("{p}.attention.self.value"),
            &format!("{l}_v"),
            &x,
        )?;
        let qs = b.split(&format!("{l}_q_heads"), &q, heads, 1)?;
        let ks = b.split(&format!("{l}_k_heads"), &k, heads, 1)?;
        let vs = b.split(&format!("{l}_v_heads"), &v, heads, 1)?;
        let mut outs = Vec::with_capacity(heads);
        for h in 0..heads {
            let hn = format!("{l}_h{h}");
            // (1, d, 1, S) → (1, 1, d, S): moves only unit axes, the last axis stays.
            let qh = b.reshape(&format!("{hn}_q"), &qs[h], &[1, 1, d, -1])?;
            let kh = b.reshape(&format!("{hn}_k"), &ks[h], &[1, 1, d, -1])?;
            let vh = b.reshape(&format!("{hn}_v"), &vs[h], &[1, 1, d, -1])?;
            // scores (1, 1, S_q, S_k) = qᵀ k
            let sc = b.matmul(&format!("{hn}_scores"), &qh, &kh, true, false)?;
            let sc = b.binary("add", &format!("{hn}_masked"), &sc, &madd)?;
            let pr = b.softmax(&format!("{hn}_probs"), &sc, -1)?;
            // out (1, 1, d, S_q) = v · probsᵀ
            let o = b.matmul(&format!("{hn}_out"), &vh, &pr, false, true)?;
            outs.push(b.reshape(&format!("{hn}_ane"), &o, &[1, d, 1, -1])?);
        }
        let a = b.concat(&format!("{l}_attn"), &outs, 1)?;
        let a = conv(
            &mut b,
            &w,
            &format!("{p}.attention.output.dense"),
            &format!("{l}_attn_out"),
            &a,
        )?;
        let a = b.binary("add", &format!("{l}_attn_residual"), &a, &x)?;
        x = layer_norm(
            &mut b,
            &w,
            &format!("{p}.attention.output.LayerNorm"),
            &format!("{l}_attn_norm"),
            &a,
            eps,
        )?;
        let hdn = conv(
            &mut b,
            &w,
            &format!("{p}.intermediate.dense"),
            &format!("{l}_ffn_in"),
            &x,
        )?;
        let hdn = b.gelu(&format!("{l}_ffn_gelu"), &hdn, "EXACT")?;
        let o = conv(
            &mut b,
            &w,
            &format!("{p}.output.dense"),
            &format!("{l}_ffn_out"),
            &hdn,
        )?;
        let o = b.binary("add", &format!("{l}_ffn_residual"), &o, &x)?;
        let last = i + 1 == cfg.num_hidden_layers;
        let name = if last {
            "hidden_states".to_string()
        } else {
            format!("{l}_out_norm")
        };
        x = layer_norm(&mut b, &w, &format!("{p}.output.LayerNorm"), &name, &o, eps)?;
    }
    if cfg.num_hidden_layers == 0 {
        return Err(err("a BERT model without layers cannot be exported"));
    }
    let pooled = match m.pooling {
        Pooling::Mean => masked_mean(&mut b, &x, &f.mask, false)?,
        Pooling::Cls => b.slice("pooled", &x, &[0, 0, 0, 0], &[1, c as i64, 1, 1])?,
    };
    let emb = b.l2_norm("embedding", &pooled, 1e-6)?;
    let doc = format!(
        "anectx AneBert ({} layers, hidden {c}, {:?} pooling): `embedding` (1, {c}, 1, 1) L2-normalised and `hidden_states` (1, {c}, 1, S), fp16",
        cfg.num_hidden_layers, m.pooling
    );
    let model = finish(
        b,
        f.features,
        vec![
            (&emb, "L2-normalised sentence embedding, (1, C, 1, 1), fp16"),
            (&x, "encoder output (token states), (1, C, 1, S), fp16"),
        ],
        metadata("bert", doc, opts),
    )?;
    Ok(Exported {
        model,
        side: SideInfo {
            format: 1,
            kind: ModelKind::Bert,
            input: if opts.ids_input { "ids" } else { "embeddings" }.into(),
            seq_lengths: opts.seq_lengths.clone(),
            embed_dim: cfg.hidden_size,
            max_seq: cfg.max_position_embeddings,
            pad_token_id: cfg.pad_token_id,
            mask: opts.mask_source().into(),
            outputs: vec!["embedding".into(), "hidden_states".into()],
        },
        tables: host_tables(
            &w,
            &[
                ("embeddings.word_embeddings.weight", "word"),
                ("embeddings.position_embeddings.weight", "position"),
                ("embeddings.token_type_embeddings.weight", "token_type"),
            ],
            opts,
        )?,
        tokenizer_json: None,
    })
}

/// A model loaded for export.
#[derive(Debug, Clone)]
pub enum Exportable {
    Bert(Box<AneBert>),
    ConvEmbedder(ConvEmbedder),
    ConvClassifier(ConvClassifier),
}

/// Loads a model directory (any kind anectx knows, in f32) and its
/// `tokenizer.json`.
pub fn load_model_dir(dir: &Path) -> Result<(Exportable, Vec<u8>)> {
    use anectx_models::io::{detect_kind, TOKENIZER_FILE};
    use anectx_models::{load_classifier, load_embedder, Embedder, WeightDtype};
    let (kind, _) = detect_kind(dir)?;
    let m = match kind {
        ModelKind::ConvClassifier => {
            Exportable::ConvClassifier(load_classifier(dir, WeightDtype::F32)?.0)
        }
        _ => match load_embedder(dir, WeightDtype::F32)?.0 {
            Embedder::Bert(m) => Exportable::Bert(m),
            Embedder::Conv(m) => Exportable::ConvEmbedder(m),
        },
    };
    let tok = dir.join(TOKENIZER_FILE);
    let bytes = std::fs::read(&tok).map_err(crate::error::io_err(&tok))?;
    Ok((m, bytes))
}

/// Exports a loaded model.
pub fn export_model(m: &Exportable, opts: &ExportOptions) -> Result<Exported> {
    match m {
        Exportable::Bert(b) => export_bert(b, opts),
        Exportable::ConvEmbedder(c) => export_conv_embedder(c, opts),
        Exportable::ConvClassifier(c) => export_conv_classifier(c, opts),
    }
}

/// Loads a model directory and exports it, taking its `tokenizer.json` along.
pub fn export_model_dir(dir: &Path, opts: &ExportOptions) -> Result<Exported> {
    let (m, tok) = load_model_dir(dir)?;
    let mut e = export_model(&m, opts)?;
    e.tokenizer_json = Some(tok);
    Ok(e)
}

/// Writes an exported model with its side data (`anectx.json`, the lookup
/// tables and the tokenizer) under `Data/com.anectx/`.
pub fn write_exported(e: &Exported, path: &Path, overwrite: bool) -> Result<WrittenPackage> {
    use crate::runtime::{SIDE_DIR, SIDE_INFO, SIDE_TABLES, SIDE_TOKENIZER};
    let dir = PathBuf::from(SIDE_DIR);
    let mut extra = vec![(
        dir.join(SIDE_INFO),
        serde_json::to_vec_pretty(&e.side).map_err(|x| err(x.to_string()))?,
    )];
    if let Some(t) = &e.tokenizer_json {
        extra.push((dir.join(SIDE_TOKENIZER), t.clone()));
    }
    let written = write_package(
        &e.model,
        path,
        &WriteOptions {
            overwrite,
            extra_files: extra,
        },
    )?;
    if !e.tables.is_empty() {
        let map: HashMap<String, Tensor> = e.tables.iter().cloned().collect();
        let tp = path.join(&dir).join(SIDE_TABLES);
        candle_core::safetensors::save(&map, &tp)
            .map_err(|x| err(format!("writing lookup tables {}: {x}", tp.display())))?;
    }
    Ok(written)
}

/// Weights of a relevance MLP over candidate features (the learning loop's
/// model): `score = sigmoid(w2 · tanh(W1 z + b1) + skip · z)` with
/// `z = (x − mean) / std`.
#[derive(Debug, Clone)]
pub struct FeatureMlp {
    /// `hidden × features`, row-major.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub skip: Vec<f32>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Exports a [`FeatureMlp`] scoring `candidates` candidates at once: input
/// `features` `(1, F, 1, N)` fp16 (raw features, channels first), output
/// `score` `(1, 1, 1, N)` fp16. The standardisation is folded into the
/// first 1×1 convolutions, so the graph is three convs, tanh, add, sigmoid.
pub fn export_feature_mlp(m: &FeatureMlp, candidates: usize, spec_version: i32) -> Result<Model> {
    let f = m.mean.len();
    let h = m.b1.len();
    if f == 0
        || m.std.len() != f
        || m.skip.len() != f
        || m.w1.len() != h * f
        || m.w2.len() != h
        || candidates == 0
    {
        return Err(err("feature MLP: inconsistent shapes"));
    }
    let inv: Vec<f32> = m.std.iter().map(|s| 1.0 / s.max(1e-6)).collect();
    // W1' = W1 diag(1/std), b1' = b1 − W1' mean; skip' likewise.
    let mut w1 = vec![0f32; h * f];
    let mut b1 = m.b1.clone();
    for r in 0..h {
        for c in 0..f {
            w1[r * f + c] = m.w1[r * f + c] * inv[c];
            b1[r] -= w1[r * f + c] * m.mean[c];
        }
    }
    let skip: Vec<f32> = (0..f).map(|c| m.skip[c] * inv[c]).collect();
    let skip_b: f32 = -(0..f).map(|c| skip[c] * m.mean[c]).sum::<f32>();
    let hf = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    let mut b = MilBuilder::new(Opset::from_spec_version(spec_version)?);
    let opts = ExportOptions {
        seq_lengths: vec![candidates],
        ids_input: false,
        spec_version,
    };
    let x = b.input(
        "features",
        TensorType::new(
            DataType::F16,
            vec![
                Dim::Fixed(1),
                Dim::Fixed(f as u64),
                Dim::Fixed(1),
                Dim::Fixed(candidates as u64),
            ],
        ),
    )?;
    let (fu, hu) = (f as u64, h as u64);
    let w1c = b.constant("w1", TensorValue::f16(&[hu, fu, 1, 1], hf(&w1)))?;
    let b1c = b.constant("b1", TensorValue::f16(&[hu], hf(&b1)))?;
    let w2c = b.constant("w2", TensorValue::f16(&[1, hu, 1, 1], hf(&m.w2)))?;
    let b2c = b.constant("b2", TensorValue::f16(&[1], hf(&[0.0])))?;
    let sc = b.constant("skip", TensorValue::f16(&[1, fu, 1, 1], hf(&skip)))?;
    let sb = b.constant("skip_bias", TensorValue::f16(&[1], hf(&[skip_b])))?;
    let hid = b.conv("hidden", &x, &w1c, Some(&b1c), [0, 0, 0, 0])?;
    let hid = b.unary("tanh", "hidden_tanh", &hid)?;
    let s1 = b.conv("mlp_out", &hid, &w2c, Some(&b2c), [0, 0, 0, 0])?;
    let s2 = b.conv("linear_out", &x, &sc, Some(&sb), [0, 0, 0, 0])?;
    let logit = b.binary("add", "logit", &s1, &s2)?;
    let score = b.unary("sigmoid", "score", &logit)?;
    let feature = array_input(
        "features",
        "candidate features (1, F, 1, N), fp16, in the order of anectx_learn::features::FEATURE_NAMES",
        ArrayDataType::F16,
        &[1, f as i64, 1],
        &opts,
    );
    finish(
        b,
        vec![feature],
        vec![(&score, "relevance score per candidate (1, 1, 1, N), fp16")],
        metadata(
            "relevance_mlp",
            "anectx learned relevance model: scores N candidates from their features".into(),
            &opts,
        ),
    )
}

/// Writes a feature-MLP package (see [`export_feature_mlp`]).
pub fn write_feature_mlp(model: &Model, path: &Path, overwrite: bool) -> Result<WrittenPackage> {
    write_package(
        model,
        path,
        &WriteOptions {
            overwrite,
            extra_files: Vec::new(),
        },
    )
}
