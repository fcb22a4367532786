//! The default sentence embedder, embedded in the binary.
//!
//! A small [`ConvEmbedder`](crate::ConvEmbedder) distilled from
//! all-MiniLM-L6-v2 with `anectx distill` (see `assets/default-embedder/
//! metrics.json` for the exact command, corpus and held-out figures). It
//! outputs 384-d unit vectors, uses the BERT uncased vocabulary and needs no
//! download: its four files are compiled in with `include_bytes!`.

use std::path::Path;

use crate::io::{
    load_conv_embedder_from_bytes, Embedder, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};
use crate::{ModelError, Result, TextTokenizer, WeightDtype};

/// `config.json` of the default embedder.
pub const CONFIG_JSON: &[u8] = include_bytes!("../assets/default-embedder/config.json");
/// `model.safetensors` (fp16) of the default embedder.
pub const WEIGHTS: &[u8] = include_bytes!("../assets/default-embedder/model.safetensors");
/// `tokenizer.json` of the default embedder (BERT uncased WordPiece).
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../assets/default-embedder/tokenizer.json");
/// `metrics.json`: how the default embedder was made and how well it matches
/// its teacher.
pub const METRICS_JSON: &[u8] = include_bytes!("../assets/default-embedder/metrics.json");

/// The name in stable ids and error messages.
pub const NAME: &str = "anectx-default-embedder";

/// Total size of the embedded files in bytes.
pub fn embedded_bytes() -> usize {
    CONFIG_JSON.len() + WEIGHTS.len() + TOKENIZER_JSON.len() + METRICS_JSON.len()
}

/// A stable id that changes whenever the weights or tokenizer change:
/// `anectx-default-embedder@<first 12 hex digits of blake3(weights ‖ tokenizer)>`.
/// Stores record it so that vectors from another model are refused.
pub fn id() -> String {
    let mut h = blake3::Hasher::new();
    h.update(CONFIG_JSON);
    h.update(WEIGHTS);
    h.update(TOKENIZER_JSON);
    format!("{NAME}@{}", &h.finalize().to_hex()[..12])
}

/// Loads the embedded model and its tokenizer, computing in `dtype`.
pub fn load_with_tokenizer(dtype: WeightDtype) -> Result<(Embedder, TextTokenizer)> {
    load_conv_embedder_from_bytes(NAME, CONFIG_JSON, WEIGHTS, TOKENIZER_JSON, dtype)
}

/// Loads the embedded model, computing in `dtype`.
pub fn load(dtype: WeightDtype) -> Result<Embedder> {
    Ok(load_with_tokenizer(dtype)?.0)
}

/// The embedded model's tokenizer.
pub fn tokenizer() -> Result<TextTokenizer> {
    let max_seq = serde_json::from_slice::<crate::ConvEmbedderConfig>(CONFIG_JSON)
        .map_err(|e| ModelError::Config {
            path: format!("{NAME}/{CONFIG_FILE}").into(),
            message: e.to_string(),
        })?
        .max_seq;
    TextTokenizer::from_bytes(TOKENIZER_JSON, max_seq)
}

/// Writes the embedded model as an ordinary model directory (for tools that
/// take a directory, e.g. the Core ML exporter). Creates `dir` if needed.
pub fn write_dir(dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, bytes) in [
        (CONFIG_FILE, CONFIG_JSON),
        (WEIGHTS_FILE, WEIGHTS),
        (TOKENIZER_FILE, TOKENIZER_JSON),
        (crate::distill::METRICS_FILE, METRICS_JSON),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(io(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_loads_from_embedded_bytes_and_fits_the_budget() {
        assert!(
            embedded_bytes() <= 16 * 1024 * 1024,
            "{} bytes",
            embedded_bytes()
        );
        let (model, tok) = load_with_tokenizer(WeightDtype::F32).unwrap();
        assert_eq!(model.dim(), 384);
        assert!(matches!(model, Embedder::Conv(_)));
        let texts = [
            "How does the Neural Engine run convolutions?",
            "a",
            "Pressure distribution over a swept wing at supersonic speed.",
        ];
        let batch = tok.encode_batch(&texts).unwrap();
        let e = model.embed(&batch).unwrap();
        assert_eq!((e.rows, e.dim), (3, 384));
        for r in 0..3 {
            let row = &e.data[r * 384..(r + 1) * 384];
            let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-3, "row {r} has norm {n}");
        }
        // Different texts give different vectors.
        let c = crate::metrics::cosine(&e.data[..384], &e.data[2 * 384..]);
        assert!(c < 0.99, "{c}");
        assert_eq!(tokenizer().unwrap().vocab_size(), tok.vocab_size());
        assert!(id().starts_with("anectx-default-embedder@"));
        assert_eq!(id().len(), NAME.len() + 13);
        let m: serde_json::Value = serde_json::from_slice(METRICS_JSON).unwrap();
        assert!(m["command"].as_str().unwrap().contains("distill"));
        assert!(m["corpus"]["blake3"].as_str().unwrap().len() == 64);
    }

    #[test]
    fn default_model_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path()).unwrap();
        let (a, tok) = crate::load_embedder(dir.path(), WeightDtype::F32).unwrap();
        let b = load(WeightDtype::F32).unwrap();
        let batch = tok.encode_batch(&["library catalogue indexing"]).unwrap();
        assert_eq!(a.embed(&batch).unwrap().data, b.embed(&batch).unwrap().data);
    }
}
