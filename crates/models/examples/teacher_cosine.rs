//! Cosine between the built-in embedder and a BERT teacher (all-MiniLM-L6-v2)
//! per text, over JSONL files with a `"text"` field (the quickstart sample's
//! corpus and queries) and the test suite's varied sentences.
//!
//! usage: cargo run -p anectx-models --example teacher_cosine -- TEACHER_DIR FILE.jsonl...
//! Prints, per set: texts, mean, median and minimum cosine.

use anectx_models::metrics::cosine;
use anectx_models::{default_model, load_embedder, WeightDtype};

fn rows(e: &anectx_core::Embeddings) -> Vec<Vec<f32>> {
    (0..e.rows).map(|i| e.row(i).to_vec()).collect()
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((teacher_dir, files)) = args.split_first() else {
        return Err("usage: teacher_cosine TEACHER_DIR FILE.jsonl...".into());
    };
    let (teacher, ttok) = load_embedder(std::path::Path::new(teacher_dir), WeightDtype::F32)?;
    let (student, stok) = default_model::load_with_tokenizer(WeightDtype::F32)?;
    let mut sets: Vec<(String, Vec<String>)> = Vec::new();
    for f in files {
        let texts = std::fs::read_to_string(f)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)?;
                Ok(v["text"].as_str().unwrap_or_default().to_string())
            })
            .collect::<Res<Vec<_>>>()?;
        sets.push((f.clone(), texts));
    }
    sets.push((
        "anectx_testing::SENTENCES".into(),
        anectx_testing::SENTENCES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ));
    for (name, texts) in &sets {
        let mut cos = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(16) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let t = rows(&teacher.embed(&ttok.encode_batch(&refs)?)?);
            let s = rows(&student.embed(&stok.encode_batch(&refs)?)?);
            cos.extend(t.iter().zip(&s).map(|(a, b)| cosine(a, b)));
        }
        let mean = cos.iter().sum::<f32>() / cos.len() as f32;
        let mut sorted = cos.clone();
        sorted.sort_by(f32::total_cmp);
        println!(
            "{name}: {} texts, cosine to the teacher mean {mean:.3}, median {:.3}, min {:.3}",
            cos.len(),
            sorted[sorted.len() / 2],
            sorted[0]
        );
    }
    Ok(())
}
