//! The official MCP Python SDK (PyPI `mcp`, `scripts/mcp_client.py`) lists
//! anectx's tools and calls them: over stdio against `anectx mcp` started in
//! `/` (as Claude Desktop does), and over Streamable HTTP against `anectx
//! serve`'s `/mcp`. `context` calls land in the interaction log.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{anectx, start_server};
use serde_json::Value;

const QUESTION: &str = "What is the capital of France?";

/// A python with the `mcp` package, or `None` (a failure under `CI=true`).
fn mcp_python() -> Option<PathBuf> {
    let python = anectx_testing::python()?;
    let ok = Command::new(&python)
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "the MCP Python SDK is missing from {} (run ./scripts/fixtures.sh)",
            python.display()
        );
        eprintln!("skipped: no `mcp` package in the fixture venv (run ./scripts/fixtures.sh)");
        return None;
    }
    Some(python)
}

/// A small store indexed with the built-in embedder; returns its path.
fn store(dir: &Path) -> PathBuf {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for (name, text) in [
        (
            "france.md",
            "# France\n\nParis is the capital of France. It lies on the Seine.\n",
        ),
        (
            "cats.md",
            "# Cats\n\nThe cat sat on the mat and purred all afternoon.\n",
        ),
        (
            "water.md",
            "# Water\n\nWater boils at 100 degrees Celsius at sea level.\n",
        ),
    ] {
        std::fs::write(docs.join(name), text).unwrap();
    }
    let store = dir.join("store");
    let out = anectx(dir)
        .arg("index")
        .arg(&docs)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    store
}

fn client(python: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/mcp_client.py"
        ))
        .args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the MCP client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What every transport must show.
fn check(v: &Value, store: &Path) {
    assert_eq!(v["server"], "anectx", "{v}");
    let tools = v["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["context", "fetch", "index_status", "search"], "{v}");
    for (name, inputs, outputs) in [
        ("search", vec!["filters", "k", "query"], vec!["hits"]),
        ("fetch", vec!["id"], vec!["id", "path", "source", "text"]),
        (
            "context",
            vec!["budget_tokens", "filters", "max_chunks", "query"],
            vec!["context", "interaction_id", "logged", "sources"],
        ),
        ("index_status", vec![], vec!["chunks", "documents"]),
    ] {
        let got_in: Vec<&str> = tools[name]["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(got_in, inputs, "{name} input schema");
        let got_out: Vec<&str> = tools[name]["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        for o in outputs {
            assert!(
                got_out.contains(&o),
                "{name} output schema lacks {o}: {got_out:?}"
            );
        }
    }
    assert_eq!(v["index_status"]["documents"], 3, "{v}");
    assert!(v["index_status"]["chunks"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["index_status"]["description"]
        .as_str()
        .unwrap()
        .contains(&store.display().to_string()));

    assert_eq!(v["search_error"], false, "{v}");
    let hits = v["search"]["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3, "{v}");
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("france.md"),
        "the France document first: {v}"
    );
    assert!(hits[0]["snippet"].as_str().unwrap().contains("Paris"));
    // A filter applies inside retrieval: the one allowed document is found
    // even though the question is about another.
    let filtered = v["search_filtered"]["hits"].as_array().unwrap();
    assert!(!filtered.is_empty(), "{v}");
    for h in filtered {
        assert!(h["path"].as_str().unwrap().ends_with("cats.md"), "{v}");
    }
    assert_eq!(v["bad_filter"]["is_error"], true, "{v}");
    assert!(v["bad_filter"]["text"][0]
        .as_str()
        .unwrap()
        .contains("filters.modified_after"));
    assert_eq!(v["fetch"]["id"], hits[0]["id"]);
    assert!(v["fetch"]["text"]
        .as_str()
        .unwrap()
        .contains("Paris is the capital of France"));

    assert_eq!(v["context_error"], false, "{v}");
    let ctx = &v["context"];
    let packed = ctx["context"].as_str().unwrap();
    assert!(packed.starts_with("[1] "), "{packed}");
    assert!(packed.contains("Paris is the capital"), "{packed}");
    assert!(ctx["sources"][0]["source"]
        .as_str()
        .unwrap()
        .contains("france.md"));
    assert!(ctx["tokens_used"].as_u64().unwrap() <= 200);
    assert_eq!(ctx["logged"], true, "{v}");

    // Mistakes are tool errors the model can read, not protocol failures.
    assert_eq!(v["empty_query"]["is_error"], true, "{v}");
    assert!(v["empty_query"]["text"][0]
        .as_str()
        .unwrap()
        .contains("query"));
    assert_eq!(v["missing_chunk"]["is_error"], true, "{v}");
    assert!(v["missing_chunk"]["text"][0]
        .as_str()
        .unwrap()
        .contains("no chunk"));
}

/// The logged interactions' questions.
fn logged_questions(dir: &Path, store: &Path) -> Vec<String> {
    let out = anectx(dir)
        .args(["log", "export", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["query"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_python_sdk_uses_the_tools_over_stdio_from_the_root_directory() {
    let Some(python) = mcp_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = store(dir);
    let bin = env!("CARGO_BIN_EXE_anectx");
    let store_arg = store.display().to_string();
    // The client starts `anectx mcp` with the working directory `/`.
    let v = client(
        &python,
        &["stdio", QUESTION, "--", bin, "mcp", "--store", &store_arg],
    );
    check(&v, &store);
    assert_eq!(logged_questions(dir, &store), [QUESTION]);
}

#[test]
fn the_python_sdk_uses_the_tools_over_http_on_serve() {
    let Some(python) = mcp_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = store(dir);
    let (_server, addr) = start_server(
        anectx(dir)
            .arg("serve")
            .arg("--store")
            .arg(&store)
            .args(["--port", "0"])
            .stderr(Stdio::null()),
    );
    let v = client(&python, &["http", QUESTION, &format!("http://{addr}/mcp")]);
    check(&v, &store);
    assert_eq!(logged_questions(dir, &store), [QUESTION]);

    // A page from another site may not drive the tools (DNS rebinding).
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
}
