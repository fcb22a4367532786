//! `anectx quickstart` end to end: offline, on the built-in sample and model.

use std::process::Command;

#[test]
fn quickstart_runs_end_to_end_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_anectx"))
            .arg("quickstart")
            .arg("--dir")
            .arg(&dir)
            .arg("--json")
            .args(extra)
            .env_remove("ANECTX_MODEL")
            .env("ANECTX_CONFIG", tmp.path().join("none.toml"))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["documents"], 600);
    assert!(v["embedder"]
        .as_str()
        .unwrap()
        .contains("anectx-default-embedder"));
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers
        .iter()
        .all(|a| !a["chunks"].as_array().unwrap().is_empty()));
    assert!(v["interactions_logged"].as_u64().unwrap() >= 100);
    assert!(v["analyzer_f1_vs_judgments"].as_f64().unwrap() > 0.5);
    assert!(!v["gate"].as_str().unwrap().is_empty());
    // Whatever the gate decided, the serving model is the promoted one or the
    // built-in one, never a refused candidate.
    let serving = v["serving_model"].as_str().unwrap();
    match v["promoted"].as_str() {
        Some(p) => assert_eq!(serving, p),
        None => assert!(serving.starts_with("fusion-v1"), "{serving}"),
    }
    // The usage memory: asked-again questions gain, new ones do not lose,
    // the gate passes and the memory serves; a logged question asked again
    // shows more judged-relevant documents with it.
    let m = &v["memory"];
    let delta = |k: &str, f: &str| m["strata"][k][f].as_f64().unwrap();
    assert!(delta("repeat", "delta") > 0.0, "{m}");
    assert!(delta("variant", "delta") > 0.0, "{m}");
    assert!(delta("mix", "ci95_low") > 0.0, "{m}");
    assert!(delta("new", "ci95_low") >= -0.005, "{m}");
    assert_eq!(m["gate_passed"], true, "{m}");
    assert_eq!(m["on"], true, "{m}");
    assert!(m["pairs"].as_u64().unwrap() > 0, "{m}");
    let stars = |w: &str| {
        m["example"][w]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d.as_str().unwrap().ends_with('*'))
            .count()
    };
    assert!(stars("with") > stars("without"), "{m}");
    let pkgs = v["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 2);
    for p in pkgs {
        assert_eq!(p["errors"], 0, "{p}");
        assert!(std::path::Path::new(p["path"].as_str().unwrap())
            .join("Manifest.json")
            .exists());
    }
    assert!(dir.join("store").join("anectx.sqlite").exists());
    // A second run refuses to clobber without --force, and works with it.
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(run(&["--force"]).status.success());
}
