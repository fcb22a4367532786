//! Feature vectors of candidates for the learned relevance model.
//!
//! Features come from the retrieval signals the engine logs with every
//! candidate ([`anectx_engine::Features`]), normalised over the candidate
//! set of one query so that a model trained on one corpus transfers to
//! queries with different score scales. Both serving and training compute
//! them from the same inputs, so a logged interaction replays exactly.

use anectx_engine::Features;

/// Number of features per candidate.
pub const N_FEATURES: usize = 20;

/// Features of models trained before the usage memory's features existed
/// (their files list exactly these first names; see
/// [`crate::model::FeatureModel::from_file`]).
pub const LEGACY_FEATURES: usize = 15;

/// Feature names, in vector order (stored with every model).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "rrf_norm",
    "bm25_norm",
    "bm25_present",
    "bm25_rank",
    "dense",
    "dense_norm",
    "dense_present",
    "dense_rank",
    "dense_margin",
    "coverage",
    "bigram_coverage",
    "title_coverage",
    "log_tokens",
    "adapted_dense",
    "adapted_margin",
    // The usage memory (zero without a memory or without evidence): how far
    // to trust it is learned from what the answers used.
    "memory_norm",
    "memory_rank",
    "dup_used",
    "dup_similarity",
    "dup_unused",
];

/// Rank positions beyond this count as "far" (the logged lists hold 50+).
const RANK_CAP: f32 = 100.0;

fn rank_feature(rank: Option<u32>) -> f32 {
    match rank {
        Some(r) => 1.0 - (1.0 + (r as f32).min(RANK_CAP)).ln() / (1.0 + RANK_CAP).ln(),
        None => 0.0,
    }
}

/// Feature vectors for one query's candidate set.
pub fn features(cands: &[&Features]) -> Vec<[f32; N_FEATURES]> {
    let max = |f: &dyn Fn(&Features) -> f32| {
        cands
            .iter()
            .map(|x| f(x))
            .fold(0f32, f32::max)
            .max(f32::MIN_POSITIVE)
    };
    let m_rrf = max(&|f| f.rrf);
    let m_bm = max(&|f| f.bm25.unwrap_or(0.0));
    let m_de = max(&|f| f.dense.unwrap_or(0.0).max(0.0));
    let m_mem = max(&|f| f.memory.unwrap_or(0.0).max(0.0));
    // The adapter's cosine, or the retrieval cosine for models without one.
    let adapted = |f: &Features| f.adapted.or(f.dense);
    let m_ad = cands
        .iter()
        .filter_map(|f| adapted(f))
        .fold(f32::NEG_INFINITY, f32::max);
    cands
        .iter()
        .map(|f| {
            let dense = f.dense.unwrap_or(0.0);
            [
                f.rrf / m_rrf,
                f.bm25.unwrap_or(0.0) / m_bm,
                f.bm25.is_some() as u8 as f32,
                rank_feature(f.bm25_rank),
                dense,
                dense.max(0.0) / m_de,
                f.dense.is_some() as u8 as f32,
                rank_feature(f.dense_rank),
                if f.dense.is_some() {
                    dense - m_de
                } else {
                    -1.0
                },
                f.coverage,
                f.bigram_coverage,
                f.title_coverage,
                (1.0 + f.tokens as f32).ln() / 513f32.ln(),
                adapted(f).unwrap_or(0.0),
                match adapted(f) {
                    Some(a) => a - m_ad,
                    None => -1.0,
                },
                f.memory.unwrap_or(0.0).max(0.0) / m_mem,
                rank_feature(f.memory_rank),
                // Sums over neighbours, compressed: one more ask matters less
                // the more there are.
                f.dup_used.unwrap_or(0.0).max(0.0).ln_1p(),
                f.dup_similarity.unwrap_or(0.0),
                f.dup_unused.unwrap_or(0.0).max(0.0).ln_1p(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_over_the_set() {
        let a = Features {
            rrf: 0.03,
            bm25: Some(10.0),
            bm25_rank: Some(1),
            dense: Some(0.5),
            dense_rank: Some(2),
            tokens: 100,
            coverage: 1.0,
            bigram_coverage: 0.5,
            title_coverage: 0.0,
            adapted: None,
            ..Features::default()
        };
        let b = Features {
            rrf: 0.015,
            bm25: None,
            bm25_rank: None,
            dense: Some(0.6),
            dense_rank: Some(1),
            tokens: 10,
            coverage: 0.5,
            bigram_coverage: 0.0,
            title_coverage: 1.0,
            adapted: Some(0.9),
            ..Features::default()
        };
        let f = features(&[&a, &b]);
        assert_eq!(f.len(), 2);
        assert!((f[0][0] - 1.0).abs() < 1e-6 && (f[1][0] - 0.5).abs() < 1e-6);
        assert_eq!((f[0][1], f[1][1]), (1.0, 0.0));
        assert_eq!((f[0][2], f[1][2]), (1.0, 0.0));
        assert!(f[0][3] > 0.8 && f[1][3] == 0.0);
        assert!((f[1][5] - 1.0).abs() < 1e-6 && (f[0][8] + 0.1).abs() < 1e-6);
        assert!(f[0][12] > f[1][12]);
        assert_eq!((f[0][10], f[1][11]), (0.5, 1.0));
        // The adapter's cosine when present, else the retrieval cosine.
        assert_eq!((f[0][13], f[1][13]), (0.5, 0.9));
        assert!((f[0][14] + 0.4).abs() < 1e-6 && f[1][14] == 0.0);
        // No memory: its features are all zero.
        assert!(f
            .iter()
            .all(|r| r[LEGACY_FEATURES..].iter().all(|&x| x == 0.0)));
        let c = Features {
            memory: Some(4.0),
            memory_rank: Some(1),
            dup_used: Some(1.0),
            dup_similarity: Some(0.95),
            dup_unused: Some(0.5),
            ..b.clone()
        };
        let d = Features {
            memory: Some(2.0),
            memory_rank: Some(2),
            ..b
        };
        let f = features(&[&c, &d]);
        assert_eq!((f[0][15], f[1][15]), (1.0, 0.5));
        assert!(f[0][16] > f[1][16] && f[1][16] > 0.0);
        assert!((f[0][17] - 2f32.ln()).abs() < 1e-6 && f[1][17] == 0.0);
        assert_eq!((f[0][18], f[1][18]), (0.95, 0.0));
        assert!((f[0][19] - 1.5f32.ln()).abs() < 1e-6 && f[1][19] == 0.0);
        assert!(features(&[]).is_empty());
    }
}
