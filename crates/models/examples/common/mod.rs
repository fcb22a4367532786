//! Helpers shared by the probe examples: BEIR judgments, exact dense
//! ranking and nDCG@10. (Not an example itself: no `main.rs` here.)

use std::collections::HashMap;
use std::path::Path;

/// Positive judgments of `qrels.tsv`: query id → (document index, grade),
/// with documents indexed by `doc_at`.
pub fn load_qrels(
    coll: &Path,
    doc_at: &HashMap<&str, usize>,
) -> std::io::Result<HashMap<String, HashMap<usize, f64>>> {
    let mut qrels: HashMap<String, HashMap<usize, f64>> = HashMap::new();
    for l in std::fs::read_to_string(coll.join("qrels.tsv"))?.lines() {
        let p: Vec<&str> = l.split('\t').collect();
        if p.len() < 3 {
            continue;
        }
        let Ok(g) = p[p.len() - 1].parse::<f64>() else {
            continue;
        };
        if g > 0.0 {
            if let Some(&d) = doc_at.get(p[1]) {
                qrels.entry(p[0].to_string()).or_default().insert(d, g);
            }
        }
    }
    Ok(qrels)
}

/// Documents by descending dot product with `q`.
pub fn rank(q: &[f32], docs: &[Vec<f32>]) -> Vec<usize> {
    let mut s: Vec<(usize, f32)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d.iter().zip(q).map(|(a, b)| a * b).sum()))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1));
    s.into_iter().map(|x| x.0).collect()
}

/// nDCG@10 of `ranking` against graded judgments `rel`.
pub fn ndcg10(ranking: &[usize], rel: &HashMap<usize, f64>) -> f64 {
    let gain = |g: f64, i: usize| (2f64.powf(g) - 1.0) / (i as f64 + 2.0).log2();
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| gain(*rel.get(d).unwrap_or(&0.0), i))
        .sum();
    let mut ideal: Vec<f64> = rel.values().copied().collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| gain(*g, i))
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}
