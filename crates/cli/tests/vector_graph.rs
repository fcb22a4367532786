//! `--vector-search hnsw` end to end with the built-in embedder: the graph
//! is written beside the vectors, its answers are exact search's, and an
//! `index` process killed while writing the graph
//! (`ANECTX_FAILPOINT=hnsw-mid-write`, a real `abort()`) leaves a store that
//! answers at once and that the next run repairs.

use std::path::Path;
use std::process::Command;

use anectx_testing::succeeded;

/// Files in the corpus: more than the graph walk's candidate count
/// (`hnsw_ef(50)` = 300), so queries walk the graph instead of falling
/// back to exact search.
const FILES: usize = 420;

fn anectx(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anectx"));
    c.args(args).arg("--store").arg(store);
    for k in [
        "ANECTX_MODEL",
        "ANECTX_FAILPOINT",
        "ANECTX_VECTOR_SEARCH",
        "ANECTX_BACKEND",
    ] {
        c.env_remove(k);
    }
    let cfg = store.parent().unwrap().join("config.toml");
    if !cfg.exists() {
        std::fs::write(&cfg, "").unwrap();
    }
    c.env("ANECTX_CONFIG", cfg);
    c
}

fn corpus(root: &Path, version: u32) {
    let topics = [
        "glaciers",
        "compilers",
        "tomatoes",
        "violins",
        "satellites",
        "bees",
        "volcanoes",
        "sailing",
        "chess",
        "bridges",
        "coffee",
        "owls",
        "printing",
        "tides",
    ];
    for i in 0..FILES {
        let t = topics[i % topics.len()];
        let body = format!(
            "Note {i}, revision{version}: on {t}, part {} of a long series about {t} and other things.\n",
            i / topics.len()
        );
        std::fs::write(root.join(format!("n{i:03}.txt")), body).unwrap();
    }
}

/// The part of `context --json` these tests read.
#[derive(serde::Deserialize)]
struct Answer {
    chunks: Vec<Shown>,
}

#[derive(serde::Deserialize)]
struct Shown {
    text: String,
}

/// The texts `context` returns for `query` with a vector search.
fn context(store: &Path, query: &str, search: &str) -> Vec<String> {
    let args = ["context", query, "--json", "--vector-search", search];
    let out = succeeded(anectx(store, &args).output().unwrap());
    let answer: Answer = serde_json::from_slice(&out.stdout).unwrap();
    answer.chunks.into_iter().map(|c| c.text).collect()
}

const QUERIES: [&str; 3] = [
    "what do the notes say about volcanoes",
    "owls at night",
    "coffee and tides",
];

#[test]
fn graph_search_survives_a_kill_while_the_graph_is_written() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let graph = store.join("vectors.hnsw");
    let torn = store.join("vectors.hnsw.tmp");
    corpus(root.path(), 1);
    let root_s = root.path().to_str().unwrap();
    succeeded(
        anectx(&store, &["index", root_s, "--vector-search", "hnsw"])
            .output()
            .unwrap(),
    );
    assert!(graph.is_file(), "the graph is written beside the vectors");
    for q in QUERIES {
        let exact = context(&store, q, "exact");
        assert!(!exact.is_empty());
        assert_eq!(context(&store, q, "hnsw"), exact, "{q}");
    }

    // Every file changes and some go; the indexer dies writing the graph.
    corpus(root.path(), 2);
    for i in 0..7 {
        std::fs::remove_file(root.path().join(format!("n{i:03}.txt"))).unwrap();
    }
    let before = std::fs::read(&graph).unwrap();
    let crashed = anectx(&store, &["index", root_s, "--vector-search", "hnsw"])
        .env("ANECTX_FAILPOINT", "hnsw-mid-write")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run should have aborted");
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("hnsw-mid-write"));
    assert!(torn.is_file(), "half a graph was left behind");
    assert_eq!(
        std::fs::read(&graph).unwrap(),
        before,
        "the old graph stays"
    );
    {
        // The graph is derived data: SQLite, tantivy and the vectors agree.
        let s = anectx_engine::Store::open(&store).unwrap();
        assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());
    }
    // The stale graph is not trusted: answers are exact search's, new text
    // only, nothing deleted.
    for q in QUERIES {
        let hnsw = context(&store, q, "hnsw");
        assert_eq!(hnsw, context(&store, q, "exact"), "{q}");
        assert!(hnsw.iter().all(|t| t.contains("revision2")), "{hnsw:?}");
        assert!(hnsw.iter().all(|t| !t.contains("Note 3,")), "{hnsw:?}");
    }
    // The next run writes a whole graph again.
    succeeded(
        anectx(&store, &["index", root_s, "--vector-search", "hnsw"])
            .output()
            .unwrap(),
    );
    assert_ne!(std::fs::read(&graph).unwrap(), before);
    assert!(!torn.exists(), "the torn file was replaced");
    for q in QUERIES {
        assert_eq!(context(&store, q, "hnsw"), context(&store, q, "exact"));
    }
}

#[test]
fn a_bad_vector_search_names_where_it_came_from() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::write(root.path().join("a.txt"), "a small note").unwrap();
    succeeded(
        anectx(&store, &["index", root.path().to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let out = anectx(&store, &["context", "x", "--vector-search", "fast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"fast\"") && err.contains("--vector-search") && err.contains("hnsw"),
        "{err}"
    );
    let out = anectx(&store, &["context", "x"])
        .env("ANECTX_VECTOR_SEARCH", "nope")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ANECTX_VECTOR_SEARCH"), "{err}");
}
