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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anectx_engine::eval::{score_ranking, Collection};
use anectx_engine::{ContextOptions, Engine, RelevanceModel, RetrievalMode};
use anectx_engine::{SelectionTrace, ShownChunk};
use anectx_store::{InteractionKind, InteractionMeta};
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, ANALYZER_VERSION};
use crate::gate::{GateConfig, GateReport};
use crate::model::FeatureModel;
use crate::registry::Registry;
use crate::round::{train_and_gate, Trial};
use crate::simllm::{SimChunk, SimLlm, SimLlmConfig};
use crate::train::{label_log, Dataset, TrainConfig, TrainReport};
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

impl SimulateConfig {
    /// The engine options the simulated asks use (budget, depth,
    /// exploration, MMR); evaluation turns exploration off.
    pub fn context_options(&self) -> ContextOptions {
        ContextOptions {
            budget: self.budget,
            k_lexical: self.k,
            k_dense: self.k,
            explore: self.explore,
            mmr_lambda: self.mmr_lambda,
            ..ContextOptions::default()
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
    let v = query_ndcgs(engine, coll, queries, qvecs, opts, k, None)?;
    Ok(v.iter().sum::<f64>() / v.len() as f64)
}

/// What a memory is allowed to know for the ceilings of [`query_ndcgs`].
#[derive(Debug, Clone, Copy)]
pub enum Known<'a> {
    /// Every chunk shown for any logged question: a true upper bound for a
    /// memory that links questions to each other's chunks.
    All(&'a HashSet<u64>),
    /// The chunks shown for the same question id only: what a memory that
    /// remembered each question's own history perfectly could reach.
    PerQuery(&'a HashMap<String, HashSet<u64>>),
}

/// nDCG@10 of each of `queries`, in order (see [`test_ndcg`]); with
/// `known`, the ceiling instead:
///
/// The most a usage memory built from an interaction log could give each of
/// `queries`. A memory only knows the chunks that were *shown* (`known`: for
/// any logged question), each used or not; it knows nothing about the rest.
/// The best it can do is to place the known relevant chunks where they
/// belong and push the known irrelevant ones out of the top, leaving every
/// unknown chunk in the order the ranking without memory has it. This is
/// that ranking: known relevant documents, best grade first, merged by grade
/// into the memory-less ranking with the known documents taken out (the
/// merge that maximises DCG among all that keep the unknown documents'
/// order); so it is never below `before`.
pub fn query_ndcgs(
    engine: &Engine,
    coll: &Collection,
    queries: &[(String, String)],
    qvecs: Option<&[f32]>,
    opts: &ContextOptions,
    k: usize,
    known: Option<Known<'_>>,
) -> Result<Vec<f64>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let paths = engine.store().db.chunk_paths()?;
    let dim = qvecs.map(|v| v.len() / queries.len()).unwrap_or(0);
    let empty = HashMap::new();
    let mut out = Vec::with_capacity(queries.len());
    for (i, (qid, text)) in queries.iter().enumerate() {
        let qv = qvecs.map(|v| &v[i * dim..(i + 1) * dim]);
        let qrels = coll.qrels.get(qid).unwrap_or(&empty);
        let ranked = engine.rank(text, qv, RetrievalMode::Full, k, opts)?;
        let mut seen = HashSet::new();
        let base: Vec<&String> = ranked
            .iter()
            .filter_map(|(id, _)| paths.get(id))
            .filter(|p| seen.insert(p.as_str()))
            .collect();
        let grade = |p: &String| qrels.get(p).copied().unwrap_or(0).max(0);
        let none = HashSet::new();
        let known = known.map(|k| match k {
            Known::All(s) => s,
            Known::PerQuery(m) => m.get(qid).unwrap_or(&none),
        });
        let ranking: Vec<String> = match known {
            None => base.into_iter().cloned().collect(),
            Some(known) => {
                let known_paths: HashSet<&String> =
                    known.iter().filter_map(|id| paths.get(id)).collect();
                let mut top: Vec<&String> = known_paths
                    .iter()
                    .copied()
                    .filter(|p| grade(p) > 0)
                    .collect();
                top.sort_by(|a, b| grade(b).cmp(&grade(a)).then(a.cmp(b)));
                let rest: Vec<&String> = base
                    .into_iter()
                    .filter(|p| !known_paths.contains(p))
                    .collect();
                let (mut i, mut j) = (0, 0);
                let mut merged = Vec::with_capacity(top.len() + rest.len());
                while i < top.len() || j < rest.len() {
                    let take_top =
                        j >= rest.len() || (i < top.len() && grade(top[i]) >= grade(rest[j]));
                    if take_top {
                        merged.push(top[i].clone());
                        i += 1;
                    } else {
                        merged.push(rest[j].clone());
                        j += 1;
                    }
                }
                merged
            }
        };
        out.push(score_ranking(qid, &ranking, qrels).ndcg_10);
    }
    Ok(out)
}

/// Asks `text` once through the loop: context, simulated answer, logged
/// interaction (uid `uid`), analyzer quality against the judgments and the
/// simulator. Returns whether the call explored, and the chunks shown.
#[allow(clippy::too_many_arguments)]
fn ask_once(
    engine: &Engine,
    coll: &Collection,
    paths: &HashMap<u64, String>,
    sim: &mut SimLlm,
    analyzer: &Analyzer,
    (qid, text): (&str, &str),
    opts: &ContextOptions,
    uid: String,
    meta: InteractionMeta,
    vs_judg: &mut Prf,
    vs_sim: &mut Prf,
) -> Result<(bool, Vec<u64>)> {
    let res = engine.context(text, opts)?;
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
    let it = anectx_engine::record(
        anectx_engine::Answer {
            uid,
            kind: InteractionKind::Simulated,
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            query: text.to_string(),
            response: Some(answer.text.clone()),
            complete: true,
            meta,
        },
        &ShownChunk::of(&res),
        Some(&SelectionTrace::of(&res)),
    );
    engine.store().db.append_interaction(&it)?;
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
    Ok((
        res.explored,
        res.chunks.iter().map(|c| c.chunk_id).collect(),
    ))
}

/// `(query id, text)` pairs.
type Queries = Vec<(String, String)>;

/// Splits the judged queries into train and test by a seeded hash of their
/// ids (`share` of them train); both sides must be non-empty.
fn split_queries(coll: &Collection, seed: u64, share: f32) -> Result<(Queries, Queries)> {
    let (train, test): (Vec<_>, Vec<_>) = coll
        .queries
        .iter()
        .cloned()
        .partition(|q| unit(seed, &q.0) < share as f64);
    if train.is_empty() || test.is_empty() {
        return Err(LearnError::TooLittleData(format!(
            "{} judged queries split into {} train and {} test; need both",
            coll.queries.len(),
            train.len(),
            test.len()
        )));
    }
    Ok((train, test))
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
    let (train_q, test_q) = split_queries(coll, cfg.seed, cfg.train_share)?;
    let paths = engine.store().db.chunk_paths()?;
    let opts = cfg.context_options();
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
                explored += ask_once(
                    engine,
                    coll,
                    &paths,
                    &mut sim,
                    analyzer,
                    (qid.as_str(), text.as_str()),
                    &o,
                    format!("sim-{}-{round}-{ask}-{qid}", cfg.seed),
                    InteractionMeta {
                        query_id: Some(qid.clone()),
                        round: Some(round as u32),
                        ..InteractionMeta::default()
                    },
                    &mut vs_judg,
                    &mut vs_sim,
                )?
                .0 as usize;
                logged += 1;
                progress.inc();
            }
        }
        progress.stage(&format!("round {round}: labelling and training"), 1);
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
        let current = engine.relevance_model();
        // The held-out gate's second opinion: nDCG on the judged train queries.
        let mut eval_gate = |model: &FeatureModel, g: GateReport| -> Result<GateReport> {
            let tq = &train_q;
            let cur = test_ndcg(engine, coll, tq, None, &eval_opts, cfg.k)?;
            engine.set_relevance_model(Arc::new(model.clone()));
            let cand = test_ndcg(engine, coll, tq, None, &eval_opts, cfg.k);
            engine.set_relevance_model(current.clone());
            Ok(g.with_eval(cand?, cur, cfg.gate.tolerance))
        };
        let outcome = crate::round::round(
            &engine.store().db,
            registry,
            current.as_ref(),
            analyzer,
            &crate::round::RoundConfig {
                train: cfg.train.clone(),
                gate: cfg.gate.clone(),
                promote: true,
            },
            if cfg.eval_gate {
                Some(&mut eval_gate)
            } else {
                None
            },
        )?;
        report.train_error = outcome.not_trained;
        if let Some(t) = outcome.trained {
            if t.promoted {
                // Hot swap from the registry, as a server would.
                let m: Arc<dyn RelevanceModel> = registry.load_current()?;
                engine.set_relevance_model(m);
                report.promoted = Some(t.version.clone());
                report.test_ndcg_after =
                    test_ndcg(engine, coll, &test_q, qvecs.as_deref(), &eval_opts, cfg.k)?;
            }
            report.train = Some(t.train);
            report.gate = Some(t.gate);
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

// ---------------------------------------------------------------------------
// Stream evaluation: new, repeated and reworded questions.

/// Settings of a stream evaluation ([`simulate_stream`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// Split, exploration, budget, simulated LLM and asks per train question
    /// (rounds, training and the gate are not used). Seed `i` of the run is
    /// `base.seed + i`.
    pub base: SimulateConfig,
    /// Number of seeds (each: a new split, new asks, new variants).
    pub seeds: usize,
    /// Share of the evaluation stream that was asked before, half verbatim
    /// (repeat) and half reworded (variant); the rest is new.
    pub repeat_share: f32,
    /// Share of a question's content words a variant drops (at least one
    /// word is dropped and at least one kept).
    pub variant_drop: f32,
    /// Bootstrap resamples for the 95 % intervals.
    pub bootstrap: usize,
    /// Memory settings of the "after" engine (see [`ContextOptions`]).
    pub memory_weight: f32,
    pub memory_dup_weight: f32,
    pub memory_dup_threshold: f32,
    pub memory_unused_weight: f32,
    /// Close the loop (the default): from the second ask on, the train
    /// questions are asked with the memory built from the asks before, as
    /// `serve` reloads its memory. Open (`false`), every ask runs without
    /// memory: the protocol of the figures before this option existed.
    pub closed_loop: bool,
    /// Also train a relevance model on each seed's log (its features include
    /// the memory's, so it learns how far to trust it); the "after" engine
    /// uses it when the held-out gate passes. Closes the loop whatever
    /// `closed_loop` says.
    pub learn: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        let o = ContextOptions::default();
        Self {
            base: SimulateConfig::default(),
            seeds: 10,
            repeat_share: 0.35,
            variant_drop: 0.4,
            bootstrap: 2000,
            memory_weight: o.memory_weight,
            memory_dup_weight: o.memory_dup_weight,
            memory_dup_threshold: o.memory_dup_threshold,
            memory_unused_weight: o.memory_unused_weight,
            closed_loop: true,
            learn: false,
        }
    }
}

