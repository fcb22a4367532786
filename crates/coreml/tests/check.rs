//! The static ANE-residency checker: packages that each trip one rule, and
//! the exported anectx models passing with 0 errors.

mod common;

use anectx_coreml::check::{check_model, Chip, Severity};
use anectx_coreml::export::{export_bert, export_conv_classifier, export_conv_embedder};
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
            "classifier",
            export_conv_classifier(&common::default_classifier(), &opts)
                .unwrap()
                .model,
        ),
        ("embedder-embeddings-input", base()),
    ];
    if let Some(bert) = common::minilm() {
        models.push(("minilm", export_bert(&bert, &opts).unwrap().model));
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
    let text = anectx_coreml::check::render(&r, "m.mlpackage");
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
