//! The usage memory belongs to a registry version: promoting a version
//! serves its memory, `model rollback` takes it away again, and between
//! loads the serving memory folds in what is logged.

use std::sync::Arc;
use std::time::Duration;

use anectx_engine::{
    index_texts, ContextOptions, Engine, IndexOptions, MemoryConfig, NoProgress, RetrievalMode,
};
use anectx_learn::analyzer::{Analyzer, ANALYZER_VERSION};
use anectx_learn::features::{FEATURE_NAMES, N_FEATURES};
use anectx_learn::model::{FeatureModelFile, FORMAT};
use anectx_learn::{memory, FeatureModel, Registry};
use anectx_serve::{Metrics, RegistrySource, RelevanceReloader, ReloadOutcome};

const QUESTION: &str = "how do I reset the flux capacitor";
const OTHER: &str = "pancake batter with eggs and milk";

fn corpus() -> Vec<(String, String)> {
    let mut docs: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("distractor-{i:02}"),
                format!(
                    "Flux capacitor history {i}. The flux capacitor is the flux core of the \
                     machine; flux capacitor designs number {i} and flux capacitor drawings \
                     {i} are archived."
                ),
            )
        })
        .collect();
    docs.push((
        "target".into(),
        "Maintenance note. To restart the unit, discharge the capacitor fully, wait ten \
         minutes, then power it on again."
            .into(),
    ));
    for (i, t) in [
        "Pancakes: whisk flour, eggs and milk into a smooth batter and rest it.",
        "Fry the pancake batter in butter until golden on both sides.",
        "Crepes need a thinner batter with more milk and fewer eggs.",
        "Waffles use a batter with melted butter and beaten egg whites. Pancake batter with eggs and milk.",
    ]
    .iter()
    .enumerate()
    {
        docs.push((format!("cooking-{i}"), t.to_string()));
    }
    docs
}

/// A registered model that ranks by the fused score alone (as the built-in
/// model does), so a ranking change comes from the memory only.
fn fused_rank_model(version: &str) -> FeatureModel {
    let mut skip = vec![0.0; N_FEATURES];
    skip[0] = 1.0; // rrf_norm
    FeatureModel::from_file(FeatureModelFile {
        format: FORMAT.into(),
        version: version.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; N_FEATURES],
        std: vec![1.0; N_FEATURES],
        w1: vec![0.0; 2 * N_FEATURES],
        b1: vec![0.0; 2],
        w2: vec![0.0; 2],
        skip,
        adapter: false,
    })
    .unwrap()
}

fn id_of(engine: &Engine, path: &str) -> u64 {
    let paths = engine.store().db.chunk_paths().unwrap();
    *paths.iter().find(|(_, p)| p.as_str() == path).unwrap().0
}

fn ranking(engine: &Engine, q: &str) -> Vec<u64> {
    engine
        .rank(q, None, RetrievalMode::Full, 30, &ContextOptions::default())
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect()
}

fn rank_of(r: &[u64], id: u64) -> usize {
    r.iter()
        .position(|&x| x == id)
        .map_or(usize::MAX, |p| p + 1)
}

/// Logs `query`, shown `shown`, with usage labels (of the serving analyzer
/// version) saying the answer used `used`.
fn log(engine: &Engine, uid: &str, query: &str, shown: &[u64], used: &[u64]) {
    anectx_testing::log::log_used(
        &engine.store().db,
        uid,
        query,
        shown,
        used,
        ANALYZER_VERSION,
    );
}

struct Setup {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    registry: Registry,
    reloader: RelevanceReloader,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(&dir.path().join("store"), None).unwrap());
    index_texts(
        engine.store(),
        None,
        &corpus(),
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let registry = Registry::open(&dir.path().join("registry")).unwrap();
    let source = Arc::new(RegistrySource::new(registry.clone(), Some(engine.clone())));
    let reloader = RelevanceReloader::new(
        engine.clone(),
        source,
        Duration::ZERO,
        Arc::new(Metrics::new()),
    );
    Setup {
        _dir: dir,
        engine,
        registry,
        reloader,
    }
}

fn builtin() -> String {
    use anectx_engine::RelevanceModel;
    anectx_engine::FusionRelevance::default().version()
}

fn swapped(o: ReloadOutcome) -> String {
    match o {
        ReloadOutcome::Swapped { version, .. } => version,
        other => panic!("expected a swap, got {other:?}"),
    }
}

