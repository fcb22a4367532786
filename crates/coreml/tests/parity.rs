//! Numeric parity of exported packages, run by the reference executor:
//! - against the candle model with the same fp16-rounded weights (and the
//!   same fp16 input embeddings): PSNR >= 60 dB;
//! - against the original f32 candle model: cosine >= 0.999 per output.
//!
//! For all three models, at two sequence lengths (one enumerated package,
//! written and read back before it runs).

mod common;

use std::collections::HashMap;

use anectx_coreml::{exec, export, read_package, write_package, Model};
use anectx_models::io::batch_tensors;
use anectx_models::layers::l2_normalize;
use anectx_models::metrics::{cosine, psnr};
use anectx_models::{AneBert, ConvClassifier, ConvEmbedder, TextTokenizer};
use anectx_testing::{minilm_dir, SENTENCES};
use candle_core::{DType, Tensor};
use common::*;

const LENGTHS: [usize; 2] = [32, 128];
const MIN_PSNR: f64 = 60.0;
const MIN_COSINE: f32 = 0.999;

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn f16_round(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn written(e: &export::Exported) -> (tempfile::TempDir, Model) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.mlpackage");
    write_package(&e.model, &p, &Default::default()).unwrap();
    let m = read_package(&p).unwrap();
    (tmp, m)
}

fn tokenizer(seq: usize) -> Option<TextTokenizer> {
    let dir = minilm_dir()?;
    Some(
        TextTokenizer::from_file(&dir.join("tokenizer.json"), 512)
            .unwrap()
            .with_buckets(vec![seq]),
    )
}

fn inputs(x16: &Tensor, mask: &Tensor) -> HashMap<String, Tensor> {
    let s = mask.dims()[1];
    let m = mask
        .to_dtype(DType::F32)
        .unwrap()
        .reshape((1, 1, 1, s))
        .unwrap();
    [
        ("embeddings".to_string(), x16.clone()),
        ("mask".to_string(), m),
    ]
    .into_iter()
    .collect()
}

/// Spec 9: enumerated shapes on both inputs (embeddings and mask), the
/// graph the parity checks were written for.
fn opts9(seq: &[usize]) -> export::ExportOptions {
    export::ExportOptions {
        spec_version: 9,
        ..opts(seq, false)
    }
}

/// Runs the spec-7 export of several lengths: one enumerated input, the
/// mask computed in the graph from the zeroed padding, as the host sends it.
fn run_single_input(model: &Model, x16: &Tensor, mask: &Tensor) -> HashMap<String, Tensor> {
    assert_eq!(model.description.inputs.len(), 1, "only embeddings");
    let s = mask.dims()[1];
    let keep = mask
        .to_dtype(DType::F32)
        .unwrap()
        .reshape((1, 1, 1, s))
        .unwrap();
    let x = x16.broadcast_mul(&keep).unwrap();
    exec::run(
        model,
        &[("embeddings".to_string(), x)].into_iter().collect(),
    )
    .unwrap()
    .into_iter()
    .collect()
}

/// The single-input graph gives what the two-input graph gives.
fn same_output(label: &str, two_inputs: &[f32], single: &[f32]) {
    let max = two_inputs
        .iter()
        .zip(single)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        two_inputs.len() == single.len() && max <= 1e-3,
        "{label}: the mask computed in the graph changes the output by {max}"
    );
}

/// Collected outputs of one model at one length.
#[derive(Default)]
struct Tally {
    exec: Vec<f32>,
    reference16: Vec<f32>,
    min_cosine: f32,
    extra_exec: Vec<f32>,
    extra_ref16: Vec<f32>,
}

impl Tally {
    fn new() -> Self {
        Self {
            min_cosine: 1.0,
            ..Default::default()
        }
    }
    fn check(&self, label: &str) {
        let p = psnr(&self.reference16, &self.exec);
        let extra = if self.extra_exec.is_empty() {
            String::new()
        } else {
            format!(
                ", hidden_states PSNR {:.1} dB",
                psnr(&self.extra_ref16, &self.extra_exec)
            )
        };
        eprintln!(
            "PARITY {label}: PSNR vs fp16-weight candle {p:.1} dB{extra}; min cosine vs f32 candle {:.6}",
            self.min_cosine
        );
        assert!(p >= MIN_PSNR, "{label}: PSNR {p:.1} dB < {MIN_PSNR}");
        if !self.extra_exec.is_empty() {
            let q = psnr(&self.extra_ref16, &self.extra_exec);
            assert!(
                q >= MIN_PSNR,
                "{label}: hidden_states PSNR {q:.1} dB < {MIN_PSNR}"
            );
        }
        assert!(
            self.min_cosine >= MIN_COSINE,
            "{label}: cosine {} < {MIN_COSINE}",
            self.min_cosine
        );
    }
}

