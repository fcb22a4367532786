//! The static ANE-residency checker: packages that each trip one rule, and
//! the exported anectx models passing with 0 errors.

mod common;

use anectx_coreml::check::{check_model, Chip, Severity};
use anectx_coreml::export::{
    export_bert, export_conv_classifier, export_conv_embedder, ExportOptions,
};
use anectx_coreml::program::{
    DataType, Dim, FeatureType, Model, Operation, ShapeFlexibility, TensorData, TensorType,
    TensorValue, Value, ValueType,
};
use anectx_coreml::{read_package, write_package, WriteOptions};

fn base() -> Model {
    export_conv_embedder(&common::default_embedder(), &common::opts(&[64], false))
        .unwrap()
        .model
}

/// Index of a non-const op roughly in the middle of the main block.
fn mid_op(m: &Model) -> usize {
    let ops = &m.program.functions["main"].block.operations;
    let real: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].op_type != "const")
        .collect();
    real[real.len() / 2]
}

fn ops_mut(m: &mut Model) -> &mut Vec<Operation> {
    &mut m
        .program
        .functions
        .get_mut("main")
        .unwrap()
        .block
        .operations
}

fn out_ty(op: &mut Operation) -> &mut TensorType {
    match &mut op.outputs[0].ty {
        ValueType::Tensor(t) => t,
        other => panic!("not a tensor: {other:?}"),
    }
}

fn rules(m: &Model, chip: Chip) -> Vec<(&'static str, Severity)> {
    check_model(m, chip)
        .findings
        .iter()
        .map(|f| (f.rule, f.severity))
        .collect()
}

fn has_error(m: &Model, chip: Chip, rule: &str) -> bool {
    rules(m, chip)
        .iter()
        .any(|(r, s)| *r == rule && *s == Severity::Error)
}

fn spec(seq: &[usize], ids: bool, spec_version: i32) -> ExportOptions {
    ExportOptions {
        spec_version,
        ..common::opts(seq, ids)
    }
}

#[test]
fn exported_anectx_models_pass() {
    let opts = common::opts(&[64, 128], true);
    let mut models = vec![
        (
            "embedder",
            export_conv_embedder(&common::default_embedder(), &opts)
                .unwrap()
                .model,
        ),
        (
            "embedder-embeddings-enumerated",
            export_conv_embedder(&common::default_embedder(), &spec(&[64, 128], false, 7))
                .unwrap()
                .model,
        ),
        (
            "classifier-spec9",
            export_conv_classifier(&common::default_classifier(), &spec(&[64, 128], true, 9))
                .unwrap()
                .model,
        ),
        (
            "classifier-embeddings",
            export_conv_classifier(&common::default_classifier(), &spec(&[64, 128], false, 7))
                .unwrap()
                .model,
        ),
        ("embedder-embeddings-input", base()),
    ];
    if let Some(bert) = common::minilm() {
        models.push(("minilm", export_bert(&bert, &opts).unwrap().model));
        models.push((
            "minilm-embeddings",
            export_bert(&bert, &spec(&[64, 128], false, 7))
                .unwrap()
                .model,
        ));
    }
    for (name, m) in &models {
        for chip in [Chip::M1, Chip::M3, Chip::M4, Chip::M5] {
            let r = check_model(m, chip);
            let errors: Vec<_> = r
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            assert!(errors.is_empty(), "{name} on {chip:?}: {errors:#?}");
            assert!(
                r.predicted_ane_share > 0.9,
                "{name}: {}",
                r.predicted_ane_share
            );
        }
    }
}

#[test]
fn fp32_op_mid_graph_is_an_error() {
    let mut m = base();
    let i = mid_op(&m);
    out_ty(&mut ops_mut(&mut m)[i]).dtype = DataType::F32;
    assert!(has_error(&m, Chip::M4, "fp16-compute"));
    assert!(has_error(&m, Chip::M4, "mid-graph-island"));
    assert!(!has_error(&base(), Chip::M4, "fp16-compute"));
}

