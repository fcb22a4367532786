//! The interaction record: the one mapping from a context selection plus an
//! answer to the [`LoggedInteraction`] the learning loop reads.
//!
//! The engine produces a [`SelectionTrace`] with every selection (which
//! relevance model ranked, whether the call explored, every scored candidate
//! with its features and propensity). Whoever shows the chunks (the HTTP
//! server, MCP, `simulate`) keeps the trace, adds what it knows about the
//! answer ([`Answer`]) and calls [`record`]. Nothing travels as loose JSON.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

pub use anectx_store::{InteractionKind, InteractionMeta, LoggedCandidate, LoggedInteraction};

use crate::engine::{ChunkScores, ContextResult, PoolCandidate, RetrievalMode};

/// What a selection leaves for the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectionTrace {
    /// The relevance model that ranked the candidates.
    pub relevance_model: String,
    /// Whether the call explored.
    pub explored: bool,
    pub mode: Option<RetrievalMode>,
    pub embedder: Option<String>,
    /// Fused candidates scored.
    pub candidates: usize,
    /// Every scored candidate, shown or not.
    pub pool: Vec<PoolCandidate>,
}

impl SelectionTrace {
    /// The trace of an engine selection.
    pub fn of(r: &ContextResult) -> Self {
        Self {
            relevance_model: r.relevance_model.clone(),
            explored: r.explored,
            mode: Some(r.mode),
            embedder: r.embedder.clone(),
            candidates: r.candidates,
            pool: r.pool.clone(),
        }
    }

    /// Keeps only `shown` as shown: chunks cut after the selection (e.g. by
    /// a client's `max_chunks`) were not shown after all.
    pub fn keep_shown(&mut self, shown: &HashSet<u64>) {
        for p in &mut self.pool {
            if !shown.contains(&p.chunk_id) {
                p.shown = None;
            }
        }
    }
}

/// One chunk as the reader saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownChunk {
    /// The `[n]` marker.
    pub marker: u32,
    /// The store's chunk id; `None` for a provider without numeric ids
    /// (then `label` is listed in the meta's `unlogged_chunks`).
    pub chunk_id: Option<u64>,
    /// The id the client saw.
    pub label: String,
    pub text: String,
    /// The final relevance score.
    pub score: f32,
    /// Probability of being shown (1 when unknown).
    pub propensity: Option<f32>,
    /// Per-feature scores, when known.
    pub scores: Option<ChunkScores>,
}

impl ShownChunk {
    /// The chunks of an engine selection as shown.
    pub fn of(r: &ContextResult) -> Vec<Self> {
        r.chunks
            .iter()
            .map(|c| Self {
                marker: c.marker,
                chunk_id: Some(c.chunk_id),
                label: c.chunk_id.to_string(),
                text: c.text.clone(),
                score: c.scores.relevance,
                propensity: Some(c.propensity),
                scores: Some(c.scores.clone()),
            })
            .collect()
    }
}

/// What is known about the answer to one selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Unique id handed to the client.
    pub uid: String,
    pub kind: InteractionKind,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub query: String,
    /// The LLM's answer, when there is one.
    pub response: Option<String>,
    /// `false` when the answer was cut short.
    pub complete: bool,
    /// Latency, upstream status and the like; the selection's own fields
    /// (mode, embedder, candidates, unlogged chunks) are filled by [`record`].
    pub meta: InteractionMeta,
}

/// The logged interaction for `answer` to a selection that showed `shown`
/// and left `trace` (none for a provider without one).
///
/// Candidates come from the trace's pool (every scored candidate, with
/// relevance, features and propensity); a candidate's `position` is the
/// marker it was actually shown with (authoritative over the pool's
/// `shown`) and its `text` the text shown. Shown chunks missing from the
/// pool are added after it.
pub fn record(
    answer: Answer,
    shown: &[ShownChunk],
    trace: Option<&SelectionTrace>,
) -> LoggedInteraction {
    let mut meta = answer.meta;
    let mut by_id: HashMap<u64, &ShownChunk> = HashMap::new();
    let mut order = Vec::new();
    for c in shown {
        match c.chunk_id {
            Some(id) => {
                if by_id.insert(id, c).is_none() {
                    order.push(id);
                }
            }
            None => meta.unlogged_chunks.push(c.label.clone()),
        }
    }
    let mut candidates = Vec::new();
    let mut seen = HashSet::new();
    for p in trace.map(|t| t.pool.as_slice()).unwrap_or_default() {
        if !seen.insert(p.chunk_id) {
            continue;
        }
        let s = by_id.get(&p.chunk_id);
        let score = Some(p.relevance)
            .filter(|x| x.is_finite())
            .or(s.map(|c| c.score).filter(|x| x.is_finite()))
            .unwrap_or(0.0);
        candidates.push(LoggedCandidate {
            chunk_id: p.chunk_id,
            position: s.map(|c| c.marker),
            score,
            propensity: clamp_prob(p.propensity),
            features: features_with_rank(p),
            text: s.map(|c| c.text.clone()),
        });
    }
    for id in order {
        if seen.contains(&id) {
            continue;
        }
        let c = by_id[&id];
        candidates.push(LoggedCandidate {
            chunk_id: id,
            position: Some(c.marker),
            score: if c.score.is_finite() { c.score } else { 0.0 },
            propensity: clamp_prob(c.propensity.unwrap_or(1.0)),
            features: c
                .scores
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(serde_json::Value::Null),
            text: Some(c.text.clone()),
        });
    }
    if let Some(t) = trace {
        meta.mode = t.mode.map(|m| m.as_str().to_string());
        meta.embedder = t.embedder.clone();
        meta.candidates = Some(t.candidates as u64);
    }
    LoggedInteraction {
        uid: answer.uid,
        ts_ms: answer.ts_ms,
        kind: answer.kind,
        query: answer.query,
        model_version: trace.map(|t| t.relevance_model.clone()).unwrap_or_default(),
        explored: trace.is_some_and(|t| t.explored),
        response: answer.response,
        complete: answer.complete,
        meta,
        candidates,
    }
}

