//! `--store postgres://…` through the built binary, against a real
//! PostgreSQL 16 + pgvector (pgserver from PyPI, Unix socket only): two
//! replicas, each with its own cache directory. What one indexes, the other
//! answers from; a change published by one reaches the other's next answer.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anectx_testing::pg::PgServer;
use serde_json::Value;

/// `anectx args…` as a replica whose cache lives under `cache`.
fn replica(cache: &Path, args: &[&str]) -> Output {
    let config = cache.join("none.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_anectx"))
        .args(args)
        .env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env("ANECTX_CONFIG", &config)
        .env("XDG_CACHE_HOME", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_replicas_share_one_store_through_the_cli() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("lighthouse.md"),
        "# Lighthouses\n\nThe keeper trimmed the lamp wick every evening.\n",
    )
    .unwrap();
    std::fs::write(
        docs.path().join("garden.md"),
        "# Garden\n\nCompost and seedlings for the vegetable beds.\n",
    )
    .unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = docs.path().to_str().unwrap();

    let out = ok_json(&replica(
        a.path(),
        &["index", root, "--store", &url, "--json"],
    ));
    assert_eq!(out["shared"]["published"]["documents_written"], 2, "{out}");

    let q = [
        "context",
        "who trimmed the lamp wick",
        "--store",
        &url,
        "--json",
    ];
    let ans = ok_json(&replica(b.path(), &q));
    let first = ans["chunks"][0]["text"].as_str().unwrap();
    assert!(first.contains("keeper trimmed the lamp"), "{ans}");

    // A change through B's index reaches A's next answer.
    std::fs::write(
        docs.path().join("garden.md"),
        "# Garden\n\nA quokka sleeps under the vegetable beds.\n",
    )
    .unwrap();
    let out = replica(b.path(), &["index", root, "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 documents published"), "{said}");
    let ans = ok_json(&replica(
        a.path(),
        &["context", "quokka", "--store", &url, "--json"],
    ));
    assert!(
        ans["chunks"][0]["text"]
            .as_str()
            .unwrap()
            .contains("quokka"),
        "{ans}"
    );
}

