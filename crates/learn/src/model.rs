//! The learned relevance model: a small MLP over candidate features.
//!
//! `score(x) = w2 · tanh(W1 x̂ + b1) + v · x̂`, with `x̂` the features
//! standardised by the training set's mean and deviation. It is tiny
//! (15 → 8 → 1), so serving computes it in plain Rust (microseconds per
//! query) and training runs on candle in seconds; see [`crate::train`].
//! Optionally it carries an [`Adapter`] (a fine-tuned copy of the built-in
//! embedder) whose query–chunk cosine fills the `adapted_*` features; without
//! one those features repeat the retrieval cosine.
//!
//! Why a feature model and not the `ConvClassifier` cross-encoder: the
//! learning signal is a few labelled chunks per interaction, so a model with
//! ~200 parameters learns from hundreds of interactions, while a
//! cross-encoder with millions of parameters would overfit them and costs a
//! forward pass per candidate (≈ 100 per query) on the serving path.

use std::path::Path;
use std::sync::Arc;

use anectx_engine::{Candidate, RelevanceModel};
use serde::{Deserialize, Serialize};

use crate::adapter::Adapter;
use crate::features::{features, FEATURE_NAMES, LEGACY_FEATURES, N_FEATURES};

/// The fine-tuned embedder's directory beside `model.json`.
pub const ADAPTER_DIR: &str = "adapter";
use crate::{LearnError, Result};

/// File format tag written in every model file.
pub const FORMAT: &str = "anectx-relevance-mlp/1";

/// Weights and metadata of a [`FeatureModel`] (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureModelFile {
    pub format: String,
    /// Registry version name (e.g. `rel-20261128-0510-1a2b3c4d`).
    pub version: String,
    pub feature_names: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// `hidden × features`, row-major.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    /// Linear skip weights over the standardised features.
    pub skip: Vec<f32>,
    /// Whether the model has a fine-tuned embedder (`adapter/` beside
    /// `model.json`) that computes the `adapted_*` features.
    #[serde(default)]
    pub adapter: bool,
}

/// The learned relevance model.
#[derive(Debug, Clone)]
pub struct FeatureModel {
    file: FeatureModelFile,
    hidden: usize,
    adapter: Option<Arc<Adapter>>,
}

impl FeatureModel {
    /// Checks shapes and values; refuses anything that would not score.
    pub fn from_file(mut file: FeatureModelFile) -> Result<Self> {
        if file
            .feature_names
            .iter()
            .map(String::as_str)
            .eq(FEATURE_NAMES[..LEGACY_FEATURES].iter().copied())
        {
            upgrade_legacy(&mut file);
        }
        let bad = |m: String| LearnError::Invalid(format!("relevance model {}: {m}", file.version));
        if file.format != FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT:?}",
                file.format
            )));
        }
        if file
            .feature_names
            .iter()
            .map(String::as_str)
            .ne(FEATURE_NAMES)
        {
            return Err(bad(format!(
                "features {:?} differ from this build's {:?}",
                file.feature_names, FEATURE_NAMES
            )));
        }
        let hidden = file.b1.len();
        let shapes = [
            ("mean", file.mean.len(), N_FEATURES),
            ("std", file.std.len(), N_FEATURES),
            ("w1", file.w1.len(), hidden * N_FEATURES),
            ("w2", file.w2.len(), hidden),
            ("skip", file.skip.len(), N_FEATURES),
        ];
        for (name, got, want) in shapes {
            if got != want {
                return Err(bad(format!("{name} has {got} values, expected {want}")));
            }
        }
        let all = [
            &file.mean, &file.std, &file.w1, &file.b1, &file.w2, &file.skip,
        ];
        if all.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(bad("non-finite weights".into()));
        }
        if file.std.iter().any(|&s| s <= 0.0) {
            return Err(bad("feature deviations must be positive".into()));
        }
        Ok(Self {
            file,
            hidden,
            adapter: None,
        })
    }

    /// Attaches the fine-tuned embedder the file says the model has.
    pub fn with_adapter(mut self, adapter: Arc<Adapter>) -> Self {
        self.file.adapter = true;
        self.adapter = Some(adapter);
        self
    }

    pub fn adapter(&self) -> Option<&Arc<Adapter>> {
        self.adapter.as_ref()
    }

    /// Loads `model.json`, and `adapter/` beside it when the file names one.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| LearnError::io(path, e))?;
        let file: FeatureModelFile = serde_json::from_slice(&bytes).map_err(|e| {
            LearnError::Invalid(format!("{}: not a relevance model: {e}", path.display()))
        })?;
        let wants_adapter = file.adapter;
        let m = Self::from_file(file)?;
        if !wants_adapter {
            return Ok(m);
        }
        let dir = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(ADAPTER_DIR);
        Ok(m.with_adapter(Arc::new(Adapter::load(&dir)?)))
    }

    pub fn file(&self) -> &FeatureModelFile {
        &self.file
    }

    pub fn into_arc(self) -> Arc<dyn RelevanceModel> {
        Arc::new(self)
    }

    /// Score of one feature vector.
    pub fn score_features(&self, x: &[f32; N_FEATURES]) -> f32 {
        let f = &self.file;
        let mut z = [0f32; N_FEATURES];
        for i in 0..N_FEATURES {
            z[i] = (x[i] - f.mean[i]) / f.std[i];
        }
        let mut s: f32 = z.iter().zip(&f.skip).map(|(a, b)| a * b).sum();
        for h in 0..self.hidden {
            let row = &f.w1[h * N_FEATURES..(h + 1) * N_FEATURES];
            let a: f32 = row.iter().zip(&z).map(|(w, v)| w * v).sum::<f32>() + f.b1[h];
            s += f.w2[h] * a.tanh();
        }
        s
    }
}

