//! The settings every command shares, resolved in one place:
//! command line > environment (`ANECTX_*`) > config file > default.
//!
//! [`Key`] names each setting's flag, environment variable and config key
//! once. The environment and the config file are read once per process
//! ([`Layers::get`]); commands ask for typed values ([`Layers::store`],
//! [`Layers::model`], [`Layers::dtype`]) with the command-line value they
//! parsed, and learn where each value came from ([`Setting::origin`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anectx_core::settings::{ConfigFile, Source};
use anectx_core::BackendRequest;
use anectx_models::WeightDtype;
use anectx_store::VectorSearch;
use anyhow::{Context, Result};

/// A setting shared by several commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// The store directory (default `./.anectx`).
    Store,
    /// The embedder: a model directory, `default`, or `none`.
    Model,
    /// The compute precision: `f32` or `f16`.
    Dtype,
    /// The embedder's runtime: `auto`, `candle` or `coreml`.
    Backend,
    /// How vectors are searched: `auto`, `exact`, `int8` or `hnsw`.
    VectorSearch,
}

impl Key {
    pub const ALL: [Key; 5] = [
        Key::Store,
        Key::Model,
        Key::Dtype,
        Key::Backend,
        Key::VectorSearch,
    ];

    pub fn flag(self) -> &'static str {
        match self {
            Key::Store => "--store",
            Key::Model => "--model",
            Key::Dtype => "--dtype",
            Key::Backend => "--backend",
            Key::VectorSearch => "--vector-search",
        }
    }

    pub fn env(self) -> &'static str {
        match self {
            Key::Store => "ANECTX_STORE",
            Key::Model => "ANECTX_MODEL",
            Key::Dtype => "ANECTX_DTYPE",
            Key::Backend => "ANECTX_BACKEND",
            Key::VectorSearch => "ANECTX_VECTOR_SEARCH",
        }
    }

    /// The key in the config file.
    pub fn file_key(self) -> &'static str {
        match self {
            Key::Store => "store",
            Key::Model => "model",
            Key::Dtype => "dtype",
            Key::Backend => "backend",
            Key::VectorSearch => "vector_search",
        }
    }
}

/// A resolved value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
    pub key: Key,
}

impl<T> Setting<T> {
    /// Where the value came from, for messages: `--model`, `ANECTX_MODEL`,
    /// `the config file` or `the default`.
    pub fn origin(&self) -> &'static str {
        match self.source {
            Source::Cli => self.key.flag(),
            Source::Env => self.key.env(),
            Source::File => "the config file",
            Source::Default => "the default",
        }
    }

    /// Whether the user named this value (anywhere but the default).
    pub fn explicit(&self) -> bool {
        self.source != Source::Default
    }
}

/// The environment and config-file layers.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    env: BTreeMap<Key, String>,
    file: ConfigFile,
}

static LAYERS: OnceLock<Layers> = OnceLock::new();

impl Layers {
    /// The process's layers, read on first use (the config file from
    /// `$ANECTX_CONFIG` or `~/.config/anectx/config.toml`).
    pub fn get() -> Result<&'static Layers> {
        if let Some(l) = LAYERS.get() {
            return Ok(l);
        }
        let file = ConfigFile::discover().context("reading the config file")?;
        let layers = Self::from_parts(|k| std::env::var(k).ok(), file);
        Ok(LAYERS.get_or_init(|| layers))
    }

    /// Layers from an environment lookup and a parsed config file (tests).
    pub fn from_parts(env: impl Fn(&str) -> Option<String>, file: ConfigFile) -> Self {
        let env = Key::ALL
            .into_iter()
            .filter_map(|k| env(k.env()).filter(|v| !v.is_empty()).map(|v| (k, v)))
            .collect();
        Self { env, file }
    }

    fn raw(&self, key: Key, cli: Option<String>) -> Option<Setting<String>> {
        let (value, source) = if let Some(v) = cli {
            (v, Source::Cli)
        } else if let Some(v) = self.env.get(&key) {
            (v.clone(), Source::Env)
        } else {
            (self.file.get(key.file_key())?.to_string(), Source::File)
        };
        Some(Setting { value, source, key })
    }

    /// `--store` > `ANECTX_STORE` > config `store` > `./.anectx`.
    pub fn store(&self, cli: Option<&Path>) -> Setting<PathBuf> {
        let cli = cli.map(|p| p.to_string_lossy().into_owned());
        match self.raw(Key::Store, cli) {
            Some(s) => Setting {
                value: PathBuf::from(s.value),
                source: s.source,
                key: s.key,
            },
            None => Setting {
                value: PathBuf::from(".anectx"),
                source: Source::Default,
                key: Key::Store,
            },
        }
    }

    /// `--model` > `ANECTX_MODEL` > config `model`; `None` when none names
    /// one (the caller picks: the store's own embedder, the built-in one).
    pub fn model(&self, cli: Option<String>) -> Option<Setting<String>> {
        self.raw(Key::Model, cli)
    }

    /// `--dtype` > `ANECTX_DTYPE` > config `dtype`; a value that is not a
    /// dtype is an error naming where it came from.
    pub fn dtype(&self, cli: Option<String>) -> Result<Option<Setting<WeightDtype>>> {
        let Some(s) = self.raw(Key::Dtype, cli) else {
            return Ok(None);
        };
        let value: WeightDtype = s
            .value
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{} (from {})", e, s.origin()))?;
        Ok(Some(Setting {
            value,
            source: s.source,
            key: s.key,
        }))
    }
}

