//! Analyzer precision/recall/F1 on a BEIR-layout collection.
//!
//! ```text
//! cargo run --release -p anectx-learn --example analyzer_f1 -- <collection-dir>… \
//!     [--shown mix|bm25] [--relevant-share F] [--seed S] [--queries N] [--debug N] [--use-relevant P] [--use-irrelevant P] \
//!     [--quote-rate P] [--cite-rate P] [--max-sentences N] [--analyzer '{"threshold":0.5,…}'] [--model DIR]
//! ```
//!
//! For every query with judgments it builds a shown set of 5–8 documents:
//!
//! - `mix` (default): round(k · share) judged-relevant documents drawn at
//!   random (`--relevant-share`, default 0.5; at least 1, at most as many as
//!   are judged), the rest filled with the best BM25-ranked *non-relevant* documents (hard
//!   negatives that share the query's words), in random order;
//! - `bm25`: the top k documents of an in-example BM25 (k1 0.9, b 0.4).
//!
//! With `--model DIR` (a sentence-transformers directory such as
//! `.fixtures/all-minilm-l6-v2`) the analyzer adds the sentence-similarity
//! signal. The simulated LLM answers from them (default rates), the analyzer labels
//! usage from the answer and chunk texts only, and the labels are scored
//! (micro-averaged over all shown chunks) against (a) the simulator's
//! actual `used` markers and (b) the judgments (relevant = used). The
//! simulator's own agreement with the judgments, the ceiling for (b), is
//! printed too.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anectx_engine::eval::Collection;
use anectx_learn::analyzer::{content_words, Analyzer, AnalyzerConfig, ShownChunk};
use anectx_learn::simllm::{SimChunk, SimLlm, SimLlmConfig};

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: u64,
    fp: u64,
    fn_: u64,
}

impl Counts {
    fn add(&mut self, predicted: bool, truth: bool) {
        match (predicted, truth) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => {}
        }
    }

    fn prf(&self) -> (f64, f64, f64) {
        let p = self.tp as f64 / (self.tp + self.fp).max(1) as f64;
        let r = self.tp as f64 / (self.tp + self.fn_).max(1) as f64;
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        (p, r, f)
    }

    fn line(&self) -> String {
        let (p, r, f) = self.prf();
        format!("P {p:.3}  R {r:.3}  F1 {f:.3}")
    }
}

/// A small in-memory BM25 over the analyzer's content words.
struct Bm25 {
    postings: HashMap<String, Vec<(usize, f32)>>,
    lens: Vec<f32>,
    avg: f32,
}

impl Bm25 {
    fn new(docs: &[(String, String)]) -> Self {
        let mut postings: HashMap<String, Vec<(usize, f32)>> = HashMap::new();
        let mut lens = Vec::with_capacity(docs.len());
        for (i, (_, text)) in docs.iter().enumerate() {
            let words = content_words(text);
            lens.push(words.len() as f32);
            let mut tf: HashMap<String, f32> = HashMap::new();
            for w in words {
                *tf.entry(w).or_insert(0.0) += 1.0;
            }
            for (w, f) in tf {
                postings.entry(w).or_default().push((i, f));
            }
        }
        let avg = lens.iter().sum::<f32>() / lens.len().max(1) as f32;
        Self {
            postings,
            lens,
            avg: avg.max(1.0),
        }
    }

