//! The models a run benchmarks: where they come from, how to load an
//! instance, their analytic FLOPs and weight bytes, and how to call them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anectx_core::{ComputeUnits, TokenBatch};
use anectx_models::io::{batch_tensors, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use anectx_models::weights::{randn, Rng};
use anectx_models::{
    load_embedder, AneBert, BertConfig, ConvEmbedder, ConvEmbedderConfig, Embedder, Pooling,
    TextTokenizer, WeightDtype,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as RefConfig};
use serde_json::json;

use crate::report::Role;
use crate::{BenchError, Result};

/// `config.json` of sentence-transformers/all-MiniLM-L6-v2 (the shape of the
/// reference baseline when its weights are not available).
pub const MINILM_CONFIG: &str = r#"{
  "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
  "num_attention_heads": 12, "intermediate_size": 1536,
  "max_position_embeddings": 512, "type_vocab_size": 2,
  "layer_norm_eps": 1e-12, "hidden_act": "gelu", "model_type": "bert",
  "pad_token_id": 0, "position_embedding_type": "absolute"
}"#;

/// The MiniLM-L6 BERT shape.
pub fn minilm_config() -> BertConfig {
    serde_json::from_str(MINILM_CONFIG).expect("the built-in MiniLM config parses")
}

/// Finds all-MiniLM-L6-v2 on this machine: `$ANECTX_MINILM_DIR`, then
/// `.fixtures/all-minilm-l6-v2` under the current directory, then the
/// Hugging Face cache. `None` when absent (anectx never downloads).
pub fn find_minilm() -> Option<PathBuf> {
    let ok = |p: &Path| p.join(WEIGHTS_FILE).is_file() && p.join(CONFIG_FILE).is_file();
    if let Some(p) = std::env::var_os("ANECTX_MINILM_DIR").map(PathBuf::from) {
        if ok(&p) {
            return Some(p);
        }
    }
    let local = PathBuf::from(".fixtures/all-minilm-l6-v2");
    if ok(&local) {
        return Some(local);
    }
    anectx_models::io::resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2")
        .ok()
        .filter(|p| ok(p))
}

/// Where a benchmarked model comes from. A built-in model is one more
/// variant here and one more arm in [`ModelSpec::load`].
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A model directory: anectx's own (ConvEmbedder) or a Hugging Face BERT
    /// (run as [`AneBert`]).
    Dir(PathBuf),
    /// [`AneBert`] with random weights of the given shape.
    RandomAneBert(BertConfig),
    /// A [`ConvEmbedder`] with random weights.
    RandomConv(ConvEmbedderConfig),
    /// The built-in embedder (`anectx_models::default_model`, distilled).
    Builtin,
    /// The reference: candle-transformers' `BertModel` on a Hugging Face BERT directory.
    ReferenceDir(PathBuf),
    /// The reference with random weights of the given shape.
    ReferenceRandom(BertConfig),
}

impl ModelSource {
    pub fn is_random(&self) -> bool {
        matches!(
            self,
            Self::RandomAneBert(_) | Self::RandomConv(_) | Self::ReferenceRandom(_)
        )
    }

    pub fn is_reference(&self) -> bool {
        matches!(self, Self::ReferenceDir(_) | Self::ReferenceRandom(_))
    }

    fn describe(&self) -> String {
        match self {
            Self::Dir(p) | Self::ReferenceDir(p) => p.display().to_string(),
            _ => "random".into(),
        }
    }
}

/// The note every random-weight model carries.
pub const RANDOM_NOTE: &str = "random weights (timing only)";

/// A model to benchmark.
#[derive(Debug)]
pub struct ModelSpec {
    pub id: String,
    pub label: String,
    pub source: ModelSource,
    /// Tokenizer for the precision and evaluation texts (MiniLM's for
    /// random models when it is around).
    pub tokenizer_dir: Option<PathBuf>,
    seed: u64,
    random: OnceLock<Arc<HashMap<String, Tensor>>>,
}

