//! Sentence embedders as the engine sees them.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use anectx_core::Backend;
use anectx_models::{CandleBackend, TextTokenizer, WeightDtype};
use anectx_store::EmbedderInfo;

use crate::{EngineError, Result};

/// Turns texts into L2-normalised vectors. Implementations must be
/// deterministic for a given [`EmbedderInfo::fingerprint`].
pub trait TextEmbedder: Send + Sync {
    /// Identity of the model (fingerprint, description, dimension).
    fn info(&self) -> &EmbedderInfo;
    /// Row-major `(texts.len(), dim)` embeddings.
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>>;
    /// Whether vectors recorded in a store as `stored` came from this model:
    /// the same fingerprint and dimension, or a fingerprint this model had
    /// under an earlier identity scheme (see [`ModelIdentity::legacy`]).
    fn accepts(&self, stored: &EmbedderInfo) -> bool {
        stored.dim == self.info().dim && stored.fingerprint == self.info().fingerprint
    }
}

/// How a model is known to stores: one fingerprint from the content of its
/// files, whether it was loaded from the binary or from a directory, plus
/// the fingerprints earlier versions of anectx recorded for the same model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    pub fingerprint: String,
    /// Fingerprints the same model had before identities were unified
    /// (the built-in model was `anectx-default-embedder@<hash>:<dtype>`).
    pub legacy: Vec<String>,
}

impl ModelIdentity {
    /// The built-in embedder's identity at `dtype`: the same value
    /// [`fingerprint_model_dir`] gives for a directory holding its files.
    pub fn builtin(dtype: WeightDtype) -> Self {
        use anectx_models::default_model as dm;
        let dtype = format!("{dtype:?}");
        let fingerprint = fingerprint_parts(
            &dtype,
            &[
                ("config.json", dm::CONFIG_JSON),
                ("tokenizer.json", dm::TOKENIZER_JSON),
            ],
            dm::WEIGHTS,
        );
        Self {
            fingerprint,
            legacy: vec![format!("{}:{dtype}", dm::id())],
        }
    }

    /// The identity of the model in `dir`: its content fingerprint, and the
    /// built-in model's legacy id when the directory holds the built-in model.
    pub fn of_dir(dir: &Path, dtype: WeightDtype) -> Result<Self> {
        let fingerprint = fingerprint_model_dir(dir, &format!("{dtype:?}"))?;
        let builtin = Self::builtin(dtype);
        let legacy = if builtin.fingerprint == fingerprint {
            builtin.legacy
        } else {
            Vec::new()
        };
        Ok(Self {
            fingerprint,
            legacy,
        })
    }

    /// Whether `stored` (a store's record) names this model.
    pub fn matches(&self, stored: &str) -> bool {
        stored == self.fingerprint || self.legacy.iter().any(|l| l == stored)
    }
}

/// A [`Backend`] plus its tokenizer. The backend runs one batch at a time.
pub struct ModelEmbedder {
    backend: Mutex<Box<dyn Backend>>,
    tokenizer: TextTokenizer,
    info: EmbedderInfo,
    legacy: Vec<String>,
}

impl std::fmt::Debug for ModelEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEmbedder")
            .field("info", &self.info)
            .finish()
    }
}

impl ModelEmbedder {
    /// Wraps a backend whose embedder is described by `info`.
    pub fn new(backend: Box<dyn Backend>, tokenizer: TextTokenizer, info: EmbedderInfo) -> Self {
        Self {
            backend: Mutex::new(backend),
            tokenizer,
            info,
            legacy: Vec::new(),
        }
    }

    /// Also accepts stores that recorded one of `legacy` as this model's
    /// fingerprint.
    pub fn with_legacy(mut self, legacy: Vec<String>) -> Self {
        self.legacy = legacy;
        self
    }