impl Layers {
    /// A setting with a fixed set of values: `default` when no layer names
    /// one, otherwise `parse`d, or an error naming where the bad value came
    /// from and listing `choices`.
    fn choice<T>(
        &self,
        key: Key,
        cli: Option<String>,
        default: T,
        what: &str,
        choices: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Setting<T>> {
        let Some(s) = self.raw(key, cli) else {
            return Ok(Setting {
                value: default,
                source: Source::Default,
                key,
            });
        };
        let value = parse(&s.value).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown {what} {:?} (from {}): use {choices}",
                s.value,
                s.origin()
            )
        })?;
        Ok(Setting {
            value,
            source: s.source,
            key: s.key,
        })
    }

    /// `--backend` > `ANECTX_BACKEND` > config `backend` > `auto`; a value
    /// that is not a backend is an error naming where it came from.
    pub fn backend(&self, cli: Option<String>) -> Result<Setting<BackendRequest>> {
        self.choice(
            Key::Backend,
            cli,
            BackendRequest::Auto,
            "backend",
            "auto, candle or coreml",
            BackendRequest::parse,
        )
    }

    /// `--vector-search` > `ANECTX_VECTOR_SEARCH` > config `vector_search` >
    /// `auto`; a value that is not a search is an error naming where it
    /// came from.
    pub fn vector_search(&self, cli: Option<String>) -> Result<Setting<VectorSearch>> {
        self.choice(
            Key::VectorSearch,
            cli,
            VectorSearch::Auto,
            "vector search",
            "auto, exact, bits, int8 or hnsw",
            VectorSearch::parse,
        )
    }
}

