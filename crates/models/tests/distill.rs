//! `anectx distill` on a tiny random BERT teacher: the loss goes down, resume
//! continues from the checkpoint, bad input gives clear errors.

use std::path::{Path, PathBuf};

use anectx_models::distill::{distill, DistillMetrics, DistillOptions};
use anectx_models::weights::{randn, Rng};
use anectx_models::{load_embedder, WeightDtype};
use candle_core::{DType, Device, Tensor};

const H: usize = 16;
const I: usize = 32;
const V: usize = 30522;

fn tokenizer_json() -> PathBuf {
    anectx_testing::manifest_dir().join("assets/default-embedder/tokenizer.json")
}

/// A 1-layer BERT with random weights and the BERT uncased tokenizer.
fn tiny_teacher(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "model_type": "bert", "vocab_size": V, "hidden_size": H, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": I, "max_position_embeddings": 128,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut rng = Rng::new(7);
    let mut t: Vec<(String, Tensor)> = Vec::new();
    let mut add = |name: &str, shape: &[usize], rng: &mut Rng| {
        t.push((name.to_string(), randn(shape, 0.5, rng).unwrap()));
    };
    add("embeddings.word_embeddings.weight", &[V, H], &mut rng);
    add("embeddings.position_embeddings.weight", &[128, H], &mut rng);
    add("embeddings.token_type_embeddings.weight", &[2, H], &mut rng);
    let l = "encoder.layer.0";
    for (name, o, i) in [
        ("attention.self.query", H, H),
        ("attention.self.key", H, H),
        ("attention.self.value", H, H),
        ("attention.output.dense", H, H),
        ("intermediate.dense", I, H),
        ("output.dense", H, I),
    ] {
        add(&format!("{l}.{name}.weight"), &[o, i], &mut rng);
        add(&format!("{l}.{name}.bias"), &[o], &mut rng);
    }
    for ln in [
        "embeddings.LayerNorm".to_string(),
        format!("{l}.attention.output.LayerNorm"),
        format!("{l}.output.LayerNorm"),
    ] {
        t.push((
            format!("{ln}.weight"),
            Tensor::ones(H, DType::F32, &Device::Cpu).unwrap(),
        ));
        t.push((
            format!("{ln}.bias"),
            Tensor::zeros(H, DType::F32, &Device::Cpu).unwrap(),
        ));
    }
    anectx_models::weights::save(&t, &dir.join("model.safetensors"), WeightDtype::F32).unwrap();
    std::fs::copy(tokenizer_json(), dir.join("tokenizer.json")).unwrap();
}

