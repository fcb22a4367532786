//! Training the relevance model from the interaction log.
//!
//! 1. [`label_log`] runs the usage analyzer over logged answers that have no
//!    labels for its version yet and stores the labels (events are never
//!    rewritten; a new analyzer version adds new label rows).
//! 2. [`Dataset::from_log`] groups the labelled, shown chunks of each
//!    interaction with the features of every logged candidate, and adds
//!    explicit feedback (a thumbs-up chunk is used, a thumbs-down one is not).
//! 3. [`train`] fits a [`FeatureModel`] with an IPS-weighted pairwise
//!    logistic loss (each used-over-unused pair of shown chunks weighted by
//!    the inverse propensity of the used one, clipped) using candle and AdamW,
//!    and early-stops on held-out interactions. With `adapter_steps > 0` it
//!    first fine-tunes an [`Adapter`] on (query, used chunk) pairs,
//!    cross-fitted over the training queries, whose cosine is a feature.
//!
//! [`evaluate`] scores any relevance model on held-out interactions with the
//! IPS-weighted nDCG of its ordering of the shown chunks; the promotion gate
//! compares the candidate with the current model on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anectx_engine::{Candidate, Features, RelevanceModel};
use anectx_store::{ChunkRecord, Db, LoggedInteraction, UsageLabelRow};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::adapter::Adapter;
use crate::analyzer::{Analyzer, ShownChunk, ANALYZER_VERSION};
use crate::features::{features, FEATURE_NAMES, LEGACY_FEATURES, N_FEATURES};
use crate::model::{FeatureModel, FeatureModelFile, FORMAT};
use crate::{LearnError, Result};

/// Labels every logged answer that has none for [`ANALYZER_VERSION`].
/// Returns the number of interactions labelled.
pub fn label_log(db: &Db, analyzer: &Analyzer) -> Result<usize> {
    let done: std::collections::HashSet<i64> = db
        .labels(ANALYZER_VERSION)?
        .into_iter()
        .map(|l| l.interaction_id)
        .collect();
    label_pages(db, analyzer, 0, &|id| Ok(done.contains(&id)))
}

/// [`label_log`] for the interactions after row `after` only (what a
/// serving process folds into its usage memory): it reads the labels of
/// those interactions alone, not the whole label table.
pub fn label_log_after(db: &Db, analyzer: &Analyzer, after: i64) -> Result<usize> {
    label_pages(db, analyzer, after, &|id| {
        Ok(db
            .labels_of(id)?
            .iter()
            .any(|l| l.analyzer_version == ANALYZER_VERSION))
    })
}

fn label_pages(
    db: &Db,
    analyzer: &Analyzer,
    mut after: i64,
    done: &dyn Fn(i64) -> Result<bool>,
) -> Result<usize> {
    let mut labelled = 0;
    loop {
        let page = db.interactions(after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        let mut rows = Vec::new();
        for (id, it) in &page {
            if done(*id)? {
                continue;
            }
            let Some(response) = it.response.as_deref().filter(|r| !r.trim().is_empty()) else {
                continue;
            };
            let shown: Vec<(u64, u32, &str)> = it
                .candidates
                .iter()
                .filter_map(|c| Some((c.chunk_id, c.position?, c.text.as_deref()?)))
                .collect();
            if shown.is_empty() {
                continue;
            }
            let chunks: Vec<ShownChunk<'_>> = shown
                .iter()
                .map(|&(_, marker, text)| ShownChunk { marker, text })
                .collect();
            let labels = analyzer.analyze(response, &chunks)?;
            for (l, &(chunk_id, _, _)) in labels.iter().zip(&shown) {
                rows.push(UsageLabelRow {
                    interaction_id: *id,
                    chunk_id,
                    analyzer_version: ANALYZER_VERSION.to_string(),
                    score: l.score,
                    used: l.used,
                    evidence: serde_json::to_value(&l.evidence).unwrap_or_default(),
                });
            }
            labelled += 1;
        }
        if !rows.is_empty() {
            db.put_labels(&rows)?;
        }
    }
    Ok(labelled)
}

/// A labelled, shown chunk of one interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    /// Index into the group's candidates.
    pub idx: usize,
    pub used: bool,
    pub propensity: f32,
}

