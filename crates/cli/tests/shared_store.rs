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

/// `anectx index <folder> --store <url>` as a replica whose cache lives
/// under `cache`; panics when it fails.
fn index_as_replica(cache: &Path, folder: &Path, url: &str) {
    let out = replica(cache, &["index", folder.to_str().unwrap(), "--store", url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// A folder with two documents: one about a lighthouse keeper, one about
/// a garden.
fn two_documents() -> tempfile::TempDir {
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
    docs
}

#[test]
fn two_replicas_share_one_store_through_the_cli() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let docs = two_documents();
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

#[test]
fn a_shared_store_behind_tls_works_with_its_ca_and_says_what_to_add_without() {
    let Some(pg) = PgServer::start_tls() else {
        return;
    };
    let ca = pg.ca_file();
    let url = pg.tls_url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let (_docs, _a, _) = published_by_a_first_replica(&url);
    let b = tempfile::tempdir().unwrap();
    let ans = ok_json(&replica(
        b.path(),
        &[
            "context",
            "who trimmed the lamp wick",
            "--store",
            &url,
            "--json",
        ],
    ));
    assert!(top_text(&ans).contains("keeper trimmed"), "{ans}");
    // Without the CA: refused, saying what to add.
    let out = replica(
        b.path(),
        &[
            "context",
            "lamp",
            "--store",
            &pg.tls_url("postgres", "sslmode=require"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate") && err.contains("sslrootcert="),
        "{err}"
    );
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
        .map(|r| r.interaction.uid)
        .collect();
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 60);
    let lost: Vec<&String> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the shared log: {lost:?}"
    );
}

/// `anectx serve --store url` with its cache under `home`, following the
/// store and the registry quickly: (server, address).
fn serving_replica(home: &Path, url: &str) -> (common::Server, String) {
    common::start_server(
        common::anectx(home)
            .env("XDG_CACHE_HOME", home)
            .args(["serve", "--store", url, "--port", "0"])
            .args(["--shared-poll-secs", "0.3", "--relevance-poll-secs", "0.2"])
            .stderr(Stdio::null()),
    )
}

#[test]
fn a_serving_replica_outlives_postgresql_ending_its_sessions() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let (_docs, b, _) = published_by_a_first_replica(&url);
    let (_server, addr) = serving_replica(b.path(), &url);
    let answered = std::cell::Cell::new(0u64);
    let ask = |q: &str| {
        let (status, v) = context_call(&addr, q).unwrap();
        assert_eq!(status, 200, "{v}");
        answered.set(answered.get() + 1);
        top_text(&v)
    };
    for _ in 0..3 {
        ask("who trimmed the lamp wick");
    }
    // A restart or a failover ends every session the replica holds: its
    // log mirror, its follower and the follower's listener.
    let ended = pg.end_sessions("postgres");
    assert!(ended >= 3, "{ended} sessions ended");
    // The replica keeps answering; what it could not write to the shared
    // log at once gets there on a new connection, and it still follows the
    // store: a document published now is found.
    for _ in 0..4 {
        ask("who trimmed the lamp wick");
    }
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("quokka.md"),
        "# Quokka\n\nA quokka sleeps under the vegetable beds.\n",
    )
    .unwrap();
    let a = tempfile::tempdir().unwrap();
    index_as_replica(a.path(), docs.path(), &url);
    let t0 = std::time::Instant::now();
    while !ask("quokka sleeps").contains("quokka") {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the replica stopped following the store"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Every acknowledged interaction reaches the shared log.
    let shared = anectx_store_pg::PgStore::connect(&pg.conninfo("postgres")).unwrap();
    while shared.interaction_count().unwrap() < answered.get() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{} of {} acknowledged interactions in the shared log",
            shared.interaction_count().unwrap(),
            answered.get()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(shared.interaction_count().unwrap(), answered.get());
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
    let start = |home: &Path| serving_replica(home, &url);
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

/// The cache database `anectx` keeps under `home` for a shared store.
fn cache_db(home: &Path) -> anectx_store::Db {
    let shared = home.join("anectx").join("shared");
    let dir = std::fs::read_dir(&shared)
        .unwrap()
        .next()
        .expect("no shared store cache")
        .unwrap()
        .path();
    anectx_store::Db::open(&dir.join("anectx.sqlite")).unwrap()
}

/// A replica's log, written straight to the shared log: `n` answered
/// questions whose answers quote the shown candidates with high query
/// coverage (so `train` learns a model clearly better than the built-in
/// fusion), and `asks` asks of `question` whose answer quoted `chunk` (this
/// replica's id for it) with `text`.
fn fleet_log(
    pg: &anectx_store_pg::PgStore,
    db: &anectx_store::Db,
    n: usize,
    (question, chunk, text, asks): (&str, u64, &str, usize),
) {
    use anectx_engine::Features;
    use anectx_store::{LoggedCandidate, LoggedInteraction};
    let mut rng = anectx_models::weights::Rng::new(5);
    let mut items = Vec::new();
    let features = |rank: u32, cov: f32, rng: &mut anectx_models::weights::Rng| Features {
        rrf: 1.0 / (60.0 + rank as f32),
        bm25: Some(10.0 * rng.uniform()),
        bm25_rank: Some(rank),
        dense: Some(rng.uniform()),
        dense_rank: Some(rank),
        tokens: 50,
        coverage: cov,
        bigram_coverage: cov * 0.5,
        ..Features::default()
    };
    for i in 0..n {
        let mut candidates = Vec::new();
        let mut quoted = Vec::new();
        for c in 0..20u32 {
            let cov = rng.uniform();
            let shown = c < 6;
            // Words no other chunk has, so a quote names one chunk.
            let words =
                format!("amber{i}x{c} basalt{i}x{c} cobalt{i}x{c} dune{i}x{c} ember{i}x{c}");
            if shown && cov > 0.5 {
                quoted.push(format!("{words}."));
            }
            candidates.push(LoggedCandidate {
                // Chunks no replica holds: they count for training only.
                chunk_id: 1_000_000 + (i * 100) as u64 + c as u64,
                position: shown.then_some(c + 1),
                score: 1.0 - c as f32 / 20.0,
                propensity: if shown { 0.95 } else { 0.02 },
                features: serde_json::to_value(features(c + 1, cov, &mut rng)).unwrap(),
                text: shown.then_some(words),
            });
        }
        items.push(LoggedInteraction {
            uid: format!("fleet-{i}"),
            ts_ms: i as i64,
            kind: "chat".into(),
            query: format!("question number {i}"),
            model_version: "fusion-v1".into(),
            explored: false,
            response: Some(quoted.join(" ")),
            complete: true,
            meta: Default::default(),
            candidates,
        });
    }
    for k in 0..asks {
        items.push(LoggedInteraction {
            uid: format!("asked-{k}"),
            ts_ms: (n + k) as i64,
            kind: "chat".into(),
            query: question.into(),
            model_version: "fusion-v1".into(),
            explored: false,
            response: Some(format!("As the notes say: {text}")),
            complete: true,
            meta: Default::default(),
            candidates: vec![LoggedCandidate {
                chunk_id: chunk,
                position: Some(1),
                score: 1.0,
                propensity: 1.0,
                features: serde_json::to_value(features(1, 1.0, &mut rng)).unwrap(),
                text: Some(text.into()),
            }],
        });
    }
    pg.append_interactions(db, &items).unwrap();
}

/// `dup_used` of the chunk containing `needle` in `addr`'s answer to
/// `query` (0 when absent).
fn dup_used(addr: &str, query: &str, needle: &str) -> f64 {
    let (status, v) = context_call(addr, query).unwrap();
    assert_eq!(status, 200, "{v}");
    v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["text"].as_str().unwrap_or("").contains(needle))
        .and_then(|c| c["details"]["scores"]["dup_used"].as_f64())
        .unwrap_or(0.0)
}

#[test]
fn a_promotion_made_by_train_reaches_every_replica_with_its_memory_in_their_chunk_ids() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    // A publishes the lighthouse and the garden, B the quokka and the bees:
    // B's cache numbers the lighthouse after its own documents, A's and a
    // new trainer's before them.
    let (_docs, a, _) = published_by_a_first_replica(&url);
    let more = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("quokka.md", "# Quokkas\n\nA quokka is a small wallaby.\n"),
        (
            "bees.md",
            "# Bees\n\nBees keep their hive warm in winter.\n",
        ),
    ] {
        std::fs::write(more.path().join(name), text).unwrap();
    }
    let b = tempfile::tempdir().unwrap();
    index_as_replica(b.path(), more.path(), &url);
    let question = "who trimmed the lamp wick";
    let ans = ok_json(&replica(
        b.path(),
        &["context", question, "--store", &url, "--json"],
    ));
    let (b_id, text) = (
        ans["chunks"][0]["chunk_id"].as_u64().unwrap(),
        ans["chunks"][0]["text"].as_str().unwrap().to_string(),
    );
    assert!(text.contains("keeper trimmed"), "{ans}");

    // B's traffic in the fleet's log: enough to train on, and the question
    // asked three times, each answer quoting the lighthouse.
    let shared = anectx_store_pg::PgStore::connect(&pg.conninfo("postgres")).unwrap();
    fleet_log(
        &shared,
        &cache_db(b.path()),
        120,
        (question, b_id, &text, 3),
    );

    let start = |home: &Path| serving_replica(home, &url);
    let (_sa, addr_a) = start(a.path());
    let (_sb, addr_b) = start(b.path());
    assert_eq!(dup_used(&addr_b, question, "keeper trimmed"), 0.0);

    // A trainer with an empty cache trains on the fleet's log and promotes.
    let t = tempfile::tempdir().unwrap();
    let v = ok_json(&replica(
        t.path(),
        &["train", "--store", &url, "--promote", "--json"],
    ));
    assert_eq!(v["promoted"], true, "{v}");
    let version = v["version"].as_str().unwrap().to_string();
    // The memory holds every question of the fleet's log.
    assert_eq!(v["memory"]["questions"], 121, "{v}");
    // Built after the trainer's cache caught up: with the store's embedder.
    assert_eq!(v["memory"]["embedded"], true, "{v}");

    for (name, addr) in [("A", &addr_a), ("B", &addr_b)] {
        assert!(serves_model(addr, &version), "{name} never swapped");
        let used = dup_used(addr, question, "keeper trimmed");
        assert!(
            used > 0.0,
            "{name}: the memory does not name its lighthouse chunk"
        );
    }

    // On another new machine, `memory rebuild` works from the fleet's log
    // too (it catches the cache up first).
    let m = tempfile::tempdir().unwrap();
    let r = ok_json(&replica(
        m.path(),
        &["memory", "rebuild", "--store", &url, "--json"],
    ));
    assert_eq!(r["spec"]["stats"]["questions"], 121, "{r}");
    assert_eq!(r["spec"]["stats"]["embedded"], true, "{r}");
    // Its hint names the shared store, and runs as printed.
    let out = replica(m.path(), &["memory", "rebuild", "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let (hint, words) = next_hint(&said, &[]);
    assert_eq!(
        words,
        ["anectx", "memory", "stats", "--store", &url],
        "{hint}"
    );
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let out = replica(m.path(), &args);
    assert!(
        out.status.success(),
        "{hint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("121"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn feedback_on_any_replica_is_taken_and_in_the_shared_log_when_acknowledged() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let (_docs, b, _) = published_by_a_first_replica(&url);
    let c = tempfile::tempdir().unwrap();
    let (_sb, addr_b) = serving_replica(b.path(), &url);
    // C's follower wakes only once a minute: it will not have copied B's
    // interaction by the time the feedback comes.
    let (_sc, addr_c) = common::start_server(
        common::anectx(c.path())
            .env("XDG_CACHE_HOME", c.path())
            .args(["serve", "--store", &url, "--port", "0"])
            .args(["--shared-poll-secs", "60"])
            .stderr(Stdio::null()),
    );
    let (status, v) = context_call(&addr_b, "who trimmed the lamp wick").unwrap();
    assert_eq!(status, 200, "{v}");
    let id = v["interaction_id"].as_str().unwrap();
    let chunk = v["chunks"][0]["details"]["chunk_id"].as_u64().unwrap();
    // Behind a load balancer, the feedback lands on C.
    let body = serde_json::json!({"interaction_id": id, "rating": 1, "chunk_ids": [chunk]});
    let (status, said) =
        anectx_testing::http(&addr_c, "POST", "/v1/feedback", None, &body.to_string());
    assert_eq!(status, 200, "{said}");
    // Acknowledged means in the shared log (C's follower has not woken).
    let shared = anectx_store_pg::PgStore::connect(&pg.conninfo("postgres")).unwrap();
    assert_eq!(shared.feedback_count().unwrap(), 1);
    // A made-up id is still refused.
    let body = serde_json::json!({"interaction_id": "no-such-id", "rating": 1});
    let (status, said) =
        anectx_testing::http(&addr_c, "POST", "/v1/feedback", None, &body.to_string());
    assert_eq!(status, 422, "{said}");

    // `log stats` on a machine that served nothing shows the fleet's log:
    // B's interaction with the feedback given on C.
    let d = tempfile::tempdir().unwrap();
    let stats = ok_json(&replica(
        d.path(),
        &["log", "stats", "--store", &url, "--json"],
    ));
    assert_eq!(stats["interactions"], 1, "{stats}");
    assert_eq!(
        (&stats["feedback"], &stats["feedback_positive"]),
        (&Value::from(1), &Value::from(1)),
        "{stats}"
    );
    let out = replica(d.path(), &["log", "export", "--store", &url]);
    let line: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(line["uid"], id, "{line}");
    assert_eq!(line["feedback"][0]["rating"], 1, "{line}");
    // Pruning would touch this machine's copy only: refused, saying why.
    let out = replica(d.path(), &["log", "prune", "--store", &url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this machine's copy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command in `said`'s "next: `…`" hint, and its words as a shell
/// would split them (single quotes removed), placeholders replaced.
fn next_hint(said: &str, placeholders: &[(&str, &str)]) -> (String, Vec<String>) {
    let hint = said
        .split("next: `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no hint: {said}"))
        .to_string();
    let words = hint
        .split(' ')
        .map(|w| w.trim_matches('\'').to_string())
        .map(|w| match placeholders.iter().find(|(p, _)| *p == w) {
            Some((_, v)) => v.to_string(),
            None => w,
        })
        .collect();
    (hint, words)
}

#[test]
fn status_shows_how_far_a_cache_is_behind_and_its_hint_replays() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url("postgres");
    let b = tempfile::tempdir().unwrap();
    // A new machine: nothing cached, nothing shared yet.
    let out = replica(b.path(), &["status", "--store", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("0 documents (0 chunks) at change 0"),
        "{said}"
    );
    // The hint names the shared store, not this machine's cache directory,
    // and works as printed.
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("tide.md"),
        "# Tides\n\nNeap tides follow the quarter moons.\n",
    )
    .unwrap();
    let (hint, words) = next_hint(&said, &[("PATH", docs.path().to_str().unwrap())]);
    assert_eq!(words[..2], ["anectx", "index"], "{hint}");
    assert_eq!(
        words[words.len() - 2..],
        ["--store".to_string(), url.clone()],
        "{hint}"
    );
    let a = tempfile::tempdir().unwrap();
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let out = replica(a.path(), &args);
    assert!(
        out.status.success(),
        "{hint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // B sees the shared store ahead of its cache, then caught up.
    let v = ok_json(&replica(b.path(), &["status", "--store", &url, "--json"]));
    let sh = &v["shared"];
    assert_eq!(
        (sh["documents"].as_u64(), sh["cache_at"].as_i64()),
        (Some(1), Some(0)),
        "{v}"
    );
    let head = sh["head"].as_i64().unwrap();
    assert!(head >= 1, "{v}");
    ok_json(&replica(
        b.path(),
        &["context", "neap tides", "--store", &url, "--json"],
    ));
    let v = ok_json(&replica(b.path(), &["status", "--store", &url, "--json"]));
    assert_eq!(v["shared"]["cache_at"].as_i64(), Some(head), "{v}");
    assert_eq!(v["documents"], 1, "{v}");
    // `anectx context` logs nothing; the fleet's log is empty.
    assert_eq!(v["shared"]["interactions"], 0, "{v}");
    assert_eq!(v["shared"]["feedback"], 0, "{v}");
}

/// `line` through `sh -c`, exactly as printed, as the replica whose cache
/// lives under `cache` (`anectx` on PATH is the binary under test).
fn replica_sh(cache: &Path, line: &str) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_anectx")).parent().unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env("ANECTX_CONFIG", cache.join("none.toml"))
        .env("XDG_CACHE_HOME", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap()
}

/// A shared store holding two documents (one about a lighthouse keeper),
/// indexed with MiniLM and published through a first replica.
struct MinilmFleet {
    _pg: PgServer,
    url: String,
    minilm: String,
    _docs: tempfile::TempDir,
    /// The first replica's working folder (and cache).
    a: tempfile::TempDir,
}

fn published_with_minilm() -> Option<MinilmFleet> {
    let minilm = anectx_testing::minilm_dir()?;
    let pg = PgServer::start()?;
    let url = pg.url("postgres");
    let minilm = minilm.to_str().unwrap().to_string();
    let docs = two_documents();
    let a = tempfile::tempdir().unwrap();
    let root = docs.path().to_str().unwrap();
    ok_json(&replica(
        a.path(),
        &["index", root, "--store", &url, "--model", &minilm, "--json"],
    ));
    Some(MinilmFleet {
        _pg: pg,
        url,
        minilm,
        _docs: docs,
        a,
    })
}

#[test]
fn a_shared_store_is_re_embedded_once_and_each_replica_follows_on_the_new_embedder() {
    let Some(fleet) = published_with_minilm() else {
        return;
    };
    let (url, minilm, a) = (fleet.url.as_str(), fleet.minilm.as_str(), &fleet.a);
    let b = tempfile::tempdir().unwrap();
    let q = |model: &'static str| -> Vec<String> {
        let mut v: Vec<String> = [
            "context",
            "who trimmed the lamp wick",
            "--store",
            url,
            "--json",
        ]
        .map(String::from)
        .to_vec();
        if !model.is_empty() {
            v.extend(["--model".to_string(), model.to_string()]);
        }
        v
    };
    let run = |cache: &Path, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        replica(cache, &args)
    };
    let mut with_minilm = q("");
    with_minilm.extend(["--model".to_string(), minilm.to_string()]);
    let ans = ok_json(&run(b.path(), &with_minilm));
    assert_eq!(ans["mode"], "full", "{ans}");

    // A re-embeds the shared store with the built-in embedder, crashing
    // first while staging vectors, then in the middle of the swap: each
    // time the fleet goes on with MiniLM, and `status` shows the run.
    for failpoint in ["mid-stage-vectors", "mid-switch-embedder"] {
        let out = replica_sh(
            a.path(),
            &format!("ANECTX_FAILPOINT={failpoint} anectx reembed --store '{url}'"),
        );
        assert!(!out.status.success(), "{failpoint}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(failpoint),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = ok_json(&replica(a.path(), &["status", "--store", url, "--json"]));
        let r = &st["shared"]["reembedding"];
        assert!(r["to"].as_str().unwrap().contains("built-in"), "{st}");
        assert_eq!(r["chunks"], 2, "{st}");
        // The staging batch the crash interrupted left nothing; the run
        // that crashed in the swap had staged everything.
        let staged = if failpoint == "mid-stage-vectors" {
            0
        } else {
            2
        };
        assert_eq!(r["staged"], staged, "{failpoint}: {st}");
        assert!(
            st["shared"]["embedder"]
                .as_str()
                .unwrap()
                .contains("all-minilm-l6-v2"),
            "{st}"
        );
        let ans = ok_json(&run(b.path(), &with_minilm));
        assert_eq!(ans["mode"], "full", "{failpoint}: {ans}");
    }
    let out = replica(a.path(), &["reembed", "--store", url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("resumed and re-embedded with built-in"),
        "{stdout}"
    );
    assert!(stdout.contains("0 chunks embedded by this run"), "{stdout}");
    assert!(stdout.contains("this cache took 2 vectors"), "{stdout}");
    // Its `next:` hint works as printed, on the new vectors.
    let next = stdout
        .lines()
        .find_map(|l| l.strip_prefix("next: "))
        .unwrap_or_else(|| panic!("no next: in {stdout}"));
    let out = replica_sh(a.path(), next);
    assert!(
        out.status.success(),
        "{next}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ans = ok_json(&run(a.path(), &q("")));
    assert_eq!(ans["mode"], "full", "{ans}");
    assert!(
        ans["embedder"].as_str().unwrap().contains("built-in"),
        "{ans}"
    );

    // B, still on MiniLM, is refused at its catch-up, with both embedders named.
    let out = run(b.path(), &with_minilm);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds vectors from embedder built-in")
            && err.contains("but this replica runs")
            && err.contains("all-minilm-l6-v2"),
        "{err}"
    );
    // On the new embedder, its cache takes the new vectors.
    let out = run(b.path(), &q("default"));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let ans = ok_json(&out);
    assert!(err.contains("this cache takes the new vectors"), "{err}");
    assert_eq!(ans["mode"], "full", "{ans}");
    let first = ans["chunks"][0]["text"].as_str().unwrap();
    assert!(first.contains("keeper trimmed the lamp"), "{ans}");
}

#[test]
fn a_serving_replica_on_the_old_embedder_keeps_serving_after_the_fleet_is_re_embedded() {
    let Some(fleet) = published_with_minilm() else {
        return;
    };
    let (url, minilm, a) = (fleet.url.as_str(), fleet.minilm.as_str(), &fleet.a);
    let b = tempfile::tempdir().unwrap();
    let log = b.path().join("serve.log");
    let (server, addr) = common::start_server(
        common::anectx(b.path())
            .env("XDG_CACHE_HOME", b.path())
            .args(["serve", "--store", url, "--port", "0", "--model", minilm])
            .args(["--shared-poll-secs", "0.2"])
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let ask = || {
        let (status, v) = context_call(&addr, "who trimmed the lamp wick").unwrap();
        assert_eq!(status, 200, "{v}");
        assert!(top_text(&v).contains("keeper trimmed"), "{v}");
        v
    };
    ask();

    let out = replica(a.path(), &["reembed", "--store", url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The replica wakes at the swap and at every poll; it keeps answering
    // from its cache and says why it cannot catch up, once.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(2) {
        ask();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let failures = text.matches("catching up failed").count();
    assert_eq!(failures, 1, "{text}");
    assert!(
        text.contains("holds vectors from embedder built-in"),
        "{text}"
    );
}