    fn rank(&self, query: &str) -> Vec<usize> {
        let (k1, b) = (0.9f32, 0.4f32);
        let n = self.lens.len() as f32;
        let mut scores: HashMap<usize, f32> = HashMap::new();
        let terms: HashSet<String> = content_words(query).into_iter().collect();
        for t in terms {
            let Some(list) = self.postings.get(&t) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(d, tf) in list {
                let norm = tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * self.lens[d] / self.avg));
                *scores.entry(d).or_insert(0.0) += idf * norm;
            }
        }
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().map(|(d, _)| d).collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut shown_mode = "mix".to_string();
    let mut seed = 7u64;
    let mut max_queries = usize::MAX;
    let mut debug = 0usize;
    let mut share = 0.5f64;
    let mut analyzer_cfg = AnalyzerConfig::default();
    let mut model: Option<PathBuf> = None;
    let mut sim_cfg = SimLlmConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--shown" => shown_mode = val("--shown")?,
            "--seed" => seed = val("--seed")?.parse()?,
            "--queries" => max_queries = val("--queries")?.parse()?,
            "--debug" => debug = val("--debug")?.parse()?,
            "--relevant-share" => share = val(&a)?.parse()?,
            "--analyzer" => analyzer_cfg = serde_json::from_str(&val(&a)?)?,
            "--model" => model = Some(PathBuf::from(val(&a)?)),
            "--use-relevant" => sim_cfg.use_relevant = val(&a)?.parse()?,
            "--use-irrelevant" => sim_cfg.use_irrelevant = val(&a)?.parse()?,
            "--quote-rate" => sim_cfg.quote_rate = val(&a)?.parse()?,
            "--cite-rate" => sim_cfg.cite_rate = val(&a)?.parse()?,
            "--max-sentences" => sim_cfg.max_sentences_per_chunk = val(&a)?.parse()?,
            "-h" | "--help" => {
                eprintln!("usage: analyzer_f1 <beir-collection-dir>… [--shown mix|bm25] [--relevant-share F] [--seed S] [--debug N] [--queries N] [--use-relevant P] [--use-irrelevant P] [--quote-rate P] [--cite-rate P] [--max-sentences N]");
                return Ok(());
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}").into()),
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        return Err("usage: analyzer_f1 <beir-collection-dir>… (see --help)".into());
    }
    if shown_mode != "mix" && shown_mode != "bm25" {
        return Err(format!("--shown must be mix or bm25, got {shown_mode}").into());
    }
    let mut analyzer = Analyzer::new(analyzer_cfg);
    if let Some(dir) = &model {
        let e = anectx_engine::ModelEmbedder::load(dir, anectx_models::WeightDtype::F32)?;
        println!("sentence similarity from {}", dir.display());
        analyzer = analyzer.with_embedder(std::sync::Arc::new(e));
    }
    println!(
        "shown={shown_mode} relevant_share={share} seed={seed} sim: use_relevant {} use_irrelevant {} quote_rate {} cite_rate {} max_sentences {}",
        sim_cfg.use_relevant,
        sim_cfg.use_irrelevant,
        sim_cfg.quote_rate,
        sim_cfg.cite_rate,
        sim_cfg.max_sentences_per_chunk
    );
    for dir in dirs {
        let col = Collection::load(&dir)?;
        let bm25 = Bm25::new(&col.docs);
        let index: HashMap<&str, usize> = col
            .docs
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let mut sim = SimLlm::new(SimLlmConfig {
            seed,
            ..sim_cfg.clone()
        });
        let mut rng = anectx_core::rng::Rng::from_state(seed ^ 0xa11ce);
        let (mut vs_sim, mut vs_judged, mut sim_vs_judged) =
            (Counts::default(), Counts::default(), Counts::default());
        let (mut queries, mut shown_total, mut shown_rel) = (0usize, 0usize, 0usize);
        let started = Instant::now();
        let mut analyze_time = 0.0f64;
        for (qid, qtext) in &col.queries {
            if queries >= max_queries {
                break;
            }
            let Some(judged) = col.qrels.get(qid) else {
                continue;
            };
            let relevant: Vec<usize> = judged
                .iter()
                .filter(|(_, &g)| g > 0)
                .filter_map(|(d, _)| index.get(d.as_str()).copied())
                .collect();
            let mut relevant = relevant;
            relevant.sort_unstable();
            if relevant.is_empty() {
                continue;
            }
            let is_rel: HashSet<usize> = relevant.iter().copied().collect();
            let k = 5 + rng.below(4);
            let ranked = bm25.rank(qtext);
            let mut shown: Vec<usize> = if shown_mode == "mix" {
                let mut rel = relevant.clone();
                rng.shuffle(&mut rel);
                let n_rel = ((k as f64 * share).round() as usize)
                    .clamp(1, k)
                    .min(rel.len());
                let mut s: Vec<usize> = rel[..n_rel].to_vec();
                let mut negatives = ranked.iter().copied().filter(|d| !is_rel.contains(d));
                while s.len() < k {
                    match negatives.next() {
                        Some(d) => s.push(d),
                        None => {
                            // BM25 ran out: random non-relevant documents
                            let d = rng.below(col.docs.len());
                            if !is_rel.contains(&d) && !s.contains(&d) {
                                s.push(d);
                            }
                        }
                    }
                }
                rng.shuffle(&mut s);
                s
            } else {
                ranked.iter().copied().take(k).collect()
            };
            shown.dedup();
            if shown.is_empty() {
                continue;
            }
            queries += 1;
            let sim_chunks: Vec<SimChunk<'_>> = shown
                .iter()
                .enumerate()
                .map(|(i, &d)| SimChunk {
                    marker: i as u32 + 1,
                    text: &col.docs[d].1,
                    relevant: is_rel.contains(&d),
                })
                .collect();
            let answer = sim.answer(qtext, &sim_chunks);
            let shown_chunks: Vec<ShownChunk<'_>> = sim_chunks
                .iter()
                .map(|c| ShownChunk {
                    marker: c.marker,
                    text: c.text,
                })
                .collect();
            let t = Instant::now();
            let labels = analyzer.analyze(&answer.text, &shown_chunks)?;
            analyze_time += t.elapsed().as_secs_f64();
            for (label, c) in labels.iter().zip(&sim_chunks) {
                let used = answer.used.contains(&c.marker);
                vs_sim.add(label.used, used);
                if debug > 0 && label.used != used {
                    debug -= 1;
                    eprintln!(
                        "--- {} marker {} (sim used {used}): {:?}\nANSWER: {}\nCHUNK: {}\n",
                        if label.used { "FP" } else { "FN" },
                        c.marker,
                        label,
                        answer.text,
                        c.text
                    );
                }
                vs_judged.add(label.used, c.relevant);
                sim_vs_judged.add(used, c.relevant);
                shown_total += 1;
                shown_rel += usize::from(c.relevant);
            }
        }
        println!(
            "{}: {queries} queries, {shown_total} shown ({shown_rel} relevant), {:.1} s ({:.2} ms/analysis)",
            dir.display(),
            started.elapsed().as_secs_f64(),
            1000.0 * analyze_time / queries.max(1) as f64
        );
        println!("  analyzer vs sim used   : {}", vs_sim.line());
        println!("  analyzer vs judgments  : {}", vs_judged.line());
        println!(
            "  sim used vs judgments  : {}  (ceiling for the line above)",
            sim_vs_judged.line()
        );
    }
    Ok(())
}
