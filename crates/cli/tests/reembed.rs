//! `anectx reembed`: a store made by an earlier version's built-in embedder
//! is refused with the exact command that re-embeds it, and that command,
//! interrupted by a real crash at two points, leaves a store that answers
//! BM25-only until the same command, run again, finishes it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// `line` through `sh -c`, exactly as printed, in `work`, with the test's
/// clean environment.
fn sh(work: &Path, line: &str, failpoint: Option<&str>) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c").arg(line).current_dir(work);
    c.env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env_remove("ANECTX_FAILPOINT")
        .env("ANECTX_CONFIG", work.join("config.toml"));
    // `anectx` on PATH is the binary under test.
    let bin = Path::new(env!("CARGO_BIN_EXE_anectx")).parent().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{}:{path}", bin.display()));
    if let Some(f) = failpoint {
        c.env("ANECTX_FAILPOINT", f);
    }
    c.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn context(work: &Path) -> Value {
    let out = sh(
        work,
        "anectx context 'topic5 notes' --store kb --json",
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first backticked `anectx …` command in `s`.
fn backticked(s: &str) -> String {
    let start = s
        .find("`anectx ")
        .unwrap_or_else(|| panic!("no hint in {s}"))
        + 1;
    let len = s[start..].find('`').unwrap();
    s[start..start + len].to_string()
}

#[test]
fn an_earlier_built_in_embedders_store_is_re_embedded_by_the_printed_command() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    common::empty_config(work);
    let docs = work.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..50 {
        std::fs::write(
            docs.join(format!("n{i}.md")),
            format!("# Note {i}\n\ntopic{i} notes: how the topic{i} machine is set up.\n"),
        )
        .unwrap();
    }
    let out = sh(work, "anectx index docs --store kb", None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(context(work)["mode"], "full");

    // What an earlier version's built-in embedder left: the same
    // description, another fingerprint.
    let db = anectx_store::Db::open(&anectx_engine::Store::db_path(&work.join("kb"))).unwrap();
    let mut old = db.embedder().unwrap().unwrap();
    assert!(old.description.starts_with("built-in "), "{old:?}");
    old.fingerprint = "an-earlier-built-in-model".into();
    db.set_meta("embedder", &serde_json::to_string(&old).unwrap())
        .unwrap();
    drop(db);

    let out = sh(
        work,
        "anectx context 'topic5 notes' --store kb --json",
        None,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("earlier version's built-in embedder"), "{err}");
    let hint = backticked(&err);
    assert_eq!(hint, "anectx reembed --store kb");

    // A crash right after the store records the re-embedding, then one in
    // the middle of the embedding: both leave a store that answers.
    for failpoint in ["reembed-after-mark", "mid-embed"] {
        let out = sh(work, &hint, Some(failpoint));
        assert!(!out.status.success(), "{failpoint}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(failpoint),
            "{}",
            text(&out)
        );
        let v = context(work);
        assert_eq!(v["mode"], "bm25", "{failpoint}: {v}");
        let notes = v["notes"].to_string();
        assert!(notes.contains("being re-embedded"), "{failpoint}: {notes}");
        assert!(
            v["chunks"].as_array().unwrap()[0]["text"]
                .as_str()
                .unwrap()
                .contains("topic5"),
            "{failpoint}: {v}"
        );
        let out = sh(work, "anectx status --store kb --json", None);
        assert!(out.status.success(), "{}", text(&out));
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(st["reembedding"]["to"].is_string(), "{failpoint}: {st}");
    }

    // While a process holds the store's writer lock (here this test, as
    // the re-embedding itself would), `status` says the re-embedding is
    // running and prints no command to resume it.
    {
        let holder = anectx_engine::Store::open(&work.join("kb")).unwrap();
        let _writing = holder.write_guard().unwrap();
        let out = sh(work, "anectx status --store kb", None);
        assert!(out.status.success(), "{}", text(&out));
        let shown = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(shown.contains("running now in another process"), "{shown}");
        assert!(!shown.contains("`anectx "), "{shown}");
        let out = sh(work, "anectx status --store kb --json", None);
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(st["writer_running"], true, "{st}");
    }

    // `status` says how to resume; that command, as printed, finishes it.
    let out = sh(work, "anectx status --store kb", None);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let resume = backticked(&shown);
    assert_eq!(
        resume, "anectx reembed --store kb --model default",
        "{shown}"
    );
    let out = sh(work, &resume, None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("resumed and finished re-embedding"),
        "{stdout}"
    );
    let v = context(work);
    assert_eq!(v["mode"], "full", "{v}");
    assert_eq!(v["notes"], serde_json::json!([]), "{v}");
    let out = sh(work, "anectx status --store kb --json", None);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st.get("reembedding").is_none(), "{st}");
    assert_eq!(st["writer_running"], false, "{st}");
    assert_eq!(st["embedder"]["builtin"], true, "{st}");
    let store = anectx_engine::Store::open(&work.join("kb")).unwrap();
    assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
    drop(store);

    // Its `next:` hint works as printed.
    let next = stdout
        .lines()
        .find_map(|l| l.strip_prefix("next: "))
        .unwrap_or_else(|| panic!("no next: in {stdout}"));
    let out = sh(work, next, None);
    assert!(out.status.success(), "{next}: {}", text(&out));
}

#[test]
fn reembed_refuses_what_it_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    common::empty_config(work);
    // No store.
    let out = sh(work, "anectx reembed --store nothing-here", None);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no store in") && err.contains("anectx index"),
        "{err}"
    );
    assert!(!work.join("nothing-here").exists(), "a store was created");
    // No embedder.
    std::fs::write(work.join("a.md"), "# A\n\nsome words\n").unwrap();
    let out = sh(work, "anectx index a.md --store kb --model none", None);
    assert!(out.status.success(), "{}", text(&out));
    let out = sh(work, "anectx reembed --store kb --model none", None);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs an embedder"), "{err}");
}

/// `reembed --model DIR` prints a `next:` hint with that model, which runs
/// as printed.
#[test]
fn reembed_with_a_model_prints_a_next_hint_with_it() {
    let Some(minilm) = anectx_testing::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    common::empty_config(work);
    std::fs::write(
        work.join("a.md"),
        "# Quokkas\n\nQuokkas sleep in the shade on Rottnest Island.\n",
    )
    .unwrap();
    let out = sh(work, "anectx index a.md --store kb", None);
    assert!(out.status.success(), "{}", text(&out));
    let line = format!("anectx reembed --store kb --model {}", minilm.display());
    let out = sh(work, &line, None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let next = stdout
        .lines()
        .find_map(|l| l.strip_prefix("next: "))
        .unwrap_or_else(|| panic!("no next: in {stdout}"));
    assert!(next.contains("--model"), "{next}");
    let out = sh(work, next, None);
    assert!(out.status.success(), "{next}: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Quokkas"),
        "{}",
        text(&out)
    );
    let out = sh(work, "anectx status --store kb --json", None);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["embedder"]["description"]
            .as_str()
            .unwrap()
            .contains("all-minilm-l6-v2"),
        "{st}"
    );
}
