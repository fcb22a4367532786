//! The usage memory: built from the interaction log, it raises what a
//! repeated question used, leaves unrelated questions alone, and is off
//! for an empty log.

mod common;

use std::sync::Arc;

use anectx_engine::{ContextOptions, Engine, IndexOptions, RetrievalMode, TextEmbedder};
use anectx_store::Feedback;
use common::{Harness, HashEmbedder};

const VERSION: &str = "test-analyzer-v1";
const QUESTION: &str = "how do I reset the flux capacitor";
const UNRELATED: &str = "pancake batter with eggs and milk";

/// Twenty documents that mention the flux capacitor often and say nothing
/// about resetting it, one short note that does, and some cooking.
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
        "Waffles use a batter with melted butter and beaten egg whites.",
    ]
    .iter()
    .enumerate()
    {
        docs.push((format!("cooking-{i}"), t.to_string()));
    }
    docs
}

fn engine(h: &Harness, dense: bool) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let emb: Option<Arc<dyn TextEmbedder>> = if dense {
        Some(Arc::new(HashEmbedder::new(64, "m")))
    } else {
        None
    };
    let engine = Engine::open(dir.path(), emb.clone()).unwrap();
    h.index_texts(&engine, &corpus(), &IndexOptions::default())
        .unwrap();
    (dir, engine)
}

fn id_of(engine: &Engine, path: &str) -> u64 {
    let paths = engine.store().db.chunk_paths().unwrap();
    *paths.iter().find(|(_, p)| p.as_str() == path).unwrap().0
}

fn ranking(engine: &Engine, q: &str) -> Vec<(u64, f32)> {
    engine
        .rank(q, None, RetrievalMode::Full, 30, &ContextOptions::default())
        .unwrap()
}

fn rank_of(r: &[(u64, f32)], id: u64) -> usize {
    r.iter()
        .position(|x| x.0 == id)
        .map(|p| p + 1)
        .unwrap_or(usize::MAX)
}

/// Logs `query` with `shown` chunks shown and labels `used` of them used.
fn log(engine: &Engine, uid: &str, query: &str, shown: &[u64], used: &[u64]) {
    anectx_testing::log::log_used(&engine.store().db, uid, query, shown, used, VERSION);
}

/// The question was asked, shown the top distractors and the note, and the
/// answer used the note.
fn log_question(engine: &Engine) -> u64 {
    let target = id_of(engine, "target");
    let before = ranking(engine, QUESTION);
    let mut shown: Vec<u64> = before.iter().take(4).map(|x| x.0).collect();
    shown.push(target);
    log(engine, "q1", QUESTION, &shown, &[target]);
    target
}

fn the_memory_raises_what_a_repeated_question_used(h: &Harness) {
    for dense in [true, false] {
        let (_d, engine) = engine(h, dense);
        let target = log_question(&engine);
        let before = ranking(&engine, QUESTION);
        let rb = rank_of(&before, target);
        assert!(rb > 5, "dense={dense}: the note starts low ({rb})");
        let stats = engine.rebuild_memory(VERSION).unwrap().expect("a memory");
        assert_eq!((stats.questions, stats.chunks, stats.pairs), (1, 1, 1));
        let after = ranking(&engine, QUESTION);
        let ra = rank_of(&after, target);
        assert_eq!(
            ra, 1,
            "dense={dense}: the repeated question's used chunk: {rb} → {ra}"
        );
        // Reworded (terms dropped and reordered): the "asked as" field still
        // knows the note.
        let reworded = "capacitor reset";
        let rb = rank_of(
            &{
                let m = engine.memory();
                engine.set_memory(None);
                let r = ranking(&engine, reworded);
                engine.set_memory(m);
                r
            },
            target,
        );
        let ra = rank_of(&ranking(&engine, reworded), target);
        assert!(ra < rb, "dense={dense}: reworded {rb} → {ra}");
        // The memory's evidence is in the features the loop logs.
        let res = engine
            .context(QUESTION, &ContextOptions::default())
            .unwrap();
        let p = res.pool.iter().find(|p| p.chunk_id == target).unwrap();
        assert!(p.features.memory.is_some() && p.features.memory_rank == Some(1));
        assert!(p.features.dup_used.unwrap() > 0.0 && p.features.dup_similarity.unwrap() > 0.99);
        let unused = res
            .pool
            .iter()
            .filter(|p| p.features.dup_unused.unwrap_or(0.0) > 0.0)
            .count();
        assert_eq!(
            unused, 4,
            "the four shown and unused chunks carry negative evidence"
        );
    }
}