#[test]
fn int32_mid_graph_is_an_error() {
    let mut m = base();
    let i = mid_op(&m);
    out_ty(&mut ops_mut(&mut m)[i]).dtype = DataType::I32;
    assert!(has_error(&m, Chip::M4, "int32-island"));
}

#[test]
fn rank_6_is_an_error() {
    let mut m = base();
    let i = mid_op(&m);
    out_ty(&mut ops_mut(&mut m)[i]).shape = vec![Dim::Fixed(1); 6];
    assert!(has_error(&m, Chip::M4, "rank-max-5"));
}

#[test]
fn range_shapes_are_an_error() {
    let mut m = base();
    let FeatureType::MultiArray(a) = &mut m.description.inputs[0].ty else {
        panic!()
    };
    a.flexibility = Some(ShapeFlexibility::Range(vec![
        (1, 1),
        (256, 256),
        (1, 1),
        (1, -1),
    ]));
    assert!(has_error(&m, Chip::M4, "static-shapes"));
}

#[test]
fn lstm_is_denied() {
    let mut m = base();
    let i = mid_op(&m);
    ops_mut(&mut m)[i].op_type = "lstm".into();
    assert!(has_error(&m, Chip::M4, "denied-op"));
    assert!(has_error(&m, Chip::M4, "mid-graph-island"));
}

#[test]
fn wide_dimension_fails_on_m3_but_not_m4() {
    let mut m = base();
    let i = mid_op(&m);
    let t = out_ty(&mut ops_mut(&mut m)[i]);
    *t.shape.last_mut().unwrap() = Dim::Fixed(20000);
    assert!(has_error(&m, Chip::M3, "dim-cap"));
    assert!(!has_error(&m, Chip::M4, "dim-cap"));
}

#[test]
fn neg_inf_mask_is_an_error() {
    let mut m = base();
    let op = Operation {
        op_type: "const".into(),
        name: Some("bad_mask".into()),
        inputs: Default::default(),
        outputs: vec![anectx_coreml::program::NamedType::tensor(
            "bad_mask",
            TensorType::fixed(DataType::F16, &[1, 4]),
        )],
        blocks: vec![],
        attributes: [(
            "val".to_string(),
            Value::Tensor(TensorValue::new(
                TensorType::fixed(DataType::F16, &[1, 4]),
                TensorData::F16(vec![
                    half::f16::ZERO,
                    half::f16::NEG_INFINITY,
                    half::f16::ZERO,
                    half::f16::ZERO,
                ]),
            )),
        )]
        .into(),
    };
    ops_mut(&mut m).insert(0, op);
    assert!(has_error(&m, Chip::M4, "mask-neg-inf"));
}

#[test]
fn tiny_layer_norm_epsilon_is_an_error() {
    let mut m = base();
    let ops = ops_mut(&mut m);
    let eps_var = ops
        .iter()
        .find(|o| o.op_type == "layer_norm")
        .and_then(|o| o.input_var("epsilon").map(str::to_string))
        .expect("the embedder has a layer_norm with a const epsilon");
    let c = ops
        .iter_mut()
        .find(|o| o.outputs.first().is_some_and(|v| v.name == eps_var))
        .unwrap();
    c.attributes
        .insert("val".into(), Value::Tensor(TensorValue::f16_scalar(1e-12)));
    assert!(has_error(&m, Chip::M4, "norm-epsilon"));
}

#[test]
fn kernel_width_and_report_survive_a_package_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let m = base();
    let pkg = tmp.path().join("m.mlpackage");
    write_package(&m, &pkg, &WriteOptions::default()).unwrap();
    let back = read_package(&pkg).unwrap();
    let r = check_model(&back, Chip::M1);
    assert!(r.passed(), "{:#?}", r.findings);
    // The size-floor rule is informational and always present for small models.
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "size-floor" && f.severity == Severity::Info));
    let text = anectx_coreml::check::render(&r, "m.mlpackage", 0.9);
    assert!(text.contains("PASS") && text.contains("islands:"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["errors"], 0);
}

