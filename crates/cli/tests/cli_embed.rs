//! The `embed` and `model info` commands, end to end through the binary.

use std::io::Write;
use std::process::{Command, Stdio};

fn anectx() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anectx"));
    // Keep the user's environment and config out of the test.
    c.env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_DTYPE")
        .env_remove("ANECTX_BACKEND")
        .env("ANECTX_CONFIG", "/dev/null");
    c
}

#[test]
fn embed_prints_json_unit_vectors() {
    let Some(dir) = anectx_testing::minilm_dir() else {
        return;
    };
    let out = anectx()
        .args(["embed", "--json", "--model"])
        .arg(&dir)
        .args([
            "What is the Neural Engine?",
            "Paris is the capital of France.",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dim"], 384);
    assert_eq!(v["backend"], "candle-cpu");
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let e: Vec<f64> = r["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 384);
        let n: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((n - 1.0).abs() < 1e-3, "norm {n}");
        assert!(r["truncated"].is_null());
    }
}

#[test]
fn embed_reads_stdin_and_reports_truncation() {
    let Some(dir) = anectx_testing::minilm_dir() else {
        return;
    };
    let mut child = anectx()
        .args(["embed", "--json", "--dtype", "f16", "--model"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let long = "token ".repeat(700);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("first line\n\n{long}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dtype"], "f16");
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "the blank line is skipped");
    assert_eq!(rows[1]["truncated"]["kept"], 512);
    assert_eq!(rows[1]["truncated"]["original_len"], 702);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only the first 512 were embedded"), "{err}");
}

#[test]
fn model_info_describes_minilm() {
    let Some(dir) = anectx_testing::minilm_dir() else {
        return;
    };
    let out = anectx()
        .args(["model", "info", "--json"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "bert");
    assert_eq!(v["output_dim"], 384);
    assert_eq!(v["stored_dtype"], "f32");
    let params = v["parameters"].as_u64().unwrap();
    assert!((22_000_000..23_000_000).contains(&params), "{params}");
    assert_eq!(v["seq_buckets"], serde_json::json!([32, 64, 128, 256, 512]));
}

#[test]
fn clear_errors_for_missing_model_and_core_ml_off_macos() {
    // Without a model the built-in embedder answers.
    let out = anectx()
        .args(["embed", "--json", "hello"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("anectx-default-embedder"), "{all}");

    let out = anectx()
        .args(["embed", "--model", "/nonexistent/model", "hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let out = anectx()
        .args(["model", "info", "/nonexistent/model"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    if cfg!(not(target_vendor = "apple")) {
        let tmp = tempfile::Builder::new()
            .suffix(".mlpackage")
            .tempdir()
            .unwrap();
        let out = anectx()
            .args(["embed", "--backend", "coreml", "--units", "ane", "--model"])
            .arg(tmp.path())
            .arg("hello")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Core ML needs macOS"), "{err}");
    }
}
