//! An offline driver of the whole loop on a BEIR-layout collection.
//!
//! The judged queries are split into train and test. Each round asks the
//! engine for context on every train query (with exploration), lets the
//! simulated LLM answer from the shown chunks it judges relevant, logs the
//! interaction, labels usage with the analyzer from the answer text alone,
//! trains a candidate on the whole log, gates it against the serving model
//! and, when it passes, promotes it in the registry and hot-swaps it into
//! the engine. Test-query nDCG@10 is measured before and after each round;
//! the test queries are never asked during training.

use std::collections::HashMap;
use std::sync::Arc;

use anectx_engine::eval::{score_ranking, Collection};
use anectx_engine::{ContextOptions, Engine, RelevanceModel, RetrievalMode};
use anectx_store::{LoggedCandidate, LoggedInteraction};
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, ANALYZER_VERSION};
use crate::gate::{gate, GateConfig, GateReport};
use crate::registry::Registry;
use crate::simllm::{SimChunk, SimLlm, SimLlmConfig};
use crate::train::{label_log, train, Dataset, TrainConfig, TrainReport};
use crate::{LearnError, Result};

/// Settings of a simulation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SimulateConfig {
    pub rounds: usize,
    pub seed: u64,
    /// Share of judged queries used for training (the rest are test queries).
    pub train_share: f32,
    /// Exploration rate of the logging policy.
    pub explore: f32,
    /// Token budget of each context.
    pub budget: usize,
    /// Candidates from each retriever (also the depth of the test ranking).
    pub k: usize,
    /// Times each train query is asked per round (with new exploration draws).
    pub asks_per_query: usize,
    /// MMR trade-off of the engine (1 = relevance order only).
    pub mmr_lambda: f32,
    pub sim: SimLlmConfig,
    pub train: TrainConfig,
    pub gate: GateConfig,
    /// Also gate on the judged train queries (nDCG@10 with the candidate vs
    /// the serving model); test queries are never used.
    pub eval_gate: bool,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        Self {
            rounds: 1,
            seed: 7,
            train_share: 0.5,
            explore: 0.3,
            budget: 1200,
            k: 100,
            asks_per_query: 2,
            mmr_lambda: ContextOptions::default().mmr_lambda,
            sim: SimLlmConfig::default(),
            train: TrainConfig::default(),
            gate: GateConfig::default(),
            eval_gate: true,
        }
    }
}

/// Precision, recall and F1 of usage labels against a truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    fn add(&mut self, predicted: bool, truth: bool) {
        match (predicted, truth) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            _ => {}
        }
    }
    fn finish(mut self) -> Self {
        let (tp, fp, fnn) = (self.tp as f64, self.fp as f64, self.fn_ as f64);
        self.precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        self.recall = if tp + fnn > 0.0 { tp / (tp + fnn) } else { 0.0 };
        self.f1 = if self.precision + self.recall > 0.0 {
            2.0 * self.precision * self.recall / (self.precision + self.recall)
        } else {
            0.0
        };
        self
    }
}

/// One round of the loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: usize,
    pub interactions_logged: usize,
    pub explored: usize,
    /// Analyzer labels vs the collection's judgments (shown chunks of this round).
    pub analyzer_vs_judgments: Prf,
    /// Analyzer labels vs the chunks the simulated LLM really drew on.
    pub analyzer_vs_simulator: Prf,
    pub train: Option<TrainReport>,
    pub train_error: Option<String>,
    pub gate: Option<GateReport>,
    pub promoted: Option<String>,
    pub serving_model: String,
    pub test_ndcg_before: f64,
    pub test_ndcg_after: f64,
}

/// The whole simulation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulateReport {
    pub documents: usize,
    pub train_queries: usize,
    pub test_queries: usize,
    pub dense: bool,
    pub config: SimulateConfig,
    pub rounds: Vec<RoundReport>,
}

/// Progress callbacks (the CLI draws bars).
pub trait SimProgress {
    fn stage(&self, _name: &str, _total: u64) {}
    fn inc(&self) {}
}

/// Ignores progress.
#[derive(Debug, Default)]
pub struct NoSimProgress;
impl SimProgress for NoSimProgress {}