/// Applies the resolved vector search to an opened engine's store (the
/// store starts on `auto`; choosing `hnsw` loads or builds the graph).
pub fn apply_vector_search(engine: &anectx_engine::Engine, cli: Option<String>) -> Result<()> {
    let s = Layers::get()?.vector_search(cli)?;
    if s.explicit() {
        engine.store().vectors_mut().set_search(s.value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(env: &[(&str, &str)], file: &str) -> Layers {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Layers::from_parts(|k| env.get(k).cloned(), ConfigFile::parse(file).unwrap())
    }

    #[test]
    fn command_line_beats_environment_beats_file_beats_default() {
        let all = layers(
            &[
                ("ANECTX_STORE", "/env/store"),
                ("ANECTX_MODEL", "/env/model"),
                ("ANECTX_DTYPE", "f16"),
            ],
            "store = /file/store\nmodel = /file/model\ndtype = f32\n",
        );
        let s = all.store(Some(Path::new("/cli/store")));
        assert_eq!(
            (s.value.as_path(), s.origin()),
            (Path::new("/cli/store"), "--store")
        );
        let s = all.store(None);
        assert_eq!(
            (s.value.as_path(), s.origin()),
            (Path::new("/env/store"), "ANECTX_STORE")
        );
        let m = all.model(Some("/cli/model".into())).unwrap();
        assert_eq!((m.value.as_str(), m.origin()), ("/cli/model", "--model"));
        let m = all.model(None).unwrap();
        assert_eq!(
            (m.value.as_str(), m.origin()),
            ("/env/model", "ANECTX_MODEL")
        );
        let d = all.dtype(None).unwrap().unwrap();
        assert_eq!((d.value, d.origin()), (WeightDtype::F16, "ANECTX_DTYPE"));
        let d = all.dtype(Some("f32".into())).unwrap().unwrap();
        assert_eq!((d.value, d.origin()), (WeightDtype::F32, "--dtype"));

        let file_only = layers(
            &[],
            "store = /file/store\nmodel = /file/model\ndtype = f16\n",
        );
        let s = file_only.store(None);
        assert_eq!(
            (s.value.as_path(), s.origin()),
            (Path::new("/file/store"), "the config file")
        );
        assert!(s.explicit());
        let m = file_only.model(None).unwrap();
        assert_eq!((m.value.as_str(), m.source), ("/file/model", Source::File));
        assert_eq!(
            file_only.dtype(None).unwrap().unwrap().value,
            WeightDtype::F16
        );

        let none = layers(&[], "");
        let s = none.store(None);
        assert_eq!(
            (s.value.as_path(), s.source),
            (Path::new(".anectx"), Source::Default)
        );
        assert!(!s.explicit());
        assert!(none.model(None).is_none());
        assert!(none.dtype(None).unwrap().is_none());
    }

    #[test]
    fn an_empty_environment_value_does_not_count() {
        let l = layers(&[("ANECTX_MODEL", "")], "model = /file/model\n");
        assert_eq!(l.model(None).unwrap().source, Source::File);
    }

    #[test]
    fn a_bad_dtype_names_where_it_came_from() {
        let l = layers(&[("ANECTX_DTYPE", "f8")], "");
        let e = l.dtype(None).unwrap_err().to_string();
        assert!(e.contains("ANECTX_DTYPE"), "{e}");
        let l = layers(&[], "dtype = f7\n");
        let e = l.dtype(None).unwrap_err().to_string();
        assert!(e.contains("the config file"), "{e}");
    }

    #[test]
    fn the_vector_search_resolves_in_the_same_order_and_defaults_to_auto() {
        let none = layers(&[], "");
        let v = none.vector_search(None).unwrap();
        assert_eq!((v.value, v.origin()), (VectorSearch::Auto, "the default"));
        let file = layers(&[], "vector_search = int8\n");
        assert_eq!(file.vector_search(None).unwrap().value, VectorSearch::Int8);
        let env = layers(
            &[("ANECTX_VECTOR_SEARCH", "HNSW")],
            "vector_search = int8\n",
        );
        let v = env.vector_search(None).unwrap();
        assert_eq!(
            (v.value, v.origin()),
            (VectorSearch::Hnsw, "ANECTX_VECTOR_SEARCH")
        );
        let v = env.vector_search(Some("exact".into())).unwrap();
        assert_eq!(
            (v.value, v.origin()),
            (VectorSearch::Exact, "--vector-search")
        );
        let e = layers(&[], "vector_search = fast\n")
            .vector_search(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the config file") && e.contains("hnsw"), "{e}");
    }

    #[test]
    fn the_backend_resolves_in_the_same_order_and_defaults_to_auto() {
        let none = layers(&[], "");
        let b = none.backend(None).unwrap();
        assert_eq!((b.value, b.origin()), (BackendRequest::Auto, "the default"));
        let file = layers(&[], "backend = candle\n");
        assert_eq!(file.backend(None).unwrap().value, BackendRequest::Candle);
        let env = layers(&[("ANECTX_BACKEND", "coreml")], "backend = candle\n");
        let b = env.backend(None).unwrap();
        assert_eq!(
            (b.value, b.origin()),
            (BackendRequest::CoreMl, "ANECTX_BACKEND")
        );
        let b = env.backend(Some("auto".into())).unwrap();
        assert_eq!((b.value, b.origin()), (BackendRequest::Auto, "--backend"));
        let bad = layers(&[("ANECTX_BACKEND", "metal")], "");
        let e = bad.backend(None).unwrap_err().to_string();
        assert!(e.contains("ANECTX_BACKEND") && e.contains("metal"), "{e}");
    }
}