/// A model trained before the usage memory's features existed: the new
/// features get zero weights (so it scores exactly as it did) and a unit
/// deviation. Shapes that do not fit the legacy count are left for
/// [`FeatureModel::from_file`] to refuse.
fn upgrade_legacy(file: &mut FeatureModelFile) {
    let (old, new) = (LEGACY_FEATURES, N_FEATURES);
    let hidden = file.b1.len();
    let fits = [file.mean.len(), file.std.len(), file.skip.len()] == [old; 3]
        && file.w1.len() == hidden * old;
    if !fits {
        return;
    }
    file.feature_names = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    file.mean.resize(new, 0.0);
    file.std.resize(new, 1.0);
    file.skip.resize(new, 0.0);
    file.w1 = file
        .w1
        .chunks(old)
        .flat_map(|row| {
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0.0, new - old))
        })
        .collect();
}

impl RelevanceModel for FeatureModel {
    fn version(&self) -> String {
        self.file.version.clone()
    }

    fn score(&self, query: &str, candidates: &[Candidate]) -> anectx_engine::Result<Vec<f32>> {
        let owned: Vec<anectx_engine::Features>;
        let fs: Vec<&anectx_engine::Features> = match &self.adapter {
            Some(a) if candidates.iter().any(|c| c.features.adapted.is_none()) => {
                let texts: Vec<&str> = candidates.iter().map(|c| c.chunk.text.as_str()).collect();
                let cos = a.cosines(query, &texts).map_err(|e| {
                    anectx_engine::EngineError::Relevance {
                        version: self.file.version.clone(),
                        message: e.to_string(),
                    }
                })?;
                owned = candidates
                    .iter()
                    .zip(cos)
                    .map(|(c, s)| anectx_engine::Features {
                        adapted: Some(s),
                        ..c.features.clone()
                    })
                    .collect();
                owned.iter().collect()
            }
            _ => candidates.iter().map(|c| &c.features).collect(),
        };
        // The logistic of the pairwise logit: a bounded score, read as how
        // likely the chunk is to be used (MMR only uses the order).
        Ok(features(&fs)
            .iter()
            .map(|x| 1.0 / (1.0 + (-self.score_features(x)).exp()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anectx_engine::Features;

    fn legacy_file() -> FeatureModelFile {
        let n = LEGACY_FEATURES;
        let wave = |k: usize, s: f32| (0..k).map(|i| (i as f32 * 0.7).sin() * s).collect();
        FeatureModelFile {
            format: FORMAT.into(),
            version: "rel-legacy".into(),
            feature_names: FEATURE_NAMES[..n].iter().map(|s| s.to_string()).collect(),
            mean: wave(n, 0.1),
            std: (0..n).map(|i| 0.5 + i as f32 * 0.1).collect(),
            w1: wave(2 * n, 0.8),
            b1: vec![0.1, -0.2],
            w2: vec![0.7, -0.4],
            skip: wave(n, 0.3),
            adapter: false,
        }
    }

    /// The legacy model's score, computed from its own 15 weights.
    fn legacy_score(f: &FeatureModelFile, x: &[f32]) -> f32 {
        let n = LEGACY_FEATURES;
        let z: Vec<f32> = (0..n).map(|i| (x[i] - f.mean[i]) / f.std[i]).collect();
        let mut s: f32 = z.iter().zip(&f.skip).map(|(a, b)| a * b).sum();
        for h in 0..f.b1.len() {
            let a: f32 = f.w1[h * n..(h + 1) * n]
                .iter()
                .zip(&z)
                .map(|(w, v)| w * v)
                .sum::<f32>()
                + f.b1[h];
            s += f.w2[h] * a.tanh();
        }
        s
    }

    /// A model saved before the memory's features existed still loads and
    /// scores exactly as it did, with or without a memory's evidence.
    #[test]
    fn a_model_without_the_memory_features_loads_and_scores_as_before() {
        let file = legacy_file();
        let m = FeatureModel::from_file(file.clone()).unwrap();
        assert_eq!(m.file().feature_names.len(), N_FEATURES);
        let plain = Features {
            rrf: 0.02,
            bm25: Some(3.0),
            bm25_rank: Some(2),
            dense: Some(0.4),
            dense_rank: Some(5),
            tokens: 80,
            coverage: 0.5,
            ..Features::default()
        };
        let remembered = Features {
            memory: Some(2.0),
            memory_rank: Some(1),
            dup_used: Some(1.5),
            dup_similarity: Some(0.97),
            dup_unused: Some(0.3),
            ..plain.clone()
        };
        let other = Features {
            rrf: 0.03,
            dense: Some(0.6),
            dense_rank: Some(1),
            ..Features::default()
        };
        let x = features(&[&plain, &other, &remembered]);
        for r in &x {
            let want = legacy_score(&file, &r[..LEGACY_FEATURES]);
            assert!((m.score_features(r) - want).abs() < 1e-5);
        }
        assert!(x[2][LEGACY_FEATURES..].iter().any(|&v| v != 0.0));
        assert_eq!(m.score_features(&x[0]), m.score_features(&x[2]));
        // A file whose shapes do not fit its names is still refused.
        let mut bad = legacy_file();
        bad.skip.pop();
        assert!(FeatureModel::from_file(bad).is_err());
        let mut renamed = legacy_file();
        renamed.feature_names[3] = "other".into();
        assert!(FeatureModel::from_file(renamed).is_err());
    }
}
