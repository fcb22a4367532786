//! Training from a log, the registry (promote, rollback, corrupt versions)
//! and the too-little-data errors, on synthetic interactions.

use anectx_engine::{Features, FusionRelevance};
use anectx_learn::features::{FEATURE_NAMES, N_FEATURES};
use anectx_learn::gate::{gate, GateConfig};
use anectx_learn::model::{FeatureModel, FeatureModelFile, FORMAT};
use anectx_learn::train::{evaluate, train, Dataset, Group, TrainConfig};
use anectx_learn::{LearnError, Registry};
use anectx_store::{LoggedCandidate, LoggedInteraction, Store, UsageLabelRow};

/// Interactions whose used chunks are the ones with high query coverage,
/// while the logging policy (rrf) ranks by something unrelated.
fn synthetic_log(store: &Store, n: usize) {
    synthetic_log_asking(store, n, &|i| format!("query {i}"));
}

/// The same, with interaction `i` asking `question(i)`.
fn synthetic_log_asking(store: &Store, n: usize, question: &dyn Fn(usize) -> String) {
    let mut rng = anectx_models::weights::Rng::new(3);
    for i in 0..n {
        let mut cands = Vec::new();
        let mut truth = Vec::new();
        for c in 0..20u64 {
            let cov = rng.uniform();
            let f = Features {
                rrf: 1.0 / (60.0 + c as f32),
                bm25: Some(10.0 * rng.uniform()),
                bm25_rank: Some(c as u32 + 1),
                dense: Some(rng.uniform()),
                dense_rank: Some(c as u32 + 1),
                tokens: 50 + (rng.uniform() * 100.0) as u32,
                coverage: cov,
                bigram_coverage: cov * 0.5,
                title_coverage: 0.0,
                adapted: None,
                ..Features::default()
            };
            let shown = (c < 6).then_some(c as u32 + 1);
            cands.push(LoggedCandidate {
                chunk_id: i as u64 * 100 + c,
                position: shown,
                score: 1.0 - c as f32 / 20.0,
                propensity: if shown.is_some() { 0.95 } else { 0.02 },
                features: serde_json::to_value(&f).unwrap(),
                text: shown.map(|_| format!("chunk {c}")),
            });
            truth.push(cov > 0.5);
        }
        append_labelled(store, i, format!("t-{i}"), question(i), cands, &truth[..6]);
    }
}

/// Logs interaction `i` (candidate `c` has chunk id `100 i + c`) and labels
/// its first `used.len()` candidates.
fn append_labelled(
    store: &Store,
    i: usize,
    uid: String,
    query: String,
    candidates: Vec<LoggedCandidate>,
    used: &[bool],
) {
    let id = store
        .db
        .append_interaction(&LoggedInteraction {
            uid,
            ts_ms: i as i64,
            kind: "test".into(),
            query,
            model_version: "fusion-v1".into(),
            explored: false,
            response: Some("an answer".into()),
            complete: true,
            meta: Default::default(),
            candidates,
        })
        .unwrap();
    let rows: Vec<UsageLabelRow> = used
        .iter()
        .enumerate()
        .map(|(c, &u)| UsageLabelRow {
            interaction_id: id,
            chunk_id: i as u64 * 100 + c as u64,
            analyzer_version: "test-v1".into(),
            score: u as u8 as f32,
            used: u,
            evidence: serde_json::Value::Null,
        })
        .collect();
    store.db.put_labels(&rows).unwrap();
}