/// nDCG@10 of one kind of question, before (no memory) and after (memory
/// built from the log), as the mean over seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stratum {
    /// Questions evaluated, summed over seeds.
    pub questions: usize,
    pub before: f64,
    pub after: f64,
    pub delta: f64,
    /// 95 % paired bootstrap interval of `delta` (questions resampled
    /// within each seed and kind).
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// Two-sided paired bootstrap p-value of `delta` ≠ 0.
    pub p_value: f64,
    /// Questions whose nDCG@10 rose / fell (summed over seeds).
    pub improved: usize,
    pub worsened: usize,
    /// The most a usage memory built from the logged asks could reach
    /// (the ceilings of [`query_ndcgs`]; mean over seeds): for repeat and variant
    /// questions, and for the mix with new questions at `before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<f64>,
    /// The same with each question's own shown chunks only
    /// ([`Known::PerQuery`]): not a bound (a memory also links questions),
    /// but how much each question's own history holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_own: Option<f64>,
}

/// The strata of a stream evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Strata {
    pub new: Stratum,
    pub repeat: Stratum,
    pub variant: Stratum,
    /// `(1 − repeat_share)·new + repeat_share/2·(repeat + variant)`.
    pub mix: Stratum,
}

/// Whether the memory may serve: the mix must improve (lower 95 % bound of
/// its change > 0) and new questions must not fall (lower 95 % bound of
/// their change ≥ `-new_tolerance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryGate {
    pub passed: bool,
    pub reason: String,
}

