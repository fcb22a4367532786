//! The stream evaluation on a synthetic collection where every question's
//! relevant document ranks below distractors: asked questions come
//! back better (verbatim and reworded), never-asked ones stay as they were.

use std::collections::HashMap;

use anectx_engine::eval::Collection;
use anectx_engine::{index_texts, Engine, IndexOptions, NoProgress};
use anectx_learn::analyzer::Analyzer;
use anectx_learn::simulate::{simulate_stream, NoSimProgress, SimulateConfig, StreamConfig};

const SYL: [&str; 20] = [
    "ba", "ce", "di", "fo", "gu", "ha", "ji", "ko", "lu", "ma", "ne", "pi", "qo", "ru", "sa", "te",
    "vi", "wo", "xu", "ze",
];

/// A made-up word, distinct for every `n` < 8000.
fn word(n: usize) -> String {
    format!("{}{}{}x", SYL[n % 20], SYL[(n / 20) % 20], SYL[n / 400])
}

fn collection(topics: usize) -> Collection {
    let mut c = Collection::default();
    for t in 0..topics {
        let (a, b, z) = (word(3 * t), word(3 * t + 1), word(3 * t + 2));
        for d in 0..3 {
            c.docs.push((
                format!("t{t}-distractor{d}"),
                format!(
                    "Notes {d} on {a} and {b}. The {a} of the {b} is listed in table {d} \
                     without any measurement."
                ),
            ));
        }
        c.docs.push((
            format!("t{t}-relevant"),
            format!(
                "Measured {z} values. The laboratory repeated every {z} measurement twice \
                 and reports the mean with its error."
            ),
        ));
        let qid = format!("q{t}");
        c.queries
            .push((qid.clone(), format!("what is known about {a} {b} {z}")));
        c.qrels
            .insert(qid, HashMap::from([(format!("t{t}-relevant"), 1)]));
    }
    c
}

#[test]
fn asked_questions_come_back_better_and_new_ones_do_not_move() {
    let coll = collection(40);
    let dir = tempfile::tempdir().unwrap();
    let engine = indexed_engine(&coll, dir.path());
    let cfg = StreamConfig {
        base: SimulateConfig::default(),
        seeds: 2,
        bootstrap: 300,
        ..StreamConfig::default()
    };
    let r = simulate_stream(&engine, &coll, &Analyzer::default(), &cfg, &NoSimProgress).unwrap();
    let s = &r.strata;
    assert_eq!(r.seeds.len(), 2);
    assert!(r.seeds.iter().all(|x| x.memory.is_some()), "{:?}", r.seeds);
    // Before the memory the relevant document sits under distractors.
    assert!(s.repeat.before < 0.7, "{s:?}");
    assert!(s.repeat.delta > 0.1 && s.repeat.ci95_low > 0.05, "{s:?}");
    assert!(s.variant.delta > 0.1 && s.variant.ci95_low > 0.0, "{s:?}");
    // New questions share no words with asked ones: nothing may change.
    assert!(s.new.delta.abs() < 1e-12 && s.new.worsened == 0, "{s:?}");
    assert!(s.mix.delta > 0.05, "{s:?}");
    // The memory ceiling: measured for asked questions, never below what
    // they had without memory, and (here) not below what the memory gave.
    assert_eq!(s.new.ceiling, None, "{s:?}");
    for k in [&s.repeat, &s.variant] {
        let c = k
            .ceiling
            .expect("a ceiling for repeat and variant questions");
        assert!(c >= k.before - 1e-12 && c <= 1.0, "{k:?}");
        assert!(c + 1e-9 >= k.after, "the memory beat its ceiling: {k:?}");
        // A question's own history is part of everything shown.
        let own = k.ceiling_own.expect("an own-history ceiling");
        assert!(own >= k.before - 1e-12 && own <= c + 1e-12, "{k:?}");
    }
    assert!(s.mix.ceiling.is_some(), "{s:?}");
    assert!(r.gate.passed, "{}", r.gate.reason);
    // The engine is left as it was found: no memory.
    assert!(engine.memory().is_none());
}

/// How many interactions of each ask logged the memory's evidence.
fn evidence_by_ask(engine: &Engine) -> HashMap<usize, usize> {
    let mut by_ask: HashMap<usize, usize> = HashMap::new();
    for (_, it) in engine.store().db.interactions(0, 100_000).unwrap() {
        let ask: usize = it.uid.split('-').nth(2).unwrap().parse().unwrap();
        let has = it
            .candidates
            .iter()
            .any(|c| c.features.get("dup_similarity").is_some());
        *by_ask.entry(ask).or_default() += has as usize;
    }
    by_ask
}

fn indexed_engine(coll: &Collection, dir: &std::path::Path) -> Engine {
    let engine = Engine::open(dir, None).unwrap();
    index_texts(
        engine.store(),
        None,
        &coll.docs,
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    engine
}

/// With the loop closed (the default), the second ask of every train
/// question runs with the memory built from the first (as `serve` reloads
/// it), so its logged candidates carry the memory's evidence for the
/// relevance model to learn from; open, no ask sees a memory. With `learn`,
/// each seed trains and gates a model, and the engine is left with the model
/// and memory it had.
#[test]
fn a_closed_loop_asks_with_the_memory_and_learns_from_it() {
    let coll = collection(40);
    let base = StreamConfig {
        base: SimulateConfig::default(),
        seeds: 1,
        bootstrap: 300,
        ..StreamConfig::default()
    };
    assert!(base.closed_loop && !base.learn);
    for closed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let engine = indexed_engine(&coll, dir.path());
        let cfg = StreamConfig {
            closed_loop: closed,
            ..base.clone()
        };
        simulate_stream(&engine, &coll, &Analyzer::default(), &cfg, &NoSimProgress).unwrap();
        let by_ask = evidence_by_ask(&engine);
        assert_eq!(by_ask.get(&0), Some(&0), "{by_ask:?}");
        let second = by_ask.get(&1).copied().unwrap_or(0);
        if closed {
            assert!(second > 10, "{by_ask:?}");
        } else {
            assert_eq!(second, 0, "{by_ask:?}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = indexed_engine(&coll, dir.path());
    let serving = engine.relevance_model().version();
    let cfg = StreamConfig {
        seeds: 2,
        closed_loop: false,
        learn: true,
        ..base
    };
    let r = simulate_stream(&engine, &coll, &Analyzer::default(), &cfg, &NoSimProgress).unwrap();
    assert!(r.seeds.iter().all(|x| x.learned.is_some()), "{:?}", r.seeds);
    assert!(r.strata.repeat.delta > 0.1, "{:?}", r.strata);
    assert!(r.strata.new.delta.abs() < 1e-12, "{:?}", r.strata);
    assert_eq!(engine.relevance_model().version(), serving);
    assert!(engine.memory().is_none());
    // Learning closes the loop whatever `closed_loop` says.
    assert!(evidence_by_ask(&engine).get(&1).copied().unwrap_or(0) > 20);
}
