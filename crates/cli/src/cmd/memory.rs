//! `anectx memory rebuild|stats`: the usage memory of a registry version.

use std::path::PathBuf;

use anectx_engine::{Engine, MemoryConfig};
use anectx_learn::analyzer::Analyzer;
use anectx_learn::memory::{self, HitRates, MemorySpec};
use anectx_learn::Registry;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::index::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Relabel the interaction log and rebuild the usage memory of a
    /// registry version from it (default: the current version, or the
    /// built-in model when none was promoted).
    ///
    /// Every logged answer not yet labelled is labelled by the usage
    /// analyzer; the memory (which chunks served which question, with
    /// feedback) is built from the whole log up to its newest interaction,
    /// with the store's embedder for near-duplicate search, and written to
    /// the registry beside the version (checked, 0600). A running `anectx
    /// serve` loads it within one poll. `model promote` serves a version's
    /// memory with it, and `model rollback` returns to the memory of the
    /// version rolled back to.
    Rebuild(RebuildArgs),
    /// Show the usage memory of a registry version: its size, the log
    /// watermark it was built up to, and hit rates.
    ///
    /// Hit rates are measured over the logged interactions that came after
    /// the watermark (those with a candidate pool): the near-duplicate rate
    /// is the share whose candidate pool held a chunk with near-duplicate
    /// usage evidence (a logged question within the similarity threshold
    /// used it), the asked-as rate the share whose pool held a chunk the
    /// "asked as" field matched, and "any" the share with either. They count
    /// what the serving selection logged, whichever version served it.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Registry version whose memory to rebuild (`builtin`: the built-in
    /// model; default: the current one).
    #[arg(value_name = "VERSION")]
    name: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Model registry directory (default: <store>/registry).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Print the result as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Registry version whose memory to show (`builtin`: the built-in
    /// model; default: the current one).
    #[arg(value_name = "VERSION")]
    name: Option<String>,
    /// Store directory. Env: ANECTX_STORE; config `store`; default ./.anectx
    #[arg(long)]
    store: Option<PathBuf>,
    /// Model registry directory (default: <store>/registry).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: MemoryCommand) -> Result<()> {
    match cmd {
        MemoryCommand::Rebuild(a) => run_rebuild(a),
        MemoryCommand::Stats(a) => run_stats(a),
    }
}

/// The store directory (which must hold a store) and its registry.
fn open(store: &StoreArgs, registry: Option<&PathBuf>) -> Result<(PathBuf, Registry)> {
    let dir = store.store_dir()?;
    if !anectx_engine::Store::exists(&dir) {
        anyhow::bail!(
            "no store in {}: run `anectx index <path>` first (or pass --store)",
            dir.display()
        );
    }
    let reg = Registry::open(&super::learn::registry_dir(&dir, registry))
        .context("opening the model registry")?;
    Ok((dir, reg))
}

/// The version named on the command line (`builtin` → `None`), or the
/// current one; and whether it is current.
fn which(reg: &Registry, name: Option<&str>) -> Result<(Option<String>, bool)> {
    let current = reg.current()?;
    Ok(match name {
        None => {
            let c = current.clone();
            (c, true)
        }
        Some("builtin") => (None, current.is_none()),
        Some(v) => {
            // Checks the name and that the version exists.
            memory::memory_dir(reg, Some(v))?;
            (Some(v.to_string()), current.as_deref() == Some(v))
        }
    })
}

fn label(version: Option<&str>) -> String {
    version.map_or("the built-in model".into(), |v| v.to_string())
}