/// One interaction: all logged candidates and the labelled shown ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub interaction_id: i64,
    pub query: String,
    pub raw: Vec<Features>,
    pub shown: Vec<Shown>,
    /// Each candidate's text where known (shown text from the log, else the
    /// chunk from the store); not part of the dataset hash.
    #[serde(skip)]
    pub texts: Vec<Option<Arc<str>>>,
}

impl Group {
    fn informative(&self) -> bool {
        self.shown.iter().any(|s| s.used) && self.shown.iter().any(|s| !s.used)
    }
}

/// Training data built from the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dataset {
    /// Interactions with at least one used and one unused shown chunk.
    pub groups: Vec<Group>,
    pub interactions_total: usize,
    pub interactions_labelled: usize,
    /// blake3 of the groups (stored with every trained version).
    pub hash: String,
}

impl Dataset {
    /// Builds the dataset from the log's labels of `analyzer_version` and
    /// the explicit feedback.
    pub fn from_log(db: &Db, analyzer_version: &str) -> Result<Self> {
        let mut labels: HashMap<i64, HashMap<u64, bool>> = HashMap::new();
        for l in db.labels(analyzer_version)? {
            labels
                .entry(l.interaction_id)
                .or_default()
                .insert(l.chunk_id, l.used);
        }
        let mut feedback: HashMap<String, Vec<(u64, bool)>> = HashMap::new();
        for f in db.feedback()? {
            if let Some(r) = f.rating.filter(|r| *r != 0) {
                let e = feedback.entry(f.interaction_uid.clone()).or_default();
                e.extend(f.chunk_ids.iter().map(|&c| (c, r > 0)));
            }
        }
        let mut ds = Dataset::default();
        let mut after = 0i64;
        let mut chunk_text: HashMap<u64, Option<Arc<str>>> = HashMap::new();
        loop {
            let page = db.interactions(after, 500)?;
            let Some(last) = page.last() else { break };
            after = last.0;
            // Texts of the candidates the log did not keep, from the store.
            let missing: Vec<u64> = page
                .iter()
                .flat_map(|(_, it)| it.candidates.iter())
                .filter(|c| c.text.is_none() && !chunk_text.contains_key(&c.chunk_id))
                .map(|c| c.chunk_id)
                .collect::<std::collections::HashSet<_>>()
                .into_iter()
                .collect();
            for &c in &missing {
                chunk_text.insert(c, None);
            }
            for rec in db.chunks_by_ids(&missing)? {
                chunk_text.insert(rec.id, Some(Arc::from(rec.text.as_str())));
            }
            for (id, it) in page {
                ds.interactions_total += 1;
                let mut lab = labels.remove(&id).unwrap_or_default();
                for &(c, used) in feedback.get(&it.uid).map(Vec::as_slice).unwrap_or(&[]) {
                    lab.insert(c, used);
                }
                if lab.is_empty() {
                    continue;
                }
                ds.interactions_labelled += 1;
                if let Some(g) = group_of(id, &it, &lab, &chunk_text) {
                    if g.informative() {
                        ds.groups.push(g);
                    }
                }
            }
        }
        let bytes = serde_json::to_vec(&ds.groups).unwrap_or_default();
        ds.hash = blake3::hash(&bytes).to_hex().to_string();
        Ok(ds)
    }

    /// Deterministic three-way split by query: `(train, validation, gate)`;
    /// the held-out questions are dealt alternately to model selection and
    /// the promotion gate, so the gate sees questions selection did not.
    pub fn split3(&self, held_out: f32, seed: u64) -> (Vec<&Group>, Vec<&Group>, Vec<&Group>) {
        let (tr, te) = self.split(held_out, seed);
        let (mut val, mut gate) = (Vec::new(), Vec::new());
        let mut side: HashMap<String, usize> = HashMap::new();
        for g in te {
            let n = side.len();
            let i = *side.entry(query_key(&g.query)).or_insert(n);
            if i.is_multiple_of(2) {
                val.push(g);
            } else {
                gate.push(g);
            }
        }
        (tr, val, gate)
    }

