//! Test helpers: a deterministic bag-of-words embedder and corpus writers.
#![allow(dead_code)]

use std::path::Path;

use anectx_engine::{EngineError, TextEmbedder};
use anectx_store::EmbedderInfo;

/// Hashes lower-cased words into `dim` buckets and L2-normalises: texts that
/// share words get similar vectors. Deterministic, no model needed.
pub struct HashEmbedder {
    info: EmbedderInfo,
}

impl HashEmbedder {
    pub fn new(dim: usize, seed: &str) -> Self {
        Self {
            info: EmbedderInfo {
                fingerprint: format!("hash-{seed}-{dim}"),
                description: format!("hash embedder {seed}"),
                dim,
            },
        }
    }
}

impl TextEmbedder for HashEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>, EngineError> {
        let d = self.info.dim;
        let mut out = vec![0f32; texts.len() * d];
        for (t, row) in texts.iter().zip(out.chunks_exact_mut(d)) {
            for w in t
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                let h = blake3::hash(w.to_lowercase().as_bytes());
                let b = h.as_bytes();
                row[(u16::from_le_bytes([b[0], b[1]]) as usize) % d] += 1.0;
            }
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
            row.iter_mut().for_each(|x| *x /= n);
        }
        Ok(out)
    }
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A small mixed corpus: Markdown, HTML, code and text on distinct topics.
pub fn small_corpus(dir: &Path) {
    write(
        dir,
        "docs/guide.md",
        "# Server\n\nThe server listens on port 8080 by default. Change the port with --port.\n\n\
         ## TLS\n\nTLS certificates are loaded from the certs folder.\n\n\
         # Storage\n\nThe store keeps chunks in SQLite with write-ahead logging.\n",
    );
    write(
        dir,
        "docs/cooking.html",
        "<html><body><h1>Pancakes</h1><p>Whisk flour, eggs and milk; fry the batter in butter.</p>\
         <script>var secret = 'zebra';</script></body></html>",
    );
    write(
        dir,
        "src/lib.rs",
        "/// Computes the checksum of a buffer with the adler algorithm.\n\
         pub fn checksum(buf: &[u8]) -> u32 { buf.iter().map(|&b| b as u32).sum() }\n",
    );
    write(
        dir,
        "notes/astronomy.txt",
        "Jupiter is the largest planet; its great red spot is a storm larger than Earth.\n",
    );
    write(
        dir,
        "notes/.hidden.txt",
        "hidden file about jupiter should not be indexed\n",
    );
    write(dir, ".gitignore", "ignored/\n");
    write(dir, "ignored/skip.txt", "ignored file mentions pancakes\n");
}
