//! Writer → reader round trips, packages written by coremltools, and bad
//! input: every broken package gives a typed error that names the problem.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anectx_coreml::package::{decode_model_proto, parse_model};
use anectx_coreml::proto;
use anectx_coreml::{
    exec, export, read_package, write_package, ArrayDataType, BlobProblem, CoremlError,
    FeatureType, TensorData, Value,
};
use candle_core::{Device, Tensor};
use common::*;
use prost::Message;

const MODEL: &str = "Data/com.apple.CoreML/model.mlmodel";
const WEIGHTS: &str = "Data/com.apple.CoreML/weights/weight.bin";

fn write_tiny(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.mlpackage");
    write_package(&tiny_export().model, &p, &Default::default()).unwrap();
    p
}

fn rewrite_model(pkg: &Path, f: impl FnOnce(&mut proto::Model)) {
    let path = pkg.join(MODEL);
    let mut m = decode_model_proto(&std::fs::read(&path).unwrap(), &path).unwrap();
    f(&mut m);
    std::fs::write(&path, m.encode_to_vec()).unwrap();
}

fn main_block(m: &mut proto::Model) -> &mut proto::Block {
    match m.r#type.as_mut().unwrap() {
        proto::model::Type::MlProgram(p) => {
            let f = p.functions.get_mut("main").unwrap();
            let opset = f.opset.clone();
            f.block_specializations.get_mut(&opset).unwrap()
        }
        _ => panic!("not a program"),
    }
}

#[test]
fn round_trip_is_exact_for_every_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = vec![
        export::export_conv_embedder(&default_embedder(), &opts(&[32, 64], false)).unwrap(),
        export::export_conv_classifier(&default_classifier(), &opts(&[64], true)).unwrap(),
    ];
    if let Some(b) = minilm() {
        cases.push(export::export_bert(&b, &opts(&[128], false)).unwrap());
    }
    for (i, e) in cases.iter().enumerate() {
        let p = tmp.path().join(format!("m{i}.mlpackage"));
        let w = write_package(&e.model, &p, &Default::default()).unwrap();
        let back = read_package(&p).unwrap();
        // Same description, same ops in the same order, same weight values.
        assert_eq!(back, w.model, "case {i}");
        assert_eq!(back.operations().len(), e.model.operations().len());
        // Only the blob placement differs from the unwritten model.
        let blobs = back
            .operations()
            .iter()
            .filter(|(_, op)| {
                matches!(op.const_value(), Some(Value::Tensor(t)) if t.blob_offset.is_some())
            })
            .count();
        assert!(blobs > 0, "large weights go to weight.bin");
        // Writing what was read gives the same bytes.
        let p2 = tmp.path().join(format!("m{i}b.mlpackage"));
        write_package(&back, &p2, &Default::default()).unwrap();
        for f in [MODEL, WEIGHTS, "Manifest.json"] {
            assert!(
                std::fs::read(p.join(f)).unwrap() == std::fs::read(p2.join(f)).unwrap(),
                "case {i}: {f} differs after a round trip"
            );
        }
        // weight.bin: 64-byte aligned blobs, offsets at metadata records.
        let wb = std::fs::read(p.join(WEIGHTS)).unwrap();
        for (_, op) in back.operations() {
            if let Some(Value::Tensor(t)) = op.const_value() {
                if let Some(off) = t.blob_offset {
                    assert_eq!(off % 64, 0);
                    assert_eq!(
                        &wb[off as usize..off as usize + 4],
                        &[0xef, 0xbe, 0xad, 0xde]
                    );
                    assert!(matches!(t.data, TensorData::F16(_)));
                }
            }
        }
    }
}

