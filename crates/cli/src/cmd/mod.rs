pub mod bench;
pub mod context;
pub mod coreml;
pub mod distill;
pub mod embed;
pub mod embedder;
pub mod eval;
pub mod index;
pub mod learn;
pub mod log;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod quickstart;
pub mod reembed;
pub mod serve;
pub mod shared;
pub mod status;
pub mod watch;

use anyhow::Result;

pub use embedder::resolve_model;

/// Resolves the compute dtype: --dtype > ANECTX_DTYPE > config `dtype` > f32.
pub fn resolve_dtype(cli: Option<String>) -> Result<anectx_models::WeightDtype> {
    Ok(crate::settings::Layers::get()?
        .dtype(cli)?
        .map_or(anectx_models::WeightDtype::F32, |s| s.value))
}

/// The embedder for commands that want one by default: --model > ANECTX_MODEL
/// > config `model` > the built-in one (`none`: BM25 only).
pub fn default_or_given_embedder(
    cli: Option<String>,
) -> Result<Option<std::sync::Arc<dyn anectx_engine::TextEmbedder>>> {
    embedder::resolve_for_store(cli, None, None)?.embedder()
}
