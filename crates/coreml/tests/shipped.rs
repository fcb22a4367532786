//! Parity on the shipped embedder, exported as the quickstart exports it
//! (`default_model::write_dir`, then `export_model_dir` with lengths 64, 128
//! and 256 at spec 7, ids and embeddings inputs, written with the side
//! data), run on text through `PackageRunner` (what `anectx coreml run`
//! does) and compared with:
//! - candle's f32 embeddings of the same model, per sentence;
//! - a numpy forward pass reading the ids package's weights through
//!   coremltools' reader (`python/shipped_forward.py`), when the fixture
//!   venv is present (and required under CI).

mod common;

use std::process::Command;

use anectx_coreml::export::{self, ExportOptions};
use anectx_coreml::runtime::PackageRunner;
use anectx_models::io::batch_tensors;
use anectx_models::metrics::cosine;
use anectx_models::{default_model, Embedder, WeightDtype};
use anectx_testing::SENTENCES;
use common::*;

/// Sentences beyond the shared list, so the run has a few dozen and covers
/// all three lengths.
const MORE: &[&str] = &[
    "Bayesian optimisation picks the next hyper-parameter setting by maximising an acquisition function.",
    "The invoice total is $1,234.56, due within 30 days.",
    "grep -rn 'TODO' src/ | wc -l",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Wie spät ist es?",
    "The committee postponed the vote until the quarterly figures were audited.",
    "An oblique shock turns the flow and raises its pressure, density and temperature.",
    "Insulin resistance precedes type 2 diabetes by several years in most patients.",
    "OK",
    "Use `cargo clippy --all-targets -- -D warnings` before you push.",
    "Why is the sky blue? Rayleigh scattering is stronger for short wavelengths.",
    "Information retrieval evaluates rankings with precision, recall and nDCG.",
];

/// `n` copies of a ~55-token paragraph: 2 run at length 128, 3 at 256.
fn long_text(n: usize) -> String {
    "Boundary layer transition on a flat plate depends on the free-stream turbulence, the \
     pressure gradient, surface roughness and the Reynolds number; wind-tunnel studies \
     since the 1940s measured where laminar flow breaks down and how heat transfer rises \
     once the flow becomes turbulent. "
        .repeat(n)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn shipped_embedder_package_matches_candle_and_numpy() {
    let (medium, long) = (long_text(2), long_text(3));
    let mut texts: Vec<&str> = SENTENCES.iter().chain(MORE).copied().collect();
    texts.extend([medium.as_str(), long.as_str()]);
    assert!(texts.len() >= 36);

    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("default-embedder");
    default_model::write_dir(&model_dir).unwrap();
    // candle, f32, the embedded model and its tokenizer (no buckets: each
    // text at its own length, so padding invariance is part of the check).
    let (emb, tok) = default_model::load_with_tokenizer(WeightDtype::F32).unwrap();
    let Embedder::Conv(m) = emb else {
        panic!("the shipped embedder is a ConvEmbedder")
    };
    let mut reference = Vec::new();
    for t in &texts {
        let batch = tok.encode_batch(&[t]).unwrap();
        let (ids, _, mask) = batch_tensors(&batch, m.config.vocab_size).unwrap();
        let v: Vec<f32> = m
            .forward(&ids, &mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        reference.push(v);
    }

    let mut ids_runner = None;
    for ids in [true, false] {
        let opts = ExportOptions {
            seq_lengths: vec![64, 128, 256],
            ids_input: ids,
            spec_version: 7,
        };
        let e = export::export_model_dir(&model_dir, &opts).unwrap();
        let path = tmp
            .path()
            .join(if ids { "embedder-ids" } else { "embedder" })
            .with_extension("mlpackage");
        export::write_exported(&e, &path, true).unwrap();
        let runner = PackageRunner::open(&path).unwrap();
        let rows = runner.run_texts(&texts).unwrap();
        let mut seqs = std::collections::BTreeSet::new();
        let (mut worst, mut min_cos) = (0f32, 1f32);
        for (row, r) in rows.iter().zip(&reference) {
            assert!(!row.truncated);
            seqs.insert(row.seq);
            let got = &row.outputs["embedding"];
            worst = worst.max(max_abs(got, r));
            min_cos = min_cos.min(cosine(got, r));
        }
        eprintln!(
            "SHIPPED {} package vs candle f32: {} texts at lengths {seqs:?}, max |err| {worst:.2e}, min cosine {min_cos:.8}",
            if ids { "ids" } else { "embeddings" },
            rows.len()
        );
        assert_eq!(seqs.len(), 3, "every enumerated length ran: {seqs:?}");
        // The shipped weights are fp16 already, so what remains is the fp16
        // rounding of the output (half an ulp is 1.2e-4 below 0.5).
        assert!(min_cos >= 0.99999, "min cosine {min_cos}");
        assert!(worst <= 1.5e-4, "max |err| {worst}");
        if ids {
            ids_runner = Some((path, rows));
        }
    }

    // numpy, from the weights as coremltools reads them out of the package.
    let Some(py) = anectx_testing::python() else {
        return;
    };
    let (path, rows) = ids_runner.unwrap();
    let tok = tok.with_buckets(vec![64, 128, 256]);
    let all_ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let b = tok.encode_batch(&[t]).unwrap();
            b.ids[..b.len_of(0)].to_vec()
        })
        .collect();
    let ids_json = tmp.path().join("ids.json");
    std::fs::write(
        &ids_json,
        serde_json::to_vec(&serde_json::json!({ "ids": all_ids })).unwrap(),
    )
    .unwrap();
    let out_json = tmp.path().join("numpy.json");
    // coremltools rewrites Manifest.json: read a copy.
    let copy = tmp.path().join("copy.mlpackage");
    copy_dir(&path, &copy);
    let out = Command::new(&py)
        .arg(script("shipped_forward.py"))
        .args([&copy, &ids_json, &out_json])
        .output()
        .expect("running shipped_forward.py");
    assert!(
        out.status.success(),
        "shipped_forward.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    let np: Vec<Vec<f32>> = serde_json::from_value(v["embedding"].clone()).unwrap();
    assert_eq!(np.len(), rows.len());
    let (mut worst, mut min_cos, mut worst_candle) = (0f32, 1f32, 0f32);
    for ((row, n), r) in rows.iter().zip(&np).zip(&reference) {
        let got = &row.outputs["embedding"];
        worst = worst.max(max_abs(got, n));
        min_cos = min_cos.min(cosine(got, n));
        worst_candle = worst_candle.max(max_abs(n, r));
    }
    eprintln!(
        "SHIPPED ids package vs numpy (package weights, f64): max |err| {worst:.2e}, min cosine {min_cos:.8}; numpy vs candle f32 max |err| {worst_candle:.2e}"
    );
    // Same fp16 weights on both sides: only the fp16 output rounding
    // (and f32 vs f64 arithmetic) remains.
    assert!(worst <= 1.5e-4, "executor vs numpy max |err| {worst}");
    assert!(min_cos >= 0.99999, "executor vs numpy min cosine {min_cos}");
}
