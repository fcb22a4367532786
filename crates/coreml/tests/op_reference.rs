//! Every MIL op the exporters emit, run by the reference executor on seeded
//! random fp32 inputs and compared at 1e-4 with an independent numpy
//! reference (`python/op_reference.py`, written from the op definitions of
//! coremltools 9.0, not from this crate). The programs are built with the
//! same builder calls the exporters make (same parameter bindings).
//!
//! A second check lists the op types of every exporter configuration and
//! requires each to be covered here, so a new op cannot slip in unchecked.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use anectx_coreml::builder::{MilBuilder, Opset, Var};
use anectx_coreml::export::{self, ExportOptions, FeatureMlp};
use anectx_coreml::program::*;
use anectx_coreml::{exec, Model};
use anectx_models::{AneBert, BertConfig, Pooling};
use candle_core::{Device, Tensor};
use common::*;
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Debug, Deserialize)]
struct Arr {
    dtype: String,
    shape: Vec<u64>,
    data: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    op: String,
    inputs: BTreeMap<String, Arr>,
    consts: BTreeMap<String, Arr>,
    attrs: serde_json::Map<String, serde_json::Value>,
    outputs: Vec<Arr>,
}

fn dtype(a: &Arr) -> DataType {
    match a.dtype.as_str() {
        "fp32" => DataType::F32,
        "int32" => DataType::I32,
        "bool" => DataType::Bool,
        other => panic!("unexpected dtype {other}"),
    }
}

fn value(a: &Arr) -> TensorValue {
    let data = match dtype(a) {
        DataType::F32 => TensorData::F32(a.data.iter().map(|&v| v as f32).collect()),
        DataType::I32 => TensorData::Ints(a.data.iter().map(|&v| v as i32).collect()),
        _ => TensorData::Bools(a.data.iter().map(|&v| v != 0.0).collect()),
    };
    TensorValue::new(TensorType::fixed(dtype(a), &a.shape), data)
}

fn tensor(a: &Arr) -> Tensor {
    let shape: Vec<usize> = a.shape.iter().map(|&d| d as usize).collect();
    match dtype(a) {
        DataType::F32 => Tensor::from_vec(
            a.data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        ),
        _ => Tensor::from_vec(
            a.data.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        ),
    }
    .unwrap()
}

fn ints(c: &Case, key: &str) -> Vec<i64> {
    c.attrs[key]
        .as_array()
        .unwrap_or_else(|| panic!("{}: attr {key}", c.name))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}
fn int(c: &Case, key: &str) -> i64 {
    c.attrs[key].as_i64().unwrap()
}
fn float(c: &Case, key: &str) -> f32 {
    c.attrs[key].as_f64().unwrap() as f32
}
fn flag(c: &Case, key: &str) -> bool {
    c.attrs[key].as_bool().unwrap()
}

