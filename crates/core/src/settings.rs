//! Layered settings: command line > environment > config file > defaults.
//!
//! The config file is TOML-like `key = value` lines (a flat subset, so this
//! crate stays dependency-free). It is read from `$ANECTX_CONFIG` when set,
//! otherwise from `$XDG_CONFIG_HOME/anectx/config.toml` or
//! `~/.config/anectx/config.toml` when that file exists.

use crate::CoreError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cli,
    Env,
    File,
    Default,
}

/// A flat map of settings read from a config file.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    values: BTreeMap<String, String>,
}

impl ConfigFile {
    /// Finds and parses the config file. A missing default file is fine; a
    /// file named by `$ANECTX_CONFIG` must exist.
    pub fn discover() -> Result<Self, CoreError> {
        if let Some(p) = std::env::var_os("ANECTX_CONFIG") {
            return Self::load(Path::new(&p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        match base.map(|b| b.join("anectx").join("config.toml")) {
            Some(p) if p.is_file() => Self::load(&p),
            _ => Ok(Self::default()),
        }
    }

    pub fn load(path: &Path) -> Result<Self, CoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|message| CoreError::Settings {
            path: path.display().to_string(),
            message,
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses `key = value` lines; `#` starts a comment; values may be quoted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(a, _)| a).trim();
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!(
                    "line {}: expected `key = value`, got {raw:?}",
                    n + 1
                ));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("line {}: empty key", n + 1));
            }
            let v = v.trim().trim_matches('"').to_string();
            values.insert(k.to_string(), v);
        }
        Ok(Self { path: None, values })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Resolves one setting: `cli` wins, then the environment variable `env`,
/// then the config file's `key`, then `default`.
pub fn resolve(
    cli: Option<String>,
    env: &str,
    file: &ConfigFile,
    key: &str,
    default: Option<&str>,
) -> Option<(String, Source)> {
    if let Some(v) = cli {
        return Some((v, Source::Cli));
    }
    if let Ok(v) = std::env::var(env) {
        if !v.is_empty() {
            return Some((v, Source::Env));
        }
    }
    if let Some(v) = file.get(key) {
        return Some((v.to_string(), Source::File));
    }
    default.map(|d| (d.to_string(), Source::Default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_layers() {
        let file = ConfigFile::parse("# comment\nmodel = \"/m\"\n dtype=f16 # trailing\n").unwrap();
        assert_eq!(file.get("model"), Some("/m"));
        assert_eq!(file.get("dtype"), Some("f16"));
        let env = "ANECTX_TEST_SETTING_UNSET_XYZ";
        assert_eq!(
            resolve(Some("cli".into()), env, &file, "model", Some("d")),
            Some(("cli".into(), Source::Cli))
        );
        assert_eq!(
            resolve(None, env, &file, "model", Some("d")),
            Some(("/m".into(), Source::File))
        );
        assert_eq!(
            resolve(None, env, &file, "nope", Some("d")),
            Some(("d".into(), Source::Default))
        );
        assert_eq!(resolve(None, env, &file, "nope", None), None);
    }

    #[test]
    fn rejects_garbage_lines() {
        let err = ConfigFile::parse("model /m").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
