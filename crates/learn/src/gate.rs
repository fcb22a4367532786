//! The promotion gate: a candidate replaces the serving model only if it is
//! not worse on held-out interactions (and, when the caller adds one, on an
//! evaluation collection).

use anectx_engine::RelevanceModel;
use serde::{Deserialize, Serialize};

use crate::train::{evaluate, query_key, Group};
use crate::Result;

/// Settings of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    /// The candidate may be at most this much below the current model
    /// (0 = must be at least as good).
    pub tolerance: f64,
    /// Fewer held-out interactions than this refuses promotion.
    pub min_held_out: usize,
    /// Fewer distinct held-out questions than this refuses promotion: a
    /// comparison on a handful of questions is noise, and measured on the
    /// quickstart sample (6 gate questions) it passed a candidate that was
    /// worse on new questions.
    pub min_questions: usize,
    /// Inverse-propensity weights are clipped at this value.
    pub ips_clip: f32,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            tolerance: 0.0,
            min_held_out: 5,
            min_questions: 8,
            ips_clip: 2.0,
        }
    }
}

/// A gate decision with the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub metric: String,
    pub held_out_interactions: usize,
    /// Distinct questions among them.
    #[serde(default)]
    pub held_out_questions: usize,
    pub candidate: f64,
    pub current: f64,
    pub current_version: String,
    /// Evaluation-collection nDCG@10 `(candidate, current)` when checked.
    pub eval: Option<(f64, f64)>,
    pub passed: bool,
    pub reason: String,
}

/// Compares `candidate` with `current` on held-out interactions.
pub fn gate(
    candidate: &dyn RelevanceModel,
    current: &dyn RelevanceModel,
    held_out: &[&Group],
    cfg: &GateConfig,
) -> Result<GateReport> {
    let cand = evaluate(candidate, held_out, cfg.ips_clip)?;
    let cur = evaluate(current, held_out, cfg.ips_clip)?;
    let questions = held_out
        .iter()
        .map(|g| query_key(&g.query))
        .collect::<std::collections::HashSet<_>>()
        .len();
    let (passed, reason) = if held_out.len() < cfg.min_held_out {
        (
            false,
            format!(
                "only {} held-out interactions (need {})",
                held_out.len(),
                cfg.min_held_out
            ),
        )
    } else if questions < cfg.min_questions {
        (
            false,
            format!(
                "only {questions} distinct held-out questions (need {}); log more questions",
                cfg.min_questions
            ),
        )
    } else if cand + cfg.tolerance >= cur {
        (
            true,
            format!("held-out IPS-nDCG@10 {cand:.4} ≥ current {cur:.4}"),
        )
    } else {
        (
            false,
            format!("held-out IPS-nDCG@10 {cand:.4} < current {cur:.4}"),
        )
    };
    Ok(GateReport {
        metric: "ips_ndcg10_pool".into(),
        held_out_interactions: held_out.len(),
        held_out_questions: questions,
        candidate: cand,
        current: cur,
        current_version: current.version(),
        eval: None,
        passed,
        reason,
    })
}

impl GateReport {
    /// Adds an evaluation-collection check; fails the gate when the
    /// candidate is worse there beyond `tolerance`.
    pub fn with_eval(mut self, candidate: f64, current: f64, tolerance: f64) -> Self {
        self.eval = Some((candidate, current));
        if self.passed && candidate + tolerance < current {
            self.passed = false;
            self.reason = format!(
                "{}; but evaluation nDCG@10 {candidate:.4} < current {current:.4}",
                self.reason
            );
        }
        self
    }
}