#[test]
fn package_written_by_coremltools_is_checked() {
    let Some(py) = anectx_testing::python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("ref.mlpackage");
    let exp = tmp.path().join("expected.json");
    let out = std::process::Command::new(&py)
        .arg(common::script("make_reference.py"))
        .args([&pkg, &exp])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = read_package(&pkg).unwrap();
    let r = check_model(&m, Chip::M4);
    // gather from int32 ids opens the graph on the CPU; the rest is fp16 on the ANE.
    assert_eq!(
        r.islands.first().map(|i| i.device),
        Some(anectx_core::placement::Device::Cpu)
    );
    assert!(r.passed(), "{:#?}", r.findings);
    assert!(r.predicted_ane_share > 0.5);
}

fn enumerated_inputs(m: &Model) -> Vec<String> {
    m.description
        .inputs
        .iter()
        .filter(|f| {
            matches!(&f.ty, FeatureType::MultiArray(a)
                if matches!(a.flexibility, Some(ShapeFlexibility::Enumerated(_))))
        })
        .map(|f| f.name.clone())
        .collect()
}

#[test]
fn several_enumerated_inputs_below_spec_9_fail_the_check() {
    // Spec 9 allows enumerated shapes on several inputs (embeddings and mask).
    let e = export_conv_embedder(&common::default_embedder(), &spec(&[32, 64], false, 9)).unwrap();
    assert_eq!(enumerated_inputs(&e.model), ["embeddings", "mask"]);
    assert!(!has_error(&e.model, Chip::M4, "enumerated-inputs"));
    // The same package declared as spec 7 (what the exporter wrote before):
    // an error, also after a write and read back.
    let mut m = e.model.clone();
    m.spec_version = 7;
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("two-enumerated.mlpackage");
    write_package(&m, &pkg, &WriteOptions::default()).unwrap();
    let back = read_package(&pkg).unwrap();
    assert_eq!(back.spec_version, 7);
    let r = check_model(&back, Chip::M4);
    assert!(!r.passed());
    let f = r
        .findings
        .iter()
        .find(|f| f.rule == "enumerated-inputs")
        .expect("an enumerated-inputs finding");
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("embeddings, mask"), "{}", f.message);
}

#[test]
fn exporter_writes_one_enumerated_input_below_spec_9() {
    let emb = common::default_embedder();
    let clf = common::default_classifier();
    for spec_version in [7, 8] {
        let mut cases = vec![
            (
                "embedder ids",
                export_conv_embedder(&emb, &spec(&[32, 64], true, spec_version)).unwrap(),
                "input_ids",
            ),
            (
                "embedder embeddings",
                export_conv_embedder(&emb, &spec(&[32, 64], false, spec_version)).unwrap(),
                "embeddings",
            ),
            (
                "classifier embeddings",
                export_conv_classifier(&clf, &spec(&[32, 64], false, spec_version)).unwrap(),
                "embeddings",
            ),
        ];
        if let Some(bert) = common::minilm() {
            cases.push((
                "bert ids",
                export_bert(&bert, &spec(&[32, 64], true, spec_version)).unwrap(),
                "input_ids",
            ));
            cases.push((
                "bert embeddings",
                export_bert(&bert, &spec(&[32, 64], false, spec_version)).unwrap(),
                "embeddings",
            ));
        }
        for (name, e, only) in &cases {
            assert_eq!(
                enumerated_inputs(&e.model),
                [*only],
                "{name} spec {spec_version}"
            );
            // The mask is computed in the graph, and the side data says how.
            let inputs: Vec<&str> = e
                .model
                .description
                .inputs
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            assert_eq!(inputs, [*only], "{name}: no other input");
            let from = if *only == "input_ids" {
                "ids"
            } else {
                "embeddings"
            };
            assert_eq!(e.side.mask, from, "{name}");
            let r = check_model(&e.model, Chip::M4);
            assert!(r.passed(), "{name}: {:#?}", r.findings);
        }
        // The pair classifier needs token_type_ids as well: refused, with the way out.
        let err = export_conv_classifier(&clf, &spec(&[32, 64], true, spec_version)).unwrap_err();
        assert!(err.to_string().contains("--spec-version 9"), "{err}");
    }
    // One length: static shapes, the mask stays an input.
    let e = export_conv_embedder(&emb, &spec(&[64], true, 7)).unwrap();
    assert!(enumerated_inputs(&e.model).is_empty());
    assert_eq!(e.side.mask, "input");
    // Spec 9: every input enumerated, as before.
    let e = export_conv_classifier(&clf, &spec(&[32, 64], true, 9)).unwrap();
    assert_eq!(
        enumerated_inputs(&e.model),
        ["input_ids", "token_type_ids", "mask"]
    );
}