#[test]
fn trains_a_model_that_beats_the_logging_policy_and_registry_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    synthetic_log(&store, 200);
    let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
    assert_eq!(ds.interactions_total, 200);
    assert!(ds.groups.len() > 150, "{}", ds.groups.len());
    let cfg = TrainConfig::default();
    let (model, report) = train(&ds, &cfg, "rel-test-1").unwrap();
    assert!(
        report.train_pairs > 0 && report.best_epoch > 0,
        "{report:?}"
    );
    let (_, _, held) = ds.split3(cfg.held_out, cfg.seed);
    let fusion = FusionRelevance::default();
    let learned = evaluate(&model, &held, cfg.ips_clip).unwrap();
    let baseline = evaluate(&fusion, &held, cfg.ips_clip).unwrap();
    assert!(
        learned > baseline + 0.1,
        "learned {learned} vs logging policy {baseline}"
    );
    let g = gate(&model, &fusion, &held, &GateConfig::default()).unwrap();
    assert!(g.passed, "{g:?}");
    // The same comparison on too few distinct questions is refused, however
    // many interactions ask them.
    let few: Vec<&Group> = held
        .iter()
        .copied()
        .filter(|g| g.query == held[0].query || g.query == held[1].query)
        .collect();
    let repeated: Vec<&Group> = few.iter().copied().cycle().take(40).collect();
    let g = gate(&model, &fusion, &repeated, &GateConfig::default()).unwrap();
    assert!(!g.passed && g.held_out_questions == 2, "{g:?}");
    assert!(
        g.reason.contains("distinct held-out questions"),
        "{}",
        g.reason
    );

    // Registry: add, promote, load, rollback.
    let reg = Registry::open(&dir.path().join("registry")).unwrap();
    assert_eq!(reg.stamp().unwrap(), "builtin");
    assert!(reg
        .load_current()
        .unwrap()
        .version()
        .starts_with("fusion-v2"));
    reg.add(&model, &ds.hash, serde_json::json!({ "train": report }))
        .unwrap();
    reg.promote("rel-test-1").unwrap();
    assert_eq!(reg.current().unwrap().as_deref(), Some("rel-test-1"));
    assert_eq!(reg.load_current().unwrap().version(), "rel-test-1");
    assert_eq!(reg.list().unwrap().len(), 1);
    coreml_matches_the_model(&reg, &model, &ds);
    assert!(reg.list().unwrap()[0].current);
    // Adding the same version twice is refused.
    assert!(reg.add(&model, &ds.hash, serde_json::Value::Null).is_err());
    assert_eq!(reg.rollback().unwrap(), None);
    assert_eq!(reg.current().unwrap(), None);
    assert!(matches!(reg.rollback(), Err(LearnError::Registry(_))));
}

fn tiny_model(version: &str) -> FeatureModel {
    FeatureModel::from_file(FeatureModelFile {
        format: FORMAT.into(),
        version: version.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; N_FEATURES],
        std: vec![1.0; N_FEATURES],
        w1: vec![0.1; 2 * N_FEATURES],
        b1: vec![0.0; 2],
        w2: vec![1.0; 2],
        skip: vec![0.5; N_FEATURES],
        adapter: false,
    })
    .unwrap()
}

#[test]
fn an_adapter_is_tuned_on_logged_text_saved_checked_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    synthetic_log(&store, 60);
    let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
    // Shown chunks keep their logged text; unshown ones have none here (no
    // such chunks in the store), and score 0 with the adapter.
    let g = &ds.groups[0];
    assert_eq!(g.query, "query 0");
    assert!(g.shown.iter().all(|s| g.texts[s.idx].is_some()));
    let cfg = TrainConfig {
        adapter_steps: 3,
        min_interactions: 10,
        ..TrainConfig::default()
    };
    let (model, report) = train(&ds, &cfg, "rel-adapter-1").unwrap();
    let a = report.adapter.as_ref().expect("an adapter was trained");
    assert!(a.pairs > 8 && a.steps == 3, "{a:?}");
    assert!(model.adapter().is_some() && model.file().adapter);

    let reg = Registry::open(&dir.path().join("registry")).unwrap();
    let m = reg.add(&model, &ds.hash, serde_json::Value::Null).unwrap();
    assert!(m.adapter_blake3.is_some());
    let vdir = reg.version_dir("rel-adapter-1").join("adapter");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(vdir.join(f).is_file(), "{f}");
    }
    // The reloaded model (fp16 adapter weights) scores like the trained one.
    let loaded = reg.load("rel-adapter-1").unwrap();
    let (_, _, held) = ds.split3(cfg.held_out, cfg.seed);
    let a = evaluate(&model, &held, cfg.ips_clip).unwrap();
    let b = evaluate(&loaded, &held, cfg.ips_clip).unwrap();
    assert!((a - b).abs() < 0.02, "{a} vs {b}");
    // Tampered adapter weights are refused.
    let w = vdir.join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&w, bytes).unwrap();
    let err = reg.load("rel-adapter-1").unwrap_err().to_string();
    assert!(err.contains("adapter weights checksum"), "{err}");
    assert!(reg.promote("rel-adapter-1").is_err());
}

#[test]
fn corrupt_versions_are_refused_and_the_current_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    reg.add(&tiny_model("good"), "h", serde_json::Value::Null)
        .unwrap();
    reg.promote("good").unwrap();
    reg.add(&tiny_model("bad"), "h", serde_json::Value::Null)
        .unwrap();
    // Flip bytes in the stored weights: the checksum no longer matches.
    let p = reg.version_dir("bad").join("model.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("0.5", "0.7", 1)).unwrap();
    let err = reg.promote("bad").unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(reg.current().unwrap().as_deref(), Some("good"));
    assert_eq!(reg.load_current().unwrap().version(), "good");
    // Unknown version and garbage manifests are clear errors too.
    assert!(reg
        .promote("nope")
        .unwrap_err()
        .to_string()
        .contains("no version"));
    std::fs::write(reg.version_dir("bad").join("manifest.json"), "{").unwrap();
    assert!(reg
        .load("bad")
        .unwrap_err()
        .to_string()
        .contains("corrupt manifest"));
    // A model file with NaN weights or the wrong shape does not load.
    let mut f = tiny_model("x").file().clone();
    f.w2 = vec![f32::NAN, 1.0];
    assert!(FeatureModel::from_file(f).is_err());
    let mut f = tiny_model("x").file().clone();
    f.skip.pop();
    assert!(FeatureModel::from_file(f).is_err());
}