#[test]
fn bert_minilm_parity() {
    let Some(orig) = minilm() else { return };
    let r16 = AneBert::load(
        vb(rounded(orig.named_tensors())),
        orig.config.clone(),
        orig.pooling,
    )
    .unwrap();
    let e = export::export_bert(&orig, &opts9(&LENGTHS)).unwrap();
    let (_tmp, model) = written(&e);
    let e7 = export::export_bert(&orig, &opts(&LENGTHS, false)).unwrap();
    let (_tmp7, model7) = written(&e7);
    for seq in LENGTHS {
        let tok = tokenizer(seq).unwrap();
        let mut t = Tally::new();
        for s in SENTENCES {
            let batch = tok.encode_batch(&[s]).unwrap();
            assert_eq!(batch.seq, seq);
            let (ids, types, mask) = batch_tensors(&batch, orig.config.vocab_size).unwrap();
            let x16 = f16_round(&r16.embed_tokens(&ids, &types).unwrap());
            let hidden = r16.encode(&x16, &mask).unwrap();
            let emb16 = l2_normalize(&r16.pool(&hidden, &mask).unwrap()).unwrap();
            let out = exec::run(&model, &inputs(&x16, &mask)).unwrap();
            let ex = flat(&out["embedding"]);
            let single = run_single_input(&model7, &x16, &mask);
            same_output("bert spec 7", &ex, &flat(&single["embedding"]));
            t.exec.extend(&ex);
            t.reference16.extend(flat(&emb16));
            t.extra_exec.extend(flat(&out["hidden_states"]));
            t.extra_ref16.extend(flat(&hidden));
            let o = flat(&orig.forward(&ids, &types, &mask).unwrap());
            t.min_cosine = t.min_cosine.min(cosine(&o, &ex));
        }
        t.check(&format!("AneBert all-MiniLM-L6-v2 seq {seq}"));
    }
}

#[test]
fn conv_embedder_parity() {
    if minilm_dir().is_none() {
        return;
    }
    let orig = default_embedder();
    let r16 = ConvEmbedder::load(vb(rounded(orig.named_tensors())), orig.config.clone()).unwrap();
    let e = export::export_conv_embedder(&orig, &opts9(&LENGTHS)).unwrap();
    let (_tmp, model) = written(&e);
    let e7 = export::export_conv_embedder(&orig, &opts(&LENGTHS, false)).unwrap();
    let (_tmp7, model7) = written(&e7);
    for seq in LENGTHS {
        let tok = tokenizer(seq).unwrap();
        let mut t = Tally::new();
        for s in SENTENCES {
            let batch = tok.encode_batch(&[s]).unwrap();
            let (ids, _types, mask) = batch_tensors(&batch, orig.config.vocab_size).unwrap();
            let x16 = f16_round(&r16.embed_tokens(&ids).unwrap());
            let r = r16.encode(&x16, &mask).unwrap();
            let out = exec::run(&model, &inputs(&x16, &mask)).unwrap();
            let ex = flat(&out["embedding"]);
            let single = run_single_input(&model7, &x16, &mask);
            same_output("conv embedder spec 7", &ex, &flat(&single["embedding"]));
            t.exec.extend(&ex);
            t.reference16.extend(flat(&r));
            let o = flat(&orig.forward(&ids, &mask).unwrap());
            t.min_cosine = t.min_cosine.min(cosine(&o, &ex));
        }
        t.check(&format!("ConvEmbedder (seed defaults) seq {seq}"));
    }
}

#[test]
fn conv_classifier_parity() {
    if minilm_dir().is_none() {
        return;
    }
    let orig = default_classifier();
    let r16 = ConvClassifier::load(vb(rounded(orig.named_tensors())), orig.config.clone()).unwrap();
    let e = export::export_conv_classifier(&orig, &opts9(&LENGTHS)).unwrap();
    let (_tmp, model) = written(&e);
    let e7 = export::export_conv_classifier(&orig, &opts(&LENGTHS, false)).unwrap();
    let (_tmp7, model7) = written(&e7);
    for seq in LENGTHS {
        let tok = tokenizer(seq).unwrap();
        let mut t = Tally::new();
        let (mut o_all, mut ex_all) = (Vec::new(), Vec::new());
        for (i, q) in SENTENCES.iter().enumerate() {
            let c = SENTENCES[(i + 5) % SENTENCES.len()];
            let batch = tok.encode_pairs(&[(q, c)]).unwrap();
            let (ids, types, mask) = batch_tensors(&batch, orig.config.vocab_size).unwrap();
            let x16 = f16_round(&r16.embed_tokens(&ids, &types).unwrap());
            let r = r16.logits_from_embeddings(&x16, &mask).unwrap();
            let out = exec::run(&model, &inputs(&x16, &mask)).unwrap();
            let ex = flat(&out["logit"]);
            let single = run_single_input(&model7, &x16, &mask);
            same_output("classifier spec 7", &ex, &flat(&single["logit"]));
            let sc = flat(&out["score"]);
            assert!(
                (sc[0] - 1.0 / (1.0 + (-ex[0]).exp())).abs() < 2e-3,
                "score is sigmoid(logit)"
            );
            t.exec.extend(&ex);
            t.reference16.extend(flat(&r));
            o_all.extend(flat(&orig.logits(&ids, &types, &mask).unwrap()));
            ex_all.extend(ex);
        }
        // One logit per pair: compare the vectors of logits over all pairs.
        t.min_cosine = cosine(&o_all, &ex_all);
        t.check(&format!("ConvClassifier (seed defaults) seq {seq}"));
    }
}
