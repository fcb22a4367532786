//! `anectx index --watch`: created, modified, deleted and renamed files and
//! a burst of 1,000 files become searchable (or disappear) while the
//! watcher runs. Waits are bounded polls that name what they waited for;
//! the latencies are printed (`--nocapture`), not asserted against a clock.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anectx_engine::{ContextOptions, Engine};

const WAIT: Duration = Duration::from_secs(30);

struct Watcher {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, store: &Path, tmp: &Path) -> Watcher {
    let config = tmp.join("none.toml");
    std::fs::write(&config, "").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_anectx"))
        .args([
            "index",
            "--watch",
            "--json",
            "--debounce-ms",
            "200",
            "--model",
            "none",
        ])
        .arg("--store")
        .arg(store)
        .arg(root)
        .env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env("ANECTX_CONFIG", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(e) => panic!("--watch --json printed a line that is not JSON ({e}): {line}"),
            }
        }
    });
    let w = Watcher { child, lines };
    // The first line is the reconcile at start.
    let first = w
        .lines
        .recv_timeout(WAIT)
        .expect("no reconcile line from `index --watch` within 30 s");
    assert_eq!(first["run"], "reconcile", "{first}");
    w
}

/// Paths of the chunks a BM25 query finds in the store now.
fn hits(store: &Path, query: &str) -> Vec<String> {
    let engine = Engine::open(store, None).unwrap();
    let r = engine
        .context(
            query,
            &ContextOptions {
                explore: 0.0,
                ..ContextOptions::default()
            },
        )
        .unwrap();
    r.chunks.into_iter().map(|c| c.path).collect()
}

fn documents(store: &Path) -> u64 {
    anectx_store::Store::open(store)
        .unwrap()
        .db
        .document_count()
        .unwrap()
}

/// Polls `ok` every 50 ms for up to 30 s; returns the time it took, or
/// panics naming what it waited for.
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        if ok() {
            let took = t0.elapsed();
            eprintln!("watch: {what}: {} ms", took.as_millis());
            return took;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("waited 30 s for {what}");
}

fn found(store: &Path, word: &str, file: &str) -> bool {
    hits(store, word).iter().any(|p| p.ends_with(file))
}

#[test]
fn created_modified_deleted_and_renamed_files_follow_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("docs");
    let store = tmp.path().join("store");
    std::fs::create_dir_all(root.join("ignored")).unwrap();
    std::fs::write(root.join(".gitignore"), "ignored/\n").unwrap();
    std::fs::write(root.join("first.md"), "# First\n\nquokkas smile at dawn.\n").unwrap();
    let _w = start(&root, &store, tmp.path());
    assert!(found(&store, "quokkas smile", "first.md"));

    // Create.
    std::fs::write(
        root.join("new.md"),
        "# New\n\nzorblax appears in a new file.\n",
    )
    .unwrap();
    wait_for("a created file is searchable", || {
        found(&store, "zorblax", "new.md")
    });
    // Modify.
    std::fs::write(
        root.join("new.md"),
        "# New\n\nquintessa replaced the text.\n",
    )
    .unwrap();
    wait_for("a modified file's new text is searchable", || {
        found(&store, "quintessa", "new.md") && !found(&store, "zorblax", "new.md")
    });
    // Rename.
    std::fs::rename(root.join("new.md"), root.join("renamed.md")).unwrap();
    wait_for("a renamed file is found under its new name only", || {
        let h = hits(&store, "quintessa");
        h.iter().any(|p| p.ends_with("renamed.md")) && !h.iter().any(|p| p.ends_with("new.md"))
    });
    // Delete.
    std::fs::remove_file(root.join("renamed.md")).unwrap();
    wait_for("a deleted file disappears", || {
        hits(&store, "quintessa").is_empty() && documents(&store) == 1
    });
    // A folder renamed with a file inside.
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/deep.md"), "wombats dig burrows.\n").unwrap();
    wait_for("a file in a new folder is searchable", || {
        found(&store, "wombats", "sub/deep.md")
    });
    std::fs::rename(root.join("sub"), root.join("moved")).unwrap();
    wait_for("a renamed folder's files move with it", || {
        let h = hits(&store, "wombats");
        h.iter().any(|p| p.ends_with("moved/deep.md"))
            && !h.iter().any(|p| p.ends_with("sub/deep.md"))
    });
    // Ignored files stay out: write one, then a marker file after it; once
    // the marker is searchable the ignored file has been seen and left.
    std::fs::write(root.join("ignored/secret.md"), "narwhal secrets\n").unwrap();
    std::fs::write(root.join(".hidden.md"), "narwhal hidden\n").unwrap();
    std::fs::write(root.join("marker.md"), "platypus marker\n").unwrap();
    wait_for("the marker after ignored files is searchable", || {
        found(&store, "platypus", "marker.md")
    });
    assert!(
        hits(&store, "narwhal").is_empty(),
        "ignored files were indexed"
    );
}

