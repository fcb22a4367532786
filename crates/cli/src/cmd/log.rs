//! `anectx log`: read the interaction log of a store.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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
}

#[derive(Debug, Args)]
pub struct StoreArg {
    /// Store directory. Env: ANECTX_STORE; config `store`; default ./.anectx
    #[arg(long)]
    store: Option<PathBuf>,
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

fn open(arg: &StoreArg) -> Result<(PathBuf, Db)> {
    let dir = crate::cmd::index::StoreArgs {
        store: arg.store.clone(),
        model: None,
        dtype: None,
    }
    .store_dir()?;
    if !Store::exists(&dir) {
        anyhow::bail!(
            "no store in {}: pass --store DIR (a directory made by `anectx index` and served by \
             `anectx serve`)",
            dir.display()
        );
    }
    let db = Db::open(&Store::db_path(&dir))
        .with_context(|| format!("opening the interaction log in {}", dir.display()))?;
    Ok((dir, db))
}

pub fn run(cmd: LogCommand) -> Result<()> {
    match cmd {
        LogCommand::Export(a) => export(a),
        LogCommand::Stats(a) => stats(a),
    }
}

fn export(a: ExportArgs) -> Result<()> {
    let _ = a.jsonl;
    let (dir, db) = open(&a.store)?;
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
            "note: the interaction log in {} is empty (serve the store with `anectx serve` to \
             record interactions)",
            dir.display()
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

fn stats(a: StatsArgs) -> Result<()> {
    let (dir, db) = open(&a.store)?;
    let s = db.log_stats()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print_stats(&dir, &s);
    Ok(())
}

fn print_stats(dir: &Path, s: &anectx_store::LogStats) {
    println!("interaction log of {}", dir.display());
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
