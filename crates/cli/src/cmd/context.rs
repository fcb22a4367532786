use anectx_engine::{ContextOptions, Engine};
use anyhow::{Context, Result};
use clap::Args;

use super::index::StoreArgs;

/// Select and pack the context an LLM should see for a question.
#[derive(Debug, Args)]
pub struct ContextArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Token budget for the packed context.
    #[arg(long, default_value_t = 2000)]
    budget: usize,
    /// MMR trade-off between relevance (1) and diversity (0).
    #[arg(long, default_value_t = 0.7)]
    lambda: f32,
    /// Candidates from each retriever.
    #[arg(long, default_value_t = 50)]
    k: usize,
    /// Print JSON (chunks, spans, scores, timings).
    #[arg(long)]
    json: bool,
}

pub fn run(args: ContextArgs) -> Result<()> {
    let dir = args.store.store_dir()?;
    if !anectx_engine::Store::exists(&dir) {
        anyhow::bail!(
            "no store in {}: run `anectx index <path>` first (or pass --store)",
            dir.display()
        );
    }
    let engine = Engine::open(&dir, args.store.embedder()?)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let opts = ContextOptions {
        budget: args.budget,
        mmr_lambda: args.lambda.clamp(0.0, 1.0),
        k_lexical: args.k,
        k_dense: args.k,
        ..ContextOptions::default()
    };
    let res = engine.context(&args.question, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&res)?);
        return Ok(());
    }
    for n in &res.notes {
        eprintln!("note: {n}");
    }
    if res.chunks.is_empty() {
        eprintln!("no matching chunks");
        return Ok(());
    }
    println!("{}", res.text);
    eprintln!();
    for c in &res.chunks {
        let s = &c.scores;
        eprintln!(
            "[{}] {} bytes {}..{}  relevance {:.3} (rank {})  bm25 {}  dense {}",
            c.marker,
            anectx_engine::source::citation(&c.path, c.line_start, c.line_end, c.page),
            c.byte_start,
            c.byte_end,
            s.relevance,
            s.relevance_rank,
            s.features.bm25.map_or("-".into(), |x| format!("{x:.2}")),
            s.features.dense.map_or("-".into(), |x| format!("{x:.3}")),
        );
    }
    eprintln!(
        "{} chunks, {}/{} tokens, {} candidates, model {}, {:.1} ms",
        res.chunks.len(),
        res.used_tokens,
        res.budget,
        res.candidates,
        res.relevance_model,
        res.timings.total_ms
    );
    Ok(())
}
