//! ConvEmbedder and ConvClassifier: save/load round trips, f16 export,
//! padding invariance.

use anectx_models::io::{batch_tensors, save_model_dir};
use anectx_models::metrics::cosine;
use anectx_models::{
    load_classifier, load_embedder, ConvClassifier, ConvClassifierConfig, ConvEmbedder,
    ConvEmbedderConfig, WeightDtype,
};
use anectx_testing::{minilm_dir, SENTENCES};
use candle_core::{DType, Tensor};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn assert_same_tensors(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((n1, x), (n2, y)) in a.iter().zip(b) {
        assert_eq!(n1, n2);
        assert_eq!(x.dims(), y.dims(), "{n1}");
        assert_eq!(x.dtype(), y.dtype(), "{n1}");
        assert!(bits(x) == bits(y), "{n1} differs after round trip");
    }
}

#[test]
fn conv_embedder_round_trips_and_f16_export_is_half_size() {
    let Some(fx) = minilm_dir() else { return };
    let tokenizer = fx.join("tokenizer.json");
    let config = ConvEmbedderConfig::default();
    let model = ConvEmbedder::new_random(config.clone(), 7, DType::F32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d32 = tmp.path().join("f32");
    let d16 = tmp.path().join("f16");
    save_model_dir(
        &d32,
        &config,
        &model.named_tensors(),
        WeightDtype::F32,
        &tokenizer,
    )
    .unwrap();
    save_model_dir(
        &d16,
        &config,
        &model.named_tensors(),
        WeightDtype::F16,
        &tokenizer,
    )
    .unwrap();

    // f32 save -> load is bit-identical.
    let (back, tok) = load_embedder(&d32, WeightDtype::F32).unwrap();
    assert_same_tensors(&model.named_tensors(), &back.named_tensors());

    // f16 save -> load as f16 -> save -> load is bit-identical too.
    let (h, _) = load_embedder(&d16, WeightDtype::F16).unwrap();
    let d16b = tmp.path().join("f16b");
    save_model_dir(
        &d16b,
        &config,
        &h.named_tensors(),
        WeightDtype::F16,
        &tokenizer,
    )
    .unwrap();
    let (h2, _) = load_embedder(&d16b, WeightDtype::F16).unwrap();
    assert_same_tensors(&h.named_tensors(), &h2.named_tensors());

    // Half the bytes (the safetensors header is a few hundred bytes).
    let s32 = std::fs::metadata(d32.join("model.safetensors"))
        .unwrap()
        .len() as f64;
    let s16 = std::fs::metadata(d16.join("model.safetensors"))
        .unwrap()
        .len() as f64;
    let ratio = s16 / s32;
    assert!((0.49..0.51).contains(&ratio), "f16/f32 size ratio {ratio}");

    // f16 weights, f16 compute: within cosine 0.999 of f32.
    let batch = tok.encode_batch(SENTENCES).unwrap();
    let a = back.embed(&batch).unwrap();
    let b = h.embed(&batch).unwrap();
    for i in 0..SENTENCES.len() {
        let c = cosine(a.row(i), b.row(i));
        assert!(c >= 0.999, "sentence {i}: f16 cosine {c}");
    }
}

#[test]
fn conv_embedder_is_padding_invariant_and_unit_norm() {
    let Some(fx) = minilm_dir() else { return };
    let tok = anectx_models::TextTokenizer::from_file(&fx.join("tokenizer.json"), 512).unwrap();
    let model = ConvEmbedder::new_random(ConvEmbedderConfig::default(), 3, DType::F32).unwrap();
    let batch = tok.encode_batch(SENTENCES).unwrap();
    let (ids, _, mask) = batch_tensors(&batch, 30522).unwrap();
    let all = model
        .forward(&ids, &mask)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, s) in SENTENCES.iter().enumerate() {
        let one = tok.encode_batch(&[s]).unwrap();
        let (ids, _, mask) = batch_tensors(&one, 30522).unwrap();
        let v = model
            .forward(&ids, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let c = cosine(&v[0], &all[i]);
        assert!(c >= 0.9999, "sentence {i}: {c}");
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    // Different sentences give different vectors.
    assert!(cosine(&all[0], &all[1]) < 0.999);
}

#[test]
fn conv_classifier_round_trips_and_scores_pairs() {
    let Some(fx) = minilm_dir() else { return };
    let tokenizer = fx.join("tokenizer.json");
    let config = ConvClassifierConfig::default();
    let model = ConvClassifier::new_random(config.clone(), 11, DType::F32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    save_model_dir(
        tmp.path(),
        &config,
        &model.named_tensors(),
        WeightDtype::F32,
        &tokenizer,
    )
    .unwrap();
    let (back, tok) = load_classifier(tmp.path(), WeightDtype::F32).unwrap();
    assert_same_tensors(&model.named_tensors(), &back.named_tensors());

    let pairs = [
        (
            "what is the capital of france",
            "Paris is the capital of France.",
        ),
        (
            "what is the capital of france",
            "The mitochondria is the powerhouse of the cell.",
        ),
    ];
    let batch = tok.encode_pairs(&pairs).unwrap();
    // Segment ids mark the second text.
    assert!(batch.type_ids.contains(&1));
    let (ids, t, m) = batch_tensors(&batch, config.vocab_size).unwrap();
    let s = back.scores(&ids, &t, &m).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
    // f16 compute stays close to f32.
    let (h, _) = load_classifier(tmp.path(), WeightDtype::F16).unwrap();
    let s16 = h.scores(&ids, &t, &m).unwrap().to_vec1::<f32>().unwrap();
    for (a, b) in s.iter().zip(&s16) {
        assert!((a - b).abs() < 5e-3, "{a} vs {b}");
    }
}