/// Builds the one-op (or short-chain) program of a case with the builder
/// calls the exporters use. Returns the model and its output variables.
fn build(c: &Case) -> (Model, Vec<Var>) {
    let mut b = MilBuilder::new(Opset::CoreML6);
    let mut v: HashMap<String, Var> = HashMap::new();
    for (name, a) in &c.inputs {
        let var = b
            .input(name, TensorType::fixed(dtype(a), &a.shape))
            .unwrap();
        v.insert(name.clone(), var);
    }
    for (name, a) in &c.consts {
        v.insert(name.clone(), b.constant(name, value(a)).unwrap());
    }
    let x = || v["x"].clone();
    let op = c.op.as_str();
    let outs: Vec<Var> = match op {
        "add" | "sub" | "mul" | "real_div" | "maximum" => {
            vec![b.binary(op, "out", &x(), &v["y"]).unwrap()]
        }
        "not_equal" => vec![b
            .binary_to(op, "out", &x(), &v["y"], DataType::Bool)
            .unwrap()],
        "abs" | "sign" | "tanh" | "sigmoid" => vec![b.unary(op, "out", &x()).unwrap()],
        "gelu" => vec![b
            .gelu("out", &x(), c.attrs["mode"].as_str().unwrap())
            .unwrap()],
        "softmax" => vec![b.softmax("out", &x(), int(c, "axis")).unwrap()],
        "layer_norm" => vec![b
            .layer_norm(
                "out",
                &x(),
                &ints(c, "axes"),
                &v["gamma"],
                &v["beta"],
                float(c, "epsilon"),
            )
            .unwrap()],
        "reduce_mean" | "reduce_max" => vec![b
            .reduce(op, "out", &x(), &ints(c, "axes"), flag(c, "keep_dims"))
            .unwrap()],
        "conv" => {
            let p = ints(c, "pad");
            vec![b
                .conv(
                    "out",
                    &x(),
                    &v["weight"],
                    Some(&v["bias"]),
                    [p[0], p[1], p[2], p[3]],
                )
                .unwrap()]
        }
        "l2_norm" => vec![b.l2_norm("out", &x(), float(c, "epsilon")).unwrap()],
        "matmul" => vec![b
            .matmul(
                "out",
                &x(),
                &v["y"],
                flag(c, "transpose_x"),
                flag(c, "transpose_y"),
            )
            .unwrap()],
        "split" => b
            .split("out", &x(), int(c, "num_splits") as usize, int(c, "axis"))
            .unwrap(),
        "concat" => {
            let vals: Vec<Var> = c.inputs.keys().map(|k| v[k].clone()).collect();
            vec![b.concat("out", &vals, int(c, "axis")).unwrap()]
        }
        "reshape" => vec![b.reshape("out", &x(), &ints(c, "shape")).unwrap()],
        "transpose" => vec![b.transpose("out", &x(), &ints(c, "perm")).unwrap()],
        "expand_dims" => vec![b.expand_dims("out", &x(), &ints(c, "axes")).unwrap()],
        "gather" => vec![b
            .gather("out", &x(), &v["indices"], int(c, "axis"))
            .unwrap()],
        "slice_by_index" => vec![b
            .slice("out", &x(), &ints(c, "begin"), &ints(c, "end"))
            .unwrap()],
        "slice_to" => {
            // As the exporter slices the position table to the ids' length.
            let table = x();
            let width = *table.ty.fixed_shape().unwrap().last().unwrap() as i32;
            let shp = b.shape_of("ids_shape", &v["ids"]).unwrap();
            let e = b.constant("width", TensorValue::i32s(vec![width])).unwrap();
            let end = b.concat("end", &[shp, e], 0).unwrap();
            let out_shape = c.outputs[0].shape.iter().map(|&d| Dim::Fixed(d)).collect();
            vec![b.slice_to("out", &table, &end, out_shape).unwrap()]
        }
        "shape" => vec![b.shape_of("out", &x()).unwrap()],
        "cast_bool" => {
            // As the exporter turns `input_ids != pad` into the fp16 mask.
            let ne = b
                .binary_to("not_equal", "ne", &x(), &v["y"], DataType::Bool)
                .unwrap();
            vec![b.cast("out", &ne, DataType::F16).unwrap()]
        }
        "cast_roundtrip" => {
            let h = b.cast("half", &x(), DataType::F16).unwrap();
            vec![b.cast("out", &h, DataType::F32).unwrap()]
        }
        other => panic!("{}: no builder call for {other}", c.name),
    };
    let refs: Vec<&Var> = outs.iter().collect();
    let f = b.finish(&refs).unwrap();
    let model = Model {
        spec_version: 7,
        description: Description::default(),
        program: Program {
            version: 1,
            functions: [("main".to_string(), f)].into_iter().collect(),
            doc_string: String::new(),
            attributes: Default::default(),
        },
        is_updatable: false,
    };
    (model, outs)
}

fn op_types(m: &Model) -> BTreeSet<String> {
    m.operations()
        .into_iter()
        .map(|(_, o)| o.op_type.clone())
        .filter(|t| t != "const")
        .collect()
}

fn cases() -> Option<Vec<Case>> {
    let py = anectx_testing::python()?;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cases.json");
    let run = Command::new(&py)
        .arg(script("op_reference.py"))
        .arg(&out)
        .output()
        .expect("running op_reference.py");
    assert!(
        run.status.success(),
        "op_reference.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    Some(serde_json::from_value(v["cases"].clone()).unwrap())
}

/// The op types each exporter configuration emits (spec 7 and 9, one and
/// several lengths, ids and embeddings inputs, both BERT poolings, the
/// feature MLP).
fn exported_op_types() -> BTreeSet<String> {
    let cfg: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 24,
        "max_position_embeddings": 64
    }))
    .unwrap();
    let tensors = tiny_bert_tensors();
    let mut types = BTreeSet::new();
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let bert = AneBert::load(vb(tensors.clone()), cfg.clone(), pooling).unwrap();
        for o in option_grid() {
            types.extend(op_types(&export::export_bert(&bert, &o).unwrap().model));
        }
    }
    for o in option_grid() {
        types.extend(op_types(
            &export::export_conv_embedder(&tiny_embedder(), &o)
                .unwrap()
                .model,
        ));
        // The classifier's ids input with several lengths needs spec 9.
        if let Ok(e) = export::export_conv_classifier(&default_classifier(), &o) {
            types.extend(op_types(&e.model));
        }
    }
    let mlp = FeatureMlp {
        w1: vec![0.1; 6],
        b1: vec![0.0; 2],
        w2: vec![0.5; 2],
        skip: vec![0.2; 3],
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    types.extend(op_types(&export::export_feature_mlp(&mlp, 8, 7).unwrap()));
    types
}

