//! `anectx distill` without the CLI crate's dependencies:
//! `cargo run --release -p anectx-models --example distill -- TEACHER OUT CORPUS... [--key value]…`
//! (keys: max-steps, max-passages, embed-dim, kernels 3,3, batch, lr, lambda,
//! checkpoint-every, seed, holdout, max-tokens, resume, init DIR, pair-weight,
//! hard-negatives true|false, query-tokens, export-checkpoints).

use std::path::PathBuf;

use anectx_models::distill::{distill, DistillOptions, Phase};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut kv = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(k) = a.strip_prefix("--") {
            if k == "resume" || k == "export-checkpoints" {
                kv.push((k.to_string(), String::new()));
            } else {
                kv.push((k.to_string(), it.next().cloned().unwrap_or_default()));
            }
        } else {
            pos.push(a.clone());
        }
    }
    if pos.len() < 3 {
        return Err("usage: distill TEACHER OUT CORPUS... [--key value]".into());
    }
    let mut o = DistillOptions::new(
        PathBuf::from(&pos[0]),
        pos[2..].iter().map(PathBuf::from).collect(),
        PathBuf::from(&pos[1]),
    );
    for (k, v) in &kv {
        match k.as_str() {
            "max-steps" => o.max_steps = v.parse()?,
            "max-passages" => o.max_passages = v.parse()?,
            "embed-dim" => o.embed_dim = v.parse()?,
            "kernels" => o.kernel_sizes = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "batch" => o.batch_size = v.parse()?,
            "lr" => o.lr = v.parse()?,
            "lambda" => o.contrastive_weight = v.parse()?,
            "checkpoint-every" => o.checkpoint_every = v.parse()?,
            "seed" => o.seed = v.parse()?,
            "holdout" => o.holdout = v.parse()?,
            "max-tokens" => o.max_tokens = v.parse()?,
            "resume" => o.resume = true,
            "init" => o.init = Some(PathBuf::from(v)),
            "pair-weight" => o.pair_weight = v.parse()?,
            "hard-negatives" => o.hard_negatives = v.parse()?,
            "query-tokens" => o.query_tokens = v.parse()?,
            "export-checkpoints" => o.export_checkpoints = true,
            other => return Err(format!("unknown option --{other}").into()),
        }
    }
    o.command = std::iter::once("cargo run --release -p anectx-models --example distill --")
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let t0 = std::time::Instant::now();
    let mut last_phase = None;
    let m = distill(&o, &mut |p| {
        let show = last_phase != Some(p.phase)
            || p.done == p.total
            || p.heldout_cosine.is_some()
            || (p.phase == Phase::Train && p.done % 25 == 0)
            || (matches!(p.phase, Phase::TeacherCorpus | Phase::TeacherQueries)
                && p.done % 2048 == 0);
        last_phase = Some(p.phase);
        if show {
            eprintln!(
                "[{:>6.0}s] {:?} {}/{} loss {:?} heldout_cos {:?}",
                t0.elapsed().as_secs_f64(),
                p.phase,
                p.done,
                p.total,
                p.loss,
                p.heldout_cosine
            );
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(())
}
