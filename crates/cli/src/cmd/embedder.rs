//! Which embedder a command uses, resolved once: `--model` > `ANECTX_MODEL`
//! > config `model` > the model a store was indexed with > the built-in one.
//!
//! `default` (or `builtin`) names the built-in model in every command, `none`
//! (or `bm25`) asks for BM25-only retrieval where a command allows it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anectx_core::{Backend, BackendChoice, BackendRequest, ComputeUnits};
use anectx_engine::{ModelEmbedder, ModelIdentity, TextEmbedder};
use anectx_models::{CandleBackend, Embedder, TextTokenizer, WeightDtype};
use anectx_store::EmbedderInfo;
use anyhow::{Context, Result};

/// A sentence embedder to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// The model compiled into the binary (`anectx_models::default_model`).
    Builtin,
    /// A model directory.
    Dir(PathBuf),
}

/// What a command resolved: the model (`None` = BM25 only), its dtype and
/// the runtime that runs it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: Option<ModelChoice>,
    pub dtype: WeightDtype,
    /// Where the choice came from, for messages.
    pub source: &'static str,
    /// `--backend` > `ANECTX_BACKEND` > config `backend` > `auto`.
    pub backend: BackendRequest,
    /// Core ML compute units (`--units`, default CPU + Neural Engine).
    pub units: ComputeUnits,
}

/// Parses a model spec: `none`/`bm25`, `default`/`builtin`, or a directory
/// (or a Hugging Face id in the local cache).
pub fn parse_spec(spec: &str) -> Result<Option<ModelChoice>> {
    Ok(match spec.trim() {
        "none" | "bm25" => None,
        "default" | "builtin" | "built-in" => Some(ModelChoice::Builtin),
        s => Some(ModelChoice::Dir(anectx_models::io::resolve_model_dir(s)?)),
    })
}

/// The model spec given on the command line, in the environment or in the
/// config file, with its source.
fn given(cli: Option<String>) -> Result<Option<(String, &'static str)>> {
    Ok(crate::settings::Layers::get()?.model(cli).map(|s| {
        let origin = s.origin();
        (s.value, origin)
    }))
}

/// The dtype given on the command line, in the environment or the config file.
fn given_dtype(cli: Option<String>) -> Result<Option<WeightDtype>> {
    Ok(crate::settings::Layers::get()?.dtype(cli)?.map(|s| s.value))
}

/// The embedder recorded by the store in `dir`, if there is a store.
pub fn stored_embedder(dir: &Path) -> Result<Option<EmbedderInfo>> {
    if !anectx_engine::Store::exists(dir) {
        return Ok(None);
    }
    let db = anectx_store::Db::open(&anectx_engine::Store::db_path(dir))
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    Ok(db.embedder()?)
}