fn corpus(dir: &Path) -> PathBuf {
    let words = [
        "wing",
        "pressure",
        "library",
        "catalogue",
        "patient",
        "blood",
        "engine",
        "flow",
        "heat",
        "index",
        "search",
        "cell",
        "tumour",
        "shock",
        "boundary",
        "layer",
        "books",
        "reader",
        "dose",
        "therapy",
    ];
    let mut rng = Rng::new(11);
    let lines: Vec<String> = (0..80)
        .map(|_| {
            let n = 3 + rng.below(8);
            (0..n)
                .map(|_| words[rng.below(words.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let p = dir.join("corpus.txt");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn options(root: &Path, steps: usize) -> DistillOptions {
    let mut o = DistillOptions::new(
        root.join("teacher"),
        vec![root.join("corpus.txt")],
        root.join("out"),
    );
    o.embed_dim = 8;
    o.kernel_sizes = vec![3, 3];
    o.max_tokens = 16;
    o.holdout = 10;
    o.batch_size = 8;
    o.max_steps = steps;
    o.checkpoint_every = 10;
    o.warmup_steps = 2;
    o.lr = 5e-3;
    o.command = "test".into();
    o
}

#[test]
fn distill_reduces_the_loss_and_resumes_from_the_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    tiny_teacher(&root.path().join("teacher"));
    corpus(root.path());
    let m: DistillMetrics = distill(&options(root.path(), 40), &mut |_| {}).unwrap();
    assert_eq!(m.steps, 40);
    let h = &m.history;
    assert_eq!(
        h.iter().map(|p| p.step).collect::<Vec<_>>(),
        [0, 10, 20, 30, 40]
    );
    assert!(
        h[4].loss.unwrap() < h[1].loss.unwrap(),
        "loss did not go down: {:?}",
        h.iter().map(|p| p.loss).collect::<Vec<_>>()
    );
    assert!(
        m.heldout_cosine_best > m.heldout_cosine_init,
        "held-out cosine {} → {}",
        m.heldout_cosine_init,
        m.heldout_cosine_best
    );
    assert!((m.heldout_cosine_saved - m.heldout_cosine_best).abs() < 0.02);
    let out = root.path().join("out");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(out.join("checkpoints/last.safetensors").is_file());
    let (model, tok) = load_embedder(&out, WeightDtype::F32).unwrap();
    assert_eq!(model.dim(), H);
    let e = model
        .embed(&tok.encode_batch(&["wing pressure"]).unwrap())
        .unwrap();
    let n: f32 = e.data.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-3);

    // Resume: continues at step 40 with the recorded history.
    let mut o = options(root.path(), 60);
    o.resume = true;
    let mut first_step = None;
    let r = distill(&o, &mut |p| {
        if p.phase == anectx_models::distill::Phase::Train && first_step.is_none() {
            first_step = Some(p.done);
        }
    })
    .unwrap();
    assert_eq!(first_step, Some(41), "resume did not continue at step 40");
    assert_eq!(r.steps, 60);
    assert_eq!(r.history.len(), 7);
    assert_eq!(r.history[..5].len(), h.len());
    for (a, b) in r.history[..5].iter().zip(h) {
        assert_eq!(a.step, b.step);
        assert_eq!(a.heldout_cosine, b.heldout_cosine);
    }
    assert_eq!(r.heldout_cosine_init, m.heldout_cosine_init);

    // --init: a fresh run starting from the finished model begins where it
    // ended (its step-0 cosine is the saved one, not the PCA/SIF start).
    let mut o = options(root.path(), 10);
    o.out = root.path().join("out-init");
    o.init = Some(out.clone());
    let i = distill(&o, &mut |_| {}).unwrap();
    assert!(
        (i.heldout_cosine_init - r.heldout_cosine_saved).abs() < 0.02,
        "init cosine {} vs the saved model's {}",
        i.heldout_cosine_init,
        r.heldout_cosine_saved
    );
    // A student with more blocks grows from it: the blocks after the
    // model's own start as the identity, so step 0 embeds exactly as the
    // model does; then the new blocks train.
    let mut o = options(root.path(), 10);
    o.out = root.path().join("out-grown");
    o.kernel_sizes = vec![3, 3, 5];
    o.init = Some(out.clone());
    let g = distill(&o, &mut |_| {}).unwrap();
    assert!(
        (g.heldout_cosine_init - i.heldout_cosine_init).abs() < 1e-6,
        "grown student's step-0 cosine {} vs the model's {}",
        g.heldout_cosine_init,
        i.heldout_cosine_init
    );
    let grown = candle_core::safetensors::load(
        root.path().join("out-grown/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let gain = grown["blocks.2.norm.weight"]
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(gain > 0.0, "the added block did not train");
    // Fewer blocks than the model's, or another width, are refused, clearly.
    let mut o = options(root.path(), 10);
    o.out = root.path().join("out-fewer");
    o.kernel_sizes = vec![3];
    o.init = Some(out.clone());
    let e = distill(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("--init") && e.contains("configuration"), "{e}");
    let mut o = options(root.path(), 10);
    o.out = root.path().join("out-bad");
    o.embed_dim = 12;
    o.init = Some(out.clone());
    let e = distill(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("--init") && e.contains("configuration"), "{e}");
}

#[test]
fn distill_reports_bad_input_clearly() {
    let root = tempfile::tempdir().unwrap();
    corpus(root.path());
    // Missing teacher.
    let e = distill(&options(root.path(), 1), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("teacher") && e.contains("does not exist"), "{e}");

    tiny_teacher(&root.path().join("teacher"));
    // Empty corpus.
    std::fs::write(root.path().join("corpus.txt"), "\n  \n\n").unwrap();
    let e = distill(&options(root.path(), 1), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("no non-empty lines"), "{e}");
    // Missing corpus file.
    let mut o = options(root.path(), 1);
    o.corpus = vec![root.path().join("nope.txt")];
    let e = distill(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("nope.txt") && e.contains("does not exist"),
        "{e}"
    );
    // A teacher that is not a model directory.
    let mut o = options(root.path(), 1);
    o.teacher = root.path().to_path_buf();
    let e = distill(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("could not load teacher"), "{e}");
    // Nonsense options.
    let mut o = options(root.path(), 1);
    o.batch_size = 1;
    let e = distill(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("batch_size"), "{e}");
}

#[test]
fn the_pair_term_trains_the_students_queries_towards_the_teachers() {
    let root = tempfile::tempdir().unwrap();
    tiny_teacher(&root.path().join("teacher"));
    let p = corpus(root.path());
    // A heading on every other line: those are their pseudo-queries.
    let lines: Vec<String> = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i % 2 == 0 {
                format!("heading {i}\t{l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&p, lines.join("\n")).unwrap();
    let run = |out: &str, pair: f64, hard: bool| {
        let mut o = options(root.path(), 60);
        o.out = root.path().join(out);
        o.pair_weight = pair;
        o.hard_negatives = hard;
        o.export_checkpoints = true;
        distill(&o, &mut |_| {}).unwrap()
    };
    let plain = run("plain", 0.0, true);
    let pair = run("pair", 1.0, true);
    let q = |m: &DistillMetrics| m.history.last().unwrap().heldout_query_cosine.unwrap();
    let q0 = |m: &DistillMetrics| m.history[0].heldout_query_cosine.unwrap();
    assert_eq!(q0(&plain), q0(&pair), "both start from the same student");
    assert!(
        q(&pair) > q(&plain) + 0.01,
        "held-out query cosine with the pair term {} vs without {}",
        q(&pair),
        q(&plain)
    );
    assert!(pair.history.iter().all(|p| p.heldout_agreement.is_some()));
    // The kept step is chosen by the passage and query cosines together.
    assert_eq!(plain.selected_by, "held-out passage cosine");
    assert!(pair.selected_by.contains("query"), "{}", pair.selected_by);
    let best = pair
        .history
        .iter()
        .find(|p| p.step == pair.best_step)
        .unwrap();
    let mean = |p: &anectx_models::distill::EvalPoint| {
        0.5 * (p.heldout_cosine + p.heldout_query_cosine.unwrap())
    };
    assert!(pair.history.iter().all(|p| mean(p) <= mean(best)));
    assert_eq!(pair.hyperparameters["pair_weight"], 1.0);
    assert_eq!(pair.hyperparameters["hard_negatives"], true);
    assert_eq!(plain.hyperparameters["hard_negatives"], false);
    // Every evaluated step is a model directory that loads.
    for step in [10, 20, 30, 40, 50, 60] {
        let dir = root.path().join(format!("pair/steps/step-{step:06}"));
        let (model, _) = load_embedder(&dir, WeightDtype::F32).unwrap();
        assert_eq!(model.dim(), H, "{}", dir.display());
    }
    // The queries' teacher vectors are cached beside the passages'.
    let cached: Vec<String> = std::fs::read_dir(root.path().join("pair/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.iter().any(|f| f.starts_with("queries-")),
        "{cached:?}"
    );
    // Without hard negatives the batches are the plain run's, so this run
    // differs from it by the term alone.
    let soft = run("soft", 1.0, false);
    assert_eq!(soft.hyperparameters["hard_negatives"], false);
    // The same batches with and without the term: only the term differs.
    assert!(
        q(&soft) > q(&plain) + 0.01,
        "held-out query cosine with the term alone {} vs without {}",
        q(&soft),
        q(&plain)
    );
}
