//! Retrieval evaluation on BEIR-layout collections.
//!
//! A collection directory holds `corpus.jsonl` (`_id`, `title`, `text`),
//! `queries.jsonl` (`_id`, `text`) and `qrels.tsv` (`query-id`, `corpus-id`,
//! `score`, with a header line; graded, > 0 is relevant). Documents are
//! indexed through the normal ingest path (chunked; a document's score is
//! its best chunk's), and only queries with judgments are evaluated.
//!
//! Metrics follow trec_eval / pytrec_eval conventions: nDCG@10 with linear
//! gains, Recall@100, MRR@10 (reciprocal rank of the first relevant
//! document in the top 10), and MAP over the top 1000.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{ContextOptions, Engine, RetrievalMode};
use crate::{EngineError, Result};

/// A loaded collection.
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// `(doc id, text)` with the title prepended to the text.
    pub docs: Vec<(String, String)>,
    /// `(query id, text)` for queries that have judgments.
    pub queries: Vec<(String, String)>,
    /// query id → doc id → graded relevance.
    pub qrels: HashMap<String, HashMap<String, i32>>,
}

#[derive(Deserialize)]
struct JsonDoc {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

fn id_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(path).map_err(|e| EngineError::path(path, e.to_string()))?;
    std::io::BufReader::new(f)
        .lines()
        .map(|l| l.map_err(|e| EngineError::path(path, e.to_string())))
        .collect()
}

impl Collection {
    /// Loads a BEIR-layout directory.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::Eval(format!(
                "{}: not a directory (a BEIR-layout collection is a directory with corpus.jsonl, queries.jsonl and qrels.tsv)",
                dir.display()
            )));
        }
        let missing: Vec<&str> = ["corpus.jsonl", "queries.jsonl", "qrels.tsv"]
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::Eval(format!(
                "{} is not a BEIR-layout collection: {} missing (expected corpus.jsonl, queries.jsonl and qrels.tsv)",
                dir.display(),
                missing.join(", ")
            )));
        }
        let mut c = Collection::default();
        let qrels_path = dir.join("qrels.tsv");
        for (n, line) in read_lines(&qrels_path)?.iter().enumerate() {
            let f: Vec<&str> = line.split('\t').map(str::trim).collect();
            if f.len() < 3 || f.iter().all(|x| x.is_empty()) {
                continue;
            }
            let Ok(score) = f[2].parse::<i32>() else {
                if n == 0 {
                    continue; // header
                }
                return Err(EngineError::Eval(format!(
                    "{}:{}: bad score {:?}",
                    qrels_path.display(),
                    n + 1,
                    f[2]
                )));
            };
            c.qrels
                .entry(f[0].to_string())
                .or_default()
                .insert(f[1].to_string(), score);
        }
        let corpus = dir.join("corpus.jsonl");
        for (n, line) in read_lines(&corpus)?.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let d: JsonDoc = serde_json::from_str(line)
                .map_err(|e| EngineError::Eval(format!("{}:{}: {e}", corpus.display(), n + 1)))?;
            let text = if d.title.trim().is_empty() {
                d.text
            } else {
                format!("{}\n{}", d.title, d.text)
            };
            c.docs.push((id_string(&d.id), text));
        }
        let qpath = dir.join("queries.jsonl");
        for (n, line) in read_lines(&qpath)?.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let q: JsonDoc = serde_json::from_str(line)
                .map_err(|e| EngineError::Eval(format!("{}:{}: {e}", qpath.display(), n + 1)))?;
            let id = id_string(&q.id);
            if c.qrels.get(&id).is_some_and(|r| r.values().any(|&s| s > 0)) {
                c.queries.push((id, q.text));
            }
        }
        if c.docs.is_empty() || c.queries.is_empty() {
            return Err(EngineError::Eval(format!(
                "{}: {} documents and {} judged queries; nothing to evaluate",
                dir.display(),
                c.docs.len(),
                c.queries.len()
            )));
        }
        Ok(c)
    }
}

/// Metrics of one query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryMetrics {
    pub query_id: String,
    pub ndcg_10: f64,
    pub recall_100: f64,
    pub mrr_10: f64,
    pub ap: f64,
    pub relevant: usize,
    /// The top 10 retrieved document ids.
    pub top10: Vec<String>,
}