    /// Deterministic split by *query*: `(train, held_out)`. Every
    /// interaction of one question (asked again, in any letter case or spacing)
    /// lands on the same side, so held-out interactions measure questions
    /// the model did not train on — as most questions users ask will be. A
    /// split by interaction would let a model that fits the training
    /// questions, but ranks new ones worse, pass the gate.
    pub fn split(&self, held_out: f32, seed: u64) -> (Vec<&Group>, Vec<&Group>) {
        let mut tr = Vec::new();
        let mut te = Vec::new();
        for g in &self.groups {
            let h = blake3::hash(format!("{seed}:{}", query_key(&g.query)).as_bytes());
            let u = u32::from_le_bytes(h.as_bytes()[..4].try_into().unwrap_or([0; 4])) as f32
                / u32::MAX as f32;
            if u < held_out {
                te.push(g);
            } else {
                tr.push(g);
            }
        }
        (tr, te)
    }
}

/// A question's identity for splitting: its words, lower-cased.
pub(crate) fn query_key(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn group_of(
    id: i64,
    it: &LoggedInteraction,
    labels: &HashMap<u64, bool>,
    chunk_text: &HashMap<u64, Option<Arc<str>>>,
) -> Option<Group> {
    let mut raw = Vec::with_capacity(it.candidates.len());
    let mut shown = Vec::new();
    let mut texts = Vec::with_capacity(it.candidates.len());
    for (idx, c) in it.candidates.iter().enumerate() {
        let mut f: Features = serde_json::from_value(c.features.clone()).ok()?;
        // Only a model's own adapter fills this in; never trust a logged one.
        f.adapted = None;
        raw.push(f);
        texts.push(match &c.text {
            Some(t) => Some(Arc::from(t.as_str())),
            None => chunk_text.get(&c.chunk_id).cloned().flatten(),
        });
        if let (Some(_), Some(&used)) = (c.position, labels.get(&c.chunk_id)) {
            shown.push(Shown {
                idx,
                used,
                propensity: c.propensity,
            });
        }
    }
    Some(Group {
        interaction_id: id,
        query: it.query.clone(),
        raw,
        shown,
        texts,
    })
}

/// Settings of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub hidden: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub max_epochs: usize,
    /// Stop after this many epochs without a better held-out loss.
    pub patience: usize,
    /// Share of interactions held out for early stopping and the gate.
    pub held_out: f32,
    /// Inverse-propensity weights are clipped at this value.
    pub ips_clip: f32,
    /// Fewer informative training interactions than this is an error.
    pub min_interactions: usize,
    /// Unshown candidates sampled per interaction as weak negatives.
    pub unshown_per_interaction: usize,
    /// Weight of a used-over-unshown pair relative to a shown pair.
    pub unshown_weight: f32,
    /// Fine-tuning steps of the adapter embedder (0: no adapter; the model
    /// then uses retrieval features only).
    pub adapter_steps: usize,
    pub adapter_lr: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hidden: 8,
            learning_rate: 0.02,
            weight_decay: 1e-2,
            max_epochs: 400,
            patience: 60,
            held_out: 0.3,
            ips_clip: 2.0,
            min_interactions: 20,
            unshown_per_interaction: 10,
            unshown_weight: 0.3,
            adapter_steps: 0,
            adapter_lr: 2e-4,
            seed: 17,
        }
    }
}

/// Result of a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub train_interactions: usize,
    pub held_out_interactions: usize,
    pub train_pairs: usize,
    pub epochs: usize,
    pub best_epoch: usize,
    pub train_loss: f64,
    pub held_out_loss: f64,
    /// Held-out IPS-nDCG@10 of the selected epoch (see [`evaluate`]).
    pub held_out_ips_ndcg: f64,
    pub data_hash: String,
    /// The adapter's fine-tuning, when one was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterReport>,
}

/// How the adapter embedder was fine-tuned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterReport {
    /// (query, used chunk) pairs from the training interactions.
    pub pairs: usize,
    pub steps: usize,
    /// Mean contrastive loss over the first and the last tenth of the steps.
    pub first_loss: f32,
    pub last_loss: f32,
}

/// (query, used chunk, ignored shown chunks) triples of `groups`, weighted
/// by the clipped inverse propensity of the used chunk.
fn adapter_triples(groups: &[&Group], clip: f32) -> Vec<anectx_models::finetune::Triple> {
    let mut out = Vec::new();
    for g in groups {
        let text = |i: usize| g.texts.get(i).cloned().flatten();
        let negatives: Vec<String> = g
            .shown
            .iter()
            .filter(|s| !s.used)
            .filter_map(|s| text(s.idx).map(|t| t.to_string()))
            .collect();
        for s in g.shown.iter().filter(|s| s.used) {
            if let Some(t) = text(s.idx) {
                out.push(anectx_models::finetune::Triple {
                    query: g.query.clone(),
                    positive: t.to_string(),
                    negatives: negatives.clone(),
                    weight: (1.0 / s.propensity.max(1e-6)).min(clip),
                });
            }
        }
    }
    out
}

