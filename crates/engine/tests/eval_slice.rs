//! The evaluation pipeline end to end on a tiny BEIR-layout collection.

mod common;

use anectx_engine::eval::{evaluate_mode, Collection};
use anectx_engine::{index_texts, ContextOptions, Engine, IndexOptions, NoProgress, RetrievalMode};
use common::{write, Harness};

fn tiny_collection_evaluates(h: &Harness) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "corpus.jsonl",
        "{\"_id\": \"d1\", \"title\": \"Wing flutter\", \"text\": \"flutter of swept wings at supersonic speed\"}\n\
         {\"_id\": \"d2\", \"title\": \"\", \"text\": \"heat transfer in laminar boundary layers\"}\n\
         {\"_id\": 3, \"title\": \"Buckling\", \"text\": \"buckling of thin cylindrical shells under pressure\"}\n",
    );
    write(
        d,
        "queries.jsonl",
        "{\"_id\": \"q1\", \"text\": \"wing flutter\"}\n\
         {\"_id\": \"q2\", \"text\": \"laminar heat transfer\"}\n\
         {\"_id\": \"q3\", \"text\": \"no judgments for me\"}\n",
    );
    write(
        d,
        "qrels.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq2\t3\t1\n",
    );
    let coll = Collection::load(d).unwrap();
    assert_eq!(coll.docs.len(), 3);
    assert_eq!(coll.queries.len(), 2, "unjudged queries are skipped");
    let store = tempfile::tempdir().unwrap();
    let engine = Engine::open(store.path(), None).unwrap();
    h.index_texts(&engine, &coll.docs, &IndexOptions::default())
        .unwrap();
    let r = evaluate_mode(
        &engine,
        &coll,
        RetrievalMode::Bm25,
        None,
        &ContextOptions::default(),
    )
    .unwrap();
    assert_eq!(r.queries, 2);
    let q1 = &r.per_query[0];
    assert_eq!(q1.top10, vec!["d1".to_string()]);
    assert!((q1.ndcg_10 - 1.0).abs() < 1e-9);
    let q2 = &r.per_query[1];
    // d2 is found, the other relevant document (3) shares no query term.
    assert_eq!(q2.top10, vec!["d2".to_string()]);
    assert_eq!(q2.recall_100, 0.5);
    assert!((r.mrr_10 - 1.0).abs() < 1e-9);
    // Re-indexing the same texts is a no-op.
    let again = index_texts(
        engine.store(),
        None,
        &coll.docs,
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(again.files_indexed, 0);
}

#[test]
fn a_directory_that_is_not_a_collection_is_named_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "corpus.jsonl", "{\"_id\": \"d1\", \"text\": \"x\"}\n");
    let e = Collection::load(d).unwrap_err().to_string();
    assert!(
        e.contains("not a BEIR-layout collection")
            && e.contains("queries.jsonl, qrels.tsv missing"),
        "{e}"
    );
    let e = Collection::load(&d.join("corpus.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
}

on_both_stores!(tiny_collection_evaluates,);