/// The memory gate rule on a stream evaluation's strata (see [`MemoryGate`]);
/// the tolerance for new questions is 0.005.
pub fn memory_gate(s: &Strata, new_tolerance: f64) -> MemoryGate {
    let mix_ok = s.mix.ci95_low > 0.0;
    let new_ok = s.new.ci95_low >= -new_tolerance;
    let reason = format!(
        "mix {:+.4} (95 % low {:+.4}, must be > 0){}; new {:+.4} (95 % low {:+.4}, must be ≥ {:+.4}){}",
        s.mix.delta,
        s.mix.ci95_low,
        if mix_ok { "" } else { " FAILED" },
        s.new.delta,
        s.new.ci95_low,
        -new_tolerance,
        if new_ok { "" } else { " FAILED" },
    );
    MemoryGate {
        passed: mix_ok && new_ok,
        reason,
    }
}

/// One seed of a stream evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSeed {
    pub seed: u64,
    pub train_queries: usize,
    pub test_queries: usize,
    /// Train questions long enough to reword (two or more content words).
    pub variant_queries: usize,
    pub interactions_logged: usize,
    pub analyzer_vs_judgments: Prf,
    pub memory: Option<anectx_engine::MemoryStats>,
    /// Per-seed means (intervals are those of the run, not per seed).
    pub new: (f64, f64),
    pub repeat: (f64, f64),
    pub variant: (f64, f64),
    /// Up to three example variants `(question, variant)`.
    pub examples: Vec<(String, String)>,
    /// With [`StreamConfig::learn`]: the relevance model trained on this
    /// seed's log and the gate's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<StreamLearned>,
}