#[test]
fn a_burst_of_1000_files_is_indexed_and_idle_use_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("docs");
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let w = start(&root, &store, tmp.path());
    let t0 = Instant::now();
    let dir: PathBuf = root.join("burst");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..1000 {
        std::fs::write(
            dir.join(format!("f{i:04}.txt")),
            format!("burst file number b{i:04}x with a few words\n"),
        )
        .unwrap();
    }
    wait_for("1,000 files written in a burst are all indexed", || {
        documents(&store) == 1000
    });
    eprintln!(
        "watch: 1,000-file burst indexed {} ms after the first write",
        t0.elapsed().as_millis()
    );
    // SQLite holds the documents before tantivy commits their postings.
    wait_for("burst files are searchable", || {
        [0, 499, 999]
            .iter()
            .all(|i| found(&store, &format!("b{i:04}x"), &format!("f{i:04}.txt")))
    });
    // Delete half of them.
    for i in (0..1000).step_by(2) {
        std::fs::remove_file(dir.join(format!("f{i:04}.txt"))).unwrap();
    }
    wait_for("500 deleted files leave the store", || {
        documents(&store) == 500
    });

    // Idle: CPU time over 5 s and resident memory, from /proc.
    #[cfg(target_os = "linux")]
    {
        let pid = w.child.id();
        let cpu = || -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            // utime and stime are fields 14 and 15 (11 and 12 after the name).
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        };
        std::thread::sleep(Duration::from_secs(1));
        let (c0, t) = (cpu(), Instant::now());
        std::thread::sleep(Duration::from_secs(5));
        let ticks = cpu() - c0;
        let secs = t.elapsed().as_secs_f64();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap_or("VmRSS: ?")
            .to_string();
        eprintln!(
            "watch: idle for {secs:.1} s: {ticks} CPU ticks ({:.2} % of one core at 100 ticks/s); {rss}",
            ticks as f64 / secs
        );
    }
    // The watcher process stops here (and its guard is used on every OS).
    drop(w);
}

/// Paths of the chunks `/v1/context` returns for `query` on `addr`.
fn served_hits(addr: &str, query: &str) -> Vec<String> {
    let body = serde_json::json!({ "query": query }).to_string();
    let (status, text) = anectx_testing::http(addr, "POST", "/v1/context", None, &body);
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["details"]["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn serve_watch_keeps_the_served_store_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("docs");
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("first.md"), "# First\n\nquokkas smile at dawn.\n").unwrap();
    // No store yet: `serve --watch` creates it from the folder.
    let (_server, addr) = common::start_server(
        common::anectx(tmp.path())
            .args(["serve", "--port", "0", "--debounce-ms", "200", "--store"])
            .arg(&store)
            .arg("--watch")
            .arg(&root)
            .stderr(Stdio::inherit()),
    );
    // The reconcile at start indexes what is there.
    wait_for("serve --watch indexes the folder at start", || {
        served_hits(&addr, "quokkas smile")
            .iter()
            .any(|p| p.ends_with("first.md"))
    });
    // A new file becomes searchable through the running server...
    std::fs::write(
        root.join("new.md"),
        "# New\n\nzorblax appears in a new file.\n",
    )
    .unwrap();
    wait_for("serve --watch: a created file is served", || {
        served_hits(&addr, "zorblax")
            .iter()
            .any(|p| p.ends_with("new.md"))
    });
    // ...and a deleted one disappears.
    std::fs::remove_file(root.join("new.md")).unwrap();
    wait_for("serve --watch: a deleted file is gone", || {
        !served_hits(&addr, "zorblax")
            .iter()
            .any(|p| p.ends_with("new.md"))
    });
}

