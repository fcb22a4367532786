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
    /// A version string recorded with every answer (e.g. `fusion-v1`).
    fn version(&self) -> String;
    /// One score per candidate, in order.
    fn score(&self, query: &str, candidates: &[Candidate]) -> Result<Vec<f32>>;
}

/// The default model: `w_rrf · rrf/max_rrf + w_bm25 · bm25/max_bm25 +
/// w_dense · max(dense, 0)/max_dense`, each term normalised over the
/// candidate set so the score lies in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionRelevance {
    pub w_rrf: f32,
    pub w_bm25: f32,
    pub w_dense: f32,
}

impl Default for FusionRelevance {
    fn default() -> Self {
        Self {
            w_rrf: 0.6,
            w_bm25: 0.2,
            w_dense: 0.2,
        }
    }
}

impl RelevanceModel for FusionRelevance {
    fn version(&self) -> String {
        format!(
            "fusion-v1(rrf={},bm25={},dense={})",
            self.w_rrf, self.w_bm25, self.w_dense
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
        Ok(c.iter()
            .map(|x| {
                let f = &x.features;
                self.w_rrf * f.rrf / m_rrf
                    + self.w_bm25 * f.bm25.unwrap_or(0.0) / m_bm
                    + self.w_dense * f.dense.unwrap_or(0.0).max(0.0) / m_de
            })
            .collect())
    }
}
