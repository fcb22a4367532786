//! The interaction log under crashes: `anectx serve` with a store, clients
//! hammering `/v1/context` on loopback, and the server killed with SIGKILL
//! while they do — five rounds. Every interaction the server acknowledged
//! (`"logged": true` in a complete 200 answer) must be in the log
//! afterwards. Also `anectx log export` / `stats` on empty and missing logs.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anectx_models::io::save_model_dir;
use anectx_models::{ConvEmbedder, ConvEmbedderConfig, WeightDtype};
use anectx_store::{Db, Store};
use anectx_testing::tiny;
use candle_core::DType;
use common::{anectx, start_server, Server};
use serde_json::Value;

const ROUNDS: usize = 5;
const CLIENTS: usize = 4;
/// Kill once this many interactions were acknowledged in the round.
const ACKS_BEFORE_KILL: usize = 40;
/// Requests per client and round, at most.
const MAX_REQUESTS: usize = 400;

/// A small random ConvEmbedder with the tiny word-level tokenizer, saved as
/// a model directory `anectx serve --model` can load.
fn tiny_model(dir: &Path) -> PathBuf {
    let tok = dir.join("tiny-tokenizer.json");
    std::fs::write(&tok, tiny::tokenizer_json()).unwrap();
    let cfg = ConvEmbedderConfig {
        vocab_size: tiny::vocab_size(),
        embed_dim: 32,
        widths: vec![32],
        kernel_sizes: vec![3],
        output_dim: 32,
        max_seq: 512,
        ..ConvEmbedderConfig::default()
    };
    let m = ConvEmbedder::new_random(cfg.clone(), 3, DType::F32).unwrap();
    let out = dir.join("model");
    save_model_dir(&out, &cfg, &m.named_tensors(), WeightDtype::F32, &tok).unwrap();
    out
}

fn corpus(dir: &Path) -> PathBuf {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let texts = [
        "paris is the capital of france .",
        "the cat sat on the mat .",
        "the apple neural engine is a chip for models .",
        "water boils at 100 degrees at sea level .",
        "the quick brown fox jumps over the lazy dog .",
        "rust code and python code can search and rank data .",
    ];
    for (i, t) in texts.iter().enumerate() {
        std::fs::write(docs.join(format!("d{i}.md")), format!("# Doc {i}\n\n{t}\n")).unwrap();
    }
    docs
}

