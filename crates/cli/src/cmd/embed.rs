use std::io::{BufRead, IsTerminal};

use anectx_core::{Backend, BackendChoice, BackendRequest, ComputeUnits, Truncation};
use anectx_coreml_runtime::{CoreMlBackend, CoreMlConfig};
use anectx_models::TextTokenizer;
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Embed texts given as arguments, or one per line on standard input.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model directory (or Hugging Face id in the local cache), `default` for
    /// the embedder built into anectx, or a .mlpackage exported with
    /// `anectx export coreml --ids` (runs on Core ML).
    /// Env: ANECTX_MODEL. Default: the built-in embedder.
    #[arg(long, short)]
    model: Option<String>,
    /// Compute precision: f32 or f16. Env: ANECTX_DTYPE. Default f32.
    #[arg(long)]
    dtype: Option<String>,
    /// Print JSON (one object with every embedding) instead of a summary.
    #[arg(long)]
    json: bool,
    /// Runtime: `auto` (on a Mac, the model exported to Core ML and run on
    /// the Neural Engine when it matches candle; candle elsewhere), `candle`
    /// (CPU, everywhere) or `coreml` (Core ML or an error saying why).
    /// Env: ANECTX_BACKEND; config `backend`. Default: auto.
    #[arg(long)]
    backend: Option<String>,
    /// Core ML compute units: cpu (CPU only), gpu (CPU+GPU), ane (CPU+Neural
    /// Engine), all.
    #[arg(long, default_value = "ane", value_parser = parse_units)]
    units: ComputeUnits,
    /// tokenizer.json for --backend coreml (default: the one `anectx export
    /// coreml` stores inside the package).
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch_size: u32,
    /// Texts to embed. Without any, lines are read from standard input.
    texts: Vec<String>,
}

pub fn parse_units(s: &str) -> Result<ComputeUnits, String> {
    ComputeUnits::parse(s)
        .ok_or_else(|| format!("unknown compute units {s:?} (cpu, gpu, ane, all)"))
}

#[derive(Serialize)]
struct Row {
    index: usize,
    tokens: usize,
    truncated: Option<Truncation>,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct Output {
    model: String,
    backend: String,
    /// Which backend runs and why (`--backend auto`'s decision).
    backend_choice: BackendChoice,
    dtype: String,
    dim: usize,
    data: Vec<Row>,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    // Without --model / ANECTX_MODEL / config `model` (or with `default`),
    // the built-in embedder compiled into the binary.
    let choice = super::resolve_model(args.model)?;
    let requested = crate::settings::Layers::get()?
        .backend(args.backend.clone())?
        .value;
    let dtype = super::resolve_dtype(args.dtype)?;
    let texts = if args.texts.is_empty() {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            anyhow::bail!("no texts given: pass them as arguments or pipe them in, one per line");
        }
        stdin
            .lock()
            .lines()
            .collect::<std::io::Result<Vec<_>>>()
            .context("reading standard input (is it UTF-8?)")?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.texts
    };
    if texts.is_empty() {
        anyhow::bail!("no non-empty texts to embed");
    }
    let package = match &choice {
        super::embedder::ModelChoice::Dir(d) if d.extension().is_some_and(|e| e == "mlpackage") => {
            Some(d.clone())
        }
        _ => None,
    };
    let (backend, tok, backend_choice): (Box<dyn Backend>, TextTokenizer, BackendChoice) =
        match package {
            Some(dir) => {
                if requested == BackendRequest::Candle {
                    anyhow::bail!(
                        "{} is a Core ML package: it runs with --backend coreml (or auto), \
                         not candle",
                        dir.display()
                    );
                }
                let b = CoreMlBackend::load(CoreMlConfig::new(&dir, args.units))
                    .with_context(|| format!("loading the Core ML package {}", dir.display()))?;
                let tpath = args
                    .tokenizer
                    .clone()
                    .unwrap_or_else(|| dir.join(anectx_coreml_runtime::PACKAGE_TOKENIZER));
                let shapes = b.shapes();
                let tok = TextTokenizer::from_file(&tpath, shapes.max_seq)?
                    .with_buckets(shapes.seq_buckets);
                let c = BackendChoice {
                    requested,
                    used: b.name().to_string(),
                    reason: "the Core ML package given with --model".into(),
                    compute_units: Some(args.units),
                    package: Some(dir.clone()),
                    parity: None,
                    ane_share: None,
                    ops_by_device: None,
                };
                (Box::new(b), tok, c)
            }
            None => {
                let p = choice.prepare(dtype, requested, args.units)?;
                (p.backend, p.tokenizer, p.choice)
            }
        };
    let dim = backend.embedding_dim().unwrap_or(0);

    let bs = args.batch_size as usize;
    let pb = if texts.len() > bs && std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(texts.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} texts ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut rows = Vec::with_capacity(texts.len());
    for (ci, chunk) in texts.chunks(bs).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut batch = tok.encode_batch(&refs)?;
        let trunc = std::mem::take(&mut batch.truncations);
        let emb = backend.embed(&batch)?;
        for (i, e) in emb.iter().enumerate() {
            let index = ci * bs + i;
            let truncated = trunc
                .iter()
                .find(|t| t.index == i)
                .map(|t| Truncation { index, ..t.clone() });
            if let Some(t) = &truncated {
                eprintln!(
                    "warning: text {index} has {} tokens; only the first {} were embedded",
                    t.original_len, t.kept
                );
            }
            rows.push(Row {
                index,
                tokens: batch.len_of(i),
                truncated,
                embedding: e.to_vec(),
            });
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();

    let out = Output {
        model: match &choice {
            super::embedder::ModelChoice::Builtin => anectx_models::default_model::id(),
            super::embedder::ModelChoice::Dir(d) => d.display().to_string(),
        },
        backend: backend.name().to_string(),
        backend_choice,
        dtype: dtype.to_string(),
        dim: rows.first().map_or(dim, |r: &Row| r.embedding.len()),
        data: rows,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "model {} ({}, {}), {} texts, {} dims",
            out.model,
            out.backend,
            out.dtype,
            out.data.len(),
            out.dim
        );
        for r in &out.data {
            let head: Vec<String> = r
                .embedding
                .iter()
                .take(6)
                .map(|x| format!("{x:+.4}"))
                .collect();
            println!(
                "[{}] {:>3} tokens{}  [{}, …]",
                r.index,
                r.tokens,
                if r.truncated.is_some() {
                    " (truncated)"
                } else {
                    ""
                },
                head.join(", ")
            );
        }
        println!("(use --json for full vectors)");
    }
    Ok(())
}