impl ModelSpec {
    pub fn new(id: impl Into<String>, label: impl Into<String>, source: ModelSource) -> Self {
        let tokenizer_dir = match &source {
            ModelSource::Dir(p) | ModelSource::ReferenceDir(p) => Some(p.clone()),
            _ => None,
        };
        Self {
            id: id.into(),
            label: label.into(),
            source,
            tokenizer_dir,
            seed: 7,
            random: OnceLock::new(),
        }
    }

    /// Uses the tokenizer of `dir` for texts (random models have none).
    pub fn with_tokenizer_dir(mut self, dir: Option<PathBuf>) -> Self {
        if self.tokenizer_dir.is_none() {
            self.tokenizer_dir = dir;
        }
        self
    }

    pub fn role(&self) -> Role {
        if self.source.is_reference() {
            Role::Reference
        } else {
            Role::Candidate
        }
    }

    /// The default line-up: the reference candle BERT (MiniLM weights when
    /// found, else MiniLM's shape with random weights), AneBert on the same
    /// weights, and the seed-default ConvEmbedder (random weights).
    pub fn defaults(minilm: Option<&Path>) -> Vec<ModelSpec> {
        let tok = minilm.map(Path::to_path_buf);
        let mut v = Vec::new();
        match minilm {
            Some(dir) => {
                v.push(ModelSpec::new(
                    "reference",
                    "reference candle BertModel (all-MiniLM-L6-v2)",
                    ModelSource::ReferenceDir(dir.to_path_buf()),
                ));
                v.push(ModelSpec::new(
                    "ane-bert",
                    "AneBert (all-MiniLM-L6-v2)",
                    ModelSource::Dir(dir.to_path_buf()),
                ));
            }
            None => {
                v.push(ModelSpec::new(
                    "reference",
                    "reference candle BertModel (MiniLM-L6 shape, random weights)",
                    ModelSource::ReferenceRandom(minilm_config()),
                ));
                v.push(ModelSpec::new(
                    "ane-bert",
                    "AneBert (MiniLM-L6 shape, random weights)",
                    ModelSource::RandomAneBert(minilm_config()),
                ));
            }
        }
        v.push(ModelSpec::new(
            "default-embedder",
            format!(
                "built-in ConvEmbedder ({})",
                anectx_models::default_model::id()
            ),
            ModelSource::Builtin,
        ));
        let _ = tok;
        v
    }

    /// The reference for a run whose models are `models`: MiniLM's weights
    /// when found, else MiniLM's shape with random weights.
    pub fn reference(minilm: Option<&Path>) -> ModelSpec {
        Self::defaults(minilm).remove(0)
    }

    /// Random weights, generated once per spec (deterministic) and copied
    /// into each instance.
    fn random_tensors(&self) -> Result<Arc<HashMap<String, Tensor>>> {
        if let Some(m) = self.random.get() {
            return Ok(m.clone());
        }
        let map = match &self.source {
            ModelSource::RandomAneBert(c) | ModelSource::ReferenceRandom(c) => {
                random_bert(c, self.seed)?
            }
            ModelSource::RandomConv(c) => ConvEmbedder::init_weights(c, self.seed)?,
            _ => return Err(BenchError::Other("not a random model".into())),
        };
        let map = Arc::new(map);
        let _ = self.random.set(map.clone());
        Ok(map)
    }