/// The relevance model one stream seed trained (see [`StreamConfig::learn`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamLearned {
    /// Interactions with a used and an unused shown chunk.
    pub groups: usize,
    /// Why no model was trained (too little data), if so.
    pub not_trained: Option<String>,
    pub gate: Option<GateReport>,
    /// Whether the "after" engine used the trained model.
    pub used: bool,
}

/// The result of [`simulate_stream`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReport {
    pub documents: usize,
    pub dense: bool,
    pub relevance_model: String,
    pub config: StreamConfig,
    pub strata: Strata,
    /// [`memory_gate`] with the tolerance (new ≥ −0.005).
    pub gate: MemoryGate,
    pub seeds: Vec<StreamSeed>,
}

/// Words a variant never keeps (they carry no content).
const STOP_WORDS: &[&str] = &[
    "a", "about", "also", "an", "and", "any", "are", "as", "at", "be", "been", "between", "by",
    "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "how", "i", "if",
    "in", "into", "is", "it", "its", "may", "my", "no", "not", "of", "on", "or", "our", "should",
    "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom",
    "why", "will", "with", "would", "you",
];

/// The content words of a question (lower-cased, stop words removed).
fn content_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .map(|w| w.trim_matches('-').to_lowercase())
        .filter(|w| !w.is_empty() && w.chars().any(char::is_alphabetic))
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// A reworded question by a fixed seeded rule: the content words, with
/// `ceil(drop · n)` of them dropped (at least one dropped, at least one
/// kept) and the rest shuffled. `None` for questions with fewer than two
/// content words, which cannot be reworded this way.
pub fn variant(query: &str, seed: u64, drop: f32) -> Option<String> {
    let words = content_words(query);
    let n = words.len();
    if n < 2 {
        return None;
    }
    let k = ((n as f64 * drop.clamp(0.0, 1.0) as f64).ceil() as usize).clamp(1, n - 1);
    let key = |tag: &str, i: usize| unit(seed, &format!("{tag}:{query}:{i}"));
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| key("drop", a).total_cmp(&key("drop", b)));
    let mut kept: Vec<usize> = idx[k..].to_vec();
    kept.sort_by(|&a, &b| key("order", a).total_cmp(&key("order", b)));
    // A shuffle that leaves the order unchanged is reversed, so the variant
    // is always reordered when it can be.
    if kept.len() > 1 && kept.windows(2).all(|w| w[0] < w[1]) {
        kept.reverse();
    }
    Some(
        kept.iter()
            .map(|&i| words[i].as_str())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// splitmix64 for bootstrap draws.
struct Mix64(u64);
impl Mix64 {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// Paired per-question scores of one kind in one seed.
#[derive(Debug, Clone, Default)]
struct Paired {
    before: Vec<f64>,
    after: Vec<f64>,
    /// the ceilings of [`query_ndcgs`] with [`Known::All`] and [`Known::PerQuery`]
    /// (repeat and variant questions only).
    ceiling: Vec<f64>,
    ceiling_own: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Strata with bootstrap intervals from per-seed paired scores
/// (`kinds[seed][kind]`, kinds new, repeat, variant).
fn strata(kinds: &[[Paired; 3]], repeat_share: f64, resamples: usize, seed: u64) -> Strata {
    let w = [1.0 - repeat_share, repeat_share / 2.0, repeat_share / 2.0];
    let seeds = kinds.len().max(1) as f64;
    let point =
        |k: usize, f: &dyn Fn(&Paired) -> f64| kinds.iter().map(|s| f(&s[k])).sum::<f64>() / seeds;
    let deltas: Vec<[Vec<f64>; 3]> = kinds
        .iter()
        .map(|s| {
            std::array::from_fn(|k| {
                s[k].after
                    .iter()
                    .zip(&s[k].before)
                    .map(|(a, b)| a - b)
                    .collect()
            })
        })
        .collect();
    let mut rng = Mix64(seed ^ 0xB007_57A9);
    let mut boot: [Vec<f64>; 4] = Default::default();
    for _ in 0..resamples {
        let mut m = [0f64; 3];
        for s in &deltas {
            for k in 0..3 {
                let d = &s[k];
                if d.is_empty() {
                    continue;
                }
                let mut acc = 0.0;
                for _ in 0..d.len() {
                    acc += d[rng.below(d.len())];
                }
                m[k] += acc / d.len() as f64 / seeds;
            }
        }
        for k in 0..3 {
            boot[k].push(m[k]);
        }
        boot[3].push((0..3).map(|k| w[k] * m[k]).sum());
    }
    let make = |k: usize, before: f64, after: f64, n: usize, up: usize, down: usize| {
        let b = &mut boot[k].clone();
        b.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if b.is_empty() {
                after - before
            } else {
                b[((p * (b.len() - 1) as f64).round() as usize).min(b.len() - 1)]
            }
        };
        let (le, ge) = (
            b.iter().filter(|&&x| x <= 0.0).count() as f64,
            b.iter().filter(|&&x| x >= 0.0).count() as f64,
        );
        Stratum {
            questions: n,
            before,
            after,
            delta: after - before,
            ci95_low: q(0.025),
            ci95_high: q(0.975),
            p_value: if b.is_empty() {
                1.0
            } else {
                (2.0 * le.min(ge) / b.len() as f64).min(1.0)
            },
            improved: up,
            worsened: down,
            ceiling: None,
            ceiling_own: None,
        }
    };
    let count = |k: usize, f: &dyn Fn(f64) -> bool| -> usize {
        deltas
            .iter()
            .map(|s| s[k].iter().filter(|&&d| f(d)).count())
            .sum()
    };
    let mut out = [Stratum::default(); 4];
    let mut mix_b = 0.0;
    let mut mix_a = 0.0;
    for k in 0..3 {
        let before = point(k, &|p| mean(&p.before));
        let after = point(k, &|p| mean(&p.after));
        mix_b += w[k] * before;
        mix_a += w[k] * after;
        let n: usize = kinds.iter().map(|s| s[k].before.len()).sum();
        out[k] = make(
            k,
            before,
            after,
            n,
            count(k, &|d| d > 1e-9),
            count(k, &|d| d < -1e-9),
        );
    }
    for (k, o) in out.iter_mut().enumerate().take(3).skip(1) {
        if kinds.iter().all(|s| !s[k].ceiling.is_empty()) {
            o.ceiling = Some(point(k, &|p| mean(&p.ceiling)));
        }
        if kinds.iter().all(|s| !s[k].ceiling_own.is_empty()) {
            o.ceiling_own = Some(point(k, &|p| mean(&p.ceiling_own)));
        }
    }
    let n_all = out[0].questions + out[1].questions + out[2].questions;
    out[3] = make(
        3,
        mix_b,
        mix_a,
        n_all,
        out[0].improved + out[1].improved + out[2].improved,
        out[0].worsened + out[1].worsened + out[2].worsened,
    );
    if let (Some(r), Some(v)) = (out[1].ceiling, out[2].ceiling) {
        out[3].ceiling = Some(w[0] * out[0].before + w[1] * r + w[2] * v);
    }
    if let (Some(r), Some(v)) = (out[1].ceiling_own, out[2].ceiling_own) {
        out[3].ceiling_own = Some(w[0] * out[0].before + w[1] * r + w[2] * v);
    }
    Strata {
        new: out[0],
        repeat: out[1],
        variant: out[2],
        mix: out[3],
    }
}

/// Trains a relevance model on the interactions logged after `first_id`
/// (one stream seed) and gates it against `current` on that log's held-out
/// questions, as a learning round does; returns the model when it passes.
fn learn_from_seed(
    engine: &Engine,
    current: &dyn RelevanceModel,
    b: &SimulateConfig,
    first_id: i64,
) -> Result<(StreamLearned, Option<Arc<dyn RelevanceModel>>)> {
    let mut ds = Dataset::from_log(&engine.store().db, ANALYZER_VERSION)?;
    ds.groups.retain(|g| g.interaction_id > first_id);
    let mut out = StreamLearned {
        groups: ds.groups.len(),
        not_trained: None,
        gate: None,
        used: false,
    };
    let cfg = crate::round::RoundConfig {
        train: b.train.clone(),
        gate: b.gate.clone(),
        promote: false,
    };
    let model = match train_and_gate(&ds, current, &cfg, &format!("stream-{first_id}"))? {
        Trial::NotTrained(why) => {
            out.not_trained = Some(why);
            return Ok((out, None));
        }
        Trial::Trained(t) => {
            out.used = t.gate.passed;
            out.gate = Some(t.gate);
            t.model
        }
    };
    let model = out.used.then(|| model.into_arc());
    Ok((out, model))
}

/// The stream evaluation. For each seed: split the judged queries into
/// train and test; ask every train question `asks_per_query` times through
/// the loop (context with exploration, simulated LLM answer, logged, labelled
/// by the analyzer from the answer text only); then measure nDCG@10 on three
/// kinds of questions with no memory (before) and with the usage memory
/// built from this seed's interactions (after): **new** (the test questions,
/// never asked), **repeat** (the train questions verbatim) and **variant**
/// (the train questions reworded by [`variant`]). The relevance model is the
/// engine's current one throughout; judgments are only used by the simulated
/// LLM (as the user's information need) and for scoring.
pub fn simulate_stream(
    engine: &Engine,
    coll: &Collection,
    analyzer: &Analyzer,
    cfg: &StreamConfig,
    progress: &dyn SimProgress,
) -> Result<StreamReport> {
    let b = &cfg.base;
    let paths = engine.store().db.chunk_paths()?;
    let opts = ContextOptions {
        memory_weight: cfg.memory_weight,
        memory_dup_weight: cfg.memory_dup_weight,
        memory_dup_threshold: cfg.memory_dup_threshold,
        memory_unused_weight: cfg.memory_unused_weight,
        ..b.context_options()
    };
    let eval_opts = ContextOptions {
        explore: 0.0,
        ..opts.clone()
    };
    let saved = engine.memory();
    let mut kinds: Vec<[Paired; 3]> = Vec::new();
    let mut seeds = Vec::new();
    for s in 0..cfg.seeds.max(1) {
        let seed = b.seed.wrapping_add(s as u64);
        let (train_q, test_q) = split_queries(coll, seed, b.train_share)?;
        let variants: Vec<(String, String)> = train_q
            .iter()
            .filter_map(|(id, t)| Some((id.clone(), variant(t, seed, cfg.variant_drop)?)))
            .collect();
        engine.set_memory(None);
        let mut sim = SimLlm::new(SimLlmConfig {
            seed: b.sim.seed ^ seed,
            ..b.sim.clone()
        });
        progress.stage(
            &format!("seed {seed}: asking train questions"),
            (train_q.len() * b.asks_per_query) as u64,
        );
        let (mut vs_judg, mut vs_sim) = (Prf::default(), Prf::default());
        let prefix = format!("stream-{seed}-");
        let mut logged = 0;
        // Chunks shown for any train question over all asks (all a memory
        // built from this log can know), and per question (for the ceilings).
        let mut shown: HashSet<u64> = HashSet::new();
        let mut shown_by_q: HashMap<String, HashSet<u64>> = HashMap::new();
        let first_id = engine.store().db.last_interaction_id()?;
        for ask in 0..b.asks_per_query {
            if (cfg.closed_loop || cfg.learn) && ask > 0 {
                // A server reloads its memory from the log between asks.
                label_log(&engine.store().db, analyzer)?;
                let m = engine.build_memory(
                    ANALYZER_VERSION,
                    &anectx_engine::MemoryConfig::default(),
                    &|it| it.uid.starts_with(&prefix),
                )?;
                engine.set_memory(m.map(Arc::new));
            }
            for (qid, text) in &train_q {
                let o = ContextOptions {
                    explore_seed: Some(seed ^ ((1000 + ask) as u64)),
                    ..opts.clone()
                };
                let (_, ids) = ask_once(
                    engine,
                    coll,
                    &paths,
                    &mut sim,
                    analyzer,
                    (qid.as_str(), text.as_str()),
                    &o,
                    format!("{prefix}{ask}-{qid}"),
                    InteractionMeta {
                        query_id: Some(qid.clone()),
                        stream_seed: Some(seed),
                        ..InteractionMeta::default()
                    },
                    &mut vs_judg,
                    &mut vs_sim,
                )?;
                shown.extend(ids.iter().copied());
                shown_by_q.entry(qid.clone()).or_default().extend(ids);
                logged += 1;
                progress.inc();
            }
        }
        progress.stage(&format!("seed {seed}: labelling, memory, evaluation"), 7);
        engine.set_memory(None);
        label_log(&engine.store().db, analyzer)?;
        progress.inc();
        let embed = |qs: &[(String, String)]| -> Result<Option<Vec<f32>>> {
            let texts: Vec<&str> = qs.iter().map(|q| q.1.as_str()).collect();
            Ok(engine.embed_queries(&texts)?)
        };
        let sets = [&test_q, &train_q, &variants];
        let vecs: Vec<Option<Vec<f32>>> = sets
            .iter()
            .map(|q| embed(q.as_slice()))
            .collect::<Result<_>>()?;
        let mut paired: [Paired; 3] = Default::default();
        for (k, qs) in sets.iter().enumerate() {
            paired[k].before =
                query_ndcgs(engine, coll, qs, vecs[k].as_deref(), &eval_opts, b.k, None)?;
            if k > 0 {
                let v = vecs[k].as_deref();
                paired[k].ceiling = query_ndcgs(
                    engine,
                    coll,
                    qs,
                    v,
                    &eval_opts,
                    b.k,
                    Some(Known::All(&shown)),
                )?;
                paired[k].ceiling_own = query_ndcgs(
                    engine,
                    coll,
                    qs,
                    v,
                    &eval_opts,
                    b.k,
                    Some(Known::PerQuery(&shown_by_q)),
                )?;
            }
            progress.inc();
        }
        let memory = engine.build_memory(
            ANALYZER_VERSION,
            &anectx_engine::MemoryConfig::default(),
            &|it| it.uid.starts_with(&prefix),
        )?;
        let mstats = memory.as_ref().map(|m| m.stats().clone());
        engine.set_memory(memory.map(Arc::new));
        let current = engine.relevance_model();
        let learned = if cfg.learn {
            let (learned, model) = learn_from_seed(engine, current.as_ref(), b, first_id)?;
            if let Some(m) = model {
                engine.set_relevance_model(m);
            }
            Some(learned)
        } else {
            None
        };
        let after: Result<Vec<Vec<f64>>> = sets
            .iter()
            .enumerate()
            .map(|(k, qs)| {
                let v = query_ndcgs(engine, coll, qs, vecs[k].as_deref(), &eval_opts, b.k, None);
                progress.inc();
                v
            })
            .collect();
        engine.set_relevance_model(current);
        engine.set_memory(None);
        for (k, a) in after?.into_iter().enumerate() {
            paired[k].after = a;
        }
        let ex: HashMap<&str, &str> = train_q
            .iter()
            .map(|(i, t)| (i.as_str(), t.as_str()))
            .collect();
        seeds.push(StreamSeed {
            seed,
            train_queries: train_q.len(),
            test_queries: test_q.len(),
            variant_queries: variants.len(),
            interactions_logged: logged,
            analyzer_vs_judgments: vs_judg.finish(),
            memory: mstats,
            new: (mean(&paired[0].before), mean(&paired[0].after)),
            repeat: (mean(&paired[1].before), mean(&paired[1].after)),
            variant: (mean(&paired[2].before), mean(&paired[2].after)),
            examples: variants
                .iter()
                .take(3)
                .map(|(id, v)| (ex.get(id.as_str()).unwrap_or(&"").to_string(), v.clone()))
                .collect(),
            learned,
        });
        kinds.push(paired);
    }
    engine.set_memory(saved);
    let strata = strata(
        &kinds,
        cfg.repeat_share.clamp(0.0, 1.0) as f64,
        cfg.bootstrap,
        b.seed,
    );
    Ok(StreamReport {
        documents: coll.docs.len(),
        dense: engine.dense_enabled(),
        relevance_model: engine.relevance_model().version(),
        config: cfg.clone(),
        gate: memory_gate(&strata, 0.005),
        strata,
        seeds,
    })
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn variants_drop_at_least_thirty_percent_and_reorder() {
        let q = "what are the structural and aeroelastic problems associated with flight \
                 of high speed aircraft";
        let words = content_words(q);
        let v = variant(q, 3, 0.4).unwrap();
        let kept: Vec<&str> = v.split(' ').collect();
        assert!(kept.len() as f64 <= 0.7 * words.len() as f64, "{v}");
        assert!(kept.iter().all(|w| words.iter().any(|x| x == w)));
        let order: Vec<usize> = kept
            .iter()
            .map(|w| words.iter().position(|x| x == w).unwrap())
            .collect();
        assert!(order.windows(2).any(|w| w[0] > w[1]), "not reordered: {v}");
        assert_eq!(variant(q, 3, 0.4), Some(v.clone()), "seeded");
        assert_eq!(variant("the aircraft", 3, 0.4), None);
        assert_eq!(
            variant("wing flutter", 3, 0.4).unwrap().split(' ').count(),
            1
        );
    }

    #[test]
    fn strata_mix_weights_and_interval_cover_the_delta() {
        let p = |b: Vec<f64>, a: Vec<f64>| Paired {
            before: b,
            after: a,
            ceiling: Vec::new(),
            ceiling_own: Vec::new(),
        };
        let kinds = vec![[
            p(vec![0.5; 20], vec![0.5; 20]),
            p(
                vec![0.4; 10],
                (0..10).map(|i| 0.4 + 0.02 * i as f64).collect(),
            ),
            p(vec![0.2; 10], vec![0.3; 10]),
        ]];
        let s = strata(&kinds, 0.4, 500, 1);
        assert!(s.new.delta.abs() < 1e-12 && s.new.ci95_low.abs() < 1e-12);
        assert!((s.variant.delta - 0.1).abs() < 1e-9);
        assert!(s.repeat.ci95_low < s.repeat.delta && s.repeat.delta < s.repeat.ci95_high);
        let mix = 0.6 * s.new.delta + 0.2 * s.repeat.delta + 0.2 * s.variant.delta;
        assert!((s.mix.delta - mix).abs() < 1e-9);
        assert!(s.mix.ci95_low > 0.0 && s.variant.p_value < 0.01);
        assert!(memory_gate(&s, 0.005).passed);
        assert_eq!(s.repeat.ceiling, None, "no ceilings were measured");
        // Ceilings: per kind, and for the mix with new questions at `before`.
        let mut with = kinds.clone();
        with[0][1].ceiling = vec![0.7; 10];
        with[0][2].ceiling = vec![0.5; 10];
        let c = strata(&with, 0.4, 10, 1);
        assert!((c.repeat.ceiling.unwrap() - 0.7).abs() < 1e-9);
        assert!((c.mix.ceiling.unwrap() - (0.6 * 0.5 + 0.2 * 0.7 + 0.2 * 0.5)).abs() < 1e-9);
        // New questions that fall refuse the memory, whatever the mix does.
        let mut worse = kinds.clone();
        worse[0][0].after = vec![0.49; 20];
        let g = memory_gate(&strata(&worse, 0.4, 500, 1), 0.005);
        assert!(
            !g.passed && g.reason.contains("new -0.0100"),
            "{}",
            g.reason
        );
    }
}