/// Copies of `groups` with the adapter's cosine filled in for every candidate.
fn with_adapted(groups: &[&Group], a: &Adapter) -> Result<Vec<Group>> {
    groups
        .iter()
        .map(|g| {
            let texts: Vec<&str> = (0..g.raw.len())
                .map(|i| g.texts.get(i).and_then(|t| t.as_deref()).unwrap_or(""))
                .collect();
            let cos = a.cosines(&g.query, &texts)?;
            let mut g = (*g).clone();
            for (f, c) in g.raw.iter_mut().zip(cos) {
                f.adapted = Some(c);
            }
            Ok(g)
        })
        .collect()
}

/// The IPS-weighted pairs of a set of groups: feature rows and
/// `(pos, neg, weight)` index triples into them.
struct Pairs {
    x: Vec<[f32; N_FEATURES]>,
    pairs: Vec<(u32, u32, f32)>,
}

fn pairs_of(groups: &[&Group], cfg: &TrainConfig) -> Pairs {
    let mut x = Vec::new();
    let mut pairs = Vec::new();
    for g in groups {
        let refs: Vec<&Features> = g.raw.iter().collect();
        let f = features(&refs);
        let mut local: BTreeMap<usize, u32> = BTreeMap::new();
        let mut row = |idx: usize, x: &mut Vec<[f32; N_FEATURES]>| {
            *local.entry(idx).or_insert_with(|| {
                x.push(f[idx]);
                x.len() as u32 - 1
            })
        };
        let shown: std::collections::HashSet<usize> = g.shown.iter().map(|s| s.idx).collect();
        // Unshown candidates, a deterministic sample: weak negatives that keep
        // the model's ranking of the whole pool anchored (labels exist only
        // for shown chunks, and most of the tail is not relevant).
        let mut unshown: Vec<usize> = (0..g.raw.len()).filter(|i| !shown.contains(i)).collect();
        let stride = (unshown.len() / cfg.unshown_per_interaction.max(1)).max(1);
        let offset = (g.interaction_id as usize) % stride;
        unshown = unshown
            .into_iter()
            .skip(offset)
            .step_by(stride)
            .take(cfg.unshown_per_interaction)
            .collect();
        for p in g.shown.iter().filter(|s| s.used) {
            let w = (1.0 / p.propensity.max(1e-6)).min(cfg.ips_clip);
            let pi = row(p.idx, &mut x);
            for n in g.shown.iter().filter(|s| !s.used) {
                let ni = row(n.idx, &mut x);
                pairs.push((pi, ni, w));
            }
            if cfg.unshown_weight > 0.0 {
                for &u in &unshown {
                    let ui = row(u, &mut x);
                    pairs.push((pi, ui, w * cfg.unshown_weight));
                }
            }
        }
    }
    Pairs { x, pairs }
}

/// Standardisation of the training features. A feature that never varied
/// in training (the usage memory's, before any logged answer had a memory)
/// taught the model nothing: its weights are zeroed in the saved model
/// ([`Params::to_file`]) and its deviation set to 1, so that when it starts
/// to vary in serving it cannot move scores through untrained weights.
struct Norm {
    mean: Vec<f32>,
    std: Vec<f32>,
    constant: Vec<bool>,
}

fn mean_std(x: &[[f32; N_FEATURES]]) -> Norm {
    let n = x.len().max(1) as f64;
    let mut mean = [0f64; N_FEATURES];
    for r in x {
        for i in 0..N_FEATURES {
            mean[i] += r[i] as f64 / n;
        }
    }
    let mut var = [0f64; N_FEATURES];
    let mut constant = [true; N_FEATURES];
    for r in x {
        for i in 0..N_FEATURES {
            var[i] += (r[i] as f64 - mean[i]).powi(2) / n;
            constant[i] &= r[i] == x[0][i];
        }
    }
    Norm {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std: var
            .iter()
            .zip(&constant)
            .map(|(&v, &c)| if c { 1.0 } else { (v.sqrt() as f32).max(1e-3) })
            .collect(),
        constant: constant.to_vec(),
    }
}