    /// Loads one independent instance computing in `dtype`.
    pub fn load(&self, dtype: WeightDtype) -> Result<LoadedModel> {
        let start = Instant::now();
        let deep_copy = |m: &HashMap<String, Tensor>| -> Result<HashMap<String, Tensor>> {
            m.iter().map(|(k, t)| Ok((k.clone(), t.copy()?))).collect()
        };
        let (net, meta) = match &self.source {
            ModelSource::Dir(dir) => {
                let (m, _tok) = load_embedder(dir, dtype)?;
                let meta = embedder_meta(&m, true);
                (Net::Embedder(m), meta)
            }
            ModelSource::RandomAneBert(cfg) => {
                let map = deep_copy(self.random_tensors()?.as_ref())?;
                let vb = VarBuilder::from_tensors(map, dtype.into(), &Device::Cpu);
                let m = Embedder::Bert(Box::new(AneBert::load(vb, cfg.clone(), Pooling::Mean)?));
                let meta = embedder_meta(&m, false);
                (Net::Embedder(m), meta)
            }
            ModelSource::RandomConv(cfg) => {
                let map = deep_copy(self.random_tensors()?.as_ref())?;
                let vb = VarBuilder::from_tensors(map, dtype.into(), &Device::Cpu);
                let m = Embedder::Conv(ConvEmbedder::load(vb, cfg.clone())?);
                let meta = embedder_meta(&m, false);
                (Net::Embedder(m), meta)
            }
            ModelSource::Builtin => {
                let m = anectx_models::default_model::load(dtype)?;
                let meta = embedder_meta(&m, true);
                (Net::Embedder(m), meta)
            }
            ModelSource::ReferenceDir(dir) => {
                let text = std::fs::read_to_string(dir.join(CONFIG_FILE))
                    .map_err(|e| BenchError::io(&dir.join(CONFIG_FILE), e))?;
                let cfg: BertConfig =
                    serde_json::from_str(&text).map_err(|e| BenchError::Config(e.to_string()))?;
                let path = dir.join(WEIGHTS_FILE);
                let map = candle_core::safetensors::load(&path, &Device::Cpu)?;
                reference_from(map, &cfg, dtype, true)?
            }
            ModelSource::ReferenceRandom(cfg) => {
                let map = deep_copy(self.random_tensors()?.as_ref())?;
                reference_from(map, cfg, dtype, false)?
            }
        };
        Ok(LoadedModel {
            net,
            meta,
            load_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The tokenizer for texts, if this model has one.
    pub fn tokenizer(&self, max_seq: usize) -> Option<TextTokenizer> {
        if matches!(self.source, ModelSource::Builtin) {
            return anectx_models::default_model::tokenizer().ok();
        }
        let dir = self.tokenizer_dir.as_ref()?;
        TextTokenizer::from_file(&dir.join(TOKENIZER_FILE), max_seq).ok()
    }

    pub fn source_label(&self) -> String {
        self.source.describe()
    }
}

fn reference_from(
    map: HashMap<String, Tensor>,
    cfg: &BertConfig,
    dtype: WeightDtype,
    pretrained: bool,
) -> Result<(Net, ModelMeta)> {
    let params: Vec<(String, usize)> = map
        .iter()
        .filter(|(k, _)| {
            let k = k.strip_prefix("bert.").unwrap_or(k);
            k.starts_with("embeddings.") || k.starts_with("encoder.")
        })
        .map(|(k, t)| (k.clone(), t.elem_count()))
        .collect();
    let ref_cfg = reference_config(cfg)?;
    let vb = VarBuilder::from_tensors(map, dtype.into(), &Device::Cpu);
    let model = BertModel::load(vb, &ref_cfg)?;
    let meta = ModelMeta::new(
        "reference_bert",
        Arch::from_bert(cfg),
        &params,
        cfg.vocab_size,
        cfg.max_position_embeddings,
        pretrained,
    );
    Ok((Net::Reference(Box::new(model)), meta))
}

/// candle-transformers' config for an anectx [`BertConfig`].
fn reference_config(cfg: &BertConfig) -> Result<RefConfig> {
    let v = json!({
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "model_type": "bert",
    });
    serde_json::from_value(v).map_err(|e| BenchError::Config(format!("reference config: {e}")))
}

/// Deterministic random BERT weights under Hugging Face names.
fn random_bert(c: &BertConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    c.validate().map_err(BenchError::Config)?;
    let mut rng = Rng::new(seed);
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut m = HashMap::new();
    let dev = Device::Cpu;
    let mut put = |name: String, shape: &[usize], rng: &mut Rng| -> Result<()> {
        let t = randn(shape, 0.02, rng)?;
        m.insert(name, t);
        Ok(())
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        &[c.vocab_size, h],
        &mut rng,
    )?;
    put(
        "embeddings.position_embeddings.weight".into(),
        &[c.max_position_embeddings, h],
        &mut rng,
    )?;
    put(
        "embeddings.token_type_embeddings.weight".into(),
        &[c.type_vocab_size, h],
        &mut rng,
    )?;
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for n in ["query", "key", "value"] {
            put(format!("{p}.attention.self.{n}.weight"), &[h, h], &mut rng)?;
        }
        put(
            format!("{p}.attention.output.dense.weight"),
            &[h, h],
            &mut rng,
        )?;
        put(format!("{p}.intermediate.dense.weight"), &[i, h], &mut rng)?;
        put(format!("{p}.output.dense.weight"), &[h, i], &mut rng)?;
    }
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &dev);
    let ones = |n: usize| Tensor::ones(n, DType::F32, &dev);
    let mut norm = |p: String| -> Result<()> {
        m.insert(format!("{p}.weight"), ones(h)?);
        m.insert(format!("{p}.bias"), zeros(h)?);
        Ok(())
    };
    norm("embeddings.LayerNorm".into())?;
    for l in 0..c.num_hidden_layers {
        norm(format!("encoder.layer.{l}.attention.output.LayerNorm"))?;
        norm(format!("encoder.layer.{l}.output.LayerNorm"))?;
    }
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for n in ["query", "key", "value"] {
            m.insert(format!("{p}.attention.self.{n}.bias"), zeros(h)?);
        }
        m.insert(format!("{p}.attention.output.dense.bias"), zeros(h)?);
        m.insert(format!("{p}.intermediate.dense.bias"), zeros(i)?);
        m.insert(format!("{p}.output.dense.bias"), zeros(h)?);
    }
    Ok(m)
}