#[test]
fn empty_log_and_too_little_data_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
    assert_eq!(ds.interactions_total, 0);
    let err = train(&ds, &TrainConfig::default(), "v").unwrap_err();
    assert!(matches!(err, LearnError::TooLittleData(_)), "{err}");
    synthetic_log(&store, 10);
    let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
    let err = train(&ds, &TrainConfig::default(), "v")
        .unwrap_err()
        .to_string();
    assert!(err.contains("too little data"), "{err}");
}

/// The registry's Core ML package, run by our MIL executor, scores like the
/// Rust model (fp16 tolerance).
fn coreml_matches_the_model(reg: &Registry, model: &FeatureModel, ds: &Dataset) {
    use anectx_learn::registry::{COREML_CANDIDATES, COREML_PACKAGE};
    let pkg = reg.version_dir(&model.file().version).join(COREML_PACKAGE);
    let m = anectx_coreml::read_package(&pkg).unwrap();
    let report = anectx_coreml::check::check_model(&m, anectx_coreml::check::Chip::M4);
    assert_eq!(report.errors, 0, "{report:?}");
    let g = &ds.groups[0];
    let refs: Vec<&Features> = g.raw.iter().collect();
    let feats = anectx_learn::features::features(&refs);
    let n = feats.len().min(COREML_CANDIDATES);
    let mut x = vec![0f32; N_FEATURES * COREML_CANDIDATES];
    for (j, f) in feats.iter().take(n).enumerate() {
        for i in 0..N_FEATURES {
            x[i * COREML_CANDIDATES + j] = f[i];
        }
    }
    let t = candle_core::Tensor::from_vec(
        x,
        (1, N_FEATURES, 1, COREML_CANDIDATES),
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .to_dtype(candle_core::DType::F16)
    .unwrap();
    let inputs = [("features".to_string(), t)].into_iter().collect();
    let out = anectx_coreml::exec::run(&m, &inputs).unwrap();
    let got: Vec<f32> = out["score"]
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (j, f) in feats.iter().take(n).enumerate() {
        let want = 1.0 / (1.0 + (-model.score_features(f)).exp());
        assert!(
            (got[j] - want).abs() < 0.02,
            "candidate {j}: {} vs {want}",
            got[j]
        );
    }
}

#[test]
fn splits_keep_every_question_on_one_side() {
    // 25 questions, each asked 8 times in two spellings (case, spacing).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    synthetic_log_asking(&store, 200, &|i| {
        if i % 2 == 0 {
            format!("Question {}", i % 25)
        } else {
            format!("  question   {} ", i % 25)
        }
    });
    let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
    let key = |g: &&Group| {
        g.query
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let keys = |v: &[&Group]| v.iter().map(key).collect::<std::collections::HashSet<_>>();
    let (tr, val, gate_side) = ds.split3(0.3, 7);
    let (k_tr, k_val, k_gate) = (keys(&tr), keys(&val), keys(&gate_side));
    assert!(!k_tr.is_empty() && !k_val.is_empty() && !k_gate.is_empty());
    assert!(k_tr.is_disjoint(&k_val), "{k_tr:?} / {k_val:?}");
    assert!(k_tr.is_disjoint(&k_gate), "{k_tr:?} / {k_gate:?}");
    assert!(k_val.is_disjoint(&k_gate), "{k_val:?} / {k_gate:?}");
    assert_eq!(k_tr.len() + k_val.len() + k_gate.len(), 25);
    assert_eq!(tr.len() + val.len() + gate_side.len(), ds.groups.len());
}

