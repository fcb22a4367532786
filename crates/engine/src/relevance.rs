//! Relevance models: score fused candidates before diversity and packing.
//!
//! A model is versioned and pluggable: the [`crate::Engine`] holds it behind
//! a lock and [`crate::Engine::set_relevance_model`] swaps it while queries
//! run. Until a learned model exists, [`FusionRelevance`] combines the fused
//! rank with normalised BM25 and dense scores.

use anectx_store::ChunkRecord;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Retrieval features of one candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Reciprocal-rank-fusion score over the lexical and dense lists.
    pub rrf: f32,
    /// Raw BM25 score (absent when not in the lexical list).
    pub bm25: Option<f32>,
    /// 1-based rank in the lexical list.
    pub bm25_rank: Option<u32>,
    /// Cosine similarity to the query (absent when not in the dense list).
    pub dense: Option<f32>,
    /// 1-based rank in the dense list.
    pub dense_rank: Option<u32>,
    /// Chunk length in pre-tokens.
    pub tokens: u32,
    /// Share of the query's analysed terms found in the chunk (0..=1).
    #[serde(default)]
    pub coverage: f32,
    /// Share of the query's adjacent term pairs found adjacent in the chunk.
    #[serde(default)]
    pub bigram_coverage: f32,
    /// Share of the query's terms found in the chunk's heading or first line.
    #[serde(default)]
    pub title_coverage: f32,
    /// Query–chunk cosine from a learned relevance model's own fine-tuned
    /// embedder, when it computed one (the engine leaves it empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapted: Option<f32>,
    /// BM25 score of the usage memory's "asked as" field (the logged
    /// questions whose answers used this chunk); absent without a memory or
    /// a match. Models trained before the memory existed never read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<f32>,
    /// 1-based rank in the "asked as" list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_rank: Option<u32>,
    /// Near-duplicate logged questions: Σ similarity × use weight per ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dup_used: Option<f32>,
    /// Highest similarity of a near-duplicate question that used the chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dup_similarity: Option<f32>,
    /// Near-duplicate questions that were shown this chunk and never used it
    /// (Σ similarity × share of their asks): negative evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dup_unused: Option<f32>,
}

/// A candidate chunk with its features.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub chunk: ChunkRecord,
    pub features: Features,
}

/// Scores candidates for a query; higher is more relevant.
pub trait RelevanceModel: Send + Sync {
    /// A version string recorded with every answer (e.g. `fusion-v2(…)`).
    fn version(&self) -> String;
    /// One score per candidate, in order.
    fn score(&self, query: &str, candidates: &[Candidate]) -> Result<Vec<f32>>;
}

/// The default model: `w_rrf · rrf/max_rrf + w_bm25 · bm25/max_bm25 +
/// w_dense · max(dense, 0)/max_dense + w_memory · dup_used/max_dup_used`,
/// each term normalised over the candidate set, so the score lies in
/// `[0, 1]`, or up to `1 + w_memory` when logged near-duplicate questions
/// used a candidate.
///
/// The usage memory's near-duplicate evidence (`dup_used`) is a raw score
/// beside BM25's and the embedder's, with the same weight: through the RRF
/// term alone, a chunk the same question used before tied with one that
/// merely ranks first in both retrievers. Without such evidence (new
/// questions, no memory) the last term is 0 and the score is as before.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionRelevance {
    pub w_rrf: f32,
    pub w_bm25: f32,
    pub w_dense: f32,
    #[serde(default)]
    pub w_memory: f32,
}

impl Default for FusionRelevance {
    fn default() -> Self {
        Self {
            w_rrf: 0.6,
            w_bm25: 0.2,
            w_dense: 0.2,
            w_memory: 0.2,
        }
    }
}

impl RelevanceModel for FusionRelevance {
    fn version(&self) -> String {
        format!(
            "fusion-v2(rrf={},bm25={},dense={},memory={})",
            self.w_rrf, self.w_bm25, self.w_dense, self.w_memory
        )
    }

    fn score(&self, _query: &str, c: &[Candidate]) -> Result<Vec<f32>> {
        let max = |f: &dyn Fn(&Features) -> f32| {
            c.iter()
                .map(|x| f(&x.features))
                .fold(0f32, f32::max)
                .max(f32::MIN_POSITIVE)
        };
        let m_rrf = max(&|f| f.rrf);
        let m_bm = max(&|f| f.bm25.unwrap_or(0.0));
        let m_de = max(&|f| f.dense.unwrap_or(0.0).max(0.0));
        let m_dup = max(&|f| f.dup_used.unwrap_or(0.0).max(0.0));
        Ok(c.iter()
            .map(|x| {
                let f = &x.features;
                self.w_rrf * f.rrf / m_rrf
                    + self.w_bm25 * f.bm25.unwrap_or(0.0) / m_bm
                    + self.w_dense * f.dense.unwrap_or(0.0).max(0.0) / m_de
                    + self.w_memory * f.dup_used.unwrap_or(0.0).max(0.0) / m_dup
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: u64, rrf: f32, bm25: f32, dense: f32, dup_used: Option<f32>) -> Candidate {
        Candidate {
            chunk: ChunkRecord {
                id,
                doc_id: id as i64,
                path: format!("d{id}.md"),
                ord: 0,
                text: String::new(),
                heading: None,
                byte_start: 0,
                byte_end: 0,
                line_start: 1,
                line_end: 1,
                tokens: 1,
            },
            features: Features {
                rrf,
                bm25: Some(bm25),
                dense: Some(dense),
                dup_used,
                ..Features::default()
            },
        }
    }

    #[test]
    fn what_the_same_question_used_before_outranks_a_chunk_that_only_matches_best() {
        // A ranks first in both retrievers; B matches less well, and the
        // answers to a near-duplicate question used it.
        let c = [
            cand(1, 0.04, 10.0, 0.9, None),
            cand(2, 0.04, 6.0, 0.6, Some(0.8)),
        ];
        let s = FusionRelevance::default().score("q", &c).unwrap();
        assert!(s[1] > s[0], "{s:?}");
        // By the formula: 0.6 + 0.2 + 0.2, and 0.6 + 0.2·0.6 + 0.2·(0.6/0.9)
        // + 0.2·(0.8/0.8).
        assert!((s[0] - 1.0).abs() < 1e-6, "{s:?}");
        assert!(
            (s[1] - (0.6 + 0.12 + 0.2 * 0.6 / 0.9 + 0.2)).abs() < 1e-6,
            "{s:?}"
        );
    }

    #[test]
    fn without_near_duplicate_evidence_the_scores_are_the_three_term_fusion() {
        let c = [
            cand(1, 0.04, 10.0, 0.9, None),
            cand(2, 0.03, 6.0, 0.6, None),
            cand(3, 0.01, 0.0, -0.2, Some(0.0)),
        ];
        let with = FusionRelevance::default().score("q", &c).unwrap();
        let without = FusionRelevance {
            w_memory: 0.0,
            ..FusionRelevance::default()
        }
        .score("q", &c)
        .unwrap();
        assert_eq!(with, without);
        assert!((with[1] - (0.6 * 0.75 + 0.2 * 0.6 + 0.2 * 0.6 / 0.9)).abs() < 1e-6);
    }
}