fn an_unrelated_new_question_is_left_alone(h: &Harness) {
    for dense in [true, false] {
        let (_d, engine) = engine(h, dense);
        log_question(&engine);
        let before = ranking(&engine, UNRELATED);
        let before_ctx = engine
            .context(UNRELATED, &ContextOptions::default())
            .unwrap();
        assert!(engine.rebuild_memory(VERSION).unwrap().is_some());
        assert_eq!(ranking(&engine, UNRELATED), before, "dense={dense}");
        let after_ctx = engine
            .context(UNRELATED, &ContextOptions::default())
            .unwrap();
        let ids = |r: &anectx_engine::ContextResult| -> Vec<u64> {
            r.chunks.iter().map(|c| c.chunk_id).collect()
        };
        assert_eq!(ids(&after_ctx), ids(&before_ctx), "dense={dense}");
        // The whole candidate pool, in relevance order, with its scores.
        let pool = |r: &anectx_engine::ContextResult| -> Vec<(u64, f32)> {
            r.pool.iter().map(|p| (p.chunk_id, p.relevance)).collect()
        };
        assert_eq!(pool(&after_ctx), pool(&before_ctx), "dense={dense}");
        assert!(after_ctx
            .pool
            .iter()
            .all(|p| p.features.memory.is_none() && p.features.dup_used.is_none()));
    }
}

fn an_empty_log_gives_no_memory_and_changes_nothing(h: &Harness) {
    for dense in [true, false] {
        let (_d, engine) = engine(h, dense);
        let queries = [QUESTION, UNRELATED, "capacitor reset"];
        let before: Vec<_> = queries.iter().map(|q| ranking(&engine, q)).collect();
        assert_eq!(engine.rebuild_memory(VERSION).unwrap(), None);
        assert!(engine.memory().is_none());
        let after: Vec<_> = queries.iter().map(|q| ranking(&engine, q)).collect();
        assert_eq!(after, before, "dense={dense}");
        // Logged but never labelled used (or labelled by another analyzer
        // version): still nothing to remember.
        let target = id_of(&engine, "target");
        log(&engine, "q0", QUESTION, &[target], &[]);
        assert_eq!(engine.rebuild_memory(VERSION).unwrap(), None);
        log(&engine, "q1", QUESTION, &[target], &[target]);
        assert_eq!(engine.rebuild_memory("another-version").unwrap(), None);
        let after: Vec<_> = queries.iter().map(|q| ranking(&engine, q)).collect();
        assert_eq!(after, before, "dense={dense}");
    }
}

fn negative_feedback_removes_a_chunk_from_the_memory(h: &Harness) {
    let (_d, engine) = engine(h, true);
    let target = log_question(&engine);
    engine
        .store()
        .db
        .add_feedback(&Feedback {
            interaction_uid: "q1".into(),
            ts_ms: 1,
            rating: Some(-1),
            chunk_ids: vec![target],
            comment: None,
        })
        .unwrap();
    // The only use was cancelled: nothing left to remember.
    assert_eq!(engine.rebuild_memory(VERSION).unwrap(), None);
    // A +1 on another chunk counts as a use, with more weight.
    let other = id_of(&engine, "distractor-03");
    engine
        .store()
        .db
        .add_feedback(&Feedback {
            interaction_uid: "q1".into(),
            ts_ms: 2,
            rating: Some(1),
            chunk_ids: vec![other],
            comment: None,
        })
        .unwrap();
    let s = engine.rebuild_memory(VERSION).unwrap().unwrap();
    assert_eq!((s.chunks, s.feedback), (1, 2));
    assert_eq!(rank_of(&ranking(&engine, QUESTION), other), 1);
}