/// Interactions where the usage memory knows the answer: the used chunks
/// are those near-duplicate questions used before (`dup_used`,
/// `dup_similarity`), or whose "asked as" field matches (`memory`), while
/// the retrieval features say nothing. With `memory` false the same log is
/// written without the memory's features (a log from before the memory).
fn memory_log(store: &Store, n: usize, memory: bool) {
    let mut rng = anectx_models::weights::Rng::new(5);
    for i in 0..n {
        let mut cands = Vec::new();
        let mut truth = Vec::new();
        for c in 0..20u64 {
            let known = rng.uniform() < 0.3;
            let used = if known {
                rng.uniform() < 0.9
            } else {
                rng.uniform() < 0.1
            };
            let mut f = Features {
                rrf: 1.0 / (60.0 + c as f32),
                bm25: Some(10.0 * rng.uniform()),
                bm25_rank: Some(c as u32 + 1),
                dense: Some(rng.uniform()),
                dense_rank: Some(c as u32 + 1),
                tokens: 50 + (rng.uniform() * 100.0) as u32,
                coverage: rng.uniform(),
                ..Features::default()
            };
            if memory && known {
                f.dup_used = Some(0.5 + rng.uniform());
                f.dup_similarity = Some(0.9 + 0.1 * rng.uniform());
                f.memory = Some(5.0 * rng.uniform());
                f.memory_rank = Some(1 + (rng.uniform() * 20.0) as u32);
            }
            if memory && !known && rng.uniform() < 0.3 {
                f.dup_unused = Some(rng.uniform());
                f.dup_similarity = Some(0.9 + 0.1 * rng.uniform());
            }
            let shown = (c < 8).then_some(c as u32 + 1);
            cands.push(LoggedCandidate {
                chunk_id: i as u64 * 100 + c,
                position: shown,
                score: 1.0 - c as f32 / 20.0,
                propensity: if shown.is_some() { 0.95 } else { 0.02 },
                features: serde_json::to_value(&f).unwrap(),
                text: shown.map(|_| format!("chunk {c}")),
            });
            truth.push(used);
        }
        let (uid, query) = (format!("m-{i}"), format!("question {i}"));
        append_labelled(store, i, uid, query, cands, &truth[..8]);
    }
}

/// How far to trust the usage memory is learned from the log: where the
/// memory's evidence predicts what answers use, the trained model ranks by
/// it and beats the logging policy; the same log without the memory's
/// features teaches nothing.
#[test]
fn the_model_learns_to_trust_the_memory_from_the_log() {
    let run = |memory: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        memory_log(&store, 300, memory);
        let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
        let cfg = TrainConfig::default();
        let (model, _) = train(&ds, &cfg, "rel-mem").unwrap();
        let (_, _, held) = ds.split3(cfg.held_out, cfg.seed);
        let learned = evaluate(&model, &held, cfg.ips_clip).unwrap();
        let baseline = evaluate(&FusionRelevance::default(), &held, cfg.ips_clip).unwrap();
        (learned, baseline, model)
    };
    let (with, base, model) = run(true);
    assert!(
        with > base + 0.15,
        "with memory {with} vs logging policy {base}"
    );
    let (without, _, _) = run(false);
    assert!(
        with > without + 0.1,
        "with memory features {with}, without {without}"
    );
    // The learned weights raise a candidate the memory says was used.
    let plain = Features {
        rrf: 0.016,
        bm25: Some(5.0),
        bm25_rank: Some(3),
        dense: Some(0.5),
        dense_rank: Some(3),
        tokens: 100,
        coverage: 0.5,
        ..Features::default()
    };
    let remembered = Features {
        dup_used: Some(1.0),
        dup_similarity: Some(0.95),
        memory: Some(3.0),
        memory_rank: Some(2),
        ..plain.clone()
    };
    let x = anectx_learn::features::features(&[&plain, &remembered]);
    assert!(model.score_features(&x[1]) > model.score_features(&x[0]) + 0.5);
}

/// A model trained on a log without memory cannot be moved by the memory's
/// features later: they never varied, so their weights are zero.
#[test]
fn features_that_never_varied_in_training_get_no_weight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    synthetic_log(&store, 200);
    let ds = Dataset::from_log(&store.db, "test-v1").unwrap();
    let (model, _) = train(&ds, &TrainConfig::default(), "rel-nomem").unwrap();
    let f = model.file();
    let mem = anectx_learn::features::LEGACY_FEATURES..N_FEATURES;
    assert!(mem.clone().all(|i| f.skip[i] == 0.0 && f.std[i] == 1.0));
    assert!(f
        .w1
        .chunks(N_FEATURES)
        .all(|row| row[mem.clone()].iter().all(|&w| w == 0.0)));
    let plain = Features {
        rrf: 0.016,
        bm25: Some(5.0),
        dense: Some(0.5),
        coverage: 0.7,
        ..Features::default()
    };
    let remembered = Features {
        dup_used: Some(3.0),
        dup_similarity: Some(1.0),
        dup_unused: Some(2.0),
        memory: Some(9.0),
        memory_rank: Some(1),
        ..plain.clone()
    };
    let x = anectx_learn::features::features(&[&plain, &remembered]);
    assert_eq!(model.score_features(&x[0]), model.score_features(&x[1]));
}
