//! fp16 against fp32: embedding cosine, PSNR and, on an evaluation
//! collection, the change in nDCG@10.

use std::collections::HashSet;
use std::time::Instant;

use anectx_engine::eval::{score_ranking, Collection};
use anectx_models::metrics::{cosine, psnr};
use anectx_models::{TextTokenizer, WeightDtype};

use crate::models::{Inputs, LoadedModel, ModelSpec};
use crate::report::{EvalDelta, PrecisionRow, Status};
use crate::run::BenchOptions;
use crate::stats::finite;
use crate::{BenchError, Result};

/// Texts for the comparison: short and long, questions, code, numbers.
pub const SAMPLE_TEXTS: &[&str] = &[
    "How does the Neural Engine decide which operations it runs?",
    "The cat sat on the mat.",
    "fn main() { println!(\"hello, world\"); }",
    "Retrieval-augmented generation lets a model cite sources it was never trained on.",
    "What is the boiling point of water at 2,000 metres above sea level?",
    "Error: connection refused (os error 111) while contacting 127.0.0.1:8080",
    "Patients with chronic kidney disease often develop secondary hyperparathyroidism.",
    "Paris is the capital of France.",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "Transformers weigh the relevance of every token to every other token in a sequence.",
    "Café, naïve, résumé: accents should survive tokenisation.",
    "Supersonic flow over a wedge produces an oblique shock attached to the leading edge.",
    "Please summarise the attached quarterly report in three bullet points.",
    "3.14159 is an approximation of pi.",
    "Why does my Rust program panic with 'index out of bounds' only in release builds?",
    "Thanks!",
];

fn failed(spec: &ModelSpec, status: Status, message: String) -> PrecisionRow {
    PrecisionRow {
        model: spec.id.clone(),
        backend: "candle".into(),
        status,
        message: Some(message),
        inputs: String::new(),
        texts: 0,
        seq: 0,
        cosine_mean: 0.0,
        cosine_min: 0.0,
        psnr_db: None,
        f32_ms: 0.0,
        f16_ms: 0.0,
        eval: None,
    }
}

/// Compares the model computing in fp16 with the same weights in fp32.
pub fn compare_dtypes(spec: &ModelSpec, opts: &BenchOptions) -> PrecisionRow {
    match compare_inner(spec, opts) {
        Ok(r) => r,
        Err(e) => failed(spec, Status::Failed, e.to_string()),
    }
}

fn run_timed(m: &LoadedModel, x: &Inputs) -> Result<(Vec<f32>, f64)> {
    m.net.run(x)?; // warm
    let t = Instant::now();
    let out = m.net.run(x)?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}

fn compare_inner(spec: &ModelSpec, opts: &BenchOptions) -> Result<PrecisionRow> {
    let f32m = spec.load(WeightDtype::F32)?;
    let f16m = spec.load(WeightDtype::F16)?;
    let vocab = f32m.meta.vocab;
    let n = opts.precision_texts.clamp(1, 64);
    let tok = spec.tokenizer(f32m.meta.max_seq.min(128));
    let (x, inputs) = match &tok {
        Some(t) => {
            let texts: Vec<&str> = SAMPLE_TEXTS.iter().cycle().take(n).copied().collect();
            (
                Inputs::new(t.encode_batch(&texts)?, vocab)?,
                "tokenized sample texts",
            )
        }
        None => {
            let lens: Vec<usize> = (0..n).map(|i| 8 + (i * 13) % 57).collect();
            (
                Inputs::synthetic_lengths(&lens, 64, vocab, 23)?,
                "synthetic token ids",
            )
        }
    };
    let (a, f32_ms) = run_timed(&f32m, &x)?;
    let (b, f16_ms) = run_timed(&f16m, &x)?;
    if a.len() != b.len() || a.is_empty() {
        return Err(BenchError::Other(format!(
            "fp32 and fp16 outputs differ in size ({} vs {})",
            a.len(),
            b.len()
        )));
    }
    if let Some(bad) = [("fp32", &a), ("fp16", &b)]
        .into_iter()
        .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
    {
        let why = if f32m.meta.kind == "reference_bert" {
            ": candle-transformers' BertModel builds its additive attention mask by \
             multiplying with f32::MIN, which overflows to -inf in fp16 (0 × -inf = NaN); \
             anectx's models use -1e4 masks"
        } else {
            ""
        };
        return Err(BenchError::Other(format!(
            "{} output has non-finite values{why}",
            bad.0
        )));
    }
    let rows = x.items();
    let dim = a.len() / rows;
    let cos: Vec<f64> = (0..rows)
        .map(|r| {
            f64::from(cosine(
                &a[r * dim..(r + 1) * dim],
                &b[r * dim..(r + 1) * dim],
            ))
        })
        .collect();
    let eval = match (&opts.eval_dir, &tok) {
        (Some(dir), Some(t)) => Some(eval_delta(dir, t, &f32m, &f16m, opts)?),
        _ => None,
    };
    let message = match (&opts.eval_dir, &tok) {
        (Some(_), None) => Some("no tokenizer: nDCG@10 not measured".into()),
        _ => None,
    };
    Ok(PrecisionRow {
        model: spec.id.clone(),
        backend: "candle".into(),
        status: Status::Ok,
        message,
        inputs: inputs.into(),
        texts: rows,
        seq: x.batch.seq,
        cosine_mean: cos.iter().sum::<f64>() / rows as f64,
        cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        psnr_db: finite(psnr(&a, &b)),
        f32_ms,
        f16_ms,
        eval,
    })
}