/// Resolves the embedder of a command that works on the store in
/// `store_dir` (`None`: no store involved). A model given explicitly wins;
/// otherwise the store's own embedder is used when it is the built-in
/// model (at the dtype it was indexed with), and a store indexed with a
/// model directory asks for `--model`.
pub fn resolve_for_store(
    cli_model: Option<String>,
    cli_dtype: Option<String>,
    store_dir: Option<&Path>,
) -> Result<Resolved> {
    let dtype = given_dtype(cli_dtype)?;
    let backend = crate::settings::Layers::get()?.backend(None)?.value;
    let units = ComputeUnits::CpuAndNeuralEngine;
    if let Some((spec, source)) = given(cli_model)? {
        return Ok(Resolved {
            model: parse_spec(&spec)?,
            dtype: dtype.unwrap_or(WeightDtype::F32),
            source,
            backend,
            units,
        });
    }
    let stored = match store_dir {
        Some(d) => stored_embedder(d)?,
        None => None,
    };
    if let (Some(s), Some(dir)) = (stored, store_dir) {
        for dt in [WeightDtype::F32, WeightDtype::F16] {
            if ModelIdentity::builtin(dt).matches(&s.fingerprint) {
                return Ok(Resolved {
                    model: Some(ModelChoice::Builtin),
                    dtype: dtype.unwrap_or(dt),
                    source: "the store",
                    backend,
                    units,
                });
            }
        }
        let store = super::quickstart::shell_word(dir);
        let is_cache = anectx_store::Db::open(&anectx_engine::Store::db_path(dir))?
            .meta(anectx_store_pg::STORE_ID_KEY)?
            .is_some();
        if is_cache {
            // A shared store's cache: the shared store is re-embedded, once.
            anyhow::bail!(
                "this machine's cache of the shared store ({}) holds vectors from {}; pass \
                 the fleet's embedder with --model (`default` for the built-in one) to take \
                 the shared store's vectors, after it was re-embedded with it once for the \
                 fleet (`anectx reembed --store postgres://…`), or --model none for BM25 only",
                dir.display(),
                s.description
            );
        }
        if s.description
            .starts_with(&format!("built-in {}", anectx_models::default_model::NAME))
        {
            // The built-in model of an earlier version: it no longer exists.
            anyhow::bail!(
                "the store in {} was indexed with an earlier version's built-in embedder \
                 [{}], and this version's differs; re-embed the store with it: \
                 `anectx reembed --store {store}` (or use --model none for BM25 only)",
                dir.display(),
                s.fingerprint
            );
        }
        anyhow::bail!(
            "the store in {} was indexed with {}; pass that model with --model DIR \
             (or set ANECTX_MODEL), re-embed the store with the built-in embedder \
             (`anectx reembed --store {store}`), or use --model none for BM25 only",
            dir.display(),
            s.description
        );
    }
    Ok(Resolved {
        model: Some(ModelChoice::Builtin),
        dtype: dtype.unwrap_or(WeightDtype::F32),
        source: "the default",
        backend,
        units,
    })
}

/// Resolves a model for commands that need one (embed, export):
/// --model > ANECTX_MODEL > config `model` > the built-in model.
pub fn resolve_model(cli: Option<String>) -> Result<ModelChoice> {
    let spec = given(cli)?.map_or_else(|| "default".to_string(), |(s, _)| s);
    parse_spec(&spec)?
        .context("this command needs an embedder: `none` is only for BM25-only retrieval")
}

impl ModelChoice {
    /// A short name: `anectx-default-embedder` or the directory's name.
    pub fn name(&self) -> String {
        match self {
            Self::Builtin => anectx_models::default_model::NAME.to_string(),
            Self::Dir(d) => d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| d.display().to_string()),
        }
    }

    /// Where it comes from, for messages.
    pub fn display(&self) -> String {
        match self {
            Self::Builtin => "the built-in embedder".into(),
            Self::Dir(d) => d.display().to_string(),
        }
    }

    /// Loads the model and tokenizer with the identity stores know it by.
    pub fn load(
        &self,
        dtype: WeightDtype,
    ) -> Result<(Embedder, TextTokenizer, EmbedderInfo, Vec<String>)> {
        let (model, tok, identity, description) = match self {
            Self::Builtin => {
                let (m, t) = anectx_models::default_model::load_with_tokenizer(dtype)
                    .context("loading the built-in embedder")?;
                let d = format!(
                    "built-in {} ({dtype:?})",
                    anectx_models::default_model::NAME
                );
                (m, t, ModelIdentity::builtin(dtype), d)
            }
            Self::Dir(dir) => {
                let (m, t) = anectx_models::load_embedder(dir, dtype)
                    .with_context(|| format!("loading the embedder from {}", dir.display()))?;
                let id = ModelIdentity::of_dir(dir, dtype)
                    .with_context(|| format!("fingerprinting {}", dir.display()))?;
                let d = format!("{:?} from {} ({dtype:?})", m.kind(), dir.display());
                (m, t, id, d)
            }
        };
        let info = EmbedderInfo {
            fingerprint: identity.fingerprint,
            description,
            dim: model.dim(),
        };
        Ok((model, tok, info, identity.legacy))
    }

    /// A directory holding the model's files: the directory itself, or the
    /// built-in model written into a temporary directory (kept alive by the
    /// returned guard).
    pub fn as_dir(&self) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
        match self {
            Self::Dir(d) => Ok((d.clone(), None)),
            Self::Builtin => {
                let tmp = tempfile::Builder::new()
                    .prefix("anectx-default-embedder-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let dir = tmp.path().join(anectx_models::default_model::NAME);
                anectx_models::default_model::write_dir(&dir)
                    .context("writing the built-in embedder")?;
                Ok((dir, Some(tmp)))
            }
        }
    }
}

