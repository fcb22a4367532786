use std::path::PathBuf;

use anectx_models::ModelInfo;
use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Load a model directory and describe it: kind, dimensions, parameters,
    /// stored precision, tokenizer, sequence buckets.
    Info {
        /// Model directory (or Hugging Face id in the local cache), or
        /// `default` for the built-in embedder.
        dir: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the trained relevance-model versions in the registry (* = current).
    List(super::learn::RegistryOpts),
    /// Make a relevance-model version current (it is checked first; a running
    /// `anectx serve` swaps to it within seconds).
    Promote {
        /// Version name, as `anectx model list` shows it. (Not named
        /// `version`: that id is clap's `--version` flag, and the clash
        /// panicked in debug builds.)
        #[arg(value_name = "VERSION")]
        name: String,
        #[command(flatten)]
        opts: super::learn::RegistryOpts,
    },
    /// Return to the relevance model that was current before the last promotion.
    Rollback(super::learn::RegistryOpts),
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::List(o) => super::learn::run_list(o),
        ModelCommand::Promote { name, opts } => super::learn::run_promote(&name, opts),
        ModelCommand::Rollback(o) => super::learn::run_rollback(o),
        ModelCommand::Info { dir, json } => {
            let (path, _tmp): (PathBuf, _) = super::embedder::parse_spec(&dir)?
                .context("`none` is not a model")?
                .as_dir()?;
            let info = ModelInfo::inspect(&path)
                .with_context(|| format!("inspecting {}", path.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("model        {}", info.dir.display());
                println!("kind         {:?}", info.kind);
                println!(
                    "weights      {} parameters, {:.1} MB on disk, stored as {}",
                    info.parameters,
                    info.weights_bytes as f64 / 1e6,
                    info.stored_dtype
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "?".into())
                );
                if let Some(d) = info.output_dim {
                    println!("output dim   {d}");
                }
                println!(
                    "vocabulary   {} (tokenizer {})",
                    info.model_vocab, info.tokenizer_vocab
                );
                println!("max tokens   {}", info.max_seq);
                println!("buckets      {:?}", info.seq_buckets);
            }
            Ok(())
        }
    }
}
