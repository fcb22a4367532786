use anectx_engine::filter::parse_time;
use anectx_engine::{ContextOptions, Engine, Filter};
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
    /// Only documents whose path matches this glob: relative to the indexed
    /// folder, the full path, or the file name (`notes/**`, `*.pdf`); `*`
    /// stays within a folder, `**` crosses folders.
    #[arg(long, value_name = "GLOB")]
    path: Option<String>,
    /// Only these file kinds, comma-separated: extensions (`pdf,md,docx`) or
    /// formats (`markdown`, `code`, `text`).
    #[arg(long, value_name = "KINDS", value_parser = parse_kinds)]
    kind: Option<Kinds>,
    /// Only files modified at or after DATE (YYYY-MM-DD, midnight UTC, or
    /// RFC 3339 such as 2024-05-01T12:30:00Z).
    #[arg(long, value_name = "DATE", value_parser = parse_after)]
    modified_after: Option<i64>,
    /// Only files modified before DATE (same forms as --modified-after).
    #[arg(long, value_name = "DATE", value_parser = parse_before)]
    modified_before: Option<i64>,
    /// Print JSON (chunks, spans, scores, timings).
    #[arg(long)]
    json: bool,
}

/// `--kind`'s comma-separated list, parsed as one value.
#[derive(Debug, Clone)]
struct Kinds(Vec<String>);

fn parse_kinds(s: &str) -> Result<Kinds, String> {
    Filter::parse_kinds(s).map(Kinds).map_err(|e| e.message)
}

fn parse_after(s: &str) -> Result<i64, String> {
    parse_time("modified_after", s).map_err(|e| e.message)
}

fn parse_before(s: &str) -> Result<i64, String> {
    parse_time("modified_before", s).map_err(|e| e.message)
}

pub fn run(args: ContextArgs) -> Result<()> {
    // Filters are applied inside retrieval (BM25 and vector search rank
    // only the allowed documents).
    let filter = Filter {
        path: args.path.clone(),
        kind: args.kind.clone().map(|k| k.0).unwrap_or_default(),
        modified_after: args.modified_after,
        modified_before: args.modified_before,
    };
    if let Err(e) = filter.compile() {
        let flag = match e.param {
            "path" => "--path",
            "kind" => "--kind",
            "modified_after" => "--modified-after",
            _ => "--modified-before",
        };
        anyhow::bail!("{flag}: {e}");
    }
    let dir = args.store.store_dir()?;
    let shared = args.store.shared()?;
    if shared.is_none() && !anectx_engine::Store::exists(&dir) {
        anyhow::bail!(
            "no store in {}: run `anectx index <path>` first (or pass --store)",
            dir.display()
        );
    }
    let embedder = args.store.embedder()?;
    super::shared::adopt(&dir, embedder.as_deref(), shared.as_ref())?;
    let engine = Engine::open(&dir, embedder)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    crate::settings::apply_vector_search(&engine, args.store.vector_search.clone())?;
    if let Some(pg) = &shared {
        super::shared::sync(&engine, pg)?;
    }
    let opts = ContextOptions {
        budget: args.budget,
        mmr_lambda: args.lambda.clamp(0.0, 1.0),
        k_lexical: args.k,
        k_dense: args.k,
        filter,
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
        if opts.filter.is_empty() {
            eprintln!("no matching chunks");
        } else {
            eprintln!("no matching chunks among the documents the filters allow");
        }
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
