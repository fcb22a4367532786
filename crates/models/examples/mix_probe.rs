//! Diagnostic: dense nDCG@10 with queries and documents embedded by two
//! different models (student/teacher) to see which side loses quality.
//! `mix_probe STUDENT_DIR TEACHER_DIR COLLECTION CACHE_DIR`
mod common;

use std::path::{Path, PathBuf};

use anectx_models::io::{load_embedder, WeightDtype};

fn embed(dir: &Path, texts: &[String], cache: &Path) -> Vec<Vec<f32>> {
    if let Ok(b) = std::fs::read(cache) {
        return serde_json::from_slice(&b).unwrap();
    }
    let (m, tok) = load_embedder(dir, WeightDtype::F32).unwrap();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    for c in order.chunks(16) {
        let t: Vec<&str> = c.iter().map(|&i| texts[i].as_str()).collect();
        let b = tok.encode_batch(&t).unwrap();
        let e = m.embed(&b).unwrap();
        for (k, &i) in c.iter().enumerate() {
            out[i] = e.data[k * e.dim..(k + 1) * e.dim].to_vec();
        }
    }
    std::fs::write(cache, serde_json::to_vec(&out).unwrap()).unwrap();
    out
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (s, t, coll, cache) = (
        PathBuf::from(&a[0]),
        PathBuf::from(&a[1]),
        PathBuf::from(&a[2]),
        PathBuf::from(&a[3]),
    );
    let name = coll.file_name().unwrap().to_string_lossy().to_string();
    let common::Texts {
        docs,
        queries,
        qrels,
    } = common::load_texts(&coll).unwrap();
    let (qids, qs): (Vec<String>, Vec<String>) = queries.into_iter().unzip();
    let docs: Vec<String> = docs.into_iter().map(|d| d.1).collect();
    let sd = embed(&s, &docs, &cache.join(format!("{name}-s-d.json")));
    let sq = embed(&s, &qs, &cache.join(format!("{name}-s-q.json")));
    let td = embed(&t, &docs, &cache.join(format!("{name}-t-d.json")));
    let tq = embed(&t, &qs, &cache.join(format!("{name}-t-q.json")));
    let ndcg = |qe: &[Vec<f32>], de: &[Vec<f32>]| -> f64 {
        let mut tot = 0.0;
        for (qi, v) in qe.iter().enumerate() {
            tot += common::ndcg10(&common::rank(v, de), &qrels[&qids[qi]]);
        }
        tot / qe.len() as f64
    };
    let cos = |a: &[Vec<f32>], b: &[Vec<f32>]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum::<f64>())
            .sum::<f64>()
            / a.len() as f64
    };
    println!(
        "{name}: SS {:.4} | Sq-Td {:.4} | Tq-Sd {:.4} | TT {:.4} | cos(s,t) docs {:.3} queries {:.3}",
        ndcg(&sq, &sd),
        ndcg(&sq, &td),
        ndcg(&tq, &sd),
        ndcg(&tq, &td),
        cos(&sd, &td),
        cos(&sq, &tq)
    );
}
