//! The model registry, shared: each version's files, and which version is
//! current. A trainer publishes a version's directory and sets it current;
//! each replica copies the version into its local registry and promotes it
//! there, where its server hot-swaps it with the usual checks.

use std::path::{Component, Path, PathBuf};

use crate::{PgError, PgStore, Result};

/// A version directory holds at most this much (a relevance model, its
/// memory and its Core ML package are a few MB).
const MAX_VERSION_BYTES: u64 = 512 << 20;

impl PgStore {
    /// Whether the shared registry holds `version`.
    pub fn has_version(&self, version: &str) -> Result<bool> {
        Ok(self
            .client()
            .query_opt(
                "SELECT 1 FROM anectx_registry_files WHERE version = $1 LIMIT 1",
                &[&version],
            )?
            .is_some())
    }

    /// Stores every file under `dir` as `version` (one transaction); a
    /// version already stored is left as it is. Returns whether it wrote.
    pub fn publish_version(&self, version: &str, dir: &Path) -> Result<bool> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        if total > MAX_VERSION_BYTES {
            return Err(PgError::Invalid(format!(
                "version {version} holds {total} bytes, more than the shared registry takes"
            )));
        }
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM anectx_registry_files WHERE version = $1 LIMIT 1",
                &[&version],
            )?
            .is_some();
        if exists {
            return Ok(false);
        }
        for (rel, bytes) in &files {
            tx.execute(
                "INSERT INTO anectx_registry_files(version, path, content) VALUES ($1, $2, $3)",
                &[&version, rel, bytes],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Makes `version` (or the built-in model, `None`) current for the
    /// fleet; the version must have been published. Returns the new number.
    pub fn set_current_version(&self, version: Option<&str>) -> Result<i64> {
        if let Some(v) = version {
            if !self.has_version(v)? {
                return Err(PgError::Invalid(format!(
                    "version {v} is not in the shared registry; publish it first"
                )));
            }
        }
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let seq: i64 = tx
            .query_one(
                "UPDATE anectx_registry_current SET version = $1, seq = seq + 1 WHERE id = 1 \
                 RETURNING seq",
                &[&version],
            )?
            .get(0);
        tx.execute("SELECT pg_notify('anectx_changes', 'registry')", &[])?;
        tx.commit()?;
        Ok(seq)
    }

    /// The fleet's current version (`None`: the built-in model) and its
    /// change number.
    pub fn current_version(&self) -> Result<(Option<String>, i64)> {
        let r = self.client().query_one(
            "SELECT version, seq FROM anectx_registry_current WHERE id = 1",
            &[],
        )?;
        Ok((r.get(0), r.get(1)))
    }

    /// Writes `version`'s files into `dest` (which must not exist): into a
    /// temporary sibling first, renamed into place, so a crash leaves no
    /// half version. Paths that would leave `dest` are refused.
    pub fn fetch_version(&self, version: &str, dest: &Path) -> Result<()> {
        let rows = self.client().query(
            "SELECT path, content FROM anectx_registry_files WHERE version = $1",
            &[&version],
        )?;
        if rows.is_empty() {
            return Err(PgError::Invalid(format!(
                "version {version} is not in the shared registry"
            )));
        }
        let parent = dest
            .parent()
            .ok_or_else(|| PgError::Invalid(format!("{} has no parent", dest.display())))?;
        let tmp = parent.join(format!(
            ".fetch-{}-{}",
            std::process::id(),
            dest.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("version")
        ));
        let io = |p: &Path, e: std::io::Error| PgError::Invalid(format!("{}: {e}", p.display()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        for r in &rows {
            let rel: String = r.get(0);
            let bytes: Vec<u8> = r.get(1);
            let rel_path = safe_relative(&rel).ok_or_else(|| {
                PgError::Invalid(format!("version {version}: refused file path {rel:?}"))
            })?;
            let path = tmp.join(rel_path);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
            }
            std::fs::write(&path, &bytes).map_err(|e| io(&path, e))?;
        }
        std::fs::rename(&tmp, dest).map_err(|e| io(dest, e))?;
        Ok(())
    }
}

/// `rel` as a path inside a directory: relative, no `..`, no root.
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(p.to_path_buf())
}

/// Every regular file under `dir`, as (path relative to `root` with `/`
/// separators, bytes). Symbolic links are refused.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| PgError::Invalid(format!("{}: {e}", p.display()));
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let e = e.map_err(|e| io(dir, e))?;
        let path = e.path();
        let ty = e.file_type().map_err(|e| io(&path, e))?;
        if ty.is_dir() {
            collect(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(|_| {
                    PgError::Invalid(format!("{} outside {}", path.display(), root.display()))
                })?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            out.push((rel, bytes));
        } else {
            return Err(PgError::Invalid(format!(
                "{}: not a regular file or folder",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_written() {
        assert!(safe_relative("model.json").is_some());
        assert!(safe_relative("relevance.mlpackage/Manifest.json").is_some());
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "./a"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