fn run_rebuild(args: RebuildArgs) -> Result<()> {
    let open_engine = |dir: &std::path::Path| -> Result<Engine> {
        let engine = Engine::open(dir, args.store.embedder()?)
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        crate::settings::apply_vector_search(&engine, args.store.vector_search.clone())?;
        Ok(engine)
    };
    // With a shared store: the fleet's log, on a cache that holds its
    // documents (which also makes the cache on a new machine).
    let caught_up = match args.store.shared()? {
        Some(pg) => {
            let engine = open_engine(&args.store.store_dir()?)?;
            super::shared::catch_up_for_learning(&engine, &pg)?;
            Some(engine)
        }
        None => None,
    };
    let (dir, reg) = open(&args.store, args.registry.as_ref())?;
    let (version, _) = which(&reg, args.name.as_deref())?;
    let engine = match caught_up {
        Some(e) => e,
        None => open_engine(&dir)?,
    };
    eprintln!(
        "rebuilding the usage memory of {}",
        label(version.as_deref())
    );
    let rep = memory::rebuild(
        &engine,
        &reg,
        version.as_deref(),
        &Analyzer::default(),
        &MemoryConfig::default(),
        &|s| eprintln!("  {s}"),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    let s = &rep.spec.stats;
    println!(
        "memory of {}: {} questions, {} chunks, {} (question, chunk) pairs from {} interactions \
         ({} labelled now, {} with usage or feedback, {} feedback rows), {} bytes, up to \
         interaction {}, in {:.1}s",
        label(version.as_deref()),
        s.questions,
        s.chunks,
        s.pairs,
        s.interactions,
        rep.newly_labelled,
        s.labelled,
        s.feedback,
        rep.spec.bytes,
        rep.spec.watermark,
        rep.seconds
    );
    if s.pairs == 0 {
        println!("nothing in the log says a chunk was used yet: the memory stays off");
    }
    println!(
        "next: `anectx memory stats --store {}`",
        args.store.typed()?
    );
    Ok(())
}

#[derive(Debug, Serialize)]
struct StatsReport {
    /// `None`: the built-in model.
    version: Option<String>,
    current: bool,
    /// `None`: the version has no memory.
    memory: Option<MemorySpec>,
    /// Over the interactions logged after the memory's watermark.
    hits: Option<HitRates>,
}

fn run_stats(args: StatsArgs) -> Result<()> {
    let store = StoreArgs {
        store: args.store.clone(),
        model: None,
        dtype: None,
        backend: None,
        units: None,
        vector_search: None,
    };
    let (dir, reg) = open(&store, args.registry.as_ref())?;
    let (version, current) = which(&reg, args.name.as_deref())?;
    let spec = memory::read_spec(&reg, version.as_deref())?;
    let hits = match &spec {
        Some(s) => {
            let db = anectx_store::Store::open(&dir)
                .with_context(|| format!("opening the store in {}", dir.display()))?;
            Some(memory::hit_rates(&db.db, s.watermark)?)
        }
        None => None,
    };
    let rep = StatsReport {
        version,
        current,
        memory: spec,
        hits,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    let who = format!(
        "{}{}",
        label(rep.version.as_deref()),
        if rep.current { " (current)" } else { "" }
    );
    let (Some(spec), Some(h)) = (&rep.memory, &rep.hits) else {
        println!(
            "{who} has no usage memory: it serves without one (`anectx memory rebuild --store {}` \
             makes one)",
            store.typed()?
        );
        return Ok(());
    };
    let s = &spec.stats;
    let pct = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.1} %", r * 100.0));
    println!("usage memory of {who}");
    println!("  questions      {}", s.questions);
    println!("  chunks         {}", s.chunks);
    println!("  pairs          {} (question, chunk)", s.pairs);
    println!(
        "  from           {} interactions ({} with usage or feedback, {} feedback rows)",
        s.interactions, s.labelled, s.feedback
    );
    println!(
        "  on disk        {} bytes{}",
        spec.bytes,
        spec.data
            .as_deref()
            .map_or(" (nothing remembered: off)".into(), |d| format!(" ({d})"))
    );
    println!(
        "  watermark      interaction {} (analyzer {}, embedder {})",
        spec.watermark, spec.analyzer_version, spec.embedder
    );
    println!(
        "  since then     {} interactions; near-duplicate hits {} ({}), asked-as hits {} ({}), \
         either {} ({})",
        h.interactions,
        h.near_duplicate,
        pct(h.near_duplicate_rate),
        h.asked_as,
        pct(h.asked_as_rate),
        h.any,
        pct(h.any_rate)
    );
    Ok(())
}