/// Embeds `texts` in batches of 16 at most `seq` tokens each.
fn embed_all(m: &LoadedModel, tok: &TextTokenizer, texts: &[&str]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for chunk in texts.chunks(16) {
        let x = Inputs::new(tok.encode_batch(chunk)?, m.meta.vocab)?;
        out.extend(m.net.run(&x)?);
    }
    Ok(out)
}

fn ndcg(
    coll: &Collection,
    docs: &[usize],
    queries: &[usize],
    dv: &[f32],
    qv: &[f32],
) -> Result<f64> {
    let dim = dv.len() / docs.len().max(1);
    if dim == 0 || qv.len() != queries.len() * dim {
        return Err(BenchError::Other("embedding sizes do not match".into()));
    }
    let mut total = 0.0;
    for (qi, &q) in queries.iter().enumerate() {
        let qvec = &qv[qi * dim..(qi + 1) * dim];
        let mut scored: Vec<(f32, usize)> = docs
            .iter()
            .enumerate()
            .map(|(di, &d)| (cosine(qvec, &dv[di * dim..(di + 1) * dim]), d))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let ranking: Vec<String> = scored
            .iter()
            .take(100)
            .map(|(_, d)| coll.docs[*d].0.clone())
            .collect();
        let (qid, _) = &coll.queries[q];
        let empty = Default::default();
        total += score_ranking(qid, &ranking, coll.qrels.get(qid).unwrap_or(&empty)).ndcg_10;
    }
    Ok(total / queries.len().max(1) as f64)
}

fn eval_delta(
    dir: &std::path::Path,
    tok: &TextTokenizer,
    f32m: &LoadedModel,
    f16m: &LoadedModel,
    opts: &BenchOptions,
) -> Result<EvalDelta> {
    let coll = Collection::load(dir)?;
    // Keep the corpus bounded: every document judged relevant for the first
    // queries, then others, up to eval_docs.
    let cap_docs = opts.eval_docs.max(1);
    let index: std::collections::HashMap<&str, usize> = coll
        .docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.0.as_str(), i))
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    let mut queries = Vec::new();
    for (qi, (qid, _)) in coll.queries.iter().enumerate() {
        if queries.len() >= opts.eval_queries.max(1) {
            break;
        }
        let rel: Vec<usize> = coll
            .qrels
            .get(qid)
            .map(|m| {
                m.iter()
                    .filter(|(_, &s)| s > 0)
                    .filter_map(|(d, _)| index.get(d.as_str()).copied())
                    .collect()
            })
            .unwrap_or_default();
        if rel.is_empty() {
            continue; // its relevant documents are not in the corpus
        }
        let new: Vec<usize> = rel.into_iter().filter(|d| !seen.contains(d)).collect();
        if chosen.len() + new.len() > cap_docs {
            continue;
        }
        for d in new {
            seen.insert(d);
            chosen.push(d);
        }
        queries.push(qi);
    }
    for d in 0..coll.docs.len() {
        if chosen.len() >= cap_docs {
            break;
        }
        if seen.insert(d) {
            chosen.push(d);
        }
    }
    if queries.is_empty() {
        return Err(BenchError::Config(format!(
            "{}: no judged query fits in --eval-docs {cap_docs}",
            dir.display()
        )));
    }
    let seq = opts.eval_seq.max(8);
    let buckets: Vec<usize> = anectx_core::SEQ_BUCKETS
        .iter()
        .copied()
        .filter(|&b| b <= seq)
        .collect();
    let tok = tok.clone().with_buckets(if buckets.is_empty() {
        vec![seq]
    } else {
        buckets
    });
    let doc_texts: Vec<&str> = chosen.iter().map(|&d| coll.docs[d].1.as_str()).collect();
    let q_texts: Vec<&str> = queries
        .iter()
        .map(|&q| coll.queries[q].1.as_str())
        .collect();
    let nd = |m: &LoadedModel| -> Result<f64> {
        let dv = embed_all(m, &tok, &doc_texts)?;
        let qv = embed_all(m, &tok, &q_texts)?;
        ndcg(&coll, &chosen, &queries, &dv, &qv)
    };
    let a = nd(f32m)?;
    let b = nd(f16m)?;
    Ok(EvalDelta {
        collection: dir.display().to_string(),
        docs: chosen.len(),
        queries: queries.len(),
        seq,
        ndcg10_f32: a,
        ndcg10_f16: b,
        ndcg10_delta: b - a,
    })
}
