//! `anectx index --watch` and `anectx serve --watch`: keep a store up to
//! date with folders.
//!
//! File events are debounced (`notify-debouncer-full`); each batch of
//! changed paths is indexed with the same ignore rules and content-hash
//! logic as `anectx index` (`Engine::index_changes`). A full reconcile
//! (`Engine::index`) runs at start, after the watches are in place so that
//! nothing changed meanwhile is missed, whenever the watcher reports lost
//! events (a rescan flag or an error), and when a `.gitignore` or `.ignore`
//! file changes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anectx_engine::{Engine, IndexOptions, IndexReport, Progress};
use anyhow::{Context, Result};
use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use serde::Serialize;

/// One line of `--json` output: what a run did and why it ran.
#[derive(Serialize)]
struct Line<'a> {
    /// `reconcile` (start, or lost events) or `changes`.
    run: &'a str,
    /// Paths the watcher reported (0 for a reconcile).
    changed_paths: usize,
    #[serde(flatten)]
    report: &'a IndexReport,
}

/// Where a watch reports each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A line of text on stdout (`index --watch`).
    Text,
    /// A JSON object per line on stdout (`index --watch --json`).
    Json,
    /// A line on stderr (`serve --watch`: stdout belongs to the server).
    Stderr,
}

fn print(run: &str, changed: usize, rep: &IndexReport, report: Report) -> Result<()> {
    if report == Report::Json {
        let line = Line {
            run,
            changed_paths: changed,
            report: rep,
        };
        println!("{}", serde_json::to_string(&line)?);
    } else {
        let line = format!(
            "{run}: {} indexed, {} unchanged, {} removed, {} skipped; {} chunks added; \
             store holds {} documents ({:.0} ms)",
            rep.files_indexed,
            rep.files_unchanged,
            rep.files_removed,
            rep.files_skipped,
            rep.chunks_added,
            rep.documents_total,
            rep.seconds * 1e3
        );
        if report == Report::Stderr {
            eprintln!("anectx watch: {line}");
        } else {
            println!("{line}");
        }
    }
    Ok(())
}

/// Watches `roots` until the process is stopped.
pub fn run(
    engine: &Engine,
    roots: &[PathBuf],
    opts: &IndexOptions,
    debounce: Duration,
    report: Report,
    progress: &dyn Progress,
    shared: Option<&anectx_store_pg::PgStore>,
) -> Result<()> {
    // With a shared store, every run is published (one transaction per
    // document); a failed publish is reported and retried after the next run.
    let publish = |roots: &[PathBuf]| {
        if let Some(pg) = shared {
            match engine.publish_shared(pg, roots) {
                Ok(p) if p.documents_written + p.documents_deleted > 0 => eprintln!(
                    "shared store {}: {} documents published, {} removed",
                    pg.target(),
                    p.documents_written,
                    p.documents_deleted
                ),
                Ok(_) => {}
                Err(e) => eprintln!("error: publishing to {}: {e}", pg.target()),
            }
        }
    };
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| std::fs::canonicalize(r).with_context(|| format!("cannot watch {}", r.display())))
        .collect::<Result<_>>()?;
    let store_dir = std::fs::canonicalize(engine.store().dir())
        .unwrap_or_else(|_| engine.store().dir().to_path_buf());
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(debounce, None, tx).context("starting the file watcher")?;
    for r in &roots {
        debouncer
            .watch(r, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", r.display()))?;
    }
    eprintln!(
        "watching {} (debounce {} ms); Ctrl-C stops",
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        debounce.as_millis()
    );
    let rep = engine.index(&roots, opts, progress)?;
    print("reconcile", 0, &rep, report)?;
    publish(&roots);
    // Blocks while nothing happens: an idle watcher uses no CPU.
    while let Ok(first) = rx.recv() {
        let t0 = Instant::now();
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut rescan = false;
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        for r in batch {
            match r {
                Ok(events) => {
                    for e in events {
                        rescan |= e.need_rescan();
                        paths.extend(
                            e.paths
                                .iter()
                                .filter(|p| !p.starts_with(&store_dir))
                                .cloned(),
                        );
                    }
                }
                Err(errors) => {
                    for e in errors {
                        eprintln!("note: file watcher: {e}; reconciling");
                    }
                    rescan = true;
                }
            }
        }
        // A changed ignore file changes which files belong: reconcile.
        rescan |= paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == ".gitignore" || n == ".ignore")
        });
        let result = if rescan {
            engine
                .index(&roots, opts, progress)
                .map(|r| ("reconcile", 0, r))
        } else if paths.is_empty() {
            continue;
        } else {
            let changed: Vec<PathBuf> = paths.into_iter().collect();
            engine
                .index_changes(&roots, &changed, opts, progress)
                .map(|r| ("changes", changed.len(), r))
        };
        match result {
            Ok((run, n, rep)) => {
                let did = rep.files_indexed + rep.files_removed + rep.files_skipped;
                if run == "reconcile" || did > 0 {
                    print(run, n, &rep, report)?;
                    publish(&roots);
                }
                tracing::debug!(ms = t0.elapsed().as_millis() as u64, "watch batch");
            }
            // A failed run (a locked store, a full disk) is reported and the
            // watch goes on; the next event or reconcile retries.
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}
