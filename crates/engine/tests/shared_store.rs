//! Replicas of one shared store (PostgreSQL + pgvector, started per test
//! from the pgserver PyPI package on a Unix socket): what one replica
//! indexes and publishes, another finds after it syncs, with the same
//! vectors and the same ranking; changes and deletions follow; a replica
//! with another embedder is refused before it takes anything.

mod common;

use std::path::Path;
use std::sync::Arc;

use anectx_engine::{ContextOptions, Engine, EngineError, IndexOptions, NoProgress};
use anectx_store::VectorIndex;
use anectx_store_pg::PgStore;
use anectx_testing::pg::PgServer;
use common::{vectors_by_text, write, HashEmbedder};

fn replica(dir: &Path, seed: &str) -> Engine {
    Engine::open(dir, Some(Arc::new(HashEmbedder::new(48, seed)))).unwrap()
}

fn corpus(root: &Path) {
    common::shore_corpus(root);
}

/// (chunk text, relevance) of the packed context, in order.
fn answer(e: &Engine, q: &str) -> Vec<(String, f32)> {
    let r = e.context(q, &ContextOptions::default()).unwrap();
    r.chunks
        .iter()
        .map(|c| (c.text.clone(), c.scores.relevance))
        .collect()
}

/// Records each progress stage: (name, total, increments).
#[derive(Default)]
struct Recorded {
    stages: std::sync::Mutex<Vec<(String, Option<u64>, u64)>>,
}

impl anectx_engine::Progress for Recorded {
    fn stage(&self, name: &str, total: Option<u64>) {
        self.stages.lock().unwrap().push((name.into(), total, 0));
    }
    fn inc(&self, n: u64) {
        if let Some(last) = self.stages.lock().unwrap().last_mut() {
            last.2 += n;
        }
    }
}