/// A log with several questions, repeats and feedback, for the file and
/// incremental tests.
fn log_several(engine: &Engine, from: usize) {
    let target = id_of(engine, "target");
    let cook = id_of(engine, "cooking-1");
    let other = id_of(engine, "distractor-03");
    let qs = [
        (QUESTION, vec![target, other], vec![target]),
        (UNRELATED, vec![cook, target], vec![cook]),
        ("reset capacitor", vec![other, target], vec![target]),
        (QUESTION, vec![target], vec![target]),
    ];
    for (i, (q, shown, used)) in qs.iter().enumerate() {
        log(engine, &format!("s{}", from + i), q, shown, used);
    }
    engine
        .store()
        .db
        .add_feedback(&Feedback {
            interaction_uid: format!("s{}", from + 1),
            ts_ms: 1,
            rating: Some(1),
            chunk_ids: vec![cook],
            comment: None,
        })
        .unwrap();
}

fn build(engine: &Engine) -> anectx_engine::UsageMemory {
    engine
        .build_memory(VERSION, &anectx_engine::MemoryConfig::default(), &|_| true)
        .unwrap()
        .expect("a memory")
}

fn a_memory_file_reads_back_as_the_same_memory(h: &Harness) {
    for dense in [true, false] {
        let (_d, engine) = engine(h, dense);
        log_several(&engine, 0);
        let m = build(&engine);
        assert_eq!(m.stats().embedded, dense);
        let id = engine.memory_embedder_id().unwrap();
        let bytes = m.to_bytes(&id);
        assert_eq!(bytes, m.to_bytes(&id), "the same memory, the same bytes");
        let back = anectx_engine::UsageMemory::from_bytes(&bytes, VERSION, &id).unwrap();
        assert_eq!(back, m, "dense={dense}");
        // And it ranks the same.
        let before = ranking(&engine, QUESTION);
        engine.set_memory(Some(Arc::new(m)));
        let with = ranking(&engine, QUESTION);
        engine.set_memory(Some(Arc::new(back)));
        assert_eq!(ranking(&engine, QUESTION), with);
        assert_ne!(with, before);
    }
}

fn a_corrupt_truncated_or_foreign_memory_file_is_refused(h: &Harness) {
    use anectx_engine::{MemoryFileError as E, UsageMemory};
    let (_d, engine) = engine(h, true);
    log_several(&engine, 0);
    let id = engine.memory_embedder_id().unwrap();
    let good = build(&engine).to_bytes(&id);
    let read = |b: &[u8]| UsageMemory::from_bytes(b, VERSION, &id).unwrap_err();
    // One flipped bit anywhere in the body.
    for at in [60, good.len() / 2, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        assert!(matches!(read(&b), E::Checksum { .. }), "bit at {at}");
    }
    // Truncated, at the end or inside the header.
    assert!(matches!(read(&good[..good.len() - 7]), E::Truncated { .. }));
    assert!(matches!(read(&good[..20]), E::Truncated { .. }));
    // Longer than written.
    let mut long = good.clone();
    long.extend_from_slice(b"xx");
    assert_eq!(read(&long), E::TrailingBytes { extra: 2 });
    // Foreign: not a memory file, an empty file, another format version.
    assert_eq!(read(b"{\"questions\": []}"), E::NotAMemoryFile);
    assert_eq!(read(b""), E::NotAMemoryFile);
    let mut fmt = good.clone();
    fmt[8] = 99;
    assert!(matches!(read(&fmt), E::Format { found: 99, .. }));
    // Built with another analyzer version or another embedder.
    let e = UsageMemory::from_bytes(&good, "test-analyzer-v2", &id).unwrap_err();
    assert!(matches!(e, E::Analyzer { .. }), "{e}");
    let e = UsageMemory::from_bytes(&good, VERSION, "none").unwrap_err();
    assert!(matches!(e, E::Embedder { .. }), "{e}");
    // A checksummed body that does not decode (a count past the end).
    let body_len = good.len() - 52;
    let mut bad = good[..52].to_vec();
    let mut body = good[52..].to_vec();
    let last = body_len - 8;
    body[last..].copy_from_slice(&u64::MAX.to_le_bytes());
    bad.extend_from_slice(&body);
    bad[12..44].copy_from_slice(blake3::hash(&body).as_bytes());
    assert!(matches!(read(&bad), E::Corrupt(_)), "{}", read(&bad));
}

