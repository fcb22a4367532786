//! `anectx distill`: train a small conv embedder to reproduce a teacher.

use std::path::PathBuf;

use anectx_models::distill::{distill, DistillOptions, Phase};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Distil a BERT sentence embedder (e.g. all-MiniLM-L6-v2) into a small
/// convolutional embedder (ANE layout).
///
/// The teacher's token vectors (PCA + SIF weights) initialise the student;
/// the teacher's passage and pseudo-query embeddings are cached under
/// OUT/cache; training minimises (1 − cosine) + λ·InfoNCE, plus with
/// --pair-weight μ·(KL to the teacher's query→passage similarities + query
/// cosine), with checkpoints under OUT/checkpoints;
/// the best checkpoint is written to OUT as an fp16 model directory with a
/// metrics.json (command, corpus hash, held-out cosine to the teacher).
#[derive(Debug, Args)]
pub struct DistillArgs {
    /// Teacher: a Hugging Face BERT sentence-embedder directory.
    #[arg(long)]
    teacher: PathBuf,
    /// Training text: files with one passage per line, or folders of .txt files.
    #[arg(long, required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Student embedding width (every block has this width).
    #[arg(long, default_value_t = 192)]
    embed_dim: usize,
    /// Kernel width of each convolution block, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3,3")]
    kernels: Vec<usize>,
    /// Passages are cut to this many tokens.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Use at most this many passages of the corpus (0: all).
    #[arg(long, default_value_t = 0)]
    max_passages: usize,
    /// Passages held out for evaluation (at most a fifth of the corpus).
    #[arg(long, default_value_t = 500)]
    holdout: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2000)]
    max_steps: usize,
    /// Peak learning rate (AdamW, linear warm-up, cosine decay to 10 %).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Weight λ of the in-batch contrastive (InfoNCE) term.
    #[arg(long, default_value_t = 0.1)]
    contrastive_weight: f64,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// Evaluate and checkpoint every N steps.
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue from OUT/checkpoints/last.safetensors.
    #[arg(long)]
    resume: bool,
    /// Start from an existing model directory with the same configuration
    /// (e.g. `crates/models/assets/default-embedder` or an earlier
    /// distillation) instead of the PCA/SIF initialisation. With more
    /// --kernels than the model has blocks, the student grows: its extra
    /// blocks come after the model's and start as the identity.
    #[arg(long, value_name = "DIR")]
    init: Option<PathBuf>,
    /// Weight μ of the (pseudo-query, passage) term, 0 = off. Each corpus
    /// line's query is its heading (a line `HEADING<TAB>BODY`), else one of
    /// its sentences, else a span of its words; the student learns the
    /// teacher's softmax over the batch's passages for it.
    #[arg(long, default_value_t = 0.0)]
    pair_weight: f64,
    /// With --pair-weight: no mined hard negatives (by default each query's
    /// batch also holds the passage the teacher ranks first for it after
    /// its own).
    #[arg(long)]
    no_hard_negatives: bool,
    /// Pseudo-queries are cut to this many tokens.
    #[arg(long, default_value_t = 32)]
    query_tokens: usize,
    /// Also write every evaluated step as a model directory under
    /// OUT/steps/step-NNNNNN (for a learning curve with `anectx eval --model`).
    #[arg(long)]
    export_checkpoints: bool,
    /// Where the student trains: cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn device(name: &str) -> Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => candle_core::Device::new_cuda(0).context(
            "no CUDA device (build anectx with `--features cuda` on a machine with the CUDA toolkit)",
        ),
        other => anyhow::bail!("unknown device {other:?} (cpu or cuda)"),
    }
}

pub fn run(a: DistillArgs) -> Result<()> {
    let mut o = DistillOptions::new(a.teacher, a.corpus, a.out);
    o.embed_dim = a.embed_dim;
    o.kernel_sizes = a.kernels;
    o.max_tokens = a.max_tokens;
    o.max_passages = a.max_passages;
    o.holdout = a.holdout;
    o.batch_size = a.batch_size;
    o.max_steps = a.max_steps;
    o.lr = a.lr;
    o.contrastive_weight = a.contrastive_weight;
    o.temperature = a.temperature;
    o.checkpoint_every = a.checkpoint_every;
    o.seed = a.seed;
    o.resume = a.resume;
    o.init = a.init;
    o.pair_weight = a.pair_weight;
    o.hard_negatives = !a.no_hard_negatives;
    o.query_tokens = a.query_tokens;
    o.export_checkpoints = a.export_checkpoints;
    o.device = device(&a.device)?;
    o.command = std::env::args().collect::<Vec<_>>().join(" ");

    let style =
        |t: &str| ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bar: Option<(Phase, ProgressBar)> = None;
    let metrics = distill(&o, &mut |p| {
        if bar.as_ref().map(|b| b.0) != Some(p.phase) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            let (label, tmpl) = match p.phase {
                Phase::TeacherVocab => (
                    "teacher: vocabulary",
                    "{msg:24} {bar:30} {pos}/{len} tokens ({per_sec}, eta {eta})",
                ),
                Phase::TeacherCorpus => (
                    "teacher: passages",
                    "{msg:24} {bar:30} {pos}/{len} passages ({per_sec}, eta {eta})",
                ),
                Phase::TeacherQueries => (
                    "teacher: queries",
                    "{msg:24} {bar:30} {pos}/{len} queries ({per_sec}, eta {eta})",
                ),
                Phase::Train => (
                    "train",
                    "{msg} {bar:30} step {pos}/{len} ({per_sec}, eta {eta})",
                ),
            };
            let b = ProgressBar::new(p.total as u64).with_style(style(tmpl));
            b.set_message(label);
            bar = Some((p.phase, b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(p.done as u64);
            if let Some(l) = p.loss {
                b.set_message(format!("train loss {l:.4}"));
            }
            if let Some(c) = p.heldout_cosine {
                b.println(format!(
                    "step {}: held-out cosine to teacher {c:.4}",
                    p.done
                ));
            }
        }
    })
    .context("distillation failed")?;
    if let Some((_, b)) = bar {
        b.finish();
    }
    println!(
        "wrote {} ({} parameters): held-out cosine to the teacher {:.4} at step 0, {:.4} at \
         step {} (saved fp16: {:.4}); {} training passages",
        o.out.display(),
        metrics.parameters,
        metrics.heldout_cosine_init,
        metrics.heldout_cosine_best,
        metrics.best_step,
        metrics.heldout_cosine_saved,
        metrics.train_passages,
    );
    Ok(())
}
