//! A stored usage memory is checked when it is read: a corrupt, truncated,
//! foreign or missing snapshot is refused and rebuilt from the log, and the
//! rebuilt memory is the one a fresh build of the same log gives.

use anectx_engine::{index_texts, Engine, IndexOptions, MemoryConfig, NoProgress};
use anectx_learn::analyzer::{Analyzer, ANALYZER_VERSION};
use anectx_learn::memory::{self, MemoryLoad, MemoryRefused};
use anectx_learn::Registry;

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

#[test]
fn a_corrupt_memory_is_refused_and_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("store"), None).unwrap();
    let docs: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("doc-{i}"),
                format!("note {i} about topic {i} and wings"),
            )
        })
        .collect();
    index_texts(
        engine.store(),
        None,
        &docs,
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let mut ids: Vec<u64> = engine
        .store()
        .db
        .chunk_paths()
        .unwrap()
        .keys()
        .copied()
        .collect();
    ids.sort_unstable();
    log(&engine, "a", "what lifts the wings", &ids[..3], &[ids[1]]);
    log(&engine, "b", "topic two notes", &ids[2..5], &[ids[4]]);
    let registry = Registry::open(&dir.path().join("registry")).unwrap();
    let cfg = MemoryConfig::default();
    let rep = memory::rebuild(
        &engine,
        &registry,
        None,
        &Analyzer::default(),
        &cfg,
        &|_| {},
    )
    .unwrap();
    let watermark = rep.spec.watermark;
    // Interactions logged after the memory was made are not its own.
    log(&engine, "c", "a later question", &ids[5..], &[ids[6]]);
    let fresh = engine
        .build_memory_until(ANALYZER_VERSION, &cfg, &|_| true, watermark)
        .unwrap()
        .unwrap();
    let loaded = memory::load(&engine, &registry, None, &Analyzer::default()).unwrap();
    assert!(matches!(loaded, MemoryLoad::Loaded { .. }), "{loaded:?}");
    assert_eq!(loaded.memory(), Some(&fresh));

    let data = || {
        let spec = memory::read_spec(&registry, None).unwrap().unwrap();
        registry.dir().join("builtin").join(spec.data.unwrap())
    };
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        // A bit flipped inside a question's text still decodes: only the
        // checksum catches it.
        ("a flipped bit", |b| {
            let at = b.windows(5).position(|w| w == b"lifts").unwrap();
            b[at] ^= 0x01
        }),
        ("truncated", |b| b.truncate(b.len() - 10)),
        ("foreign", |b| *b = b"{\"not\": \"a memory\"}".to_vec()),
        ("empty", |b| b.clear()),
    ];
    for (what, damage) in damages {
        let path = data();
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let l = memory::load(&engine, &registry, None, &Analyzer::default()).unwrap();
        let MemoryLoad::Rebuilt {
            memory, refused, ..
        } = l
        else {
            panic!("{what}: not refused: {l:?}")
        };
        assert!(
            matches!(refused, MemoryRefused::File { .. }),
            "{what}: {refused}"
        );
        assert_eq!(
            memory.as_ref(),
            Some(&fresh),
            "{what}: the rebuild is a fresh build"
        );
        // Written again: the next load reads it as it is.
        let again = memory::load(&engine, &registry, None, &Analyzer::default()).unwrap();
        assert!(
            matches!(again, MemoryLoad::Loaded { .. }),
            "{what}: {again:?}"
        );
        assert_eq!(again.memory(), Some(&fresh));
    }
    // A missing snapshot is rebuilt too.
    std::fs::remove_file(data()).unwrap();
    let l = memory::load(&engine, &registry, None, &Analyzer::default()).unwrap();
    assert!(
        matches!(
            &l,
            MemoryLoad::Rebuilt {
                refused: MemoryRefused::Missing { .. },
                ..
            }
        ),
        "{l:?}"
    );
    assert_eq!(l.memory(), Some(&fresh));
    // A corrupt spec is an error (the memory cannot be trusted to know its
    // watermark), never a silent fallback.
    std::fs::write(registry.dir().join("builtin/memory.json"), b"{").unwrap();
    let e = memory::load(&engine, &registry, None, &Analyzer::default()).unwrap_err();
    assert!(e.to_string().contains("corrupt memory spec"), "{e}");
}

/// Two stores with the same documents, numbered in opposite orders (as two
/// replicas of a shared store can be), each logging the same question and
/// the same used document in its own chunk ids.
fn twin(dir: &std::path::Path, reverse: bool) -> (Engine, u64) {
    let engine = Engine::open(dir, None).unwrap();
    let mut docs: Vec<(String, String)> = (0..6)
        .map(|i| (format!("doc-{i}"), format!("note {i} about topic {i}")))
        .collect();
    if reverse {
        docs.reverse();
    }
    index_texts(
        engine.store(),
        None,
        &docs,
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let ids = engine.store().db.chunk_paths().unwrap();
    let id_of = |p: &str| *ids.iter().find(|(_, path)| path.as_str() == p).unwrap().0;
    let (used, other) = (id_of("doc-1"), id_of("doc-4"));
    log(
        &engine,
        "q",
        "which note is about topic one",
        &[used, other],
        &[used],
    );
    (engine, used)
}

#[test]
fn a_memory_from_another_store_is_rebuilt_in_this_stores_chunk_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (trainer, t_used) = twin(&dir.path().join("trainer"), false);
    let (replica, r_used) = twin(&dir.path().join("replica"), true);
    assert_ne!(t_used, r_used, "the two stores must number differently");
    // The trainer's version, with its memory, reaches the replica's registry
    // (as `anectx serve --store postgres://…` copies it).
    let registry = Registry::open(&dir.path().join("registry")).unwrap();
    let cfg = MemoryConfig::default();
    memory::rebuild(
        &trainer,
        &registry,
        None,
        &Analyzer::default(),
        &cfg,
        &|_| {},
    )
    .unwrap();
    let own = memory::load(&trainer, &registry, None, &Analyzer::default()).unwrap();
    assert!(matches!(own, MemoryLoad::Loaded { .. }), "{own:?}");

    let loaded = memory::load(&replica, &registry, None, &Analyzer::default()).unwrap();
    let MemoryLoad::Rebuilt {
        refused, memory, ..
    } = loaded
    else {
        panic!("taken as this store's: {loaded:?}");
    };
    assert!(
        matches!(refused, MemoryRefused::OtherStore { .. }),
        "{refused}"
    );
    // The rebuilt memory names the replica's chunk for the question, not the
    // trainer's number for it.
    let memory = memory.unwrap();
    let terms = replica
        .store()
        .lexical
        .analyze("which note is about topic one");
    let near = memory.near_duplicates(&terms, None, 0.9);
    let evidence = memory.duplicate_evidence(&near);
    assert!(
        evidence.get(&r_used).is_some_and(|e| e.used > 0.0),
        "{evidence:?}"
    );
    assert!(
        !evidence.get(&t_used).is_some_and(|e| e.used > 0.0),
        "{evidence:?}"
    );
    // Saved as the replica's now: the next load takes it as it is.
    let again = memory::load(&replica, &registry, None, &Analyzer::default()).unwrap();
    assert!(matches!(again, MemoryLoad::Loaded { .. }), "{again:?}");
}