struct Params {
    w1: Var,
    b1: Var,
    w2: Var,
    skip: Var,
}

impl Params {
    fn new(hidden: usize, seed: u64, dev: &Device) -> Result<Self> {
        let mut rng = anectx_models::weights::Rng::new(seed);
        // The retrieval features start as they always have (same draws, same
        // scale); the memory's start at zero, so a model trained on a log
        // without memory is the model trained before they existed.
        let w1 = anectx_models::weights::randn(
            &[hidden, LEGACY_FEATURES],
            (1.0 / LEGACY_FEATURES as f32).sqrt(),
            &mut rng,
        )?
        .pad_with_zeros(1, 0, N_FEATURES - LEGACY_FEATURES)?;
        let w2 = anectx_models::weights::randn(&[hidden], 0.1, &mut rng)?;
        Ok(Self {
            w1: Var::from_tensor(&w1.to_device(dev)?)?,
            b1: Var::zeros(hidden, DType::F32, dev)?,
            w2: Var::from_tensor(&w2.to_device(dev)?)?,
            skip: Var::zeros(N_FEATURES, DType::F32, dev)?,
        })
    }

    fn all(&self) -> Vec<Var> {
        if self.b1.as_tensor().elem_count() == 0 {
            return vec![self.skip.clone()];
        }
        vec![
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.skip.clone(),
        ]
    }

    /// Scores of standardised rows `z (M, F)` → `(M,)`.
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let lin = z.matmul(&self.skip.as_tensor().unsqueeze(1)?)?.squeeze(1)?;
        if self.b1.as_tensor().elem_count() == 0 {
            return Ok(lin);
        }
        let h = z
            .matmul(&self.w1.as_tensor().t()?)?
            .broadcast_add(self.b1.as_tensor())?
            .tanh()?;
        let s = h.matmul(&self.w2.as_tensor().unsqueeze(1)?)?.squeeze(1)?;
        let lin = z.matmul(&self.skip.as_tensor().unsqueeze(1)?)?.squeeze(1)?;
        Ok((s + lin)?)
    }

    fn to_file(&self, version: &str, norm: &Norm) -> Result<FeatureModelFile> {
        let mut w1: Vec<f32> = self.w1.as_tensor().flatten_all()?.to_vec1()?;
        let mut skip: Vec<f32> = self.skip.as_tensor().to_vec1()?;
        for (i, _) in norm.constant.iter().enumerate().filter(|c| *c.1) {
            skip[i] = 0.0;
            for row in w1.chunks_mut(N_FEATURES) {
                row[i] = 0.0;
            }
        }
        Ok(FeatureModelFile {
            format: FORMAT.into(),
            version: version.into(),
            feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean: norm.mean.clone(),
            std: norm.std.clone(),
            w1,
            b1: self.b1.as_tensor().to_vec1()?,
            w2: self.w2.as_tensor().to_vec1()?,
            skip,
            adapter: false,
        })
    }
}

struct PairTensors {
    z: Tensor,
    pos: Tensor,
    neg: Tensor,
    w: Tensor,
    wsum: f64,
}

fn pair_tensors(p: &Pairs, mean: &[f32], std: &[f32], dev: &Device) -> Result<PairTensors> {
    let z: Vec<f32> =
        p.x.iter()
            .flat_map(|r| (0..N_FEATURES).map(move |i| (r[i] - mean[i]) / std[i]))
            .collect();
    let pos: Vec<u32> = p.pairs.iter().map(|t| t.0).collect();
    let neg: Vec<u32> = p.pairs.iter().map(|t| t.1).collect();
    let w: Vec<f32> = p.pairs.iter().map(|t| t.2).collect();
    let wsum = w.iter().map(|&x| x as f64).sum::<f64>().max(1e-9);
    Ok(PairTensors {
        z: Tensor::from_vec(z, (p.x.len(), N_FEATURES), dev)?,
        pos: Tensor::new(pos.as_slice(), dev)?,
        neg: Tensor::new(neg.as_slice(), dev)?,
        w: Tensor::new(w.as_slice(), dev)?,
        wsum,
    })
}