/// One POST /v1/context; `Some(interaction id)` only for a complete 200
/// answer that says `"logged": true`.
fn context_call(addr: &str, query: &str) -> Result<Option<String>, ()> {
    let body = serde_json::json!({"query": query, "budget_tokens": 40}).to_string();
    let mut s = TcpStream::connect(addr).map_err(|_| ())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(
        s,
        "POST /v1/context HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|_| ())?;
    let mut resp = String::new();
    if s.read_to_string(&mut resp).is_err() {
        return Ok(None);
    }
    if !resp.starts_with("HTTP/1.1 200") {
        return Ok(None);
    }
    let Some((_, payload)) = resp.split_once("\r\n\r\n") else {
        return Ok(None);
    };
    let Ok(v) = serde_json::from_str::<Value>(payload) else {
        return Ok(None);
    };
    if v["logged"] == true {
        Ok(v["interaction_id"].as_str().map(str::to_string))
    } else {
        Ok(None)
    }
}

fn start(dir: &Path, model: &Path, store: &Path, sync: &str) -> (Server, String) {
    start_server(
        anectx(dir)
            .arg("serve")
            .arg("--model")
            .arg(model)
            .arg("--store")
            .arg(store)
            .args(["--port", "0", "--log-sync", sync])
            .stderr(Stdio::null()),
    )
}

#[test]
fn every_acknowledged_interaction_survives_repeated_sigkill_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = tiny_model(dir);
    let docs = corpus(dir);
    let store = dir.join("store");
    let out = anectx(dir)
        .arg("index")
        .arg(&docs)
        .arg("--store")
        .arg(&store)
        .args(["--model", "none"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let queries = [
        "where does water boil ?",
        "capital of france",
        "the cat on the mat",
        "neural engine chip",
        "rust code search",
    ];
    let mut acked: Vec<String> = Vec::new();
    let mut killed_with_load = 0;
    for round in 0..ROUNDS {
        // Both flush modes survive a process crash; alternate them.
        let sync = if round % 2 == 0 { "full" } else { "normal" };
        let (mut server, addr) = start(dir, &model, &store, sync);
        let ids = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let ids = ids.clone();
                let count = count.clone();
                let addr = addr.clone();
                std::thread::spawn(move || {
                    for n in 0..MAX_REQUESTS {
                        match context_call(&addr, queries[(c + n) % queries.len()]) {
                            Ok(Some(id)) => {
                                ids.lock().unwrap().push(id);
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(None) => {}
                            // The server is gone.
                            Err(()) => break,
                        }
                    }
                })
            })
            .collect();
        // Kill after enough acknowledgements (bounded by the clients' own
        // request limit: if they all finish first, kill anyway).
        while count.load(Ordering::SeqCst) < ACKS_BEFORE_KILL
            && handles.iter().any(|h| !h.is_finished())
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        if handles.iter().any(|h| !h.is_finished()) {
            killed_with_load += 1;
        }
        server.0.kill().unwrap(); // SIGKILL
        server.0.wait().unwrap();
        for h in handles {
            h.join().unwrap();
        }
        let round_ids = ids.lock().unwrap().clone();
        assert!(
            round_ids.len() >= ACKS_BEFORE_KILL.min(CLIENTS * MAX_REQUESTS),
            "round {round}: only {} acknowledged",
            round_ids.len()
        );
        acked.extend(round_ids);
        drop(server);
    }
    assert!(
        killed_with_load >= 1,
        "the server was never killed under load"
    );

    // Every acknowledged interaction is in the log, exactly once.
    let db = Db::open(&Store::db_path(&store)).unwrap();
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "interaction ids repeat");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| db.interaction_id(id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged interactions are missing from the log, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(3)]
    );
    let logged = db.interaction_count().unwrap();
    assert!(logged >= acked.len() as u64);
    println!(
        "{ROUNDS} SIGKILL rounds ({killed_with_load} under load): {} acknowledged, {logged} in \
         the log, 0 missing",
        acked.len()
    );

    // The export has one line per logged interaction, with candidates.
    let out = anectx(dir)
        .args(["log", "export", "--jsonl", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, logged);
    let exported: HashSet<&str> = lines.iter().filter_map(|l| l["uid"].as_str()).collect();
    assert!(acked.iter().all(|id| exported.contains(id.as_str())));
    let l = &lines[0];
    assert_eq!(l["kind"], "context");
    assert!(
        l["candidates"].as_array().is_some_and(|c| !c.is_empty()),
        "{l}"
    );
    assert!(l["labels"].as_array().is_some());
    assert!(l["feedback"].as_array().is_some());
    let out = anectx(dir)
        .args(["log", "stats", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["interactions"].as_u64(), Some(logged));
}

#[test]
fn log_export_of_an_empty_log_is_empty_and_a_missing_store_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = anectx(dir)
        .args(["log", "export", "--jsonl", "--store"])
        .arg(dir.join("nope"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no store in"), "{err}");
    assert!(!dir.join("nope").exists(), "export must not create a store");

    let docs = corpus(dir);
    let store = dir.join("store");
    let out = anectx(dir)
        .arg("index")
        .arg(&docs)
        .arg("--store")
        .arg(&store)
        .args(["--model", "none"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = anectx(dir)
        .args(["log", "export", "--jsonl", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty"), "{err}");
    // To a file: the file exists and is empty.
    let f = dir.join("out.jsonl");
    let out = anectx(dir)
        .args(["log", "export", "--jsonl", "--store"])
        .arg(&store)
        .arg("--out")
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(&f).unwrap().len(), 0);
    let out = anectx(dir)
        .args(["log", "stats", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interactions    0"), "{text}");
}