/// Random weights of a 2-layer, 2-head, 16-wide BERT (Hugging Face names).
fn tiny_bert_tensors() -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    let mut put = |n: String, shape: &[usize]| {
        t.insert(n, Tensor::randn(0f32, 0.1, shape, &Device::Cpu).unwrap());
    };
    put("embeddings.word_embeddings.weight".into(), &[40, 16]);
    put("embeddings.position_embeddings.weight".into(), &[64, 16]);
    put("embeddings.token_type_embeddings.weight".into(), &[2, 16]);
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for i in 0..2 {
        let l = format!("encoder.layer.{i}");
        for (n, o, inp) in [
            ("attention.self.query", 16, 16),
            ("attention.self.key", 16, 16),
            ("attention.self.value", 16, 16),
            ("attention.output.dense", 16, 16),
            ("intermediate.dense", 24, 16),
            ("output.dense", 16, 24),
        ] {
            put(format!("{l}.{n}.weight"), &[o, inp]);
            put(format!("{l}.{n}.bias"), &[o]);
        }
        norms.push(format!("{l}.attention.output.LayerNorm"));
        norms.push(format!("{l}.output.LayerNorm"));
    }
    for p in norms {
        put(format!("{p}.weight"), &[16]);
        put(format!("{p}.bias"), &[16]);
    }
    t
}

fn option_grid() -> Vec<ExportOptions> {
    let mut v = Vec::new();
    for spec in [7, 9] {
        for ids in [false, true] {
            for seq in [vec![16], vec![16, 32]] {
                v.push(ExportOptions {
                    seq_lengths: seq,
                    ids_input: ids,
                    spec_version: spec,
                });
            }
        }
    }
    v
}

#[test]
fn every_exported_op_matches_numpy() {
    let Some(cases) = cases() else { return };
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for c in &cases {
        let (model, outs) = build(c);
        covered.extend(op_types(&model));
        let inputs: HashMap<String, Tensor> = c
            .inputs
            .iter()
            .map(|(k, a)| (k.clone(), tensor(a)))
            .collect();
        let got = exec::run(&model, &inputs)
            .unwrap_or_else(|e| panic!("{}: the executor failed: {e}", c.name));
        assert_eq!(outs.len(), c.outputs.len(), "{}: output count", c.name);
        let mut worst = 0f32;
        for (var, want) in outs.iter().zip(&c.outputs) {
            let t = &got[&var.name];
            let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
            assert_eq!(shape, want.shape, "{}: output {} shape", c.name, var.name);
            let g: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            for (a, e) in g.iter().zip(&want.data) {
                let d = (a - *e as f32).abs();
                worst = if d.is_nan() {
                    f32::INFINITY
                } else {
                    worst.max(d)
                };
            }
        }
        eprintln!("OPREF {:<28} {:<16} max |err| {worst:.2e}", c.name, c.op);
        if worst > TOLERANCE {
            failures.push(format!("{} ({}): max |err| {worst:e}", c.name, c.op));
        }
    }
    assert!(
        failures.is_empty(),
        "ops differ from numpy by more than {TOLERANCE}:\n{}",
        failures.join("\n")
    );
    let emitted = exported_op_types();
    let missing: Vec<&String> = emitted.difference(&covered).collect();
    eprintln!("OPREF exporters emit {emitted:?}");
    assert!(
        missing.is_empty(),
        "the exporters emit ops with no numpy reference: {missing:?}"
    );
    // `exec::SUPPORTED_OPS` lists every op the exporters emit.
    let unlisted: Vec<&String> = emitted
        .iter()
        .filter(|t| !exec::SUPPORTED_OPS.contains(&t.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "exec::SUPPORTED_OPS does not list {unlisted:?}"
    );
    // The grid really exercised the exporters (BERT attention, in-graph mask).
    for must in [
        "matmul",
        "split",
        "layer_norm",
        "not_equal",
        "sign",
        "slice_by_index",
    ] {
        assert!(
            emitted.contains(must),
            "the export grid never emitted {must}"
        );
    }
}
