pub mod bench;
pub mod context;
pub mod coreml;
pub mod distill;
pub mod embed;
pub mod eval;
pub mod index;
pub mod learn;
pub mod log;
pub mod model;
pub mod quickstart;
pub mod serve;

use anectx_core::settings::{resolve, ConfigFile};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Resolves the embedder directory: --model > ANECTX_MODEL > config `model`.
pub fn resolve_model(cli: Option<String>) -> Result<PathBuf> {
    let file = ConfigFile::discover().context("reading the config file")?;
    let Some((spec, _src)) = resolve(cli, "ANECTX_MODEL", &file, "model", None) else {
        anyhow::bail!(
            "no model given: pass --model DIR (a directory with config.json, model.safetensors \
             and tokenizer.json, or a Hugging Face id in the local cache), or set ANECTX_MODEL"
        );
    };
    Ok(anectx_models::io::resolve_model_dir(&spec)?)
}

/// Resolves the compute dtype: --dtype > ANECTX_DTYPE > config `dtype` > f32.
pub fn resolve_dtype(cli: Option<String>) -> Result<anectx_models::WeightDtype> {
    let file = ConfigFile::discover().context("reading the config file")?;
    let v = resolve(cli, "ANECTX_DTYPE", &file, "dtype", Some("f32"))
        .map(|(v, _)| v)
        .unwrap_or_else(|| "f32".into());
    v.parse().map_err(|e: String| anyhow::anyhow!(e))
}

/// The embedder for commands that want one by default: --model > ANECTX_MODEL
/// > config `model` > none.
pub fn default_or_given_embedder(
    cli: Option<String>,
) -> Result<Option<std::sync::Arc<dyn anectx_engine::TextEmbedder>>> {
    index::StoreArgs {
        store: None,
        model: cli,
        dtype: None,
    }
    .embedder()
}
