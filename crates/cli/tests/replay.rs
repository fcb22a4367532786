//! Every command the product tells a user to run works exactly as written.
//!
//! On a fresh temporary HOME (no config, no store), this test replays:
//! - every line of the README's `sh` blocks, in order, with one mapping:
//!   `cargo run --release --` is the `anectx` binary under test;
//! - the README's `python` chat example against the `serve` command before
//!   it (with the official `openai` client);
//! - every command the quickstart prints under `next:`;
//! - every backticked `anectx …` hint printed by a command that succeeded
//!   (`index`, `context`, `serve`, `train`, …).
//!
//! Lines run through `sh -c` as printed. Three things are substituted, all
//! because a test cannot use the real thing: `serve` gets `ANECTX_PORT=0`
//! (a free port instead of 8181), its `--llm` URL points at a local fake
//! LLM instead of Ollama, and the README's example shared store
//! ([`README_PG_URL`]) is a PostgreSQL started here (pgserver from PyPI). Commands that cannot run here are listed with the
//! reason, and the list is checked against the README so it cannot rot.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// The shared store the README's examples name; replaced by a test server.
const README_PG_URL: &str = "postgres://anectx@db.internal/kb";

/// README commands this test does not run, with why. Each must still be in
/// the README (a stale entry fails the test).
const NOT_RUN: &[(&str, &str)] = &[
    (
        "./scripts/test.sh",
        "the test command itself: this test runs inside it",
    ),
    (
        "cargo bench",
        "benchmarks: minutes of measurement each, run by hand",
    ),
    (
        "--example macos_smoke",
        "needs macOS (Core ML); on Linux it exits non-zero by design",
    ),
];

/// README commands that need macOS: on Linux they must fail with this
/// message, as the README says.
const MAC_ONLY: &[(&str, &str)] = &[
    ("--backend coreml", "Core ML needs macOS"),
    ("scripts/mac-check.sh", "needs macOS"),
];

struct Env {
    home: PathBuf,
    work: PathBuf,
    path: String,
    llm: String,
    python: Option<PathBuf>,
}

