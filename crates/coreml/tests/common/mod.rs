//! Helpers shared by the coreml integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anectx_coreml::export::{self, ExportOptions, Exported};
use anectx_models::{
    load_embedder, AneBert, ConvClassifier, ConvClassifierConfig, ConvEmbedder, ConvEmbedderConfig,
    Embedder, WeightDtype,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub fn opts(seq: &[usize], ids: bool) -> ExportOptions {
    ExportOptions {
        seq_lengths: seq.to_vec(),
        ids_input: ids,
        spec_version: 7,
    }
}

/// A tiny ConvEmbedder for structural tests (fast to export and read).
pub fn tiny_embedder() -> ConvEmbedder {
    let cfg = ConvEmbedderConfig {
        vocab_size: 50,
        embed_dim: 16,
        widths: vec![16, 24],
        kernel_sizes: vec![3, 1],
        output_dim: 8,
        max_seq: 64,
        ..Default::default()
    };
    ConvEmbedder::new_random(cfg, 3, DType::F32).unwrap()
}

pub fn tiny_export() -> Exported {
    export::export_conv_embedder(&tiny_embedder(), &opts(&[16], false)).unwrap()
}

pub fn default_embedder() -> ConvEmbedder {
    ConvEmbedder::new_random(ConvEmbedderConfig::default(), 7, DType::F32).unwrap()
}

pub fn default_classifier() -> ConvClassifier {
    ConvClassifier::new_random(ConvClassifierConfig::default(), 11, DType::F32).unwrap()
}

/// all-MiniLM-L6-v2 as `AneBert` (f32), when the fixture is installed.
pub fn minilm() -> Option<AneBert> {
    let dir = anectx_testing::minilm_dir()?;
    match load_embedder(&dir, WeightDtype::F32).unwrap().0 {
        Embedder::Bert(m) => Some(*m),
        Embedder::Conv(_) => panic!("the MiniLM fixture did not load as BERT"),
    }
}

/// Named tensors rounded to fp16 and back to f32.
pub fn rounded(named: Vec<(String, Tensor)>) -> std::collections::HashMap<String, Tensor> {
    named
        .into_iter()
        .map(|(n, t)| {
            let r = t
                .to_dtype(DType::F16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            (n, r)
        })
        .collect()
}

pub fn vb(map: std::collections::HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub fn script(name: &str) -> PathBuf {
    anectx_testing::manifest_dir().join("python").join(name)
}
