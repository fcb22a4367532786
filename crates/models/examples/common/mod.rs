//! Helpers shared by the probe examples: BEIR texts and judgments, exact
//! dense ranking and nDCG@10 as `anectx eval` computes it. (Not an example
//! itself: no `main.rs` here. The `models` crate cannot use the engine's
//! `eval::Collection`, which depends on it.)

use std::collections::HashMap;
use std::path::Path;

type Error = Box<dyn std::error::Error>;

/// `(id, text)` rows of a BEIR `.jsonl` file; a document's text is its title
/// and body joined by a space, as the engine indexes it.
fn rows(path: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for l in std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let j: serde_json::Value = serde_json::from_str(l)?;
        let id = match &j["_id"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let text = j["text"].as_str().unwrap_or("");
        let text = match j["title"].as_str() {
            Some(t) => format!("{t} {text}"),
            None => text.to_string(),
        };
        out.push((id, text));
    }
    Ok(out)
}

/// A BEIR collection's documents and queries as `(id, text)`, the queries
/// cut to those with positive judgments, and those judgments.
pub struct Texts {
    pub docs: Vec<(String, String)>,
    pub queries: Vec<(String, String)>,
    pub qrels: HashMap<String, HashMap<usize, f64>>,
}

pub fn load_texts(coll: &Path) -> Result<Texts, Error> {
    let docs = rows(&coll.join("corpus.jsonl"))?;
    let at: HashMap<&str, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.0.as_str(), i))
        .collect();
    let qrels = load_qrels(coll, &at)?;
    let mut queries = rows(&coll.join("queries.jsonl"))?;
    queries.retain(|q| qrels.contains_key(&q.0));
    Ok(Texts {
        docs,
        queries,
        qrels,
    })
}

/// Positive judgments of `qrels.tsv`: query id → (document index, grade),
/// with documents indexed by `doc_at`.
fn load_qrels(
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

/// nDCG@10 of `ranking` against graded judgments `rel`, with the grade as
/// the gain (linear), as `anectx eval` scores it, so the figures compare.
pub fn ndcg10(ranking: &[usize], rel: &HashMap<usize, f64>) -> f64 {
    let gain = |g: f64, i: usize| g / (i as f64 + 2.0).log2();
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
