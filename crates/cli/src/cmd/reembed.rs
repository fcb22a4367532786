//! `anectx reembed`: replaces a store's vectors with another embedder's.

use anectx_engine::Engine;
use anyhow::{Context, Result};
use clap::Args;

use super::index::{Bars, StoreArgs};

/// Re-embed a store with another embedder, in place: after choosing another
/// --model, or after an upgrade changed the built-in embedder.
///
/// Every chunk gets a new vector from the chosen embedder: --model >
/// ANECTX_MODEL > config `model` > the built-in embedder (never the store's
/// own, which is the one being replaced). Documents, postings, the
/// interaction log and the registry stay. The run is crash-safe: if it
/// stops, run the same command again and it resumes; until it finishes the
/// store answers BM25-only, with a note. The usage memory is rebuilt from
/// the log when next loaded; a relevance model keeps working, and
/// `anectx train` retrains it on the new vectors' scores.
///
/// A shared store (`--store postgres://…`) is re-embedded once for the
/// whole fleet: this machine embeds every chunk and stages the vectors in
/// PostgreSQL (resumable; replicas keep serving and publishing with the old
/// embedder meanwhile), then swaps them in in one transaction. Each replica
/// takes them at its next sync once it runs the new embedder (`--model`);
/// one still running the old embedder keeps serving its cache, and its
/// syncs are refused until then.
#[derive(Debug, Args)]
pub struct ReembedArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReembedArgs) -> Result<()> {
    if let Some(pg) = args.store.shared()? {
        return run_shared(&args, &pg);
    }
    let dir = args.store.store_dir()?;
    if !anectx_engine::Store::exists(&dir) {
        anyhow::bail!(
            "no store in {}: there is nothing to re-embed (`anectx index PATH --store {}` \
             makes one)",
            dir.display(),
            args.store.typed()?
        );
    }
    let embedder = args.store.embedder_for(None)?.context(
        "re-embedding needs an embedder: `--model none` would drop the vectors (a store \
         keeps working BM25-only when no embedder is configured)",
    )?;
    let engine = Engine::open_to_reembed(&dir, embedder)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let report = engine
        .reembed(&Bars::new())
        .with_context(|| format!("re-embedding the store in {}", dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.already_current {
        println!(
            "{}: its vectors already come from {}; {} chunks that had none were embedded; the \
             store holds {} chunks ({:.1}s)",
            dir.display(),
            report.to,
            report.chunks_embedded,
            report.chunks_total,
            report.seconds,
        );
    } else {
        println!(
            "{}: {} {} chunks with {} (was: {}); the store holds {} chunks ({:.1}s)",
            dir.display(),
            if report.resumed {
                "resumed and finished re-embedding"
            } else {
                "re-embedded"
            },
            report.chunks_embedded,
            report.to,
            report.from.as_deref().unwrap_or("no vectors, BM25 only"),
            report.chunks_total,
            report.seconds,
        );
    }
    // The notes were shown as they came (stderr), and are in --json.
    println!("{}", next_hint(&args.store)?);
    Ok(())
}

/// Re-embeds a shared store for the fleet, then brings this machine's
/// cache to the new vectors.
fn run_shared(args: &ReembedArgs, pg: &anectx_store_pg::PgStore) -> Result<()> {
    let embedder = args
        .store
        .embedder_for(None)?
        .context("re-embedding needs an embedder: `--model none` would drop the vectors")?;
    let report = anectx_engine::reembed_shared(pg, embedder.as_ref(), 64, &Bars::new())
        .with_context(|| format!("re-embedding the shared store {}", pg.target()))?;
    // This machine's cache takes the new vectors, as every replica will.
    let dir = args.store.store_dir()?;
    super::shared::adopt(&dir, Some(embedder.as_ref()), Some(pg))?;
    let engine = Engine::open(&dir, Some(embedder))
        .with_context(|| format!("opening the cache in {}", dir.display()))?;
    let synced = engine
        .sync_shared(pg, &Bars::new())
        .with_context(|| format!("catching up from {}", pg.target()))?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("cache".into(), serde_json::to_value(&synced)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let target = pg.target();
    if report.already_current {
        println!(
            "{target}: its vectors already come from {}; nothing to re-embed",
            report.to
        );
    } else {
        let s = report.switched.clone().unwrap_or_default();
        println!(
            "{target}: {}re-embedded with {} (was: {}): {} chunks embedded by this run, {} \
             chunks of {} documents switched in one transaction ({:.1}s)",
            if report.resumed { "resumed and " } else { "" },
            report.to,
            report.from.as_deref().unwrap_or("no vectors"),
            report.chunks_embedded,
            s.chunks,
            s.documents,
            report.seconds,
        );
        println!(
            "this cache took {} vectors; every replica takes them at its next sync once it \
             runs this embedder (one still running the old one keeps serving, and says so)",
            synced.vectors_copied
        );
    }
    println!("{}", next_hint(&args.store)?);
    Ok(())
}

/// What to run next: a question on the re-embedded store, with the same
/// --store and --model.
fn next_hint(store: &StoreArgs) -> Result<String> {
    let mut next = format!(
        "next: anectx context \"your question\" --store {}",
        store.typed()?
    );
    if let Some(m) = &store.model {
        next.push_str(&format!(
            " --model {}",
            super::quickstart::shell_word(std::path::Path::new(m))
        ));
    }
    Ok(next)
}