fn embedder_meta(m: &Embedder, pretrained: bool) -> ModelMeta {
    let params: Vec<(String, usize)> = m
        .named_tensors()
        .iter()
        .map(|(k, t)| (k.clone(), t.elem_count()))
        .collect();
    let (kind, arch) = match m {
        Embedder::Bert(b) => ("ane_bert", Arch::from_bert(&b.config)),
        Embedder::Conv(c) => (
            "conv_embedder",
            Arch::Conv {
                embed: c.config.embed_dim,
                widths: c.config.widths.clone(),
                kernels: c.config.kernel_sizes.clone(),
                output: c.config.output_dim,
            },
        ),
    };
    ModelMeta::new(kind, arch, &params, m.vocab_size(), m.max_seq(), pretrained)
}

/// The compute structure used for analytic FLOP counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Arch {
    Bert {
        layers: usize,
        hidden: usize,
        intermediate: usize,
        heads: usize,
    },
    Conv {
        embed: usize,
        widths: Vec<usize>,
        kernels: Vec<usize>,
        output: usize,
    },
}

impl Arch {
    pub fn from_bert(c: &BertConfig) -> Self {
        Self::Bert {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
        }
    }

    /// FLOPs of one call on `batch` sequences of `seq` tokens: 2 per
    /// multiply-add of every matrix product and convolution (projections,
    /// attention scores and context, feed-forward, conv blocks, output
    /// projection). Norms, softmax, GELU, pooling and lookups are left out.
    pub fn flops(&self, batch: usize, seq: usize) -> f64 {
        let (b, s) = (batch as f64, seq as f64);
        match self {
            Self::Bert {
                layers,
                hidden,
                intermediate,
                ..
            } => {
                let (h, i) = (*hidden as f64, *intermediate as f64);
                // q, k, v, out: 4·h² MACs per token; FFN 2·h·i; attention
                // scores and context: 2·s·h per token.
                let per_layer = s * (4.0 * h * h + 2.0 * h * i) + 2.0 * s * s * h;
                2.0 * b * *layers as f64 * per_layer
            }
            Self::Conv {
                embed,
                widths,
                kernels,
                output,
            } => {
                let mut c = *embed as f64;
                let mut macs = 0.0;
                for (&w, &k) in widths.iter().zip(kernels) {
                    macs += s * c * k as f64 * w as f64;
                    c = w as f64;
                }
                macs += c * *output as f64;
                2.0 * b * macs
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Bert {
                layers,
                hidden,
                intermediate,
                heads,
            } => json!({"type": "bert", "layers": layers, "hidden": hidden,
                        "intermediate": intermediate, "heads": heads}),
            Self::Conv {
                embed,
                widths,
                kernels,
                output,
            } => json!({"type": "conv", "embed_dim": embed, "widths": widths,
                        "kernel_sizes": kernels, "output_dim": output}),
        }
    }
}

/// Facts about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    /// `reference_bert`, `ane_bert`, `conv_embedder`.
    pub kind: &'static str,
    pub arch: Arch,
    pub parameters: u64,
    /// f32 bytes of the weights the graph reads (lookup tables excluded).
    pub graph_weight_bytes: u64,
    pub embedding_table_bytes: u64,
    pub vocab: usize,
    pub max_seq: usize,
    pub pretrained: bool,
}