fn unit(seed: u64, key: &str) -> f64 {
    let h = blake3::hash(format!("{seed}:{key}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8])) as f64 / u64::MAX as f64
}

/// Mean nDCG@10 of `queries` with the engine's current relevance model
/// (full pipeline: hybrid candidates, relevance, MMR).
pub fn test_ndcg(
    engine: &Engine,
    coll: &Collection,
    queries: &[(String, String)],
    qvecs: Option<&[f32]>,
    opts: &ContextOptions,
    k: usize,
) -> Result<f64> {
    if queries.is_empty() {
        return Ok(0.0);
    }
    let paths = engine.store().db.chunk_paths()?;
    let dim = qvecs.map(|v| v.len() / queries.len()).unwrap_or(0);
    let empty = HashMap::new();
    let mut total = 0.0;
    for (i, (qid, text)) in queries.iter().enumerate() {
        let qv = qvecs.map(|v| &v[i * dim..(i + 1) * dim]);
        let ranked = engine.rank(text, qv, RetrievalMode::Full, k, opts)?;
        let mut seen = std::collections::HashSet::new();
        let ranking: Vec<String> = ranked
            .iter()
            .filter_map(|(id, _)| paths.get(id))
            .filter(|p| seen.insert(p.as_str()))
            .cloned()
            .collect();
        total += score_ranking(qid, &ranking, coll.qrels.get(qid).unwrap_or(&empty)).ndcg_10;
    }
    Ok(total / queries.len() as f64)
}

/// Runs the loop. `engine` must have the collection's documents indexed
/// (document id = chunk path, as `index_texts` does).
pub fn simulate(
    engine: &Engine,
    coll: &Collection,
    registry: &Registry,
    analyzer: &Analyzer,
    cfg: &SimulateConfig,
    progress: &dyn SimProgress,
) -> Result<SimulateReport> {
    let (mut train_q, mut test_q) = (Vec::new(), Vec::new());
    for q in &coll.queries {
        if unit(cfg.seed, &q.0) < cfg.train_share as f64 {
            train_q.push(q.clone());
        } else {
            test_q.push(q.clone());
        }
    }
    if train_q.is_empty() || test_q.is_empty() {
        return Err(LearnError::TooLittleData(format!(
            "{} judged queries split into {} train and {} test; need both",
            coll.queries.len(),
            train_q.len(),
            test_q.len()
        )));
    }
    let paths = engine.store().db.chunk_paths()?;
    let opts = ContextOptions {
        budget: cfg.budget,
        k_lexical: cfg.k,
        k_dense: cfg.k,
        explore: cfg.explore,
        mmr_lambda: cfg.mmr_lambda,
        ..ContextOptions::default()
    };
    let eval_opts = ContextOptions {
        explore: 0.0,
        ..opts.clone()
    };
    progress.stage("embedding test queries", 1);
    let texts: Vec<&str> = test_q.iter().map(|q| q.1.as_str()).collect();
    let qvecs = engine.embed_queries(&texts)?;
    progress.inc();
    let mut sim = SimLlm::new(SimLlmConfig {
        seed: cfg.sim.seed ^ cfg.seed,
        ..cfg.sim.clone()
    });
    let mut before = test_ndcg(engine, coll, &test_q, qvecs.as_deref(), &eval_opts, cfg.k)?;
    let mut rounds = Vec::new();
    for round in 1..=cfg.rounds {
        progress.stage(
            &format!("round {round}: answering train queries"),
            (train_q.len() * cfg.asks_per_query) as u64,
        );
        let mut vs_judg = Prf::default();
        let mut vs_sim = Prf::default();
        let mut logged = 0;
        let mut explored = 0;
        let serving = engine.relevance_model().version();
        for ask in 0..cfg.asks_per_query {
            for (qid, text) in &train_q {
                let o = ContextOptions {
                    explore_seed: Some(cfg.seed ^ ((round * 1000 + ask) as u64)),
                    ..opts.clone()
                };
                let res = engine.context(text, &o)?;
                explored += res.explored as usize;
                let rel = coll.qrels.get(qid);
                let relevant = |id: u64| {
                    paths
                        .get(&id)
                        .and_then(|p| rel.and_then(|r| r.get(p)))
                        .is_some_and(|&s| s > 0)
                };
                let chunks: Vec<SimChunk<'_>> = res
                    .chunks
                    .iter()
                    .map(|c| SimChunk {
                        marker: c.marker,
                        text: &c.text,
                        relevant: relevant(c.chunk_id),
                    })
                    .collect();
                let answer = sim.answer(text, &chunks);
                let shown_text: HashMap<u64, &str> = res
                    .chunks
                    .iter()
                    .map(|c| (c.chunk_id, c.text.as_str()))
                    .collect();
                let it = LoggedInteraction {
                    uid: format!("sim-{}-{round}-{ask}-{qid}", cfg.seed),
                    ts_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0),
                    kind: "simulated".into(),
                    query: text.clone(),
                    model_version: res.relevance_model.clone(),
                    explored: res.explored,
                    response: Some(answer.text.clone()),
                    complete: true,
                    meta: serde_json::json!({ "query_id": qid, "round": round }),
                    candidates: res
                        .pool
                        .iter()
                        .map(|p| LoggedCandidate {
                            chunk_id: p.chunk_id,
                            position: p.shown,
                            score: p.relevance,
                            propensity: p.propensity,
                            features: serde_json::to_value(&p.features).unwrap_or_default(),
                            text: p
                                .shown
                                .and_then(|_| shown_text.get(&p.chunk_id))
                                .map(|t| t.to_string()),
                        })
                        .collect(),
                };
                engine.store().db.append_interaction(&it)?;
                logged += 1;
                // Analyzer quality on this answer (labels from the text only).
                let shown: Vec<crate::analyzer::ShownChunk<'_>> = res
                    .chunks
                    .iter()
                    .map(|c| crate::analyzer::ShownChunk {
                        marker: c.marker,
                        text: &c.text,
                    })
                    .collect();
                let labels = analyzer.analyze(&answer.text, &shown)?;
                for (l, c) in labels.iter().zip(&res.chunks) {
                    vs_judg.add(l.used, relevant(c.chunk_id));
                    vs_sim.add(l.used, answer.used.contains(&c.marker));
                }
                progress.inc();
            }
        }
        progress.stage(&format!("round {round}: labelling and training"), 1);
        label_log(&engine.store().db, analyzer)?;
        let ds = Dataset::from_log(&engine.store().db, ANALYZER_VERSION)?;
        let version = registry.new_version_name(&ds.hash);
        let mut report = RoundReport {
            round,
            interactions_logged: logged,
            explored,
            analyzer_vs_judgments: vs_judg.finish(),
            analyzer_vs_simulator: vs_sim.finish(),
            train: None,
            train_error: None,
            gate: None,
            promoted: None,
            serving_model: serving,
            test_ndcg_before: before,
            test_ndcg_after: before,
        };
        match train(&ds, &cfg.train, &version) {
            Err(e @ LearnError::TooLittleData(_)) => report.train_error = Some(e.to_string()),
            Err(e) => return Err(e),
            Ok((model, tr)) => {
                let (_, _, held) = ds.split3(cfg.train.held_out, cfg.train.seed);
                let current = engine.relevance_model();
                let mut g = gate(&model, current.as_ref(), &held, &cfg.gate)?;
                if cfg.eval_gate && g.passed {
                    let tq = &train_q;
                    let cur = test_ndcg(engine, coll, tq, None, &eval_opts, cfg.k)?;
                    engine.set_relevance_model(Arc::new(model.clone()));
                    let cand = test_ndcg(engine, coll, tq, None, &eval_opts, cfg.k);
                    engine.set_relevance_model(current.clone());
                    g = g.with_eval(cand?, cur, cfg.gate.tolerance);
                }
                let manifest = registry.add(
                    &model,
                    &ds.hash,
                    serde_json::json!({ "train": tr, "gate": g }),
                )?;
                if g.passed {
                    registry.promote(&manifest.version)?;
                    // Hot swap from the registry, as a server would.
                    let m: Arc<dyn RelevanceModel> = registry.load_current()?;
                    engine.set_relevance_model(m);
                    report.promoted = Some(manifest.version.clone());
                    report.test_ndcg_after =
                        test_ndcg(engine, coll, &test_q, qvecs.as_deref(), &eval_opts, cfg.k)?;
                }
                report.train = Some(tr);
                report.gate = Some(g);
            }
        }
        progress.inc();
        before = report.test_ndcg_after;
        rounds.push(report);
    }
    Ok(SimulateReport {
        documents: coll.docs.len(),
        train_queries: train_q.len(),
        test_queries: test_q.len(),
        dense: engine.dense_enabled(),
        config: cfg.clone(),
        rounds,
    })
}
