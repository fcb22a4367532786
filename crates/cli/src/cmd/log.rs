//! `anectx log`: read the interaction log of a store.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anectx_store::{Db, LoggedInteraction, Store, UsageLabelRow};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

/// Read the interaction log (what `anectx serve` recorded for learning).
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Export every interaction with its candidates, usage labels and
    /// feedback, one JSON object per line.
    Export(ExportArgs),
    /// Counts: interactions by kind and model version, exploration, labels,
    /// feedback.
    Stats(StatsArgs),
    /// Drop old interactions by the store's retention settings, after
    /// changing them when --max-age-days or --max-interactions is given.
    /// The settings are kept in the store and applied on every append.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct StoreArg {
    /// Store directory, or a shared store `postgres://user@host/db`: then
    /// this machine's cache of it first takes the fleet's log, as `train`
    /// does, so export and stats cover every replica's interactions.
    /// Env: ANECTX_STORE; config `store`; default ./.anectx
    #[arg(long)]
    store: Option<PathBuf>,
    /// With a shared store: the embedder its cache catches up with (see
    /// `index --model`). Needed only on a machine without a cache of a store
    /// whose embedder is not the built-in one.
    #[arg(long, short)]
    model: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// JSON Lines output (the only format; the flag makes it explicit).
    #[arg(long)]
    jsonl: bool,
    /// Write to FILE instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Keep interactions at most this many days old (0: no age limit).
    #[arg(long)]
    max_age_days: Option<u32>,
    /// Keep at most this many interactions, dropping the oldest (0: no limit).
    #[arg(long)]
    max_interactions: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One exported line.
#[derive(Serialize)]
struct Line<'a> {
    id: i64,
    #[serde(flatten)]
    interaction: &'a LoggedInteraction,
    labels: Vec<UsageLabelRow>,
    feedback: Vec<anectx_store::Feedback>,
}

const PAGE: usize = 500;

/// The log `arg` names, and how to name it to people. With a shared store,
/// the cache first catches up and takes the fleet's log (`fleet`), or the
/// command is refused (`fleet` false: it would act on this machine's copy
/// only).
fn open(arg: &StoreArg, fleet: bool, what: &str) -> Result<(String, Db)> {
    let args = crate::cmd::index::StoreArgs {
        store: arg.store.clone(),
        model: arg.model.clone(),
        dtype: None,
        backend: None,
        units: None,
        vector_search: None,
    };
    let dir = args.store_dir()?;
    let mut name = dir.display().to_string();
    if let Some(pg) = args.shared()? {
        if !fleet {
            anyhow::bail!(
                "`log {what}` works on one store's own log; with a shared store it would change \
                 only this machine's copy ({}), and the fleet's log in {} would keep everything \
                 (anectx does not prune the shared log yet)",
                dir.display(),
                pg.target()
            );
        }
        let engine = anectx_engine::Engine::open(&dir, args.embedder()?)
            .with_context(|| format!("opening this machine's cache in {}", dir.display()))?;
        super::shared::catch_up_for_learning(&engine, &pg)?;
        name = format!(
            "the shared store {} (the fleet's log, copied into {})",
            pg.target(),
            dir.display()
        );
    }
    if !Store::exists(&dir) {
        anyhow::bail!(
            "no store in {}: pass --store DIR (a directory made by `anectx index` and served by \
             `anectx serve`)",
            dir.display()
        );
    }
    let db = Db::open(&Store::db_path(&dir))
        .with_context(|| format!("opening the interaction log in {}", dir.display()))?;
    Ok((name, db))
}

pub fn run(cmd: LogCommand) -> Result<()> {
    match cmd {
        LogCommand::Export(a) => export(a),
        LogCommand::Stats(a) => stats(a),
        LogCommand::Prune(a) => prune(a),
    }
}

fn export(a: ExportArgs) -> Result<()> {
    let _ = a.jsonl;
    let (name, db) = open(&a.store, true, "export")?;
    let sink: Box<dyn Write> = match &a.out {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::new(sink);
    let n = match write_all(&db, &mut w) {
        Ok(n) => n,
        // `anectx log export | head` ends quietly.
        Err(e) if is_broken_pipe(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    if let Err(e) = w.flush() {
        if !is_broken_pipe(&anyhow::Error::from(e)) {
            anyhow::bail!("writing the export failed");
        }
    }
    if n == 0 {
        eprintln!(
            "note: the interaction log of {name} is empty (serve the store with `anectx serve` \
             to record interactions)"
        );
    } else if let Some(p) = &a.out {
        eprintln!("exported {n} interactions to {}", p.display());
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn write_all(db: &Db, w: &mut impl Write) -> Result<u64> {
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = db.interactions(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (id, i) in &page {
            let line = Line {
                id: *id,
                interaction: i,
                labels: db.labels_of(*id)?,
                feedback: db.feedback_for(&i.uid)?,
            };
            serde_json::to_writer(&mut *w, &line)?;
            w.write_all(b"\n")?;
            n += 1;
        }
    }
    Ok(n)
}

fn prune(a: PruneArgs) -> Result<()> {
    let (name, db) = open(&a.store, false, "prune")?;
    let mut ret = db.retention()?;
    if let Some(d) = a.max_age_days {
        ret.max_age_days = (d > 0).then_some(d);
    }
    if let Some(n) = a.max_interactions {
        ret.max_interactions = (n > 0).then_some(n);
    }
    if a.max_age_days.is_some() || a.max_interactions.is_some() {
        db.set_retention(&ret)?;
    }
    let removed = db.prune_log()?;
    let left = db.interaction_count()?;
    if a.json {
        let out = serde_json::json!({
            "retention": ret,
            "removed": removed,
            "interactions": left,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let age = ret
        .max_age_days
        .map_or("no age limit".into(), |d| format!("at most {d} days old"));
    let count = ret.max_interactions.map_or("no count limit".into(), |n| {
        format!("at most {n} interactions")
    });
    println!(
        "interaction log of {}: keeps {age}, {count}; removed {} interactions ({} candidates, \
         {} labels, {} feedback); {left} left",
        name, removed.interactions, removed.candidates, removed.labels, removed.feedback
    );
    Ok(())
}

fn stats(a: StatsArgs) -> Result<()> {
    let (name, db) = open(&a.store, true, "stats")?;
    let s = db.log_stats()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print_stats(&name, &s);
    Ok(())
}

fn print_stats(name: &str, s: &anectx_store::LogStats) {
    println!("interaction log of {name}");
    println!("  interactions    {}", s.interactions);
    if s.interactions == 0 {
        println!("  (empty: serve the store with `anectx serve` to record interactions)");
    }
    for (k, n) in &s.by_kind {
        println!("    {k:<13} {n}");
    }
    println!("  explored        {}", s.explored);
    println!("  with response   {}", s.with_response);
    println!("  complete        {}", s.complete);
    println!("  candidates      {} ({} shown)", s.candidates, s.shown);
    if !s.by_model_version.is_empty() {
        println!("  relevance models");
        for (v, n) in &s.by_model_version {
            let v = if v.is_empty() { "(none)" } else { v };
            println!("    {v}  {n}");
        }
    }
    if !s.labels.is_empty() {
        println!("  usage labels");
        for (v, n) in &s.labels {
            println!("    {v}  {n}");
        }
    }
    println!(
        "  feedback        {} (+1: {}, -1: {})",
        s.feedback, s.feedback_positive, s.feedback_negative
    );
    if let (Some(a), Some(b)) = (s.first_ts_ms, s.last_ts_ms) {
        println!("  time range      {a} .. {b} (ms since the epoch)");
    }
}