/// The served chunk whose path ends with `file` for `query`, if any.
fn served_chunk(addr: &str, query: &str, file: &str) -> Option<serde_json::Value> {
    let body = serde_json::json!({ "query": query }).to_string();
    let (status, text) = anectx_testing::http(addr, "POST", "/v1/context", None, &body);
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["chunks"].as_array().unwrap().iter().find_map(|c| {
        c["details"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(file))
            .then(|| c.clone())
    })
}

/// A user keeps `anectx serve --watch notes` running and indexes another
/// folder into the same store with `anectx index`. The server answers from
/// the new documents, densely too, without a restart (before: never, until
/// it restarted); and when its watcher then removes a file, which rewrites
/// the vector file, the other folder's vectors survive (before: the rewrite
/// came from the server's memory, which lacked them).
#[test]
fn a_running_server_takes_in_what_another_process_indexed_and_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let notes = tmp.path().join("notes");
    let papers = tmp.path().join("papers");
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::create_dir_all(&papers).unwrap();
    std::fs::write(notes.join("keep.md"), "# Keep\n\nquokkas smile at dawn.\n").unwrap();
    std::fs::write(notes.join("gone.md"), "# Gone\n\nwombats dig at dusk.\n").unwrap();
    let (_server, addr) = common::start_server(
        common::anectx(tmp.path())
            .args([
                "serve",
                "--port",
                "0",
                "--debounce-ms",
                "200",
                "--relevance-poll-secs",
                "0.2",
                "--store",
            ])
            .arg(&store)
            .arg("--watch")
            .arg(&notes)
            .stderr(Stdio::inherit()),
    );
    wait_for("serve --watch indexes the folder at start", || {
        served_chunk(&addr, "quokkas smile", "keep.md").is_some()
    });
    // Another process indexes another folder into the same store.
    std::fs::write(
        papers.join("harbour.md"),
        "# Harbour\n\nThe zorblax lighthouse keeper logs every spring tide in the harbour.\n",
    )
    .unwrap();
    common::succeed(
        common::anectx(tmp.path())
            .arg("index")
            .arg(&papers)
            .arg("--store")
            .arg(&store),
    );
    let dense = |c: &serde_json::Value| c["details"]["scores"]["dense"].as_f64();
    wait_for(
        "the server answers from the other process's document, densely",
        || {
            served_chunk(&addr, "zorblax lighthouse keeper", "harbour.md")
                .is_some_and(|c| dense(&c).is_some())
        },
    );
    // The server's watcher removes a file: the vector file is rewritten.
    std::fs::remove_file(notes.join("gone.md")).unwrap();
    wait_for("serve --watch: the deleted file is gone", || {
        served_chunk(&addr, "wombats dig", "gone.md").is_none()
    });
    let c = served_chunk(&addr, "zorblax lighthouse keeper", "harbour.md")
        .expect("the other process's document is still served");
    assert!(dense(&c).is_some(), "{c}");
    // And on disk: every chunk keeps its vector.
    let s = anectx_store::Store::open(&store).unwrap();
    assert_eq!(s.check_consistency().unwrap(), Vec::<String>::new());
}