#[test]
fn an_unreachable_shared_store_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let sock = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://postgres@/none?host={}&port=1",
        sock.path().display()
    );
    let out = replica(cache.path(), &["context", "anything", "--store", &url]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the shared store"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

mod common;

/// One POST /v1/context: `(status, body)`, or `None` when the connection
/// failed (the server is gone).
fn context_call(addr: &str, query: &str) -> Option<(u16, Value)> {
    use std::io::{Read, Write};
    let body = serde_json::json!({"query": query, "budget_tokens": 200}).to_string();
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok();
    write!(
        s,
        "POST /v1/context HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.get(9..12)?.parse().ok()?;
    let (_, payload) = resp.split_once("\r\n\r\n")?;
    Some((status, serde_json::from_str(payload).unwrap_or(Value::Null)))
}

fn top_text(v: &Value) -> String {
    v["chunks"][0]["text"].as_str().unwrap_or("").to_string()
}

/// Documents (one about a lighthouse keeper) indexed and published through a
/// first replica: (documents folder, that replica's cache, the folder as a
/// string).
fn published_by_a_first_replica(url: &str) -> (tempfile::TempDir, tempfile::TempDir, String) {
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("lighthouse.md"),
        "# Lighthouses\n\nThe keeper trimmed the lamp wick every evening.\n",
    )
    .unwrap();
    let root = docs.path().to_str().unwrap().to_string();
    let cache = tempfile::tempdir().unwrap();
    let out = replica(cache.path(), &["index", &root, "--store", url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (docs, cache, root)
}

#[test]
fn a_serving_replica_follows_the_store_and_loses_no_acknowledged_interaction_when_killed() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let (docs, a, root) = published_by_a_first_replica(&url);
    let b = tempfile::tempdir().unwrap();

    // B starts with an empty cache and takes the store at start.
    let (mut server, addr) = common::start_server(
        common::anectx(b.path())
            .env("XDG_CACHE_HOME", b.path())
            .args([
                "serve",
                "--store",
                &url,
                "--port",
                "0",
                "--shared-poll-secs",
                "0.5",
            ])
            .stderr(Stdio::null()),
    );
    let (status, v) = context_call(&addr, "who trimmed the lamp wick").unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(top_text(&v).contains("keeper"), "{v}");

    // A document published through A reaches B while it serves.
    std::fs::write(
        docs.path().join("quokka.md"),
        "# Quokkas\n\nA quokka is a small wallaby from Rottnest Island.\n",
    )
    .unwrap();
    let out = replica(a.path(), &["index", &root, "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = false;
    for _ in 0..240 {
        let (_, v) = context_call(&addr, "quokka wallaby island").unwrap();
        if top_text(&v).contains("quokka") {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(seen, "B never served the document A published");

    // Load from three clients; SIGKILL once 60 interactions are acknowledged.
    let acked = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for c in 0..3 {
            let (addr, acked) = (&addr, &acked);
            s.spawn(move || {
                for i in 0..300 {
                    let Some((200, v)) = context_call(addr, &format!("lamp keeper {c} {i}")) else {
                        break;
                    };
                    if v["logged"] == true {
                        let id = v["interaction_id"].as_str().unwrap().to_string();
                        let mut a = acked.lock().unwrap();
                        a.push(id);
                        if a.len() >= 60 {
                            break;
                        }
                    }
                }
            });
        }
        while acked.lock().unwrap().len() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        server.0.kill().unwrap(); // SIGKILL under load
    });
    let _ = server.0.wait();
    let shared = anectx_store_pg::PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let stored: std::collections::HashSet<String> = shared
        .interactions_after(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|(_, it)| it.uid)
        .collect();
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 60);
    let lost: Vec<&String> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the shared log: {lost:?}"
    );
}

/// A registry at `dir` holding one trained-looking version `version`.
fn registry_with(dir: &Path, version: &str) {
    use anectx_learn::features::{FEATURE_NAMES, N_FEATURES};
    use anectx_learn::model::{FeatureModel, FeatureModelFile, FORMAT};
    let model = FeatureModel::from_file(FeatureModelFile {
        format: FORMAT.into(),
        version: version.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; N_FEATURES],
        std: vec![1.0; N_FEATURES],
        w1: vec![0.1; 2 * N_FEATURES],
        b1: vec![0.0; 2],
        w2: vec![1.0; 2],
        skip: vec![0.5; N_FEATURES],
        adapter: false,
    })
    .unwrap();
    let reg = anectx_learn::Registry::open(dir).unwrap();
    reg.add(&model, "data", Value::Null).unwrap();
}

/// The relevance model `addr` serves (GET /info).
fn model_of(addr: &str) -> String {
    let (status, body) = anectx_testing::http(addr, "GET", "/info", None, "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["relevance"]["version"].as_str().unwrap_or("").to_string()
}

/// Waits (at most 60 s) until `addr` serves `model`.
fn serves_model(addr: &str, model: &str) -> bool {
    for _ in 0..240 {
        if model_of(addr) == model {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

#[test]
fn a_promotion_reaches_every_serving_replica_and_a_rollback_too() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let (_docs, trainer, _) = published_by_a_first_replica(&url);

    let (b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |home: &Path| {
        common::start_server(
            common::anectx(home)
                .env("XDG_CACHE_HOME", home)
                .args(["serve", "--store", &url, "--port", "0"])
                .args(["--shared-poll-secs", "0.3", "--relevance-poll-secs", "0.2"])
                .stderr(Stdio::null()),
        )
    };
    let (_sb, addr_b) = start(b.path());
    let (_sc, addr_c) = start(c.path());
    let fusion = model_of(&addr_b);
    assert!(fusion.starts_with("fusion"), "{fusion}");

    // The trainer's registry gets a version and promotes it for the fleet.
    let reg = trainer.path().join("registry");
    registry_with(&reg, "rel-fleet-1");
    let reg_s = reg.to_str().unwrap();
    let promote = [
        "model",
        "promote",
        "rel-fleet-1",
        "--store",
        &url,
        "--registry",
        reg_s,
    ];
    let out = replica(trainer.path(), &promote);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(serves_model(&addr_b, "rel-fleet-1"), "B never swapped");
    assert!(serves_model(&addr_c, "rel-fleet-1"), "C never swapped");

    // A rollback through the trainer returns both to the built-in model.
    let rollback = ["model", "rollback", "--store", &url, "--registry", reg_s];
    let out = replica(trainer.path(), &rollback);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(serves_model(&addr_b, &fusion), "B kept the model");
    assert!(serves_model(&addr_c, &fusion), "C kept the model");
}

#[test]
fn an_indexer_killed_mid_publish_leaves_every_document_whole_or_absent() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let docs = tempfile::tempdir().unwrap();
    let long: String = (0..60)
        .map(|i| format!("Paragraph {i} about tides, moons and harbour charts.\n\n"))
        .collect();
    std::fs::write(docs.path().join("a-short.md"), "# Short\n\nA quokka.\n").unwrap();
    std::fs::write(docs.path().join("b-long.md"), format!("# Tides\n\n{long}")).unwrap();
    let root = docs.path().to_str().unwrap().to_string();
    let cache = tempfile::tempdir().unwrap();
    let index = ["index", &root, "--store", &url, "--chunk-tokens", "64"];
    // The writer aborts after the first chunk of the first document that
    // has several: that document's transaction never commits.
    let config = cache.path().join("none.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anectx"))
        .args(index)
        .env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env("ANECTX_CONFIG", &config)
        .env("XDG_CACHE_HOME", cache.path())
        .env("ANECTX_FAILPOINT", "mid-publish")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint did not fire");
    let shared = anectx_store_pg::PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let after_crash = shared.document_chunk_counts().unwrap();
    assert!(
        after_crash.iter().all(|(p, _)| !p.ends_with("b-long.md")),
        "a half-written document is visible: {after_crash:?}"
    );

    // The next run publishes what is missing.
    let out = replica(cache.path(), &index);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = shared.document_chunk_counts().unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    let long_chunks = done
        .iter()
        .find(|(p, _)| p.ends_with("b-long.md"))
        .unwrap()
        .1;
    assert!(long_chunks > 1, "{done:?}");
    let b = tempfile::tempdir().unwrap();
    let ans = ok_json(&replica(
        b.path(),
        &["context", "harbour charts tides", "--store", &url, "--json"],
    ));
    assert!(top_text(&ans).contains("harbour"), "{ans}");
}

#[test]
fn index_watch_publishes_every_run_to_the_shared_store() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("first.md"), "# First\n\nA lighthouse.\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = cache.path().join("none.toml");
    std::fs::write(&config, "").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_anectx"))
        .args(["index", "--watch", "--debounce-ms", "200", "--store", &url])
        .arg(docs.path())
        .env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env("ANECTX_CONFIG", &config)
        .env("XDG_CACHE_HOME", cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _watcher = common::Server(child);
    let shared = anectx_store_pg::PgStore::connect(&pg.conninfo("postgres")).unwrap();
    // Waits at most 60 s until the shared store holds `n` documents.
    let holds = |n: usize| {
        (0..240).any(|_| {
            let ok = shared.document_chunk_counts().unwrap().len() == n;
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            ok
        })
    };
    assert!(holds(1), "the reconcile at start was not published");
    std::fs::write(docs.path().join("second.md"), "# Second\n\nA quokka.\n").unwrap();
    assert!(holds(2), "a file created while watching was not published");
    std::fs::remove_file(docs.path().join("first.md")).unwrap();
    assert!(holds(1), "a file deleted while watching was not removed");
    let left = shared.document_chunk_counts().unwrap();
    assert!(left[0].0.ends_with("second.md"), "{left:?}");
}
