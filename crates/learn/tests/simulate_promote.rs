//! `simulate` trains a relevance model that the gate promotes, hot-swaps it
//! into the engine, and reports the test-query nDCG@10 measured with it.
//!
//! The synthetic collection (BM25 only) is built so that a feature-based
//! model can help on questions it never saw: for every topic the relevant
//! document is long and mentions each question word once, while three short
//! distractors repeat two of the three question words, so the baseline
//! never ranks it first. What sets the relevant document apart are
//! query-independent features, not words: it covers every question word, is
//! longer, and sits below its distractors in the BM25 order. Train and test
//! topics share no words, so the test gain can only come from the learned
//! model. 200 topics give about 100 train questions, so the gate sees more
//! than its minimum of 8 distinct held-out questions.

use std::collections::HashMap;

use anectx_engine::eval::Collection;
use anectx_engine::{index_texts, ContextOptions, Engine, IndexOptions, NoProgress};
use anectx_learn::analyzer::Analyzer;
use anectx_learn::registry::Registry;
use anectx_learn::simulate::{simulate, test_ndcg, NoSimProgress, SimulateConfig};

const SYL: [&str; 20] = [
    "ba", "ce", "di", "fo", "gu", "ha", "ji", "ko", "lu", "ma", "ne", "pi", "qo", "ru", "sa", "te",
    "vi", "wo", "xu", "ze",
];

/// A made-up word, distinct for every `n` < 8000.
fn word(n: usize) -> String {
    format!("{}{}{}q", SYL[n % 20], SYL[(n / 20) % 20], SYL[n / 400])
}

fn collection(topics: usize) -> Collection {
    let mut c = Collection::default();
    for t in 0..topics {
        let w = |i: usize| word(10 * t + i);
        let (a, b, z) = (w(0), w(1), w(2));
        for d in 0..3 {
            c.docs.push((
                format!("t{t}-distractor{d}"),
                format!("{a} {b}. {a} and {b}, {a} with {b}: table {d} of {a} {b}."),
            ));
        }
        c.docs.push((
            format!("t{t}-relevant"),
            format!(
                "The {a} study reports {z} for every {b} sample. It describes the {} \
                 procedure, the {} apparatus, the {} calibration and the {} controls, \
                 then compares the {} results with earlier {} surveys and lists the \
                 {} limitations that remain open for later work.",
                w(3),
                w(4),
                w(5),
                w(6),
                w(7),
                w(8),
                w(9)
            ),
        ));
        let qid = format!("q{t}");
        c.queries.push((qid.clone(), format!("{a} {b} {z}")));
        c.qrels
            .insert(qid, HashMap::from([(format!("t{t}-relevant"), 1)]));
    }
    c
}

#[test]
fn simulate_promotes_hot_swaps_and_reports_the_swapped_models_score() {
    let coll = collection(200);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("store"), None).unwrap();
    index_texts(
        engine.store(),
        None,
        &coll.docs,
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let registry = Registry::open(&dir.path().join("models")).unwrap();
    let baseline = engine.relevance_model();
    let cfg = SimulateConfig::default();
    let r = simulate(
        &engine,
        &coll,
        &registry,
        &Analyzer::default(),
        &cfg,
        &NoSimProgress,
    )
    .unwrap();
    assert_eq!(r.rounds.len(), 1);
    let round = &r.rounds[0];
    let g = round
        .gate
        .as_ref()
        .expect("a candidate was trained and gated");
    eprintln!(
        "round: {} logged, gate {} ({} held-out questions, candidate {:.3} vs current {:.3}, eval {:?}), test nDCG@10 {:.4} -> {:.4}",
        round.interactions_logged,
        g.passed,
        g.held_out_questions,
        g.candidate,
        g.current,
        g.eval,
        round.test_ndcg_before,
        round.test_ndcg_after
    );

    // The premise: the baseline never ranks the relevant document first
    // (measured: second for every test question, nDCG@10 0.631).
    assert!(round.test_ndcg_before < 0.7, "{round:?}");
    // The gate passed on enough questions and the candidate was promoted.
    assert!(g.passed, "{}", g.reason);
    assert!(g.held_out_questions >= cfg.gate.min_questions);
    let promoted = round.promoted.clone().expect("promoted");
    assert_eq!(registry.current().unwrap().as_deref(), Some(&promoted[..]));
    // Hot-swapped: the engine now serves the promoted version.
    assert_eq!(engine.relevance_model().version(), promoted);
    assert_ne!(baseline.version(), promoted);
    // The after-score is the swapped model's: much better than before.
    assert!(
        round.test_ndcg_after >= round.test_ndcg_before + 0.25,
        "{round:?}"
    );

    // Recompute over every judged question with the serving (swapped) model
    // and with the baseline: the gain belongs to the swapped model.
    let opts = ContextOptions {
        explore: 0.0,
        ..cfg.context_options()
    };
    let swapped = test_ndcg(&engine, &coll, &coll.queries, None, &opts, cfg.k).unwrap();
    engine.set_relevance_model(baseline.clone());
    let base = test_ndcg(&engine, &coll, &coll.queries, None, &opts, cfg.k).unwrap();
    eprintln!("all questions: baseline {base:.4}, swapped model {swapped:.4}");
    assert!(
        swapped >= base + 0.2,
        "swapped {swapped} vs baseline {base}"
    );
    assert!(
        (base - round.test_ndcg_before).abs() < 0.15,
        "the test split looks like the whole collection under the baseline"
    );
    assert!(
        (swapped - round.test_ndcg_after).abs() < 0.15,
        "the reported after-score ({}) is not the swapped model's ({swapped})",
        round.test_ndcg_after
    );
}
