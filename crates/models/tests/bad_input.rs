//! Bad input never panics: each case gives a clear error or a reported truncation.

use anectx_core::{Backend, TokenBatch};
use anectx_models::io::save_model_dir;
use anectx_models::{
    load_embedder, CandleBackend, ConvEmbedder, ConvEmbedderConfig, ModelError, ModelInfo,
    WeightDtype,
};
use anectx_testing::minilm_dir;
use candle_core::DType;

fn err_text<T: std::fmt::Debug>(r: Result<T, ModelError>) -> String {
    r.expect_err("expected an error").to_string()
}

fn small_model_dir(
    fx: &std::path::Path,
    dir: &std::path::Path,
    vocab: usize,
) -> ConvEmbedderConfig {
    let config = ConvEmbedderConfig {
        vocab_size: vocab,
        embed_dim: 16,
        widths: vec![32],
        kernel_sizes: vec![3],
        output_dim: 8,
        ..Default::default()
    };
    let m = ConvEmbedder::new_random(config.clone(), 1, DType::F32).unwrap();
    save_model_dir(
        dir,
        &config,
        &m.named_tensors(),
        WeightDtype::F32,
        &fx.join("tokenizer.json"),
    )
    .unwrap();
    config
}

#[test]
fn missing_and_corrupt_model_directories() {
    let Some(fx) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();

    let e = err_text(load_embedder(&tmp.path().join("nope"), WeightDtype::F32));
    assert!(e.contains("does not exist"), "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = err_text(load_embedder(&empty, WeightDtype::F32));
    assert!(e.contains("config.json is missing"), "{e}");

    let bad_json = tmp.path().join("badjson");
    std::fs::create_dir(&bad_json).unwrap();
    std::fs::write(bad_json.join("config.json"), "{ not json").unwrap();
    let e = err_text(load_embedder(&bad_json, WeightDtype::F32));
    assert!(e.contains("not valid JSON"), "{e}");

    let other = tmp.path().join("gpt");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let e = err_text(load_embedder(&other, WeightDtype::F32));
    assert!(e.contains("gpt2"), "{e}");

    // Weights that are not safetensors.
    let good = tmp.path().join("good");
    small_model_dir(&fx, &good, 30522);
    let corrupt = tmp.path().join("corrupt");
    small_model_dir(&fx, &corrupt, 30522);
    std::fs::write(
        corrupt.join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0garbage!garbage!",
    )
    .unwrap();
    let e = err_text(load_embedder(&corrupt, WeightDtype::F32));
    assert!(e.contains("safetensors"), "{e}");

    // Truncated weights file.
    let trunc = tmp.path().join("trunc");
    small_model_dir(&fx, &trunc, 30522);
    let bytes = std::fs::read(trunc.join("model.safetensors")).unwrap();
    std::fs::write(trunc.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = err_text(load_embedder(&trunc, WeightDtype::F32));
    assert!(e.contains("safetensors"), "{e}");

    // Weights that do not match the config's shapes.
    let mismatch = tmp.path().join("mismatch");
    small_model_dir(&fx, &mismatch, 30522);
    std::fs::copy(
        good.join("model.safetensors"),
        mismatch.join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mismatch.join("config.json")).unwrap())
            .unwrap();
    cfg["widths"] = serde_json::json!([64]);
    std::fs::write(mismatch.join("config.json"), cfg.to_string()).unwrap();
    let e = err_text(load_embedder(&mismatch, WeightDtype::F32));
    assert!(e.contains("do not match config.json"), "{e}");

    // Missing tokenizer.
    let notok = tmp.path().join("notok");
    small_model_dir(&fx, &notok, 30522);
    std::fs::remove_file(notok.join("tokenizer.json")).unwrap();
    let e = err_text(load_embedder(&notok, WeightDtype::F32));
    assert!(e.contains("tokenizer.json is missing"), "{e}");
    assert!(ModelInfo::inspect(&notok).is_err());

    // The good one still loads and is described.
    let info = ModelInfo::inspect(&good).unwrap();
    assert_eq!(info.output_dim, Some(8));
    assert_eq!(info.stored_dtype, Some(WeightDtype::F32));
}

#[test]
fn tokenizer_vocab_mismatch_is_reported() {
    let Some(fx) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    small_model_dir(&fx, tmp.path(), 1000);
    let e = err_text(load_embedder(tmp.path(), WeightDtype::F32));
    assert!(e.contains("tokenizer and model disagree"), "{e}");
    assert!(e.contains("30522") && e.contains("1000"), "{e}");
}

#[test]
fn out_of_vocabulary_ids_are_an_error_not_a_panic() {
    let Some(fx) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    small_model_dir(&fx, tmp.path(), 30522);
    let (m, _) = load_embedder(tmp.path(), WeightDtype::F32).unwrap();
    let backend = CandleBackend::new(Some(m), None);
    let batch =
        TokenBatch::new(1, 4, vec![101, 99999, 102, 0], vec![0; 4], vec![1, 1, 1, 0]).unwrap();
    let e = backend.embed(&batch).unwrap_err().to_string();
    assert!(e.contains("outside the model's vocabulary"), "{e}");
    let e = backend.score(&batch).unwrap_err().to_string();
    assert!(e.contains("no relevance classifier"), "{e}");
    let long = TokenBatch::new(1, 1024, vec![0; 1024], vec![0; 1024], vec![1; 1024]).unwrap();
    assert!(backend
        .embed(&long)
        .unwrap_err()
        .to_string()
        .contains("exceeds"));
}

#[test]
fn empty_text_is_rejected_and_long_text_truncation_is_reported() {
    let Some(fx) = minilm_dir() else { return };
    let (m, tok) = load_embedder(&fx, WeightDtype::F32).unwrap();
    let e = err_text(tok.encode_batch(&["fine", "   "]));
    assert!(e.contains("input 1 is empty"), "{e}");
    assert!(tok.encode_batch(&[]).is_err());
    assert!(tok.encode_pairs(&[("q", "")]).is_err());

    let long = "word ".repeat(2000);
    let batch = tok.encode_batch(&["short text", &long]).unwrap();
    assert_eq!(batch.seq, 512);
    assert_eq!(batch.truncations.len(), 1);
    let t = &batch.truncations[0];
    assert_eq!(t.index, 1);
    assert_eq!(t.kept, 512);
    assert_eq!(t.original_len, 2002, "2000 words + [CLS] + [SEP]");
    // The truncated batch still embeds.
    let emb = m.embed(&batch).unwrap();
    assert_eq!((emb.rows, emb.dim), (2, 384));
    assert!(emb.data.iter().all(|x| x.is_finite()));

    // Short inputs use the smallest bucket.
    let b = tok.encode_batch(&["hello"]).unwrap();
    assert_eq!(b.seq, 32);
    assert!(b.truncations.is_empty());
}