    /// The embedder built into the binary (`anectx_models::default_model`),
    /// on the CPU backend.
    pub fn embedded_default(dtype: WeightDtype) -> Result<Self> {
        let (model, tokenizer) = anectx_models::default_model::load_with_tokenizer(dtype)?;
        let dim = model.dim();
        let identity = ModelIdentity::builtin(dtype);
        let backend = CandleBackend::new(Some(model), None);
        let info = EmbedderInfo {
            fingerprint: identity.fingerprint,
            description: format!(
                "built-in {} ({dtype:?})",
                anectx_models::default_model::NAME
            ),
            dim,
        };
        Ok(Self::new(Box::new(backend), tokenizer, info).with_legacy(identity.legacy))
    }

    /// Loads a model directory onto the CPU backend.
    pub fn load(dir: &Path, dtype: WeightDtype) -> Result<Self> {
        let (model, tokenizer) = anectx_models::load_embedder(dir, dtype)?;
        let dim = model.dim();
        let kind = format!("{:?}", model.kind());
        let backend = CandleBackend::new(Some(model), None);
        let identity = ModelIdentity::of_dir(dir, dtype)?;
        let info = EmbedderInfo {
            fingerprint: identity.fingerprint,
            description: format!("{kind} from {} ({dtype:?})", dir.display()),
            dim,
        };
        Ok(Self::new(Box::new(backend), tokenizer, info).with_legacy(identity.legacy))
    }
}

impl TextEmbedder for ModelEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn accepts(&self, stored: &EmbedderInfo) -> bool {
        same_model(&self.info, &self.legacy, stored)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        // At most the backend's batch size per call (a caller may pass any
        // number of texts: `bench context --queries 300` passed 300 to a
        // backend taking 256 and failed).
        let per_call = backend.shapes().max_batch.max(1);
        let mut out = Vec::with_capacity(texts.len() * self.info.dim);
        for part in texts.chunks(per_call) {
            let batch = self.tokenizer.encode_batch(part)?;
            for t in &batch.truncations {
                tracing::debug!(
                    index = t.index,
                    tokens = t.original_len,
                    kept = t.kept,
                    "text cut to the embedder's maximum length"
                );
            }
            let e = backend.embed(&batch)?;
            out.extend(checked_rows(&self.info, e, part.len())?);
        }
        Ok(out)
    }
}

/// Whether a store that recorded `stored` was indexed by the model `own`:
/// the same dimension and fingerprint, or one of the model's `legacy`
/// fingerprints (see [`ModelIdentity::legacy`]).
pub fn same_model(own: &EmbedderInfo, legacy: &[String], stored: &EmbedderInfo) -> bool {
    stored.dim == own.dim
        && (stored.fingerprint == own.fingerprint || legacy.contains(&stored.fingerprint))
}

/// An embedder's output for `texts` inputs, checked against its declared
/// dimension; the row-major data.
pub fn checked_rows(
    info: &EmbedderInfo,
    e: anectx_core::Embeddings,
    texts: usize,
) -> Result<Vec<f32>> {
    if e.dim != info.dim || e.rows != texts {
        return Err(EngineError::Invalid(format!(
            "embedder returned {}x{}, expected {}x{}",
            e.rows, e.dim, texts, info.dim
        )));
    }
    Ok(e.data)
}

/// Bytes of the weight file hashed from each end by [`fingerprint_model_dir`].
const SPAN: u64 = 4 << 20;

/// A fingerprint of a model directory: blake3 over `config.json`,
/// `tokenizer.json`, the pooling config, the weight file's size and its first
/// and last 4 MiB, and the compute dtype. Cheap enough for every `context`
/// call; it changes whenever the model does in practice. The built-in model
/// gets the same value from its embedded files ([`ModelIdentity::builtin`]).
pub fn fingerprint_model_dir(dir: &Path, dtype: &str) -> Result<String> {
    let mut small = Vec::new();
    for name in SMALL_FILES {
        let p = dir.join(name);
        if let Ok(bytes) = std::fs::read(&p) {
            small.push((name, bytes));
        }
    }
    let w = dir.join("model.safetensors");
    let mut f = std::fs::File::open(&w).map_err(|e| EngineError::path(&w, e.to_string()))?;
    let len = f
        .metadata()
        .map_err(|e| EngineError::path(&w, e.to_string()))?
        .len();
    let mut buf = Vec::new();
    (&mut f)
        .take(SPAN)
        .read_to_end(&mut buf)
        .map_err(|e| EngineError::path(&w, e.to_string()))?;
    if len > SPAN {
        f.seek(SeekFrom::Start(len.saturating_sub(SPAN).max(SPAN)))
            .map_err(|e| EngineError::path(&w, e.to_string()))?;
        f.read_to_end(&mut buf)
            .map_err(|e| EngineError::path(&w, e.to_string()))?;
    }
    let small: Vec<(&str, &[u8])> = small.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    Ok(hash_parts(dtype, &small, len, &buf))
}

