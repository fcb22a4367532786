//! `cargo bench -p anectx-models --bench embed`
//!
//! Runs, in one process, AneBert, candle-transformers' reference BertModel
//! (both on all-MiniLM-L6-v2), the seed-default ConvEmbedder and the embedded
//! default embedder (`anectx_models::default_model`) at batch 32 × seq 128 on
//! CPU, then an interleaved ratio pass (A, B, C, D, A, B, C, D, …) so the
//! printed ratios share the same machine conditions.
//! Needs the fixture (scripts/fixtures.sh); ANECTX_BENCH_ROUNDS sets the
//! number of interleaved rounds (default 5). ANECTX_BENCH_CANDIDATE=DIR adds
//! a model directory (e.g. a distillation's output) to the interleaved pass,
//! with its ratio to the reference.

use std::hint::black_box;
use std::time::Instant;

use anectx_models::io::batch_tensors;
use anectx_models::{load_embedder, ConvEmbedder, ConvEmbedderConfig, Embedder, WeightDtype};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use criterion::{Criterion, Throughput};

const BATCH: usize = 32;
const SEQ: usize = 128;

struct Inputs {
    ids: Tensor,
    type_ids: Tensor,
    mask: Tensor,
}

fn inputs(tok: &anectx_models::TextTokenizer) -> Inputs {
    // 32 different texts, each long enough to fill 128 tokens.
    let base = anectx_testing::SENTENCES.join(" ");
    let texts: Vec<String> = (0..BATCH)
        .map(|i| format!("{} {}", &base[(i * 37) % 200..], base))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tok = tok.clone().with_buckets(vec![SEQ]);
    let b = tok.encode_batch(&refs).expect("tokenize");
    assert_eq!((b.batch, b.seq), (BATCH, SEQ));
    let (ids, type_ids, mask) = batch_tensors(&b, 30522).expect("tensors");
    Inputs {
        ids,
        type_ids,
        mask,
    }
}

fn reference_forward(model: &BertModel, x: &Inputs) -> Tensor {
    let states = model.forward(&x.ids, &x.type_ids, Some(&x.mask)).unwrap();
    let m = x.mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let pooled = states.broadcast_mul(&m).unwrap().sum(1).unwrap();
    pooled.broadcast_div(&m.sum(1).unwrap()).unwrap()
}

fn main() {
    let Some(dir) = anectx_testing::minilm_dir() else {
        eprintln!("embed bench needs the MiniLM fixture: run scripts/fixtures.sh");
        return;
    };
    let (ane, tok) = load_embedder(&dir, WeightDtype::F32).expect("load AneBert");
    let Embedder::Bert(ane) = ane else {
        panic!("BERT expected")
    };
    let cfg: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let reference = BertModel::load(
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let conv = ConvEmbedder::new_random(ConvEmbedderConfig::default(), 1, DType::F32).unwrap();
    let Embedder::Conv(default) = anectx_models::default_model::load(WeightDtype::F32).unwrap()
    else {
        panic!("the default embedder is a ConvEmbedder")
    };
    let candidate = std::env::var_os("ANECTX_BENCH_CANDIDATE").map(|d| {
        let (m, _) = load_embedder(std::path::Path::new(&d), WeightDtype::F32)
            .unwrap_or_else(|e| panic!("ANECTX_BENCH_CANDIDATE {}: {e}", d.to_string_lossy()));
        let Embedder::Conv(m) = m else {
            panic!("ANECTX_BENCH_CANDIDATE must be a ConvEmbedder directory")
        };
        m
    });
    let x = inputs(&tok);

    let run_ane = || ane.forward_pooled(&x.ids, &x.type_ids, &x.mask).unwrap();
    let run_ref = || reference_forward(&reference, &x);
    let run_conv = || conv.forward(&x.ids, &x.mask).unwrap();
    let run_default = || default.forward(&x.ids, &x.mask).unwrap();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(2))
        .measurement_time(std::time::Duration::from_secs(15))
        .configure_from_args();
    {
        let mut g = c.benchmark_group(format!("embed_b{BATCH}_s{SEQ}"));
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function("AneBert", |b| b.iter(|| black_box(run_ane())));
        g.bench_function("reference_BertModel", |b| b.iter(|| black_box(run_ref())));
        g.bench_function("ConvEmbedder", |b| b.iter(|| black_box(run_conv())));
        g.bench_function("default_embedder", |b| b.iter(|| black_box(run_default())));
        g.finish();
    }

    // Interleaved ratio pass.
    // Under `cargo test` (no --bench flag) criterion runs each function once;
    // keep the ratio pass to one round there too.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("ANECTX_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 5 } else { 1 });
    let run_candidate = || {
        candidate
            .as_ref()
            .map(|m| m.forward(&x.ids, &x.mask).unwrap())
    };
    let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut tc = Vec::new();
    for _ in 0..rounds {
        let runs: [&dyn Fn() -> Tensor; 4] = [&run_ane, &run_ref, &run_conv, &run_default];
        for (i, f) in runs.iter().enumerate() {
            let s = Instant::now();
            black_box(f());
            t[i].push(s.elapsed().as_secs_f64());
        }
        let s = Instant::now();
        if black_box(run_candidate()).is_some() {
            tc.push(s.elapsed().as_secs_f64());
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let [mut a, mut r, mut cv, mut d] = t;
    let (a, r, cv, d) = (med(&mut a), med(&mut r), med(&mut cv), med(&mut d));
    let sps = |s: f64| BATCH as f64 / s;
    println!("\nembed b{BATCH}×s{SEQ}, median of {rounds} interleaved rounds (CPU, f32):");
    println!("  AneBert              {:>8.1} sequences/s", sps(a));
    println!("  reference BertModel  {:>8.1} sequences/s", sps(r));
    println!("  ConvEmbedder         {:>8.1} sequences/s", sps(cv));
    println!("  default embedder     {:>8.1} sequences/s", sps(d));
    println!("  ratio AneBert / reference      {:.2}x", r / a);
    println!("  ratio ConvEmbedder / reference {:.2}x", r / cv);
    println!("  ratio ConvEmbedder / AneBert   {:.2}x", a / cv);
    println!("  ratio default / AneBert        {:.2}x", a / d);
    println!("  ratio default / reference      {:.2}x", r / d);
    if !tc.is_empty() {
        let c = med(&mut tc);
        println!("  candidate            {:>8.1} sequences/s", sps(c));
        println!("  ratio candidate / reference    {:.2}x", r / c);
        println!("  ratio candidate / AneBert      {:.2}x", a / c);
        println!("  ratio candidate / default      {:.2}x", d / c);
    }
}