#[test]
fn reads_enumerated_shapes_and_types() {
    let tmp = tempfile::tempdir().unwrap();
    let e = export::export_conv_embedder(&tiny_embedder(), &opts(&[16, 32, 64], true)).unwrap();
    let p = tmp.path().join("e.mlpackage");
    write_package(&e.model, &p, &Default::default()).unwrap();
    let m = read_package(&p).unwrap();
    assert_eq!(m.spec_version, 7);
    let (_, f) = m.main_function().unwrap();
    assert_eq!(f.opset, "CoreML6");
    let ids = &m.description.inputs[0];
    assert_eq!(ids.name, "input_ids");
    let FeatureType::MultiArray(a) = &ids.ty else {
        panic!()
    };
    assert_eq!(a.dtype, ArrayDataType::I32);
    assert_eq!(
        a.enumerated_shapes().unwrap(),
        vec![vec![1, 16], vec![1, 32], vec![1, 64]]
    );
    let t = f.inputs[0].ty.as_tensor().unwrap();
    assert_eq!(t.to_string(), "tensor<int32, [1, ?]>");
    assert!(m.operations().iter().any(|(_, op)| op.op_type == "gather"));
}

#[test]
fn reads_and_runs_a_package_written_by_coremltools() {
    let Some(py) = anectx_testing::python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("ref.mlpackage");
    let exp = tmp.path().join("expected.json");
    let out = Command::new(&py)
        .arg(script("make_reference.py"))
        .args([&pkg, &exp])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = read_package(&pkg).unwrap();
    assert_eq!(m.spec_version, 7);
    let types: Vec<&str> = m
        .operations()
        .iter()
        .map(|(_, o)| o.op_type.as_str())
        .collect();
    for t in [
        "gather",
        "conv",
        "relu",
        "reduce_mean",
        "l2_norm",
        "softmax",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    // Four constants are large enough for weight.bin (note §3.6).
    let blobs = m
        .operations()
        .iter()
        .filter(
            |(_, op)| matches!(op.const_value(), Some(Value::Tensor(t)) if t.blob_offset.is_some()),
        )
        .count();
    assert_eq!(blobs, 4);
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exp).unwrap()).unwrap();
    let ids: Vec<i64> = expected["ids"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let input = m.description.inputs[0].name.clone();
    let inputs: HashMap<String, Tensor> =
        [(input, Tensor::from_vec(ids, (1, 8), &Device::Cpu).unwrap())]
            .into_iter()
            .collect();
    let out = exec::run(&m, &inputs).unwrap();
    for name in ["embedding", "probs"] {
        let got = out[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = expected[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{name}: {got:?} vs numpy {want:?}");
        }
    }
}

// ---------------------------------------------------------------- bad input

#[test]
fn missing_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    std::fs::remove_file(p.join("Manifest.json")).unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(matches!(e, CoremlError::MissingManifest(_)), "{e}");
    assert!(e.to_string().contains("Manifest.json is missing"), "{e}");
}

#[test]
fn wrong_root_identifier() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    let mp = p.join("Manifest.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    j["rootModelIdentifier"] = "not-an-entry".into();
    std::fs::write(&mp, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(&e, CoremlError::RootModelMissing { identifier, .. } if identifier == "not-an-entry"),
        "{e}"
    );
    assert!(e.to_string().contains("rootModelIdentifier"), "{e}");
}

