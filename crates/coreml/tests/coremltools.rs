//! Every exported model passes coremltools 9.0 on Linux: `load_spec`,
//! `MLModel(..., skip_model_load=True)` and parsing back into PyMIL (type
//! inference for every op, blobs read by the C++ reader). The validator runs
//! on copies, because coremltools rewrites Manifest.json. The packages carry
//! anectx's side data (tokenizer, lookup tables) as the CLI writes them.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use anectx_coreml::export::{self, ExportOptions, Exported};
use common::*;

fn op_counts(e: &Exported) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, op) in e.model.operations() {
        *m.entry(op.op_type.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn exported_packages_pass_coremltools() {
    let Some(py) = anectx_testing::python() else {
        return;
    };
    let mut cases: Vec<(&str, Exported)> = vec![
        (
            "embedder_static",
            export::export_conv_embedder(&default_embedder(), &opts(&[64], false)).unwrap(),
        ),
        (
            "embedder_enum_ids",
            export::export_conv_embedder(&default_embedder(), &opts(&[32, 128], true)).unwrap(),
        ),
        (
            "embedder_ios17_ids",
            export::export_conv_embedder(
                &tiny_embedder(),
                &ExportOptions {
                    seq_lengths: vec![16, 32],
                    ids_input: true,
                    spec_version: 8,
                },
            )
            .unwrap(),
        ),
        (
            "classifier_static",
            export::export_conv_classifier(&default_classifier(), &opts(&[64], false)).unwrap(),
        ),
        (
            "classifier_enum_embeddings",
            export::export_conv_classifier(&default_classifier(), &opts(&[32, 128], false))
                .unwrap(),
        ),
        (
            // Spec 9: several enumerated inputs (ids, segment ids, mask).
            "classifier_ios18_enum_ids",
            export::export_conv_classifier(
                &default_classifier(),
                &ExportOptions {
                    spec_version: 9,
                    ..opts(&[32, 128], true)
                },
            )
            .unwrap(),
        ),
    ];
    if let Some(bert) = minilm() {
        cases.push((
            "bert_static",
            export::export_bert(&bert, &opts(&[128], false)).unwrap(),
        ));
        cases.push((
            "bert_enum",
            export::export_bert(&bert, &opts(&[32, 128], false)).unwrap(),
        ));
        cases.push((
            "bert_enum_ids",
            export::export_bert(&bert, &opts(&[32, 64], true)).unwrap(),
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for (name, e) in &cases {
        let p = tmp.path().join(format!("{name}.mlpackage"));
        // As `anectx export coreml` writes it: with the side data under Data/com.anectx/.
        export::write_exported(e, &p, false).unwrap();
        let c = tmp.path().join(format!("{name}_copy.mlpackage"));
        copy_dir(&p, &c);
        copies.push(c);
    }
    let out = Command::new(&py)
        .arg(script("validate_mlpackage.py"))
        .args(&copies)
        .output()
        .expect("running the coremltools validator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("Failed to load _MLModel"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "coremltools rejected a package:\n{stdout}\n{stderr}"
    );
    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), cases.len(), "{stdout}\n{stderr}");
    for ((name, e), r) in cases.iter().zip(&reports) {
        assert_eq!(r["specificationVersion"], e.model.spec_version, "{name}");
        let ours = op_counts(e);
        let theirs: BTreeMap<String, usize> =
            serde_json::from_value(r["op_types"].clone()).unwrap();
        assert_eq!(
            ours, theirs,
            "{name}: coremltools parsed a different program"
        );
        let mut ins: Vec<String> = e
            .model
            .description
            .inputs
            .iter()
            .map(|f| f.name.clone())
            .collect();
        ins.sort();
        assert_eq!(r["inputs"], serde_json::json!(ins), "{name}");
        eprintln!("{name}: {} ops, opset {}", r["ops"], r["opset"]);
    }
}