/// Lookup tables stay on the host (outside the ANE graph).
pub fn is_lookup_table(name: &str) -> bool {
    let n = name.strip_prefix("bert.").unwrap_or(name);
    n == "embeddings.weight" || (n.starts_with("embeddings.") && n.ends_with("_embeddings.weight"))
}

impl ModelMeta {
    fn new(
        kind: &'static str,
        arch: Arch,
        params: &[(String, usize)],
        vocab: usize,
        max_seq: usize,
        pretrained: bool,
    ) -> Self {
        let (mut graph, mut table) = (0u64, 0u64);
        for (name, n) in params {
            if is_lookup_table(name) {
                table += *n as u64;
            } else {
                graph += *n as u64;
            }
        }
        Self {
            kind,
            arch,
            parameters: graph + table,
            graph_weight_bytes: graph * 4,
            embedding_table_bytes: table * 4,
            vocab,
            max_seq,
            pretrained,
        }
    }
}

/// What runs a call.
pub enum Net {
    Reference(Box<BertModel>),
    Embedder(Embedder),
    CoreMl(Box<anectx_coreml_runtime::CoreMlBackend>),
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Net::Reference(_) => "Net::Reference",
            Net::Embedder(_) => "Net::Embedder",
            Net::CoreMl(_) => "Net::CoreMl",
        })
    }
}

/// A loaded instance.
#[derive(Debug)]
pub struct LoadedModel {
    pub net: Net,
    pub meta: ModelMeta,
    pub load_ms: f64,
}

/// Inputs of one call, prepared before timing.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub batch: TokenBatch,
    ids: Tensor,
    type_ids: Tensor,
    mask: Tensor,
}

impl Inputs {
    pub fn new(batch: TokenBatch, vocab: usize) -> Result<Self> {
        let (ids, type_ids, mask) = batch_tensors(&batch, vocab)?;
        Ok(Self {
            batch,
            ids,
            type_ids,
            mask,
        })
    }

    /// `batch` sequences of `seq` synthetic token ids (deterministic, in the
    /// vocabulary, no padding: every position is real).
    pub fn synthetic(batch: usize, seq: usize, vocab: usize, seed: u64) -> Result<Self> {
        Self::synthetic_lengths(&vec![seq; batch], seq, vocab, seed)
    }

    /// Synthetic ids with the given real lengths, padded to `seq`.
    pub fn synthetic_lengths(lens: &[usize], seq: usize, vocab: usize, seed: u64) -> Result<Self> {
        if vocab < 2 || seq == 0 || lens.is_empty() {
            return Err(BenchError::Config(format!(
                "cannot build inputs: vocab {vocab}, seq {seq}, batch {}",
                lens.len()
            )));
        }
        let mut rng = Rng::new(seed);
        let n = lens.len() * seq;
        let (mut ids, type_ids, mut mask) = (vec![0u32; n], vec![0u32; n], vec![0u32; n]);
        for (r, &len) in lens.iter().enumerate() {
            for j in 0..len.clamp(1, seq) {
                ids[r * seq + j] = 1 + rng.below(vocab - 1) as u32;
                mask[r * seq + j] = 1;
            }
        }
        let batch = TokenBatch::new(lens.len(), seq, ids, type_ids, mask)
            .map_err(|e| BenchError::Config(e.to_string()))?;
        Self::new(batch, vocab)
    }

