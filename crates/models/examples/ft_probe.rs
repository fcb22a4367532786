//! Probe: fine-tune the built-in embedder on (train query, relevant doc)
//! pairs of a BEIR collection; dense nDCG@10 of the other queries before/after.
//! `ft_probe MODEL_DIR COLLECTION [steps] [lr] [freeze_emb]`

mod common;

use std::path::PathBuf;

use anectx_models::conv_embedder::{ConvEmbedder, ConvEmbedderConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use tokenizers::{Tokenizer, TruncationParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(&a[0]);
    let coll = PathBuf::from(&a[1]);
    let steps: usize = a.get(2).map_or(150, |s| s.parse().unwrap());
    let lr: f64 = a.get(3).map_or(2e-4, |s| s.parse().unwrap());
    let freeze: bool = a.get(4).is_some_and(|s| s == "1");
    // Only relevant docs the initial model ranks in its top `shown` count as
    // positives (what a user of the loop would see and use); 0 = all.
    let shown: usize = a.get(5).map_or(0, |s| s.parse().unwrap());
    let cfg: ConvEmbedderConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let mut tok = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| e.to_string())?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: 256,
        ..Default::default()
    }))
    .map_err(|e| e.to_string())?;
    let enc = |t: &str| tok.encode(t, true).unwrap().get_ids().to_vec();
    let texts = common::load_texts(&coll)?;
    let qrels = texts.qrels;
    let docs: Vec<(String, Vec<u32>)> = texts
        .docs
        .iter()
        .map(|d| (d.0.clone(), enc(&d.1)))
        .collect();
    let queries: Vec<(String, Vec<u32>)> = texts
        .queries
        .iter()
        .map(|q| (q.0.clone(), enc(&q.1)))
        .collect();
    let (mut tr, mut te) = (Vec::new(), Vec::new());
    for q in &queries {
        let h = blake3::hash(format!("7:{}", q.0).as_bytes());
        if h.as_bytes()[0] < 128 {
            tr.push(q);
        } else {
            te.push(q);
        }
    }
    let mut varmap = VarMap::new();
    let dev = Device::Cpu;
    let model = ConvEmbedder::load(VarBuilder::from_varmap(&varmap, DType::F32, &dev), cfg)?;
    let w = candle_core::safetensors::load(dir.join("model.safetensors"), &dev)?;
    for (n, t) in w {
        varmap.set_one(&n, t.to_dtype(DType::F32)?)?;
    }
    let pad = |rows: &[&[u32]]| -> (Tensor, Tensor) {
        let s = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let mut ids = vec![0u32; rows.len() * s];
        let mut m = vec![0u32; rows.len() * s];
        for (i, r) in rows.iter().enumerate() {
            ids[i * s..i * s + r.len()].copy_from_slice(r);
            m[i * s..i * s + r.len()].fill(1);
        }
        (
            Tensor::from_vec(ids, (rows.len(), s), &dev).unwrap(),
            Tensor::from_vec(m, (rows.len(), s), &dev).unwrap(),
        )
    };
    let embed_all = |rows: &[&[u32]]| -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for c in rows.chunks(64) {
            let (i, m) = pad(c);
            let e = model.forward(&i, &m).unwrap().to_vec2::<f32>().unwrap();
            out.extend(e);
        }
        out
    };
    // Test and train nDCG@10 and the train queries' rankings, with the
    // documents embedded once per call.
    let measure = || -> (f64, f64, Vec<Vec<usize>>) {
        let drows: Vec<&[u32]> = docs.iter().map(|d| d.1.as_slice()).collect();
        let de = embed_all(&drows);
        let ranked = |qs: &[&(String, Vec<u32>)]| -> (f64, Vec<Vec<usize>>) {
            let qrows: Vec<&[u32]> = qs.iter().map(|q| q.1.as_slice()).collect();
            let ranks: Vec<Vec<usize>> = embed_all(&qrows)
                .iter()
                .map(|v| common::rank(v, &de))
                .collect();
            let tot: f64 = qs
                .iter()
                .zip(&ranks)
                .map(|(q, r)| common::ndcg10(r, &qrels[&q.0]))
                .sum();
            (tot / qs.len() as f64, ranks)
        };
        let (test, _) = ranked(&te);
        let (train, ranks) = ranked(&tr);
        (test, train, ranks)
    };
    let (test0, train0, train_ranks) = measure();
    println!(
        "train {} test {} | before: test {test0:.4} train {train0:.4}",
        tr.len(),
        te.len()
    );
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (qi, q) in tr.iter().enumerate() {
        let top: std::collections::HashSet<usize> =
            train_ranks[qi].iter().take(shown).copied().collect();
        for &d in qrels[&q.0].keys() {
            if shown == 0 || top.contains(&d) {
                pairs.push((qi, d));
            }
        }
    }
    println!("positive pairs: {}", pairs.len());
    let vars: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| !(freeze && n.starts_with("embeddings")))
        .map(|(_, v)| v.clone())
        .collect();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = 12345u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for step in 0..steps {
        let b: Vec<(usize, usize)> = (0..32)
            .map(|_| pairs[(next() % pairs.len() as u64) as usize])
            .collect();
        let qr: Vec<&[u32]> = b.iter().map(|&(q, _)| tr[q].1.as_slice()).collect();
        let dr: Vec<&[u32]> = b.iter().map(|&(_, d)| docs[d].1.as_slice()).collect();
        let (qi, qm) = pad(&qr);
        let (di, dm) = pad(&dr);
        let qe = model.forward(&qi, &qm)?;
        let de = model.forward(&di, &dm)?;
        let logits = (qe.matmul(&de.t()?)? / 0.05)?;
        // mask same-query positives other than the diagonal
        let mut mask = vec![0f32; 32 * 32];
        for i in 0..32 {
            for j in 0..32 {
                if i != j && (b[i].0 == b[j].0 || qrels[&tr[b[i].0].0].contains_key(&b[j].1)) {
                    mask[i * 32 + j] = -1e4;
                }
            }
        }
        let logits = (logits + Tensor::from_vec(mask, (32, 32), &dev)?)?;
        let labels = Tensor::arange(0u32, 32, &dev)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        opt.backward_step(&loss)?;
        if step % 50 == 49 {
            println!(
                "step {} loss {:.4} test {:.4}",
                step + 1,
                loss.to_scalar::<f32>()?,
                measure().0
            );
        }
    }
    let (test1, train1, _) = measure();
    println!("after: test {test1:.4} train {train1:.4}");
    Ok(())
}
