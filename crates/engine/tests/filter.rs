//! Filters inside retrieval: path glob, kind and modification time restrict
//! BM25 and the vector search themselves, so a document ranked far below
//! the unfiltered top k is still found when the filter allows it.

mod common;

use std::sync::Arc;

use anectx_engine::{ContextOptions, Engine, EngineError, Filter, RetrievalMode};
use common::{set_mtime, write, Harness, HashEmbedder};

const JAN_2020: i64 = 1_577_836_800;
const JAN_2021: i64 = 1_609_459_200;

/// 30 Markdown notes about lighthouses in `a/`, and one text file in `b/`
/// that mentions a lighthouse once among other words (dated 2020).
fn corpus(root: &std::path::Path) {
    for i in 0..30 {
        write(
            root,
            &format!("a/note{i:02}.md"),
            &format!(
                "# Note {i}\n\nThe lighthouse keeper lit the lighthouse lamp, lighthouse {i}.\n"
            ),
        );
    }
    write(
        root,
        "b/garden.txt",
        "Compost, soil, seedlings and watering schedules for the vegetable garden; \
         an old lighthouse postcard hangs in the shed beside the rakes and hoes.\n",
    );
    set_mtime(&root.join("b/garden.txt"), JAN_2020 + 86_400);
}

fn engine(h: &Harness, store: &std::path::Path, root: &std::path::Path) -> Engine {
    let e = Engine::open(store, Some(Arc::new(HashEmbedder::new(64, "f")))).unwrap();
    h.index_root(&e, root);
    assert!(e.dense_enabled());
    e
}

fn opts(filter: Filter) -> ContextOptions {
    ContextOptions {
        k_lexical: 5,
        k_dense: 5,
        budget: 4000,
        filter,
        ..ContextOptions::default()
    }
}

fn paths(r: &anectx_engine::ContextResult) -> Vec<String> {
    r.chunks.iter().map(|c| c.path.clone()).collect()
}

fn a_filter_finds_a_document_ranked_below_the_unfiltered_top_k(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    corpus(root.path());
    let e = engine(h, store.path(), root.path());
    let q = "lighthouse";
    // Unfiltered, the garden file is not even a candidate.
    let all = e.context(q, &opts(Filter::default())).unwrap();
    assert!(
        all.pool.len() <= 10 && !paths(&all).iter().any(|p| p.ends_with("garden.txt")),
        "{:?}",
        paths(&all)
    );
    // Filtered to b/, it is found (a filter applied after the top k would
    // return nothing here).
    let only_b = e
        .context(
            q,
            &opts(Filter {
                path: Some("b/**".into()),
                ..Filter::default()
            }),
        )
        .unwrap();
    assert_eq!(paths(&only_b).len(), 1, "{:?}", paths(&only_b));
    assert!(paths(&only_b)[0].ends_with("b/garden.txt"));
    let f = &only_b.chunks[0].scores.features;
    assert!(
        f.bm25.is_some() && f.dense.is_some(),
        "both retrievers found it: {f:?}"
    );
    // Every retrieval mode honours it.
    for mode in [
        RetrievalMode::Bm25,
        RetrievalMode::Dense,
        RetrievalMode::Hybrid,
        RetrievalMode::Full,
    ] {
        let o = opts(Filter {
            path: Some("*.txt".into()),
            ..Filter::default()
        });
        let ranked = e.rank(q, None, mode, 3, &o).unwrap();
        assert_eq!(ranked.len(), 1, "{mode:?}: {ranked:?}");
        assert_eq!(ranked[0].0, only_b.chunks[0].chunk_id, "{mode:?}");
    }
}

fn each_filter_kind_restricts_what_it_says(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    corpus(root.path());
    let e = engine(h, store.path(), root.path());
    let q = "lighthouse";
    let run = |filter: Filter| paths(&e.context(q, &opts(filter)).unwrap());
    let garden = |p: &Vec<String>| p.len() == 1 && p[0].ends_with("garden.txt");
    let notes = |p: &Vec<String>| !p.is_empty() && p.iter().all(|x| x.ends_with(".md"));
    // Kind, by extension or by stored format.
    for k in ["txt", "text", ".TXT"] {
        let p = run(Filter {
            kind: Filter::parse_kinds(k).unwrap(),
            ..Filter::default()
        });
        assert!(garden(&p), "{k}: {p:?}");
    }
    let p = run(Filter {
        kind: Filter::parse_kinds("md").unwrap(),
        ..Filter::default()
    });
    assert!(notes(&p), "{p:?}");
    // Modification time: the garden file is from 2020, the notes are new.
    let p = run(Filter {
        modified_before: Some(JAN_2021),
        ..Filter::default()
    });
    assert!(garden(&p), "{p:?}");
    let p = run(Filter {
        modified_after: Some(JAN_2021),
        ..Filter::default()
    });
    assert!(notes(&p), "{p:?}");
    let p = run(Filter {
        modified_after: Some(JAN_2020),
        modified_before: Some(JAN_2020 + 2 * 86_400),
        ..Filter::default()
    });
    assert!(garden(&p), "{p:?}");
    // Several restrictions must all hold: nothing is both.
    let p = run(Filter {
        kind: vec!["md".into()],
        modified_before: Some(JAN_2021),
        ..Filter::default()
    });
    assert!(p.is_empty(), "{p:?}");

    // A touched file keeps its content hash but its new time is recorded
    // at the next index run.
    set_mtime(&root.path().join("a/note07.md"), JAN_2020);
    h.index_root(&e, root.path());
    let p = run(Filter {
        kind: vec!["md".into()],
        modified_before: Some(JAN_2021),
        ..Filter::default()
    });
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].ends_with("a/note07.md"), "{p:?}");
}

fn a_bad_filter_is_an_error_naming_its_field(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    corpus(root.path());
    let e = engine(h, store.path(), root.path());
    let err = e
        .context(
            "lighthouse",
            &opts(Filter {
                path: Some("a/[".into()),
                ..Filter::default()
            }),
        )
        .unwrap_err();
    match err {
        EngineError::Filter(f) => {
            assert_eq!(f.param, "path");
            assert!(f.message.contains("a/["), "{f}");
        }
        other => panic!("expected a filter error, got {other}"),
    }
    let err = e
        .context(
            "lighthouse",
            &opts(Filter {
                modified_after: Some(JAN_2021),
                modified_before: Some(JAN_2020),
                ..Filter::default()
            }),
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Filter(f) if f.param == "modified_before"),
        "{err}"
    );
}

on_both_stores!(
    a_filter_finds_a_document_ranked_below_the_unfiltered_top_k,
    each_filter_kind_restricts_what_it_says,
    a_bad_filter_is_an_error_naming_its_field,
);