/// Weighted mean of `softplus(s_neg − s_pos)`.
fn pair_loss(params: &Params, t: &PairTensors) -> Result<Tensor> {
    let s = params.forward(&t.z)?;
    let d = (s.index_select(&t.neg, 0)? - s.index_select(&t.pos, 0)?)?;
    // softplus(d) = relu(d) + ln(1 + exp(−|d|)), stable for any d.
    let sp = (d.relu()? + (d.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok(((sp * &t.w)?.sum_all()? / t.wsum)?)
}

/// Trains a candidate model. `version` names it in the registry.
pub fn train(
    ds: &Dataset,
    cfg: &TrainConfig,
    version: &str,
) -> Result<(FeatureModel, TrainReport)> {
    let (tr, te, gate_part) = ds.split3(cfg.held_out, cfg.seed);
    if tr.len() < cfg.min_interactions || te.is_empty() || gate_part.is_empty() {
        return Err(LearnError::TooLittleData(format!(
            "{} informative interactions for training and {} held out ({} logged, {} labelled); \
             need at least {} for training and 2 held out — log more answered queries \
             (an interaction is informative when its answer used some shown chunks and not others)",
            tr.len(),
            te.len(),
            ds.interactions_total,
            ds.interactions_labelled,
            cfg.min_interactions
        )));
    }
    let dev = Device::Cpu;
    // The text-level part first: fine-tune the adapter on the training
    // interactions only, then score every candidate with it.
    let mut adapter = None;
    let mut adapter_report = None;
    let (mut tr_a, mut te_a) = (Vec::new(), Vec::new());
    if cfg.adapter_steps > 0 {
        let o = anectx_models::finetune::FineTuneOptions {
            steps: cfg.adapter_steps,
            lr: cfg.adapter_lr,
            seed: cfg.seed,
            ..Default::default()
        };
        // Cross-fitting: the MLP must learn how far to trust the adapter on
        // queries it was not tuned on (in-sample cosines are inflated), so
        // each half of the training queries is scored by an adapter tuned on
        // the other half; the served adapter is tuned on all of them.
        let fold = |g: &Group| blake3::hash(g.query.as_bytes()).as_bytes()[0] & 1;
        let halves: [Vec<&Group>; 2] = [
            tr.iter().copied().filter(|g| fold(g) == 0).collect(),
            tr.iter().copied().filter(|g| fold(g) == 1).collect(),
        ];
        let triples = adapter_triples(&tr, cfg.ips_clip);
        let t0 = adapter_triples(&halves[0], cfg.ips_clip);
        let t1 = adapter_triples(&halves[1], cfg.ips_clip);
        if t0.len() >= 8 && t1.len() >= 8 {
            let (a, out) = Adapter::train(&triples, &o)?;
            let (a0, _) = Adapter::train(&t0, &o)?;
            let (a1, _) = Adapter::train(&t1, &o)?;
            tr_a = with_adapted(&halves[0], &a1)?;
            tr_a.extend(with_adapted(&halves[1], &a0)?);
            te_a = with_adapted(&te, &a)?;
            adapter_report = Some(AdapterReport {
                pairs: triples.len(),
                steps: o.steps,
                first_loss: out.first_loss,
                last_loss: out.last_loss,
            });
            adapter = Some(Arc::new(a));
        } else {
            tracing::info!(
                pairs = triples.len(),
                "too few (query, used chunk) pairs with text for the adapter; training without it"
            );
        }
    }
    let (tr, te): (Vec<&Group>, Vec<&Group>) = match &adapter {
        Some(_) => (tr_a.iter().collect(), te_a.iter().collect()),
        None => (tr, te),
    };
    let ptr = pairs_of(&tr, cfg);
    let pte = pairs_of(&te, cfg);
    let norm = mean_std(&ptr.x);
    let (mean, std) = (&norm.mean, &norm.std);
    let ttr = pair_tensors(&ptr, mean, std, &dev)?;
    let tte = if pte.pairs.is_empty() {
        None
    } else {
        Some(pair_tensors(&pte, mean, std, &dev)?)
    };
    let params = Params::new(cfg.hidden, cfg.seed, &dev)?;
    let mut opt = AdamW::new(
        params.all(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    // Model selection on the held-out ranking metric (what the gate checks),
    // every `EVAL_EVERY` epochs; the held-out pair loss is reported.
    let score_of = |file: FeatureModelFile| -> Result<f64> {
        let m = FeatureModel::from_file(file)?;
        evaluate(&m, &te, cfg.ips_clip)
    };
    let first = params.to_file(version, &norm)?;
    let mut best = (score_of(first.clone())?, 0usize, first, f64::NAN);
    let mut epochs = 0;
    let mut train_loss = f64::NAN;
    for epoch in 1..=cfg.max_epochs {
        epochs = epoch;
        let loss = pair_loss(&params, &ttr)?;
        train_loss = loss.to_scalar::<f32>()? as f64;
        if !train_loss.is_finite() {
            return Err(LearnError::Invalid(format!(
                "training diverged at epoch {epoch} (loss {train_loss})"
            )));
        }
        opt.backward_step(&loss)?;
        if epoch % EVAL_EVERY != 0 && epoch != cfg.max_epochs {
            continue;
        }
        let held = match &tte {
            Some(t) => pair_loss(&params, t)?.to_scalar::<f32>()? as f64,
            None => train_loss,
        };
        let file = params.to_file(version, &norm)?;
        let metric = score_of(file.clone())?;
        tracing::debug!(epoch, train_loss, held, metric, "relevance training");
        if metric > best.0 + 1e-9 {
            best = (metric, epoch, file, held);
        } else if epoch - best.1 >= cfg.patience {
            break;
        }
    }
    let mut model = FeatureModel::from_file(best.2)?;
    if let Some(a) = adapter {
        model = model.with_adapter(a);
    }
    Ok((
        model,
        TrainReport {
            train_interactions: tr.len(),
            held_out_interactions: te.len() + gate_part.len(),
            train_pairs: ptr.pairs.len(),
            epochs,
            best_epoch: best.1,
            train_loss,
            held_out_loss: best.3,
            held_out_ips_ndcg: best.0,
            data_hash: ds.hash.clone(),
            adapter: adapter_report,
        },
    ))
}

/// Depth of the held-out ranking metric.
pub const EVAL_DEPTH: usize = 10;

/// Epochs between held-out evaluations while training.
const EVAL_EVERY: usize = 5;

/// IPS-weighted nDCG@10 of a model's ranking of each held-out interaction's
/// whole candidate pool, with the used shown chunks as the relevant ones;
/// averaged over `groups`.
pub fn evaluate(model: &dyn RelevanceModel, groups: &[&Group], clip: f32) -> Result<f64> {
    if groups.is_empty() {
        return Ok(0.0);
    }
    let mut total = 0.0;
    for g in groups {
        let cands: Vec<Candidate> = g
            .raw
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut chunk = placeholder_chunk(i as u64, f.tokens as usize);
                if let Some(Some(t)) = g.texts.get(i) {
                    chunk.text = t.to_string();
                }
                Candidate {
                    chunk,
                    features: f.clone(),
                }
            })
            .collect();
        let scores = model.score(&g.query, &cands)?;
        // Rank the whole logged pool; only used shown chunks have gains
        // (IPS-weighted), so a model that lifts unlabelled tail candidates
        // over used ones loses, as it would on real queries.
        let mut order: Vec<usize> = (0..g.raw.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let gain_of: HashMap<usize, f64> = g
            .shown
            .iter()
            .filter(|s| s.used)
            .map(|s| (s.idx, (1.0 / s.propensity.max(1e-6)).min(clip) as f64))
            .collect();
        let dcg: f64 = order
            .iter()
            .take(EVAL_DEPTH)
            .enumerate()
            .map(|(r, i)| gain_of.get(i).copied().unwrap_or(0.0) / ((r + 2) as f64).log2())
            .sum();
        let mut ideal: Vec<f64> = gain_of.values().copied().collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(EVAL_DEPTH)
            .enumerate()
            .map(|(r, x)| x / ((r + 2) as f64).log2())
            .sum();
        total += if idcg > 0.0 { dcg / idcg } else { 0.0 };
    }
    Ok(total / groups.len() as f64)
}

fn placeholder_chunk(id: u64, tokens: usize) -> ChunkRecord {
    ChunkRecord {
        id,
        doc_id: 0,
        path: String::new(),
        ord: 0,
        text: String::new(),
        heading: None,
        byte_start: 0,
        byte_end: 0,
        line_start: 0,
        line_end: 0,
        tokens,
    }
}