    pub fn items(&self) -> usize {
        self.batch.batch
    }
}

fn l2_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&n)?)
}

impl Net {
    /// One call: L2-normalised sentence embeddings, row-major f32.
    pub fn run(&self, x: &Inputs) -> Result<Vec<f32>> {
        let out = match self {
            Net::Reference(m) => {
                let states = m.forward(&x.ids, &x.type_ids, Some(&x.mask))?;
                let states = states.to_dtype(DType::F32)?;
                let mf = x.mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let pooled = states.broadcast_mul(&mf)?.sum(1)?;
                let count = mf.sum(1)?.clamp(1f32, f32::MAX)?;
                l2_rows(&pooled.broadcast_div(&count)?)?
            }
            Net::Embedder(Embedder::Bert(m)) => m.forward(&x.ids, &x.type_ids, &x.mask)?,
            Net::Embedder(Embedder::Conv(m)) => m.forward(&x.ids, &x.mask)?,
            Net::CoreMl(b) => {
                use anectx_core::Backend;
                let e = b
                    .embed(&x.batch)
                    .map_err(|e| BenchError::Other(e.to_string()))?;
                return Ok(e.data);
            }
        };
        Ok(out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Backends the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Candle,
    CoreMl,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Candle => "candle",
            Self::CoreMl => "coreml",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "candle" | "cpu" => Some(Self::Candle),
            "coreml" | "core-ml" => Some(Self::CoreMl),
            _ => None,
        }
    }
}

/// One backend × compute units combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub backend: BackendKind,
    pub units: ComputeUnits,
}

impl Target {
    pub const CANDLE_CPU: Target = Target {
        backend: BackendKind::Candle,
        units: ComputeUnits::CpuOnly,
    };

    pub fn label(&self) -> String {
        format!("{}:{}", self.backend.name(), self.units.short_name())
    }
}

/// The message Core ML rows carry where Core ML cannot run.
pub const COREML_SKIP: &str = "skipped: Core ML needs macOS";

/// An exported package in the temporary folder, removed on drop. Its name is
/// unique per process, thread and call ([`anectx_coreml_runtime::unique_suffix`]),
/// so the concurrency runs' threads never write, compile or delete each
/// other's package.
#[derive(Debug)]
pub struct TempPackage {
    pub path: PathBuf,
    /// Bytes of the package's weight files (ANEMLL counts these).
    pub weight_bytes: u64,
    /// The exported model's description (from its candle load).
    pub meta: ModelMeta,
}

impl Drop for TempPackage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Exports `spec` (an embedder) to a temporary `.mlpackage` with ids input
/// and the given sequence lengths, as [`load_coreml`] loads it. At the
/// exporter's default spec 7, several lengths give one enumerated input
/// (`input_ids`; the mask is computed in the graph), as Core ML requires
/// before macOS 15.
pub fn export_temp_package(spec: &ModelSpec, seq_lengths: &[usize]) -> Result<TempPackage> {
    if spec.source.is_reference() {
        return Err(BenchError::Other(
            "skipped: the reference runs on candle only".into(),
        ));
    }
    let cpu = spec.load(WeightDtype::F32)?;
    let meta = cpu.meta;
    let exportable = match cpu.net {
        Net::Embedder(Embedder::Bert(m)) => anectx_coreml::export::Exportable::Bert(m),
        Net::Embedder(Embedder::Conv(m)) => anectx_coreml::export::Exportable::ConvEmbedder(m),
        _ => return Err(BenchError::Other("not exportable".into())),
    };
    let mut seqs = seq_lengths.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    let opts = anectx_coreml::export::ExportOptions {
        seq_lengths: seqs,
        ids_input: true,
        ..Default::default()
    };
    let exported = anectx_coreml::export::export_model(&exportable, &opts)
        .map_err(|e| BenchError::Other(format!("Core ML export: {e}")))?;
    let path = std::env::temp_dir().join(format!(
        "anectx-bench-{}-{}.mlpackage",
        spec.id,
        anectx_coreml_runtime::unique_suffix()
    ));
    let mut pkg = TempPackage {
        path,
        weight_bytes: 0,
        meta,
    };
    anectx_coreml::export::write_exported(&exported, &pkg.path, false)
        .map_err(|e| BenchError::Other(format!("writing {}: {e}", pkg.path.display())))?;
    pkg.weight_bytes = dir_bytes(&pkg.path.join("Data/com.apple.CoreML/weights"));
    Ok(pkg)
}