/// Mean metrics of one mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModeReport {
    pub mode: String,
    pub queries: usize,
    pub ndcg_10: f64,
    pub recall_100: f64,
    pub mrr_10: f64,
    pub map: f64,
    pub per_query: Vec<QueryMetrics>,
}

/// Scores one ranking (doc ids, best first) against graded judgments.
pub fn score_ranking(
    query_id: &str,
    ranking: &[String],
    qrels: &HashMap<String, i32>,
) -> QueryMetrics {
    let gain = |d: &String| qrels.get(d).copied().unwrap_or(0).max(0) as f64;
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| gain(d) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<f64> = qrels.values().map(|&s| s.max(0) as f64).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum();
    let relevant = qrels.values().filter(|&&s| s > 0).count();
    let is_rel = |d: &String| qrels.get(d).is_some_and(|&s| s > 0);
    let found_100 = ranking.iter().take(100).filter(|d| is_rel(d)).count();
    let mrr = ranking
        .iter()
        .take(10)
        .position(is_rel)
        .map_or(0.0, |p| 1.0 / (p + 1) as f64);
    let mut hits = 0usize;
    let mut ap = 0.0;
    for (i, d) in ranking.iter().take(1000).enumerate() {
        if is_rel(d) {
            hits += 1;
            ap += hits as f64 / (i + 1) as f64;
        }
    }
    QueryMetrics {
        query_id: query_id.to_string(),
        ndcg_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        recall_100: if relevant > 0 {
            found_100 as f64 / relevant as f64
        } else {
            0.0
        },
        mrr_10: mrr,
        ap: if relevant > 0 {
            ap / relevant as f64
        } else {
            0.0
        },
        relevant,
        top10: ranking.iter().take(10).cloned().collect(),
    }
}

/// Ranks every judged query in `mode` and scores it. Query embeddings are
/// computed once in `query_vecs` (row-major) when dense retrieval is on.
pub fn evaluate_mode(
    engine: &Engine,
    coll: &Collection,
    mode: RetrievalMode,
    query_vecs: Option<&[f32]>,
    opts: &ContextOptions,
) -> Result<ModeReport> {
    let paths = engine.store().db.chunk_paths()?;
    let dim = query_vecs
        .map(|v| v.len() / coll.queries.len().max(1))
        .unwrap_or(0);
    let depth = 1000;
    let mut per_query = Vec::with_capacity(coll.queries.len());
    for (qi, (qid, text)) in coll.queries.iter().enumerate() {
        let qv = query_vecs.map(|v| &v[qi * dim..(qi + 1) * dim]);
        let ranked = engine.rank(text, qv, mode, depth, opts)?;
        // Document score = best chunk; keep first occurrence order.
        let mut seen = std::collections::HashSet::new();
        let ranking: Vec<String> = ranked
            .iter()
            .filter_map(|(id, _)| paths.get(id))
            .filter(|p| seen.insert(p.as_str()))
            .cloned()
            .collect();
        let empty = HashMap::new();
        per_query.push(score_ranking(
            qid,
            &ranking,
            coll.qrels.get(qid).unwrap_or(&empty),
        ));
    }
    let n = per_query.len().max(1) as f64;
    let mean = |f: fn(&QueryMetrics) -> f64| per_query.iter().map(f).sum::<f64>() / n;
    Ok(ModeReport {
        mode: mode.as_str().to_string(),
        queries: per_query.len(),
        ndcg_10: mean(|q| q.ndcg_10),
        recall_100: mean(|q| q.recall_100),
        mrr_10: mean(|q| q.mrr_10),
        map: mean(|q| q.ap),
        per_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(v: &[(&str, i32)]) -> HashMap<String, i32> {
        v.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_match_hand_computation() {
        let q = qrels(&[("a", 2), ("b", 1), ("z", 0)]);
        let m = score_ranking("q", &ids(&["x", "a", "y", "b"]), &q);
        let dcg = 2.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.recall_100, 1.0);
        assert_eq!(m.mrr_10, 0.5);
        assert!((m.ap - (0.5 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(m.relevant, 2);
        let perfect = score_ranking("q", &ids(&["a", "b"]), &q);
        assert!((perfect.ndcg_10 - 1.0).abs() < 1e-12);
        let none = score_ranking("q", &ids(&["z", "y"]), &q);
        assert_eq!(
            (none.ndcg_10, none.recall_100, none.mrr_10, none.ap),
            (0.0, 0.0, 0.0, 0.0)
        );
    }
}
