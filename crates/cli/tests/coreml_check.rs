//! `anectx export coreml` and `anectx coreml check` end to end: the default
//! export with several lengths has one enumerated input and passes; a package
//! predicted off the Neural Engine fails on residency (`--min-residency`).

use std::path::Path;
use std::process::{Command, Output};

use anectx_coreml::program::{ArrayDataType, DataType, FeatureType, ValueType};

fn anectx() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anectx"));
    c.env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_BACKEND")
        .env("ANECTX_CONFIG", "/dev/null");
    c
}

fn check(pkg: &Path, extra: &[&str]) -> Output {
    anectx()
        .args(["coreml", "check"])
        .arg(pkg)
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_answers_whether_a_package_stays_on_the_ane() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    anectx_models::default_model::write_dir(&model).unwrap();
    let pkg = tmp.path().join("ids.mlpackage");
    let out = anectx()
        .args([
            "export", "coreml", "--ids", "--seq", "64", "--seq", "128", "--model",
        ])
        .arg(&model)
        .arg("-o")
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Spec 7 with two lengths: only input_ids is enumerated.
    let m = anectx_coreml::read_package(&pkg).unwrap();
    assert_eq!(m.spec_version, 7);
    let enumerated: Vec<&str> = m
        .description
        .inputs
        .iter()
        .filter(|f| matches!(&f.ty, FeatureType::MultiArray(a) if a.flexibility.is_some()))
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(enumerated, ["input_ids"]);

    let ok = check(&pkg, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("verdict: PASS"), "{}", text(&ok));

    // Every result typed fp32: no rule fails, but nothing stays on the ANE.
    let mut bad = m.clone();
    let main = bad.program.functions.get_mut("main").unwrap();
    for op in &mut main.block.operations {
        if op.op_type != "const" {
            for o in &mut op.outputs {
                if let ValueType::Tensor(t) = &mut o.ty {
                    if t.dtype == DataType::F16 {
                        t.dtype = DataType::F32;
                    }
                }
            }
        }
    }
    for f in &mut bad.description.outputs {
        if let FeatureType::MultiArray(a) = &mut f.ty {
            a.dtype = ArrayDataType::F32;
        }
    }
    let bad_pkg = tmp.path().join("fp32.mlpackage");
    anectx_coreml::write_package(&bad, &bad_pkg, &Default::default()).unwrap();
    let fail = check(&bad_pkg, &[]);
    assert!(!fail.status.success(), "{}", text(&fail));
    assert!(
        text(&fail).contains("verdict: FAIL") && text(&fail).contains("--min-residency"),
        "{}",
        text(&fail)
    );
    let json = check(&bad_pkg, &["--json"]);
    assert!(!json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["verdict"]["passed"], false);
    assert_eq!(v["verdict"]["min_residency"], 0.9);
    assert!(v["predicted_ane_residency"].as_f64().unwrap() < 0.5);
    // A lower bar accepts it.
    let low = check(&bad_pkg, &["--min-residency", "0"]);
    assert!(low.status.success(), "{}", text(&low));
    assert!(!check(&bad_pkg, &["--min-residency", "101"])
        .status
        .success());
}
