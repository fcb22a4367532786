//! A crash in the middle of indexing (a real `abort()` of the `anectx`
//! process at a named point) leaves a store that the next run completes:
//! afterwards SQLite, tantivy and the vector store agree.

use std::path::Path;
use std::process::Command;

/// An empty config file beside the store, so a developer's config is not read.
fn empty_config(store: &Path) -> std::path::PathBuf {
    let p = store.parent().unwrap().join("config.toml");
    if !p.exists() {
        std::fs::write(&p, "").unwrap();
    }
    p
}

fn context_cmd(store: &Path, query: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anectx"));
    c.args(["context", query, "--json", "--model", "none", "--store"])
        .arg(store);
    c.env_remove("ANECTX_MODEL").env_remove("ANECTX_FAILPOINT");
    c.env("ANECTX_CONFIG", empty_config(store));
    c
}

fn index(
    store: &Path,
    root: &Path,
    model: Option<&Path>,
    failpoint: Option<&str>,
) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anectx"));
    c.arg("index").arg(root).arg("--store").arg(store);
    match model {
        Some(m) => c.arg("--model").arg(m),
        None => c.args(["--model", "none"]),
    };
    c.env_remove("ANECTX_MODEL").env_remove("ANECTX_FAILPOINT");
    c.env("ANECTX_CONFIG", empty_config(store));
    if let Some(f) = failpoint {
        c.env("ANECTX_FAILPOINT", f);
    }
    c.output().unwrap()
}

fn corpus(root: &Path, version: u32) {
    for i in 0..12 {
        let body =
            format!("# File {i}\n\nrevision{version} text about topic{i} and shared words.\n");
        std::fs::write(root.join(format!("f{i}.md")), body).unwrap();
    }
}

fn context_paths(store: &Path, query: &str) -> Vec<String> {
    let mut c = context_cmd(store, query);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

fn crash_and_recover(failpoint: &str, model: Option<&Path>) {
    let root = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("store");
    corpus(root.path(), 1);
    let ok = index(&store, root.path(), model, None);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Change everything, delete one file, and crash mid-run.
    corpus(root.path(), 2);
    std::fs::remove_file(root.path().join("f0.md")).unwrap();
    let crashed = index(&store, root.path(), model, Some(failpoint));
    assert!(
        !crashed.status.success(),
        "{failpoint}: the run should have aborted"
    );
    assert!(String::from_utf8_lossy(&crashed.stderr).contains(failpoint));
    {
        let s = anectx_engine::Store::open(&store).unwrap();
        let problems = s.check_consistency().unwrap();
        assert!(
            !problems.is_empty(),
            "{failpoint}: expected unfinished work"
        );
    }
    // Queries still work on the interrupted store and never show deleted chunks.
    for t in context_paths(&store, "topic0") {
        assert!(
            !t.contains("topic0"),
            "{failpoint}: deleted file returned: {t}"
        );
    }
    let again = index(&store, root.path(), model, None);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let s = anectx_engine::Store::open(&store).unwrap();
    assert_eq!(
        s.check_consistency().unwrap(),
        Vec::<String>::new(),
        "{failpoint}"
    );
    assert_eq!(s.db.document_count().unwrap(), 11);
    let texts = context_paths(&store, "topic5");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("revision2") && t.contains("topic5")),
        "{texts:?}"
    );
    assert!(texts.iter().all(|t| !t.contains("revision1")), "{texts:?}");
}

#[test]
fn crash_after_sqlite_is_recovered() {
    crash_and_recover("after-sqlite", None);
}

#[test]
fn crash_before_lexical_commit_is_recovered() {
    crash_and_recover("before-lexical-commit", None);
}

#[test]
fn crash_after_lexical_commit_is_recovered() {
    crash_and_recover("after-lexical-commit", None);
}

#[test]
fn crash_mid_embedding_is_recovered() {
    let Some(model) = anectx_testing::minilm_dir() else {
        return;
    };
    crash_and_recover("mid-embed", Some(&model));
}

#[test]
fn other_embedder_store_is_refused() {
    let Some(model) = anectx_testing::minilm_dir() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("store");
    corpus(root.path(), 1);
    assert!(index(&store, root.path(), None, None).status.success());
    // BM25-only store gets vectors added when a model is configured later ...
    let out = index(&store, root.path(), Some(&model), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and then refuses to be indexed without it.
    let out = index(&store, root.path(), None, None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds vectors from embedder"), "{err}");
    let s = anectx_engine::Store::open(&store).unwrap();
    assert!(s.check_consistency().unwrap().is_empty());
}