#[test]
fn index_through_one_replica_and_query_through_the_other() {
    let Some(pg) = PgServer::start() else { return };
    let root = tempfile::tempdir().unwrap();
    corpus(root.path());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), "s");
    let b = replica(dir_b.path(), "s");
    let shared_a = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let shared_b = PgStore::connect(&pg.conninfo("postgres")).unwrap();

    a.index(&[root.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    assert!(!shared_a.has_vector_index().unwrap());
    let p = a.publish_shared(&shared_a, &[root.path().into()]).unwrap();
    assert_eq!((p.documents_written, p.documents_deleted), (3, 0));
    assert_eq!(shared_b.counts().unwrap().0, 3);
    // The first publish with vectors built the HNSW index, and PostgreSQL
    // finds a chunk by its own vector.
    assert!(p.index_built_s.is_some() && shared_a.has_vector_index().unwrap());
    let (path, v) = {
        let db = &a.store().db;
        let ids: Vec<u64> = db.chunk_paths().unwrap().into_keys().collect();
        let c = db
            .chunks_by_ids(&ids)
            .unwrap()
            .into_iter()
            .find(|c| c.text.contains("keeper"))
            .unwrap();
        (c.path.clone(), a.store().vectors().get(c.id).unwrap())
    };
    let near = shared_b.nearest(&v, 2).unwrap();
    assert_eq!(near[0].0, path, "{near:?}");
    assert!((near[0].2 - 1.0).abs() < 1e-2, "{near:?}");

    // Before its sync, B knows nothing.
    assert!(answer(&b, "lighthouse keeper lamp").is_empty());
    let seen = Recorded::default();
    let s = b.sync_shared(&shared_b, &seen).unwrap();
    assert_eq!((s.documents_written, s.documents_deleted), (3, 0));
    // An empty cache shows its catch-up as a stage with a total.
    let stages = seen.stages.lock().unwrap().clone();
    let shared_stage = stages.iter().find(|(n, _, _)| n == "shared store");
    assert_eq!(
        shared_stage,
        Some(&("shared store".to_string(), Some(3), 3)),
        "{stages:?}"
    );
    let chunks = b.store().db.chunk_count().unwrap();
    assert_eq!(chunks, a.store().db.chunk_count().unwrap());
    assert_eq!(
        s.vectors_copied, chunks,
        "vectors come from the shared store"
    );
    assert!(b.store().check_consistency().unwrap().is_empty());

    // Same vectors, same ranking.
    let q = "lighthouse keeper lamp";
    let (ra, rb) = (answer(&a, q), answer(&b, q));
    assert!(ra[0].0.contains("keeper trimmed the lamp"), "{ra:?}");
    assert_eq!(ra, rb);
    assert_eq!(vectors_by_text(&a), vectors_by_text(&b));

    // A second sync with nothing new changes nothing.
    let again = b.sync_shared(&shared_b, &NoProgress).unwrap();
    assert_eq!((again.changes, again.from, again.to), (0, s.to, s.to));

    // A change and a deletion, indexed and published through A.
    write(
        root.path(),
        "garden.txt",
        "Compost, seedlings and a quokka that visits the vegetable garden.\n",
    );
    std::fs::remove_file(root.path().join("tides.md")).unwrap();
    a.index(&[root.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    let p = a.publish_shared(&shared_a, &[root.path().into()]).unwrap();
    assert_eq!(
        (
            p.documents_written,
            p.documents_deleted,
            p.documents_unchanged
        ),
        (1, 1, 1)
    );
    let s = b.sync_shared(&shared_b, &NoProgress).unwrap();
    assert_eq!((s.documents_written, s.documents_deleted), (1, 1));
    assert!(answer(&b, "quokka")[0].0.contains("quokka"));
    assert!(answer(&b, "neap tides moon")
        .iter()
        .all(|(t, _)| !t.contains("neap")));
    assert_eq!(b.store().db.document_count().unwrap(), 2);
    assert!(b.store().check_consistency().unwrap().is_empty());
    assert_eq!(answer(&a, "quokka garden"), answer(&b, "quokka garden"));
}

#[test]
fn publishing_other_roots_leaves_their_documents_alone() {
    let Some(pg) = PgServer::start() else { return };
    let (r1, r2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(r1.path(), "one.md", "alpha bravo charlie");
    write(r2.path(), "two.md", "delta echo foxtrot");
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (e1, e2) = (replica(d1.path(), "s"), replica(d2.path(), "s"));
    let shared = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    e1.index(&[r1.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    e1.publish_shared(&shared, &[r1.path().into()]).unwrap();
    e2.index(&[r2.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    // e2 does not have one.md, but it is not under e2's root.
    let p = e2.publish_shared(&shared, &[r2.path().into()]).unwrap();
    assert_eq!((p.documents_written, p.documents_deleted), (1, 0));
    assert_eq!(shared.counts().unwrap().0, 2);
}

#[test]
fn a_replica_with_another_embedder_is_refused_before_it_takes_anything() {
    let Some(pg) = PgServer::start() else { return };
    let root = tempfile::tempdir().unwrap();
    corpus(root.path());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), "s");
    let shared = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    a.index(&[root.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    a.publish_shared(&shared, &[root.path().into()]).unwrap();

    let b = replica(dir_b.path(), "other");
    let err = b.sync_shared(&shared, &NoProgress).unwrap_err();
    assert!(matches!(err, EngineError::FleetEmbedder { .. }), "{err}");
    assert_eq!(b.store().db.document_count().unwrap(), 0);

    // Publishing with another embedder is refused too.
    let c_root = tempfile::tempdir().unwrap();
    write(c_root.path(), "c.md", "golf hotel india");
    b.index(
        &[c_root.path().into()],
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let err = b
        .publish_shared(&shared, &[c_root.path().into()])
        .unwrap_err();
    assert!(err.to_string().contains("same embedder"), "{err}");
    assert_eq!(shared.counts().unwrap().0, 3);
}

#[test]
fn a_cache_of_one_shared_store_refuses_another() {
    let Some(pg1) = PgServer::start() else { return };
    let Some(pg2) = PgServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let e = replica(dir.path(), "s");
    let s1 = PgStore::connect(&pg1.conninfo("postgres")).unwrap();
    let s2 = PgStore::connect(&pg2.conninfo("postgres")).unwrap();
    e.sync_shared(&s1, &NoProgress).unwrap();
    let err = e.sync_shared(&s2, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("another shared store"), "{err}");
}

/// `v` without what differs by design between two stores: timings, and
/// chunk ids (each store numbers its own chunks).
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("chunk_id");
                m.remove("timings");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn a_replica_answers_every_query_and_filter_as_the_store_that_indexed() {
    use anectx_engine::{Filter, RetrievalMode};
    let Some(pg) = PgServer::start() else { return };
    let root = tempfile::tempdir().unwrap();
    corpus(root.path());
    common::small_corpus(&root.path().join("kb"));
    for i in 0..12 {
        write(
            root.path(),
            &format!("notes/n{i:02}.md"),
            &format!(
                "# Note {i}\n\nThe keeper logged tide {i} and lamp hours at the lighthouse.\n"
            ),
        );
    }
    // One old file, for the time filters.
    common::set_mtime(&root.path().join("garden.txt"), 1_577_923_200);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), "s");
    let b = replica(dir_b.path(), "s");
    let shared = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    a.index(&[root.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    a.publish_shared(&shared, &[root.path().into()]).unwrap();
    b.sync_shared(&shared, &NoProgress).unwrap();
    assert_eq!(
        b.store().db.document_count().unwrap(),
        a.store().db.document_count().unwrap()
    );

    let filters = [
        Filter::default(),
        Filter {
            path: Some("notes/**".into()),
            ..Filter::default()
        },
        Filter {
            path: Some("*.txt".into()),
            ..Filter::default()
        },
        Filter {
            kind: Filter::parse_kinds("code,html").unwrap(),
            ..Filter::default()
        },
        Filter {
            modified_before: Some(1_609_459_200),
            ..Filter::default()
        },
        Filter {
            modified_after: Some(1_609_459_200),
            path: Some("kb/**".into()),
            ..Filter::default()
        },
    ];
    let queries = [
        "lighthouse keeper lamp",
        "tide 7",
        "which port does the server listen on",
        "checksum of a buffer",
        "vegetable garden compost",
        "pancakes",
    ];
    let mut compared = 0;
    for q in queries {
        for f in &filters {
            for (budget, lambda) in [(2000, 0.7), (80, 1.0)] {
                let o = ContextOptions {
                    budget,
                    mmr_lambda: lambda,
                    filter: f.clone(),
                    ..ContextOptions::default()
                };
                let (ra, rb) = (a.context(q, &o).unwrap(), b.context(q, &o).unwrap());
                assert_eq!(
                    comparable(serde_json::to_value(&ra).unwrap()),
                    comparable(serde_json::to_value(&rb).unwrap()),
                    "{q:?} with {f:?}"
                );
                compared += ra.chunks.len();
            }
            for mode in [
                RetrievalMode::Bm25,
                RetrievalMode::Dense,
                RetrievalMode::Hybrid,
            ] {
                let o = ContextOptions {
                    filter: f.clone(),
                    ..ContextOptions::default()
                };
                let paths = |e: &Engine| -> Vec<String> {
                    let all = e.store().db.chunk_paths().unwrap();
                    let ranked = e.rank(q, None, mode, 10, &o).unwrap();
                    ranked.iter().map(|(id, _)| all[id].clone()).collect()
                };
                let (ra, rb) = (paths(&a), paths(&b));
                assert_eq!(ra, rb, "{q:?} {mode:?} with {f:?}");
            }
        }
    }
    // The filters did select something: the comparison was not of empties.
    assert!(compared > 100, "{compared}");
}