impl Resolved {
    /// The runtime given on the command line (`None`: the environment, the
    /// config file or `auto`) and the Core ML compute units.
    pub fn with_backend(
        mut self,
        cli: Option<String>,
        units: Option<ComputeUnits>,
    ) -> Result<Self> {
        self.backend = crate::settings::Layers::get()?.backend(cli)?.value;
        if let Some(u) = units {
            self.units = u;
        }
        Ok(self)
    }

    /// The engine embedder (`None` for BM25 only) on the resolved backend.
    pub fn embedder(&self) -> Result<Option<Arc<dyn TextEmbedder>>> {
        let Some(m) = &self.model else {
            return Ok(None);
        };
        let p = m.prepare(self.dtype, self.backend, self.units)?;
        Ok(Some(Arc::new(
            ModelEmbedder::new(p.backend, p.tokenizer, p.info).with_legacy(p.legacy),
        )))
    }
}

/// An embedder ready to run: the backend `--backend` chose (and why), the
/// tokenizer that fits it, and the identity stores know the model by.
pub struct Prepared {
    pub backend: Box<dyn Backend>,
    pub tokenizer: TextTokenizer,
    pub info: EmbedderInfo,
    pub legacy: Vec<String>,
    /// The model's kind, e.g. `Conv` or `Bert`.
    pub kind: String,
    pub choice: BackendChoice,
}

impl ModelChoice {
    /// Loads the model on candle and, unless asked for candle, tries Core ML
    /// (`anectx_coreml::auto`): exported once into the cache, used only when
    /// it matches candle on the probe set. `auto` falls back to candle with
    /// one line on standard error saying why; `coreml` is an error instead.
    pub fn prepare(
        &self,
        dtype: WeightDtype,
        request: BackendRequest,
        units: ComputeUnits,
    ) -> Result<Prepared> {
        let (model, tokenizer, info, legacy) = self.load(dtype)?;
        let kind = format!("{:?}", model.kind());
        let reference = CandleBackend::new(Some(model), None);
        use anectx_coreml::auto::{self, Outcome};
        // `auto::choose` answers candle at once when asked for candle or off
        // Apple platforms; only there does it export, load and probe.
        let outcome = auto::choose(&auto::Request {
            requested: request,
            model: match self {
                ModelChoice::Builtin => auto::ModelSource::Builtin,
                ModelChoice::Dir(d) => auto::ModelSource::Dir(d),
            },
            model_identity: &info.fingerprint,
            reference: &reference,
            tokenizer: &tokenizer,
            units,
            cache_root: None,
        });
        match outcome {
            Outcome::CoreMl {
                backend,
                tokenizer,
                choice,
            } => {
                tracing::info!(backend = %choice.used, "{}", choice.reason);
                Ok(Prepared {
                    backend,
                    tokenizer: *tokenizer,
                    info,
                    legacy,
                    kind,
                    choice,
                })
            }
            Outcome::Candle { choice } => {
                match request {
                    BackendRequest::CoreMl => anyhow::bail!("--backend coreml: {}", choice.reason),
                    BackendRequest::Auto if cfg!(target_vendor = "apple") => {
                        eprintln!(
                            "anectx: running on candle (CPU), not Core ML: {}",
                            choice.reason
                        )
                    }
                    _ => {}
                }
                Ok(Prepared {
                    backend: Box::new(reference),
                    tokenizer,
                    info,
                    legacy,
                    kind,
                    choice,
                })
            }
        }
    }
}