/// Loads `spec` for Core ML on `units`: exports the model to a temporary
/// `.mlpackage` ([`export_temp_package`]), compiles and loads it. Returns the
/// instance and the package's weight bytes (ANEMLL counts the weight files
/// of the package).
pub fn load_coreml(
    spec: &ModelSpec,
    units: ComputeUnits,
    seq_lengths: &[usize],
) -> Result<(LoadedModel, u64)> {
    if !cfg!(target_vendor = "apple") {
        return Err(BenchError::Other(COREML_SKIP.into()));
    }
    let start = Instant::now();
    let pkg = export_temp_package(spec, seq_lengths)?;
    let cfg = anectx_coreml_runtime::CoreMlConfig::new(&pkg.path, units);
    let backend = anectx_coreml_runtime::CoreMlBackend::load(cfg)
        .map_err(|e| BenchError::Other(format!("Core ML: {e}")))?;
    Ok((
        LoadedModel {
            net: Net::CoreMl(Box::new(backend)),
            meta: pkg.meta.clone(),
            load_ms: start.elapsed().as_secs_f64() * 1e3,
        },
        pkg.weight_bytes,
    ))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_flops_match_published_figures() {
        // Published forward FLOPs at sequence length 128, from papers that
        // counted them independently of this code:
        // - BERT-base (12 layers, hidden 768, FFN 3072): 22.5 B FLOPs, and
        // - TinyBERT-4 (4 layers, hidden 312, FFN 1200): 1.2 B FLOPs,
        // both in Table 1 of Jiao et al., "TinyBERT: Distilling BERT for
        // Natural Language Understanding" (Findings of EMNLP 2020,
        // arXiv:1909.10351); BERT-base's 22.5 B also in Table 2 of Sun et
        // al., "MobileBERT" (ACL 2020, arXiv:2004.02984). Those figures also
        // count the embedding and softmax work this count leaves out, hence
        // the tolerances.
        let base = Arch::Bert {
            layers: 12,
            hidden: 768,
            intermediate: 3072,
            heads: 12,
        };
        let f = base.flops(1, 128);
        assert!((f / 22.5e9 - 1.0).abs() < 0.02, "BERT-base: {f:e}");
        let tiny = Arch::Bert {
            layers: 4,
            hidden: 312,
            intermediate: 1200,
            heads: 12,
        };
        // 1.2 B is rounded to two figures.
        let f = tiny.flops(1, 128);
        assert!((1.15e9..1.25e9).contains(&f), "TinyBERT-4: {f:e}");
        // MiniLM-L6: all-MiniLM-L6-v2's model card gives 22.7 M parameters
        // (with the 384×384 pooler); less the embedding tables (30522 +
        // 512 + 2 rows of 384, and their LayerNorm) and the pooler, that is
        // N ≈ 10.65 M in the encoder. Kaplan et al., "Scaling Laws for
        // Neural Language Models" (arXiv:2001.08361, section 2.1) estimate
        // forward FLOPs per token as 2N + 2·n_layer·n_ctx·d, with attention
        // over n_ctx keys counted once.
        let a = Arch::from_bert(&minilm_config());
        let n_encoder = 22.7e6 - (30522.0 + 512.0 + 2.0 + 2.0) * 384.0 - (384.0 * 384.0 + 384.0);
        let kaplan = 128.0 * (2.0 * n_encoder + 2.0 * 6.0 * 128.0 * 384.0);
        let f = a.flops(1, 128);
        // This count also has the attention-weighted sum of values (a
        // second n_ctx·d product per token and layer, +2.7 % here) and
        // leaves out biases: within 5 % of the estimate.
        assert!(
            (f / kaplan - 1.0).abs() < 0.05,
            "MiniLM-L6: {f:e} vs {kaplan:e}"
        );
        // Linear in the batch.
        assert_eq!(a.flops(4, 128), 4.0 * f);
    }

    #[test]
    fn conv_flops_and_lookup_tables() {
        let a = Arch::Conv {
            embed: 4,
            widths: vec![8, 8],
            kernels: vec![3, 5],
            output: 2,
        };
        // 10 positions: 10·4·3·8 + 10·8·5·8 MACs, projection 8·2.
        assert_eq!(a.flops(1, 10), 2.0 * (960.0 + 3200.0 + 16.0));
        assert!(is_lookup_table("embeddings.word_embeddings.weight"));
        assert!(is_lookup_table(
            "bert.embeddings.position_embeddings.weight"
        ));
        assert!(is_lookup_table("embeddings.weight"));
        assert!(!is_lookup_table("embeddings.LayerNorm.weight"));
        assert!(!is_lookup_table(
            "encoder.layer.0.attention.self.query.weight"
        ));
    }

    #[test]
    fn concurrent_exports_use_their_own_temporary_packages() {
        // The concurrency runs load one instance per thread; on a Mac each
        // exports, compiles and deletes its package. Two at once must not
        // share a path, and each package has one enumerated input (spec 7).
        let cfg = BertConfig {
            vocab_size: 50,
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 32,
            ..minilm_config()
        };
        let spec = ModelSpec::new("t", "t", ModelSource::RandomAneBert(cfg));
        let barrier = std::sync::Barrier::new(2);
        let pkgs: Vec<TempPackage> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        export_temp_package(&spec, &[32, 16]).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_ne!(pkgs[0].path, pkgs[1].path);
        for p in &pkgs {
            let m = anectx_coreml::read_package(&p.path).unwrap();
            let enumerated = m
                .description
                .inputs
                .iter()
                .filter(|f| {
                    matches!(&f.ty, anectx_coreml::program::FeatureType::MultiArray(a)
                        if a.flexibility.is_some())
                })
                .count();
            assert_eq!(enumerated, 1, "{}", p.path.display());
            let r = anectx_coreml::check::check_model(&m, anectx_coreml::check::Chip::M4);
            assert!(r.passed(), "{:#?}", r.findings);
            assert!(p.weight_bytes > 0);
        }
        let paths: Vec<PathBuf> = pkgs.iter().map(|p| p.path.clone()).collect();
        drop(pkgs);
        assert!(paths.iter().all(|p| !p.exists()), "removed on drop");
    }

    #[test]
    fn random_models_share_weights_across_dtypes() {
        let cfg = BertConfig {
            vocab_size: 50,
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 32,
            ..minilm_config()
        };
        let r = ModelSpec::new("r", "r", ModelSource::ReferenceRandom(cfg.clone()));
        let a = ModelSpec::new("a", "a", ModelSource::RandomAneBert(cfg));
        let x = Inputs::synthetic(2, 8, 50, 1).unwrap();
        let er = r.load(WeightDtype::F32).unwrap().net.run(&x).unwrap();
        let ea = a.load(WeightDtype::F32).unwrap().net.run(&x).unwrap();
        assert_eq!(er.len(), 2 * 16);
        // Same seed, same weights: AneBert matches the reference BertModel.
        let cos = anectx_models::metrics::cosine(&er[..16], &ea[..16]);
        assert!(cos > 0.999, "cosine {cos}");
        let meta = a.load(WeightDtype::F32).unwrap().meta;
        assert_eq!(meta.embedding_table_bytes, 4 * (50 + 512 + 2) * 16);
        assert!(meta.graph_weight_bytes > 0);
    }
}
