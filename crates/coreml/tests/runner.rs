//! Exported packages run on text: the tokenizer and lookup tables travel
//! inside the package (Data/com.anectx/), and the result matches the f32
//! candle model.

mod common;

use anectx_coreml::export::{export_model_dir, write_exported, ExportOptions};
use anectx_coreml::runtime::{PackageRunner, SIDE_DIR};
use anectx_models::io::batch_tensors;
use anectx_models::metrics::cosine;
use anectx_models::{load_embedder, WeightDtype};
use anectx_testing::{minilm_dir, SENTENCES};
use candle_core::DType;

#[test]
fn minilm_package_runs_on_text_with_and_without_in_graph_lookup() {
    let Some(dir) = minilm_dir() else { return };
    let (model, tok) = load_embedder(&dir, WeightDtype::F32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for ids in [false, true] {
        let opts = ExportOptions {
            seq_lengths: vec![32, 64],
            ids_input: ids,
            spec_version: 7,
        };
        let e = export_model_dir(&dir, &opts).unwrap();
        let p = tmp.path().join(format!("minilm_{ids}.mlpackage"));
        write_exported(&e, &p, false).unwrap();
        assert!(p.join(SIDE_DIR).join("tokenizer.json").is_file());
        assert_eq!(
            p.join(SIDE_DIR).join("embeddings.safetensors").is_file(),
            !ids
        );
        let runner = PackageRunner::open(&p).unwrap();
        let texts = &SENTENCES[..6];
        let rows = runner.run_texts(texts).unwrap();
        assert_eq!(rows.len(), texts.len());
        for (t, r) in texts.iter().zip(&rows) {
            // The candle model on the same bucket.
            let b = tok
                .clone()
                .with_buckets(vec![r.seq])
                .encode_batch(&[t])
                .unwrap();
            let got = &r.outputs["embedding"];
            let want = model.embed(&b).unwrap().data;
            let c = cosine(&want, got);
            assert!(c >= 0.999, "ids={ids}: {t:?} cosine {c}");
            assert!(opts.seq_lengths.contains(&r.seq));
            assert_eq!(r.tokens, b.len_of(0));
        }
        // Padding to the smallest length that fits: a short text runs at 32.
        assert_eq!(rows[2].seq, 32);
    }
}

#[test]
fn classifier_package_scores_pairs() {
    let Some(dir) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A classifier directory with the MiniLM tokenizer (same vocabulary).
    let m = common::default_classifier();
    let mdir = tmp.path().join("clf");
    anectx_models::io::save_model_dir(
        &mdir,
        &m.config,
        &m.named_tensors(),
        WeightDtype::F32,
        &dir.join("tokenizer.json"),
    )
    .unwrap();
    let e = export_model_dir(&mdir, &common::opts(&[64], false)).unwrap();
    let p = tmp.path().join("clf.mlpackage");
    write_exported(&e, &p, false).unwrap();
    let runner = PackageRunner::open(&p).unwrap();
    let q = "capital of France";
    let rows = runner.run_pairs(q, &SENTENCES[..4]).unwrap();
    let (_, tok) = anectx_models::load_classifier(&mdir, WeightDtype::F32).unwrap();
    for (t, r) in SENTENCES[..4].iter().zip(&rows) {
        let b = tok
            .clone()
            .with_buckets(vec![64])
            .encode_pairs(&[(q, t)])
            .unwrap();
        let (ids, types, mask) = batch_tensors(&b, m.config.vocab_size).unwrap();
        let want = m
            .logits(&ids, &types, &mask)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let got = r.outputs["logit"][0];
        assert!(
            (got - want).abs() < 1e-2 * want.abs().max(1.0),
            "{t:?}: {got} vs {want}"
        );
        let s = r.outputs["score"][0];
        assert!((0.0..=1.0).contains(&s));
    }
}

#[test]
fn opening_a_package_without_side_data_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bare.mlpackage");
    anectx_coreml::write_package(&common::tiny_export().model, &p, &Default::default()).unwrap();
    let e = PackageRunner::open(&p).unwrap_err();
    assert!(e.to_string().contains("not exported by anectx"), "{e}");
}
