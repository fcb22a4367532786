//! Owner-only permissions for everything a store (or a model registry)
//! writes: directories 0700, files 0600 on Unix. The documents, queries and
//! answers a store holds are as private as the documents themselves.
//!
//! Files this crate creates are created 0600; files other writers create
//! (tantivy's segments) are tightened after each commit, and everything is
//! tightened when a store is opened, which covers stores made by older
//! versions. On other systems these are no-ops.

use std::path::Path;

use crate::{Result, StoreError};

/// Mode of directories a store creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files a store creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` owner-only when it is missing (its missing parents get the
/// usual mode). An existing directory is left as it is: it may be the
/// user's own (`--store .`).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    match b.create(dir) {
        Ok(()) => Ok(()),
        // Created meanwhile by another process.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

/// Options that create a file owner-only (mode 0600) when it is missing.
pub fn private_file_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Removes group and other permissions from `path`, and from everything
/// under it when it is a directory. Symbolic links are left alone (not
/// followed). Entries that vanish meanwhile are ignored.
pub fn tighten(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7700)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        if meta.is_dir() {
            let entries = match std::fs::read_dir(path) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StoreError::io(path, e)),
            };
            for e in entries {
                let e = e.map_err(|e| StoreError::io(path, e))?;
                tighten(&e.path())?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tightens_a_tree_and_creates_private_entries() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_private_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        create_private_dir(&d).unwrap();
        let f = d.join("f");
        private_file_options()
            .create(true)
            .write(true)
            .open(&f)
            .unwrap();
        assert_eq!(mode(&f), 0o600);
        let g = d.join("g");
        std::fs::write(&g, "x").unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten(t.path()).unwrap();
        assert_eq!(mode(&g), 0o700);
        assert_eq!(mode(t.path()) & 0o077, 0);
    }
}