/// The small files a fingerprint covers, in order, when present.
const SMALL_FILES: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "1_Pooling/config.json",
    "modules.json",
];

/// [`fingerprint_model_dir`] over files held in memory.
fn fingerprint_parts(dtype: &str, small: &[(&str, &[u8])], weights: &[u8]) -> String {
    let ordered: Vec<(&str, &[u8])> = SMALL_FILES
        .iter()
        .filter_map(|name| small.iter().find(|(n, _)| n == name).copied())
        .collect();
    let len = weights.len() as u64;
    let span = SPAN as usize;
    let mut sample = weights[..weights.len().min(span)].to_vec();
    if len > SPAN {
        let from = weights.len().saturating_sub(span).max(span);
        sample.extend_from_slice(&weights[from..]);
    }
    hash_parts(dtype, &ordered, len, &sample)
}

fn hash_parts(dtype: &str, small: &[(&str, &[u8])], weights_len: u64, sample: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(dtype.as_bytes());
    for (name, bytes) in small {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    h.update(&weights_len.to_le_bytes());
    h.update(sample);
    h.finalize().to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More texts than the backend takes per call are embedded in several
    /// calls, each row as it would be alone.
    #[test]
    fn more_texts_than_one_backend_batch_are_split() {
        let (model, tok) =
            anectx_models::default_model::load_with_tokenizer(WeightDtype::F32).unwrap();
        let info = EmbedderInfo {
            fingerprint: "test".into(),
            description: "test".into(),
            dim: model.dim(),
        };
        let backend = CandleBackend::new(Some(model), None).with_max_batch(2);
        let e = ModelEmbedder::new(Box::new(backend), tok, info);
        let texts = ["one", "two words", "three small words", "four", "five"];
        let all = e.embed(&texts).unwrap();
        let d = e.info().dim;
        assert_eq!(all.len(), 5 * d);
        for (i, t) in texts.iter().enumerate() {
            let alone = e.embed(&[t]).unwrap();
            let dot: f32 = alone
                .iter()
                .zip(&all[i * d..(i + 1) * d])
                .map(|(a, b)| a * b)
                .sum();
            assert!(dot > 0.9999, "text {i}: cosine {dot}");
        }
    }

    #[test]
    fn the_builtin_model_has_one_identity_however_it_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        anectx_models::default_model::write_dir(dir.path()).unwrap();
        for dtype in [WeightDtype::F32, WeightDtype::F16] {
            let built_in = ModelIdentity::builtin(dtype);
            let from_dir = ModelIdentity::of_dir(dir.path(), dtype).unwrap();
            assert_eq!(built_in, from_dir, "{dtype:?}");
            assert!(built_in.matches(&format!("{}:{dtype:?}", anectx_models::default_model::id())));
        }
        assert_ne!(
            ModelIdentity::builtin(WeightDtype::F32).fingerprint,
            ModelIdentity::builtin(WeightDtype::F16).fingerprint
        );
        // Another model's directory is another identity, with no legacy ids.
        let other = tempfile::tempdir().unwrap();
        anectx_models::default_model::write_dir(other.path()).unwrap();
        std::fs::write(other.path().join("config.json"), b"{}").unwrap();
        let o = ModelIdentity::of_dir(other.path(), WeightDtype::F32).unwrap();
        assert_ne!(
            o.fingerprint,
            ModelIdentity::builtin(WeightDtype::F32).fingerprint
        );
        assert!(o.legacy.is_empty());
    }
}