/// The pool candidate's features, with its relevance rank (the position it
/// had in the ranking before packing and exploration).
fn features_with_rank(p: &PoolCandidate) -> serde_json::Value {
    let mut f = serde_json::to_value(&p.features).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(m) = &mut f {
        m.entry("relevance_rank")
            .or_insert(serde_json::Value::from(p.relevance_rank));
    }
    f
}

fn clamp_prob(p: f32) -> f32 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relevance::Features;

    fn shown(marker: u32, id: Option<u64>, label: &str, propensity: f32) -> ShownChunk {
        ShownChunk {
            marker,
            chunk_id: id,
            label: label.into(),
            text: format!("text of {label}"),
            score: 0.5,
            propensity: Some(propensity),
            scores: Some(ChunkScores {
                relevance: 0.5,
                relevance_rank: 1,
                mmr_rank: 1,
                features: Features {
                    rrf: 0.1,
                    ..Features::default()
                },
            }),
        }
    }

    fn pool(
        id: u64,
        relevance: f32,
        rank: u32,
        rrf: f32,
        at: Option<u32>,
        p: f32,
    ) -> PoolCandidate {
        PoolCandidate {
            chunk_id: id,
            relevance,
            relevance_rank: rank,
            features: Features {
                rrf,
                ..Features::default()
            },
            shown: at,
            propensity: p,
        }
    }

    fn answer() -> Answer {
        Answer {
            uid: "1-2-3".into(),
            kind: InteractionKind::Context,
            ts_ms: 77,
            query: "q".into(),
            response: None,
            complete: true,
            meta: InteractionMeta {
                latency_ms: Some(4),
                ..InteractionMeta::default()
            },
        }
    }

    #[test]
    fn maps_the_pool_with_shown_positions_texts_and_propensities() {
        let trace = SelectionTrace {
            relevance_model: "fusion-v1".into(),
            explored: true,
            mode: Some(RetrievalMode::Bm25),
            embedder: None,
            candidates: 3,
            pool: vec![
                pool(9, 0.9, 1, 0.2, Some(2), 0.8),
                pool(4, 0.7, 2, 0.1, None, 0.1),
                pool(5, 0.6, 3, 0.05, Some(1), 0.1),
            ],
        };
        // Chunk 9 shown at [2], chunk 5 (an explored runner-up) at [1].
        let l = record(
            answer(),
            &[shown(1, Some(5), "5", 0.1), shown(2, Some(9), "9", 0.8)],
            Some(&trace),
        );
        assert_eq!(l.uid, "1-2-3");
        assert_eq!(l.model_version, "fusion-v1");
        assert!(l.explored);
        assert_eq!(l.meta.mode.as_deref(), Some("bm25"));
        assert_eq!(l.meta.latency_ms, Some(4));
        assert_eq!(l.meta.candidates, Some(3));
        let ids: Vec<u64> = l.candidates.iter().map(|c| c.chunk_id).collect();
        assert_eq!(ids, vec![9, 4, 5]);
        assert_eq!(l.candidates[0].position, Some(2));
        assert_eq!(l.candidates[1].position, None);
        assert_eq!(l.candidates[1].text, None);
        assert_eq!(l.candidates[2].position, Some(1));
        assert_eq!(l.candidates[2].text.as_deref(), Some("text of 5"));
        assert!((l.candidates[0].propensity - 0.8).abs() < 1e-6);
        assert!((l.candidates[1].score - 0.7).abs() < 1e-6);
        assert_eq!(l.candidates[0].features["relevance_rank"], 1);
        assert!((l.candidates[0].features["rrf"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    }

    #[test]
    fn without_a_pool_logs_the_shown_chunks_and_names_unloggable_ids() {
        let l = record(
            answer(),
            &[shown(1, Some(12), "12", 1.0), shown(2, None, "mem:3", 1.0)],
            None,
        );
        assert_eq!(l.candidates.len(), 1);
        assert_eq!(l.candidates[0].chunk_id, 12);
        assert_eq!(l.candidates[0].position, Some(1));
        assert!((l.candidates[0].features["rrf"].as_f64().unwrap() - 0.1).abs() < 1e-6);
        assert_eq!(l.meta.unlogged_chunks, vec!["mem:3".to_string()]);
        assert_eq!(l.model_version, "");
        assert!(!l.explored);
    }

    #[test]
    fn chunks_cut_after_the_selection_are_not_logged_as_shown() {
        let mut trace = SelectionTrace {
            pool: vec![
                pool(1, 0.9, 1, 0.2, Some(1), 1.0),
                pool(2, 0.8, 2, 0.1, Some(2), 1.0),
            ],
            ..SelectionTrace::default()
        };
        trace.keep_shown(&[1].into_iter().collect());
        assert_eq!(trace.pool[0].shown, Some(1));
        assert_eq!(trace.pool[1].shown, None);
        let l = record(answer(), &[shown(1, Some(1), "1", 1.0)], Some(&trace));
        assert_eq!(l.candidates[1].position, None);
        assert_eq!(l.candidates[1].text, None);
    }
}