#[test]
fn manifest_that_is_not_json_or_points_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    std::fs::write(p.join("Manifest.json"), b"{ nope").unwrap();
    assert!(matches!(
        read_package(&p).unwrap_err(),
        CoremlError::Manifest { .. }
    ));
    let p2 = tmp.path().join("b.mlpackage");
    write_package(&tiny_export().model, &p2, &Default::default()).unwrap();
    std::fs::remove_file(p2.join(MODEL)).unwrap();
    let e = read_package(&p2).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn truncated_weight_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    let wp = p.join(WEIGHTS);
    let w = std::fs::read(&wp).unwrap();
    std::fs::write(&wp, &w[..w.len() - 10]).unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(
            &e,
            CoremlError::Blob {
                problem: BlobProblem::Truncated { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");
    // Shorter than the header.
    std::fs::write(&wp, &w[..20]).unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(
            &e,
            CoremlError::Blob {
                problem: BlobProblem::TruncatedHeader { len: 20 },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_blob_sentinel() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    let wp = p.join(WEIGHTS);
    let mut w = std::fs::read(&wp).unwrap();
    w[64..68].copy_from_slice(&[0, 0, 0, 0]);
    std::fs::write(&wp, &w).unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(
            &e,
            CoremlError::Blob {
                offset: 64,
                problem: BlobProblem::BadSentinel { found: 0 },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("sentinel"), "{e}");
}

fn first_blob_value(m: &mut proto::Model) -> &mut proto::value::BlobFileValue {
    for op in &mut main_block(m).operations {
        if let Some(v) = op.attributes.get_mut("val") {
            if let Some(proto::value::Value::BlobFileValue(b)) = v.value.as_mut() {
                return b;
            }
        }
    }
    panic!("no blob value")
}

#[test]
fn blob_offset_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    rewrite_model(&p, |m| first_blob_value(m).offset = 1 << 40);
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(&e, CoremlError::Blob { problem: BlobProblem::OffsetPastEnd { offset, .. }, .. } if *offset == 1 << 40),
        "{e}"
    );
    assert!(e.to_string().contains("past the end"), "{e}");
    // An offset pointing at data instead of the metadata record.
    let p2 = tmp.path().join("c.mlpackage");
    write_package(&tiny_export().model, &p2, &Default::default()).unwrap();
    rewrite_model(&p2, |m| first_blob_value(m).offset += 64);
    let e = read_package(&p2).unwrap_err();
    assert!(
        matches!(
            &e,
            CoremlError::Blob {
                problem: BlobProblem::BadSentinel { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn blob_type_differs_from_declared_type() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    let wp = p.join(WEIGHTS);
    let mut w = std::fs::read(&wp).unwrap();
    w[68..72].copy_from_slice(&2u32.to_le_bytes()); // fp32 code on an fp16 value
    std::fs::write(&wp, &w).unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(
            &e,
            CoremlError::Blob {
                problem: BlobProblem::DtypeMismatch { found: 2, .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_op() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    rewrite_model(&p, |m| {
        let op = main_block(m)
            .operations
            .iter_mut()
            .find(|o| o.r#type == "gelu")
            .unwrap();
        op.r#type = "reluu".into();
    });
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(&e, CoremlError::UnknownOp { op_type, .. } if op_type == "reluu"),
        "{e}"
    );
    assert!(
        e.to_string().contains("unknown MIL op type \"reluu\""),
        "{e}"
    );
}

#[test]
fn undefined_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    rewrite_model(&p, |m| {
        let op = main_block(m)
            .operations
            .iter_mut()
            .find(|o| o.r#type == "gelu")
            .unwrap();
        op.inputs.get_mut("x").unwrap().arguments[0].binding =
            Some(proto::argument::binding::Binding::Name("nope".into()));
    });
    let e = read_package(&p).unwrap_err();
    assert!(e.to_string().contains("undefined variable \"nope\""), "{e}");
}

#[test]
fn description_and_program_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    // Output renamed in the description only.
    let p = write_tiny(tmp.path());
    rewrite_model(&p, |m| {
        m.description.as_mut().unwrap().output[0].name = "vector".into()
    });
    let e = read_package(&p).unwrap_err();
    assert!(matches!(e, CoremlError::DescriptionMismatch(_)), "{e}");
    assert!(e.to_string().contains("\"vector\""), "{e}");

    // Input described as fp32 while the program takes fp16 (coremltools accepts this).
    let p2 = tmp.path().join("d.mlpackage");
    write_package(&tiny_export().model, &p2, &Default::default()).unwrap();
    rewrite_model(&p2, |m| {
        let f = &mut m.description.as_mut().unwrap().input[0];
        if let Some(proto::feature_type::Type::MultiArrayType(a)) =
            f.r#type.as_mut().unwrap().r#type.as_mut()
        {
            a.data_type = proto::array_data_type::FLOAT32;
        }
    });
    let e = read_package(&p2).unwrap_err();
    assert!(matches!(e, CoremlError::DescriptionMismatch(_)), "{e}");
    assert!(e.to_string().contains("embeddings"), "{e}");

    // Shape disagreement.
    let p3 = tmp.path().join("s.mlpackage");
    write_package(&tiny_export().model, &p3, &Default::default()).unwrap();
    rewrite_model(&p3, |m| {
        let f = &mut m.description.as_mut().unwrap().input[1];
        if let Some(proto::feature_type::Type::MultiArrayType(a)) =
            f.r#type.as_mut().unwrap().r#type.as_mut()
        {
            a.shape = vec![1, 1, 1, 17];
        }
    });
    let e = read_package(&p3).unwrap_err();
    assert!(e.to_string().contains("dimension 3 is 17"), "{e}");

    // The writer refuses such a model too.
    let mut bad = tiny_export().model;
    bad.description.outputs[0].name = "vector".into();
    let e = write_package(&bad, &tmp.path().join("w.mlpackage"), &Default::default()).unwrap_err();
    assert!(matches!(e, CoremlError::DescriptionMismatch(_)), "{e}");
}

#[test]
fn not_a_model_or_not_a_program() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_tiny(tmp.path());
    rewrite_model(&p, |m| {
        m.r#type = Some(proto::model::Type::NeuralNetwork(proto::Opaque {}))
    });
    let e = read_package(&p).unwrap_err();
    assert!(
        matches!(&e, CoremlError::NotMlProgram { found, .. } if found == "neuralNetwork"),
        "{e}"
    );
    std::fs::write(p.join(MODEL), b"\xff\xff\xff garbage").unwrap();
    let e = read_package(&p).unwrap_err();
    assert!(matches!(e, CoremlError::Protobuf { .. }), "{e}");
}

#[test]
fn writer_refuses_unused_inputs_and_existing_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = tiny_export().model;
    let f = m.program.functions.get_mut("main").unwrap();
    f.inputs.push(anectx_coreml::NamedType::tensor(
        "spare",
        anectx_coreml::TensorType::fixed(anectx_coreml::DataType::F16, &[1]),
    ));
    let e = write_package(&m, &tmp.path().join("u.mlpackage"), &Default::default()).unwrap_err();
    assert!(e.to_string().contains("\"spare\" is never used"), "{e}");
    let p = write_tiny(tmp.path());
    let e = write_package(&tiny_export().model, &p, &Default::default()).unwrap_err();
    assert!(matches!(e, CoremlError::Exists { .. }), "{e}");
    let opts = anectx_coreml::WriteOptions {
        overwrite: true,
        ..Default::default()
    };
    write_package(&tiny_export().model, &p, &opts).unwrap();
}

// ---------------------------------------------------------------- fuzzing

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn parts() -> (Vec<u8>, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_tiny(tmp.path());
        (
            std::fs::read(p.join(MODEL)).unwrap(),
            std::fs::read(p.join(WEIGHTS)).unwrap(),
        )
    }

    fn parse(model: &[u8], weights: &[u8]) -> Result<anectx_coreml::Model, CoremlError> {
        parse_model(
            model,
            Some(weights),
            Path::new("model.mlmodel"),
            Path::new("weight.bin"),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Flipping, overwriting or cutting bytes of model.mlmodel never panics.
        #[test]
        fn corrupted_model_proto(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                 cut in any::<prop::sample::Index>(), do_cut in any::<bool>()) {
            let (mut model, weights) = parts();
            for (i, b) in edits {
                let at = i.index(model.len());
                model[at] = b;
            }
            if do_cut {
                let n = cut.index(model.len());
                model.truncate(n);
            }
            let _ = parse(&model, &weights);
        }

        /// Corrupting weight.bin gives a blob error or a valid model, never a panic.
        #[test]
        fn corrupted_weights(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                             cut in any::<prop::sample::Index>(), do_cut in any::<bool>()) {
            let (model, mut weights) = parts();
            for (i, b) in edits {
                let at = i.index(weights.len());
                weights[at] = b;
            }
            if do_cut {
                let n = cut.index(weights.len());
                weights.truncate(n);
            }
            match parse(&model, &weights) {
                Ok(_) | Err(CoremlError::Blob { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
            }
        }

        /// Arbitrary bytes as model.mlmodel never panic.
        #[test]
        fn random_model_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let (_, weights) = parts();
            let _ = parse(&bytes, &weights);
        }
    }
}
