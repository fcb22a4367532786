//! Running an exported package on text.
//!
//! `anectx export coreml` stores what a host needs besides the program inside
//! the package, under `Data/com.anectx/` (not listed in `Manifest.json`, so
//! the manifest keeps coremltools' two entries and Core ML ignores it):
//! - `anectx.json`: [`SideInfo`] (model kind, input kind, sequence lengths);
//! - `tokenizer.json`: the model's tokenizer;
//! - `embeddings.safetensors`: the fp16 lookup tables (`word`, and
//!   `position` / `token_type` where the model has them) for packages whose
//!   input is embeddings (the default). Packages exported with ids input
//!   carry the tables in the graph instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anectx_core::{BackendError, Embeddings, TokenBatch};
use anectx_models::{ModelKind, TextTokenizer};
use candle_core::{DType, Device, Tensor};

use crate::error::{io_err, CoremlError, Result};
use crate::export::SideInfo;
use crate::program::Model;

/// Side data folder, relative to the package root.
pub const SIDE_DIR: &str = "Data/com.anectx";
pub const SIDE_INFO: &str = "anectx.json";
pub const SIDE_TOKENIZER: &str = "tokenizer.json";
pub const SIDE_TABLES: &str = "embeddings.safetensors";

/// An exported package opened for running on CPU through [`crate::exec`].
#[derive(Debug)]
pub struct PackageRunner {
    pub path: PathBuf,
    pub model: Model,
    pub side: SideInfo,
    pub tokenizer: TextTokenizer,
    tables: HashMap<String, Tensor>,
}

/// One result row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    /// Tokens used (after truncation).
    pub tokens: usize,
    /// The padded length the program ran at.
    pub seq: usize,
    /// Whether the text was cut to fit the largest length.
    pub truncated: bool,
    /// Every output, flattened, as f32.
    pub outputs: std::collections::BTreeMap<String, Vec<f32>>,
}

impl PackageRunner {
    pub fn open(path: &Path) -> Result<Self> {
        let model = crate::read_package(path)?;
        let side_dir = path.join(SIDE_DIR);
        let info = side_dir.join(SIDE_INFO);
        let text = std::fs::read(&info).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CoremlError::Unsupported(format!(
                    "{} has no {SIDE_DIR}/{SIDE_INFO}: it was not exported by anectx, so there is no \
                     tokenizer to run it on text",
                    path.display()
                ))
            } else {
                io_err(&info)(e)
            }
        })?;
        let side: SideInfo = serde_json::from_slice(&text).map_err(|e| CoremlError::Manifest {
            path: info.clone(),
            message: e.to_string(),
        })?;
        let tok = side_dir.join(SIDE_TOKENIZER);
        let tokenizer =
            TextTokenizer::from_file(&tok, side.max_seq)?.with_buckets(side.seq_lengths.clone());
        let tables = if side.input == "embeddings" {
            let tp = side_dir.join(SIDE_TABLES);
            candle_core::safetensors::load(&tp, &Device::Cpu).map_err(|e| {
                CoremlError::Input(format!("cannot read lookup tables {}: {e}", tp.display()))
            })?
        } else {
            HashMap::new()
        };
        Ok(Self {
            path: path.to_path_buf(),
            model,
            side,
            tokenizer,
            tables,
        })
    }

    fn table(&self, name: &str) -> Result<&Tensor> {
        self.tables.get(name).ok_or_else(|| {
            CoremlError::Input(format!("lookup table {name:?} is missing from the package"))
        })
    }

    /// Builds the program inputs for row `r` of `batch`.
    pub fn inputs_for(&self, batch: &TokenBatch, r: usize) -> Result<HashMap<String, Tensor>> {
        let mut inputs = self.all_inputs_for(batch, r)?;
        // Packages exported with one enumerated input below spec 9 compute
        // the mask in the graph: send only what the program declares.
        let declared: Vec<&str> = self
            .model
            .description
            .inputs
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        inputs.retain(|k, _| declared.contains(&k.as_str()));
        Ok(inputs)
    }

    fn all_inputs_for(&self, batch: &TokenBatch, r: usize) -> Result<HashMap<String, Tensor>> {
        let s = batch.seq;
        let dev = &Device::Cpu;
        let row_mask = &batch.mask[r * s..(r + 1) * s];
        // A mask computed from the ids needs the padding id at every padded position.
        let ids: Vec<u32> = batch.ids[r * s..(r + 1) * s]
            .iter()
            .zip(row_mask)
            .map(|(&i, &m)| if m == 0 { self.side.pad_token_id } else { i })
            .collect();
        let ids = ids.as_slice();
        let types = &batch.type_ids[r * s..(r + 1) * s];
        let mask: Vec<f32> = batch.mask[r * s..(r + 1) * s]
            .iter()
            .map(|&m| m as f32)
            .collect();
        let mut inputs = HashMap::new();
        inputs.insert(
            "mask".to_string(),
            Tensor::from_vec(mask, (1, 1, 1, s), dev)?,
        );
        let has_types = matches!(self.side.kind, ModelKind::Bert | ModelKind::ConvClassifier);
        if self.side.input == "ids" {
            let to = |v: &[u32]| {
                Tensor::from_vec(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), (1, s), dev)
            };
            inputs.insert("input_ids".into(), to(ids)?);
            if has_types {
                inputs.insert("token_type_ids".into(), to(types)?);
            }
            return Ok(inputs);
        }
        let word = self.table("word")?;
        let vocab = word.dims()[0];
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(CoremlError::Input(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let idt = Tensor::from_vec(ids.to_vec(), s, dev)?;
        let mut x = word.index_select(&idt, 0)?.to_dtype(DType::F32)?; // (S, E)
        if let Ok(p) = self.table("position") {
            x = (x + p.narrow(0, 0, s)?.to_dtype(DType::F32)?)?;
        }
        if has_types {
            let tt = Tensor::from_vec(types.to_vec(), s, dev)?;
            x = (x + self
                .table("token_type")?
                .index_select(&tt, 0)?
                .to_dtype(DType::F32)?)?;
        }
        if self.side.mask == crate::export::MASK_FROM_EMBEDDINGS {
            // The mask is computed from non-zero positions: zero the padding.
            let keep: Vec<f32> = row_mask.iter().map(|&m| (m != 0) as u8 as f32).collect();
            x = x.broadcast_mul(&Tensor::from_vec(keep, (s, 1), dev)?)?;
        }
        let e = x.dims()[1];
        let x = x.t()?.contiguous()?.reshape((1, e, 1, s))?;
        inputs.insert("embeddings".into(), x);
        Ok(inputs)
    }

    fn run_batch(&self, batch: TokenBatch) -> Result<Vec<RunRow>> {
        let mut rows = Vec::with_capacity(batch.batch);
        for r in 0..batch.batch {
            let inputs = self.inputs_for(&batch, r)?;
            let out = crate::exec::run(&self.model, &inputs)?;
            let outputs = out
                .into_iter()
                .map(|(k, v)| Ok((k, v.flatten_all()?.to_vec1::<f32>()?)))
                .collect::<Result<_>>()?;
            rows.push(RunRow {
                tokens: batch.len_of(r),
                seq: batch.seq,
                truncated: batch.truncations.iter().any(|t| t.index == r),
                outputs,
            });
        }
        Ok(rows)
    }

    /// Runs single texts (embedders).
    pub fn run_texts(&self, texts: &[&str]) -> Result<Vec<RunRow>> {
        let mut rows = Vec::new();
        for t in texts {
            // One text per batch, so each runs at the smallest length that fits.
            rows.extend(self.run_batch(self.tokenizer.encode_batch(&[t])?)?);
        }
        Ok(rows)
    }

    /// Runs (query, text) pairs (the relevance classifier).
    pub fn run_pairs(&self, query: &str, texts: &[&str]) -> Result<Vec<RunRow>> {
        let mut rows = Vec::new();
        for t in texts {
            rows.extend(self.run_batch(self.tokenizer.encode_pairs(&[(query, t)])?)?);
        }
        Ok(rows)
    }
}