#[test]
fn rollback_takes_the_memory_of_the_rolled_back_version_away() {
    let s = setup();
    let e = &s.engine;
    s.reloader.reload(true).unwrap();
    let target = id_of(e, "target");
    let before = ranking(e, QUESTION);
    assert!(rank_of(&before, target) > 5, "the note starts low");
    // The question was asked and its answer used the note.
    let shown: Vec<u64> = before.iter().take(4).copied().chain([target]).collect();
    log(e, "q1", QUESTION, &shown, &[target]);
    // Nothing changes until a version carries a memory.
    assert_eq!(swapped(s.reloader.reload(true).unwrap()), builtin());
    assert_eq!(ranking(e, QUESTION), before);
    assert!(e.memory().is_none());

    s.registry
        .add(&fused_rank_model("v1"), "h", serde_json::Value::Null)
        .unwrap();
    let rep = memory::rebuild(
        e,
        &s.registry,
        Some("v1"),
        &Analyzer::default(),
        &MemoryConfig::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(rep.spec.stats.pairs, 1);
    s.registry.promote("v1").unwrap();
    assert_eq!(swapped(s.reloader.reload(false).unwrap()), "v1");
    let with = ranking(e, QUESTION);
    assert_eq!(rank_of(&with, target), 1, "v1's memory lifts the note");

    s.registry.rollback().unwrap();
    assert_eq!(swapped(s.reloader.reload(false).unwrap()), builtin());
    assert!(e.memory().is_none());
    assert_eq!(
        ranking(e, QUESTION),
        before,
        "after the rollback the question ranks as before the memory existed"
    );

    // Promoted again, v1 serves with its memory again.
    s.registry.promote("v1").unwrap();
    s.reloader.reload(false).unwrap();
    assert_eq!(ranking(e, QUESTION), with);
}

#[test]
fn a_version_without_a_memory_serves_without_one() {
    let s = setup();
    let e = &s.engine;
    let target = id_of(e, "target");
    let before = ranking(e, QUESTION);
    let shown: Vec<u64> = before.iter().take(4).copied().chain([target]).collect();
    log(e, "q1", QUESTION, &shown, &[target]);
    // v1 has a memory, v2 (promoted after it) has none.
    for v in ["v1", "v2"] {
        s.registry
            .add(&fused_rank_model(v), "h", serde_json::Value::Null)
            .unwrap();
    }
    memory::rebuild(
        e,
        &s.registry,
        Some("v1"),
        &Analyzer::default(),
        &MemoryConfig::default(),
        &|_| {},
    )
    .unwrap();
    s.registry.promote("v1").unwrap();
    s.reloader.reload(false).unwrap();
    assert!(e.memory().is_some());
    s.registry.promote("v2").unwrap();
    assert_eq!(swapped(s.reloader.reload(false).unwrap()), "v2");
    assert!(e.memory().is_none());
    assert_eq!(ranking(e, QUESTION), before);
}

#[test]
fn serving_folds_new_interactions_into_the_memory_between_loads() {
    let s = setup();
    let e = &s.engine;
    let target = id_of(e, "target");
    log(e, "q1", QUESTION, &[target], &[target]);
    memory::rebuild(
        e,
        &s.registry,
        None,
        &Analyzer::default(),
        &MemoryConfig::default(),
        &|_| {},
    )
    .unwrap();
    s.reloader.reload(false).unwrap();
    assert_eq!(e.memory().unwrap().stats().questions, 1);
    // A new question is asked and answered from a cooking note.
    let cook = id_of(e, "cooking-2");
    let before = ranking(e, OTHER);
    assert!(rank_of(&before, cook) > 1);
    log(
        e,
        "q2",
        OTHER,
        &before[..3]
            .iter()
            .copied()
            .chain([cook])
            .collect::<Vec<_>>(),
        &[cook],
    );
    // The next poll finds the stamp unchanged and folds it in.
    assert!(matches!(
        s.reloader.reload(false).unwrap(),
        ReloadOutcome::Unchanged { .. }
    ));
    let m = e.memory().unwrap();
    assert_eq!(m.stats().questions, 2);
    assert_eq!(rank_of(&ranking(e, OTHER), cook), 1);
    // The folded memory is the memory a full build of the log gives.
    let full = e
        .build_memory(ANALYZER_VERSION, &MemoryConfig::default(), &|_| true)
        .unwrap()
        .unwrap();
    assert_eq!(*m, full);
}