/// The exporter's embedder with every op's result typed fp32: one CPU
/// island, so no rule fails with an error, yet nothing runs on the ANE.
fn all_fp32() -> Model {
    let mut m = base();
    for op in ops_mut(&mut m) {
        if op.op_type != "const" {
            for o in &mut op.outputs {
                if let ValueType::Tensor(t) = &mut o.ty {
                    t.dtype = DataType::F32;
                }
            }
        }
    }
    m
}

#[test]
fn residency_verdict_fails_a_package_that_leaves_the_ane() {
    let ok = check_model(&base(), Chip::M4);
    let v = ok.verdict(anectx_coreml::check::DEFAULT_MIN_RESIDENCY);
    assert!(v.passed, "{}", v.summary);
    assert!(
        ok.predicted_ane_residency > 0.99,
        "{}",
        ok.predicted_ane_residency
    );
    assert!(v.summary.starts_with("PASS"), "{}", v.summary);

    let bad = check_model(&all_fp32(), Chip::M4);
    assert_eq!(bad.errors, 0, "{:#?}", bad.findings);
    assert!(bad.passed(), "no rule fails");
    assert_eq!(bad.predicted_ane_residency, 0.0);
    let v = bad.verdict(0.9);
    assert!(!v.passed);
    assert!(
        v.summary.contains("below the minimum of 90%"),
        "{}",
        v.summary
    );
    assert!(
        bad.verdict(0.0).passed,
        "--min-residency 0 keeps the old answer"
    );
    let text = anectx_coreml::check::render(&bad, "fp32.mlpackage", 0.9);
    assert!(
        text.trim_end()
            .ends_with(&format!("verdict: {}", v.summary)),
        "{text}"
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["passed"], false);
}

#[test]
fn residency_is_weighted_by_cost() {
    // Moving the most expensive op (a conv) off the ANE costs far more
    // residency than its share of the ops.
    let mut m = base();
    let ops = ops_mut(&mut m);
    let conv = ops.iter().position(|o| o.op_type == "conv").unwrap();
    out_ty(&mut ops[conv]).dtype = DataType::F32;
    let r = check_model(&m, Chip::M4);
    let op_loss = 1.0 - r.predicted_ane_share;
    let cost_loss = 1.0 - r.predicted_ane_residency;
    assert!(
        cost_loss > 2.0 * op_loss && cost_loss > 0.1,
        "cost share lost {cost_loss}, op share lost {op_loss}"
    );
}

#[test]
fn fp32_conv_written_by_coremltools_fails_the_residency_verdict() {
    let Some(py) = anectx_testing::python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("fp32.mlpackage");
    let out = std::process::Command::new(&py)
        .arg(common::script("make_fp32_conv.py"))
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = read_package(&pkg).unwrap();
    let r = check_model(&m, Chip::M4);
    // Before: "0 errors: PASS". The verdict now says it will not stay on the ANE.
    assert!(r.passed(), "{:#?}", r.findings);
    assert!(
        r.predicted_ane_residency < 0.1,
        "{}",
        r.predicted_ane_residency
    );
    let v = r.verdict(0.9);
    assert!(!v.passed, "{}", v.summary);
}