fn extending_a_memory_equals_building_it_from_the_whole_log(h: &Harness) {
    for dense in [true, false] {
        let (_d, engine) = engine(h, dense);
        log_several(&engine, 0);
        let base = build(&engine);
        let (same, read) = engine.extend_memory(&base).unwrap();
        assert_eq!((read, &same), (0, &base), "nothing new: unchanged");
        log_several(&engine, 100);
        log(
            &engine,
            "late",
            "how to fry pancakes",
            &[id_of(&engine, "cooking-1")],
            &[],
        );
        let (ext, read) = engine.extend_memory(&base).unwrap();
        assert_eq!(read, 5);
        let full = build(&engine);
        assert_eq!(ext, full, "dense={dense}");
        // From an empty memory at watermark 0: the whole log.
        let empty =
            anectx_engine::UsageMemory::empty(VERSION, &anectx_engine::MemoryConfig::default(), 0);
        let (from_empty, read) = engine.extend_memory(&empty).unwrap();
        assert_eq!(read, 9);
        assert_eq!(from_empty, full, "dense={dense}");
    }
}

/// Each showing in which a chunk was shown to a near duplicate and not used
/// is one more piece of negative evidence: a distractor shown and passed
/// over in three asks of the question loses three times what one such ask
/// costs it (the penalty grows with the evidence, not with a rank among
/// passed-over chunks).
fn negative_evidence_grows_with_each_unused_showing(h: &Harness) {
    for dense in [true, false] {
        let fused = |engine: &Engine, id: u64| -> f32 {
            engine
                .rank(
                    QUESTION,
                    None,
                    RetrievalMode::Hybrid,
                    30,
                    &ContextOptions::default(),
                )
                .unwrap()
                .into_iter()
                .find(|x| x.0 == id)
                .map(|x| x.1)
                .expect("the distractor is ranked")
        };
        let mut drops = Vec::new();
        for asks in [1, 3] {
            let (_d, engine) = engine(h, dense);
            let target = id_of(&engine, "target");
            let top = ranking(&engine, QUESTION)
                .into_iter()
                .map(|x| x.0)
                .find(|&c| c != target)
                .unwrap();
            let before = fused(&engine, top);
            for a in 0..asks {
                log(
                    &engine,
                    &format!("q{a}"),
                    QUESTION,
                    &[top, target],
                    &[target],
                );
            }
            engine.rebuild_memory(VERSION).unwrap().expect("a memory");
            drops.push(before - fused(&engine, top));
        }
        let (one, three) = (drops[0], drops[1]);
        assert!(one > 0.0, "dense={dense}: one unused showing costs {one}");
        assert!(
            (three - 3.0 * one).abs() < 1e-4,
            "dense={dense}: three unused showings cost {three}, one costs {one}"
        );
    }
}

on_both_stores!(
    the_memory_raises_what_a_repeated_question_used,
    an_unrelated_new_question_is_left_alone,
    an_empty_log_gives_no_memory_and_changes_nothing,
    negative_feedback_removes_a_chunk_from_the_memory,
    a_memory_file_reads_back_as_the_same_memory,
    a_corrupt_truncated_or_foreign_memory_file_is_refused,
    extending_a_memory_equals_building_it_from_the_whole_log,
    negative_evidence_grows_with_each_unused_showing,
);