/// Kills a server started by the test when it is dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Env {
    fn sh(&self, line: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(line)
            .current_dir(&self.work)
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CARGO_TARGET_DIR");
        for (k, _) in std::env::vars() {
            if k.starts_with("ANECTX_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs `line`; it must succeed. Returns stdout and stderr.
    fn run(&self, line: &str) -> (String, String) {
        eprintln!("replay: {line}");
        let out = self.sh(line).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "`{line}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// Starts a `serve` line (free port, fake upstream) and checks that it
    /// answers /v1/context and /v1/embeddings.
    fn serve(&self, line: &str) -> Server {
        eprintln!("replay (server): {line}");
        let line = match line.split_whitespace().skip_while(|w| *w != "--llm").nth(1) {
            Some(url) => line.replace(url, &self.llm),
            None => line.to_string(),
        };
        let mut child = self
            .sh(&format!("exec {line}"))
            .env("ANECTX_PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .strip_prefix("anectx listening on http://")
            .unwrap_or_else(|| panic!("`{line}` printed {first:?} instead of its address"))
            .to_string();
        let server = Server { child, addr };
        let (status, body) = anectx_testing::http(
            &server.addr,
            "POST",
            "/v1/embeddings",
            None,
            &json!({"input": "hello", "model": "text-embedding-3-small"}).to_string(),
        );
        assert_eq!(status, 200, "`{line}`: /v1/embeddings answered {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 384);
        // Admin routes need the token serve printed, even on loopback.
        let (status, body) =
            anectx_testing::http(&server.addr, "POST", "/admin/reload", None, "{}");
        assert_eq!(
            status, 401,
            "`{line}`: /admin/reload without a token: {body}"
        );
        if line.contains("--store") {
            // The store's own (built-in) embedder serves it.
            assert_eq!(v["model"], "anectx-default-embedder", "{body}");
            let (status, body) = anectx_testing::http(
                &server.addr,
                "POST",
                "/v1/context",
                None,
                &json!({"query": "pressure on a swept wing at supersonic speed"}).to_string(),
            );
            assert_eq!(status, 200, "`{line}`: /v1/context answered {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(
                !v["chunks"].as_array().unwrap().is_empty(),
                "`{line}`: no context chunks: {body}"
            );
        }
        server
    }

    /// Runs the README's python example against `server`.
    fn python(&self, code: &str, server: &Server) {
        let Some(python) = &self.python else {
            return;
        };
        let code = code.replace("127.0.0.1:8181", &server.addr);
        let out = Command::new(python)
            .arg("-c")
            .arg(&code)
            .current_dir(&self.work)
            .env("HOME", &self.home)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the README's python example failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("[1]"),
            "the answer has no [n] citation: {stdout}"
        );
    }
}

/// A fenced block of the README.
struct Block {
    lang: String,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => {
                    cur = Some(Block {
                        lang: rest.trim().to_string(),
                        text: String::new(),
                    })
                }
            }
        } else if let Some(b) = &mut cur {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    out
}

/// Backticked `anectx …` commands in a command's output.
fn hints(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("anectx "))
        .map(str::to_string)
        .collect()
}

/// The commands the quickstart printed under `next:`.
fn next_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| l.trim() != "next:")
        .skip(1)
        .map(str::trim)
        .filter(|l| l.starts_with("anectx "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_printed_and_documented_command_runs_as_written() {
    let root = anectx_testing::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(home.join("notes")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // The user's own notes, for the README's `index ~/notes` line.
    std::fs::write(
        home.join("notes/cache.md"),
        "# Cache decision\n\nWe decided to cache embeddings per chunk, keyed by the \
         content hash, and to evict the least recently used entries first.\n",
    )
    .unwrap();
    // README commands name `./scripts/…` and `.fixtures/…` relative to the
    // checkout.
    std::os::unix::fs::symlink(root.join("scripts"), work.join("scripts")).unwrap();
    let minilm = anectx_testing::minilm_dir();
    if let Some(m) = &minilm {
        std::fs::create_dir_all(work.join(".fixtures")).unwrap();
        std::os::unix::fs::symlink(m, work.join(".fixtures/all-minilm-l6-v2")).unwrap();
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_anectx"))
        .parent()
        .unwrap()
        .to_path_buf();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (llm, _log) = rt.block_on(anectx_testing::fake_llm::spawn()).unwrap();
    let env = Env {
        home,
        work,
        path: format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        llm: format!("http://{llm}/v1"),
        python: anectx_testing::python(),
    };

    let pg = anectx_testing::pg::PgServer::start();
    assert!(
        readme.contains(README_PG_URL),
        "the README no longer shows {README_PG_URL}; update README_PG_URL"
    );
    let mut pg_lines = 0;
    let all = blocks(&readme);
    for (needle, _) in NOT_RUN.iter().chain(MAC_ONLY) {
        assert!(
            readme.contains(needle),
            "NOT_RUN/MAC_ONLY names {needle:?}, which the README no longer has"
        );
    }
    let mut replayed = HashSet::new();
    let mut server: Option<Server> = None;
    let mut ran = 0;
    for block in &all {
        if block.lang == "python" {
            let s = server
                .as_ref()
                .expect("the README's python example follows an `anectx serve` line");
            env.python(&block.text, s);
            continue;
        }
        if block.lang != "sh" {
            continue;
        }
        for raw in block.text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut line = line.replace("cargo run --release --", "anectx");
            if line.contains(README_PG_URL) {
                let Some(pg) = &pg else {
                    continue; // skipped with a note by PgServer::start; fails under CI
                };
                line = line.replace(README_PG_URL, &format!("'{}'", pg.url("postgres")));
                pg_lines += 1;
            }
            if let Some((_, why)) = NOT_RUN.iter().find(|(n, _)| line.contains(n)) {
                eprintln!("replay: not run ({why}): {line}");
                continue;
            }
            if let Some((needle, msg)) = MAC_ONLY.iter().find(|(n, _)| line.contains(n)) {
                if cfg!(target_os = "macos") && needle.contains("mac-check") {
                    eprintln!("replay: not run (the Mac check itself, ~20 minutes): {line}");
                    continue;
                }
                let out = env.sh(&line).output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                if cfg!(target_os = "macos") {
                    assert!(out.status.success(), "`{line}`: {err}");
                } else {
                    assert!(
                        !out.status.success() && err.contains(msg),
                        "`{line}` should fail with {msg:?} off macOS: {err}"
                    );
                }
                continue;
            }
            if line.contains(".fixtures/") && minilm.is_none() {
                continue; // skipped with a note by minilm_dir(); fails under CI
            }
            if line.starts_with("anectx serve") {
                drop(server.take());
                server = Some(env.serve(&line));
                ran += 1;
                continue;
            }
            assert!(
                line.starts_with("anectx "),
                "a README `sh` line that this test does not know how to run: {line}"
            );
            let (stdout, stderr) = env.run(&line);
            replayed.insert(line.clone());
            ran += 1;
            // The quickstart's own `next:` lines, then any printed hint.
            let mut queue: Vec<String> = next_lines(&stdout);
            if line.starts_with("anectx quickstart") {
                assert!(
                    queue.iter().any(|l| l.starts_with("anectx serve --store")),
                    "the quickstart printed no serve command:\n{stdout}"
                );
            }
            queue.extend(hints(&stdout));
            queue.extend(hints(&stderr));
            while let Some(next) = queue.pop() {
                if !replayed.insert(next.clone()) {
                    continue;
                }
                if next.starts_with("anectx serve") {
                    drop(env.serve(&next));
                } else {
                    let (o, e) = env.run(&next);
                    queue.extend(hints(&o));
                    queue.extend(hints(&e));
                }
                ran += 1;
            }
        }
    }
    drop(server);
    // `status` describes the quickstart store after the walkthrough.
    let (out, _) = env.run("anectx status --store anectx-quickstart/store --json");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["exists"], true, "{st}");
    assert_eq!(st["documents"], 600, "{st}");
    assert_eq!(st["embedder"]["builtin"], true, "{st}");
    assert_eq!(st["embedder"]["dim"], 384, "{st}");
    assert!(st["interactions"].as_u64().unwrap() > 100, "{st}");
    assert!(
        st["last_index_ms"].as_u64().unwrap() > 1_700_000_000_000,
        "{st}"
    );
    assert!(st["relevance_versions"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["last_training_ms"].as_u64().unwrap() >= st["last_index_ms"].as_u64().unwrap());
    let (out, _) = env.run("anectx status --store nowhere --json");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["exists"], false, "{st}");
    // The README's own commands and the quickstart's hints were all reached.
    assert!(ran >= 12, "only {ran} commands ran");
    assert!(
        pg.is_none() || pg_lines >= 2,
        "the shared-store lines did not run"
    );
    for expected in [
        "anectx quickstart",
        "anectx status --store anectx-quickstart/store",
        "anectx train --store anectx-quickstart/store",
    ] {
        assert!(
            replayed.contains(expected),
            "{expected:?} was not replayed; replayed: {replayed:?}"
        );
    }
}
