//! One learning round: label the log → build the dataset → train → gate →
//! register → promote. `anectx train` and `anectx simulate` both call
//! [`round`]; only what they do around it differs.

use anectx_engine::RelevanceModel;
use anectx_store::Db;
use serde::Serialize;

use crate::analyzer::{Analyzer, ANALYZER_VERSION};
use crate::gate::{gate, GateConfig, GateReport};
use crate::model::FeatureModel;
use crate::registry::{Manifest, Registry};
use crate::train::{label_log, train, Dataset, TrainConfig, TrainReport};
use crate::{LearnError, Result};

/// Settings of a round.
#[derive(Debug, Clone, Default)]
pub struct RoundConfig {
    pub train: TrainConfig,
    pub gate: GateConfig,
    /// Make a candidate that passes the gate the registry's current version.
    pub promote: bool,
}

/// A round that trained a candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    /// The candidate as registered.
    pub version: String,
    #[serde(skip)]
    pub model: FeatureModel,
    #[serde(skip)]
    pub manifest: Manifest,
    pub train: TrainReport,
    pub gate: GateReport,
    /// Whether it is the registry's current version now.
    pub promoted: bool,
}

/// What a round did.
#[derive(Debug, Clone, Serialize)]
pub struct RoundOutcome {
    /// Interactions labelled by this round's analyzer pass.
    pub newly_labelled: usize,
    /// The candidate, or why there is none ([`RoundOutcome::not_trained`]).
    pub trained: Option<Trained>,
    /// Why no candidate was trained (the log is too young); not an error.
    pub not_trained: Option<String>,
}

/// A candidate trained on a dataset, with the gate's verdict.
pub struct Gated {
    pub model: FeatureModel,
    pub report: TrainReport,
    pub gate: GateReport,
}

/// A gated candidate, or why none was trained.
pub enum Trial {
    Trained(Box<Gated>),
    /// Too little data (the log is too young); not an error.
    NotTrained(String),
}

/// Trains a candidate on `ds` and gates it against `current` on the
/// dataset's held-out gate questions: the core of a round, without the
/// registry ([`round`] and the stream evaluation's `--learn` share it).
pub fn train_and_gate(
    ds: &Dataset,
    current: &dyn RelevanceModel,
    cfg: &RoundConfig,
    version: &str,
) -> Result<Trial> {
    let (model, report) = match train(ds, &cfg.train, version) {
        Ok(x) => x,
        Err(e @ LearnError::TooLittleData(_)) => return Ok(Trial::NotTrained(e.to_string())),
        Err(e) => return Err(e),
    };
    let (_, _, held) = ds.split3(cfg.train.held_out, cfg.train.seed);
    let gate = gate(&model, current, &held, &cfg.gate)?;
    Ok(Trial::Trained(Box::new(Gated {
        model,
        report,
        gate,
    })))
}

/// A second opinion on a candidate that passed the held-out gate (e.g.
/// `simulate`'s nDCG on judged queries): it may refuse it.
pub type ExtraGate<'a> = &'a mut dyn FnMut(&FeatureModel, GateReport) -> Result<GateReport>;

/// Runs one round on the interaction log in `db`. `current` is the model
/// the candidate must not be worse than (the one serving).
pub fn round(
    db: &Db,
    registry: &Registry,
    current: &dyn RelevanceModel,
    analyzer: &Analyzer,
    cfg: &RoundConfig,
    extra_gate: Option<ExtraGate<'_>>,
) -> Result<RoundOutcome> {
    let newly_labelled = label_log(db, analyzer)?;
    let ds = Dataset::from_log(db, ANALYZER_VERSION)?;
    let version = registry.new_version_name(&ds.hash);
    let (model, report, mut g) = match train_and_gate(&ds, current, cfg, &version)? {
        Trial::Trained(t) => (t.model, t.report, t.gate),
        Trial::NotTrained(why) => {
            return Ok(RoundOutcome {
                newly_labelled,
                trained: None,
                not_trained: Some(why),
            })
        }
    };
    if g.passed {
        if let Some(extra) = extra_gate {
            g = extra(&model, g)?;
        }
    }
    let manifest = registry.add(
        &model,
        &ds.hash,
        serde_json::json!({ "train": report, "gate": g, "newly_labelled": newly_labelled }),
    )?;
    let promoted = cfg.promote && g.passed;
    if promoted {
        registry.promote(&manifest.version)?;
    }
    Ok(RoundOutcome {
        newly_labelled,
        trained: Some(Trained {
            version: manifest.version.clone(),
            model,
            manifest,
            train: report,
            gate: g,
            promoted,
        }),
        not_trained: None,
    })
}