/// An exported package run by this crate's MIL executor, as a [`Backend`]
/// (`mil-cpu`): the stand-in for Core ML where Core ML cannot run, e.g. to
/// test [`crate::auto`]'s probe and decision on Linux. Slow; not for serving.
impl anectx_core::Backend for PackageRunner {
    fn name(&self) -> &str {
        "mil-cpu"
    }

    fn health(&self) -> anectx_core::BackendHealth {
        anectx_core::BackendHealth {
            ok: true,
            detail: format!("MIL executor over {}", self.path.display()),
        }
    }

    fn shapes(&self) -> anectx_core::SupportedShapes {
        anectx_core::SupportedShapes {
            max_batch: 1,
            seq_buckets: self.side.seq_lengths.clone(),
            max_seq: self.side.seq_lengths.iter().copied().max().unwrap_or(0),
        }
    }

    fn embedding_dim(&self) -> Option<usize> {
        (self.side.outputs.first().map(String::as_str) == Some("embedding"))
            .then_some(self.side.embed_dim)
    }

    fn embed(&self, batch: &TokenBatch) -> std::result::Result<Embeddings, BackendError> {
        if !self.side.seq_lengths.contains(&batch.seq) {
            return Err(BackendError::Input(format!(
                "sequence length {} is not one of the package's lengths {:?}",
                batch.seq, self.side.seq_lengths
            )));
        }
        let mut data = Vec::new();
        let mut dim = 0;
        for r in 0..batch.batch {
            let run = || -> Result<Vec<f32>> {
                let inputs = self.inputs_for(batch, r)?;
                let mut out = crate::exec::run(&self.model, &inputs)?;
                let e = out.remove("embedding").ok_or_else(|| {
                    CoremlError::Unsupported(format!(
                        "{} has no `embedding` output: not an embedder",
                        self.path.display()
                    ))
                })?;
                Ok(e.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
            };
            let row = run().map_err(|e| BackendError::Inference(e.to_string()))?;
            dim = row.len();
            data.extend(row);
        }
        Ok(Embeddings {
            rows: batch.batch,
            dim,
            data,
        })
    }

    fn score(&self, _pairs: &TokenBatch) -> std::result::Result<Vec<f32>, BackendError> {
        Err(BackendError::Unsupported(
            "the MIL executor backend only embeds".into(),
        ))
    }
}
