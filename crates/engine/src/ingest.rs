//! Indexing: walk → read → chunk → SQLite, then tantivy, then vectors.
//!
//! Each stage works off SQLite's queues (`lexed = 0`, `embedded = 0`,
//! `pending_deletes`), so an interrupted run is finished by the next one.

use anectx_store::failpoint;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anectx_store::{Db, NewChunk, Store};
use rayon::prelude::*;
use serde::Serialize;

use crate::chunk::{chunk_text, ChunkConfig};
use crate::embed::TextEmbedder;
use crate::extract::{decode, html_to_text, Decoded, DocKind, Encoding};
use crate::formats::{self, Format, Part};
use crate::{EngineError, Result};

/// Indexing settings.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub chunk: ChunkConfig,
    /// Files larger than this are skipped with a note.
    pub max_file_bytes: u64,
    /// Texts per embedding call.
    pub embed_batch: usize,
    /// Most text bytes per embedding call (a batch closes at `embed_batch`
    /// texts or at this many bytes, whichever comes first).
    pub embed_batch_bytes: usize,
    /// Most file bytes read (and held in memory) per read batch; a batch
    /// also closes at 256 files.
    pub read_batch_bytes: u64,
    /// Follow symbolic links whose target (canonicalized) stays inside one
    /// of the indexed roots. Off: links are skipped with a note.
    pub follow_links: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            chunk: ChunkConfig::default(),
            max_file_bytes: 32 << 20,
            embed_batch: 32,
            embed_batch_bytes: 1 << 20,
            read_batch_bytes: 64 << 20,
            follow_links: false,
        }
    }
}

/// Progress reporting (the CLI draws bars; the server logs).
pub trait Progress: Sync {
    /// A new stage starts, with a known total when there is one.
    fn stage(&self, _name: &str, _total: Option<u64>) {}
    fn inc(&self, _n: u64) {}
    /// Something the user should know about (a skipped file, …).
    fn note(&self, _msg: &str) {}
    fn finish(&self) {}
}

/// Progress that only logs notes through `tracing`.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {
    fn note(&self, msg: &str) {
        tracing::info!("{msg}");
    }
}

/// What an indexing run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    pub files_seen: u64,
    pub files_indexed: u64,
    pub files_unchanged: u64,
    pub files_removed: u64,
    pub files_skipped: u64,
    pub chunks_added: u64,
    pub chunks_lexed: u64,
    pub chunks_embedded: u64,
    pub chunks_total: u64,
    pub documents_total: u64,
    pub embedder: Option<String>,
    pub notes: Vec<String>,
    pub seconds: f64,
    pub embed_seconds: f64,
    /// Files read into new or changed documents, by kind (`pdf`, `docx`,
    /// `markdown`, …).
    pub files_read_by_kind: std::collections::BTreeMap<String, u64>,
    /// Every skipped file with why (also in `notes`).
    pub skipped: Vec<SkippedFile>,
    /// Pages (PDF pages, PPTX slides) indexed from new or changed documents.
    pub pages_indexed: u64,
    /// Pages without text in indexed documents (scans without a text layer,
    /// blank pages); see `notes` for which.
    pub pages_skipped: u64,
    /// Chunks added per second of the whole run (0 when none were added).
    pub chunks_per_second: f64,
}

/// A file that was not indexed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// A document ready to be written.
struct Prepared {
    key: String,
    hash: String,
    bytes: u64,
    /// The kind recorded in the store (`DocKind::as_str`, `Format::as_str`).
    kind: &'static str,
    chunks: Vec<NewChunk>,
    /// Pages with text, and pages without, for paged formats.
    pages_indexed: u64,
    pages_skipped: u64,
    /// What the user should know about this file (pages skipped, …).
    notes: Vec<String>,
}

enum FileOutcome {
    Unchanged,
    Changed(Prepared),
    /// Not indexable (binary, too large, empty); any old version is removed.
    Skipped(String),
    /// Could not be read; any old version is kept.
    Unreadable(String),
}

/// Checks that `embedder` may write into `store` and records it.
pub(crate) fn check_embedder(store: &Store, embedder: Option<&dyn TextEmbedder>) -> Result<()> {
    let stored = store.db.embedder()?;
    match (stored, embedder) {
        (Some(s), Some(e)) if !e.accepts(&s) => Err(EngineError::EmbedderMismatch {
            store: store.dir().to_path_buf(),
            stored: format!("{} [{}]", s.description, s.fingerprint),
            stored_dim: s.dim,
            requested: format!("{} [{}]", e.info().description, e.info().fingerprint),
            requested_dim: e.info().dim,
        }),
        (Some(s), None) => Err(EngineError::EmbedderRequired {
            store: store.dir().to_path_buf(),
            stored: format!("{} [{}]", s.description, s.fingerprint),
        }),
        (None, Some(e)) => Ok(store.set_embedder(e.info())?),
        (Some(s), Some(e)) if s.fingerprint != e.info().fingerprint => {
            Ok(store.set_embedder(e.info())?)
        }
        _ => Ok(()),
    }
}

/// A `.gz` file that starts with the gzip magic bytes.
fn is_gzip(path: &Path, bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Decompresses gzip data (all members), refusing more than `max` bytes of
/// output so that a small file cannot expand without bound.
fn gunzip(bytes: &[u8], max: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt gzip data: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!(
            "decompresses to more than the {} MB file limit (--max-file-mb)",
            max >> 20
        ));
    }
    Ok(out)
}

/// Reads at most `max + 1` bytes of `path`: `Ok(Err(size))` when the file
/// holds more than `max` bytes (at open time, or after growing while read).
fn read_bounded(path: &Path, max: u64) -> std::io::Result<std::result::Result<Vec<u8>, u64>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Ok(Err(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}

/// Reads one file, catching a panic anywhere in reading, decoding or
/// chunking: the file is skipped with a note (any old version is kept) and
/// the run goes on.
fn read_file_caught(path: &Path, max: u64, chunk: ChunkConfig, known: Option<&str>) -> FileOutcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_file(path, max, chunk, known)
    }))
    .unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        FileOutcome::Unreadable(format!("the reader panicked ({msg}); please report it"))
    })
}

/// A file name that makes the reader panic, to test that a panic in one
/// file is caught (unit tests only).
#[cfg(test)]
const PANIC_FILE: &str = "anectx-test-panic.txt";

/// Panics on [`PANIC_FILE`] (unit tests only).
#[cfg(test)]
fn test_failpoint(path: &Path) {
    if path.file_name().is_some_and(|n| n == PANIC_FILE) {
        panic!("deliberate test panic");
    }
}

#[cfg(not(test))]
fn test_failpoint(_path: &Path) {}

/// While set, reading a file named [`EIO_FILE`] fails as an I/O error would
/// (unit tests only: no file is unreadable to root, who runs CI).
#[cfg(test)]
static FAIL_READS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
#[cfg(test)]
const EIO_FILE: &str = "anectx-test-eio.md";

#[cfg(test)]
fn read_bounded_checked(path: &Path, max: u64) -> std::io::Result<Result<Vec<u8>, u64>> {
    if FAIL_READS.load(std::sync::atomic::Ordering::SeqCst)
        && path.file_name().is_some_and(|n| n == EIO_FILE)
    {
        return Err(std::io::Error::other("deliberate test I/O error"));
    }
    read_bounded(path, max)
}

#[cfg(not(test))]
fn read_bounded_checked(path: &Path, max: u64) -> std::io::Result<Result<Vec<u8>, u64>> {
    read_bounded(path, max)
}

fn read_file(path: &Path, max: u64, chunk: ChunkConfig, known: Option<&str>) -> FileOutcome {
    test_failpoint(path);
    let bytes = match read_bounded_checked(path, max) {
        Ok(Ok(b)) => b,
        Ok(Err(len)) => {
            return FileOutcome::Skipped(format!(
                "{} MB exceeds the {} MB file limit (--max-file-mb)",
                len >> 20,
                max >> 20
            ))
        }
        Err(e) => return FileOutcome::Unreadable(format!("cannot read: {e}")),
    };
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if known == Some(hash.as_str()) {
        return FileOutcome::Unchanged;
    }
    if let Some(format) = Format::from_path(path) {
        return read_document(path, format, &bytes, hash, chunk);
    }
    let gz = is_gzip(path, &bytes);
    let (kind, content) = if gz {
        match gunzip(&bytes, max) {
            // `notes.md.gz` is Markdown, `changelog.gz` text.
            Ok(b) => (DocKind::from_path(&path.with_extension("")), Cow::Owned(b)),
            Err(why) => return FileOutcome::Skipped(why),
        }
    } else {
        (DocKind::from_path(path), Cow::Borrowed(&bytes[..]))
    };
    let (text, lossy, encoding) = match decode(&content) {
        Decoded::Binary if gz => return FileOutcome::Skipped("binary file (inside gzip)".into()),
        Decoded::Binary => return FileOutcome::Skipped("binary file".into()),
        Decoded::Text {
            text,
            lossy,
            encoding,
        } => (text, lossy, encoding),
    };
    if lossy {
        tracing::warn!(
            path = %path.display(),
            encoding = encoding.as_str(),
            "undecodable bytes replaced with U+FFFD"
        );
    } else if encoding != Encoding::Utf8 {
        tracing::info!(path = %path.display(), encoding = encoding.as_str(), "not UTF-8; decoded");
    }
    let text = if kind == DocKind::Html {
        html_to_text(&text)
    } else {
        text
    };
    let chunks = chunk_text(&text, kind, chunk);
    if chunks.is_empty() {
        return FileOutcome::Skipped("empty (no text)".into());
    }
    FileOutcome::Changed(Prepared {
        key: path.to_string_lossy().into_owned(),
        hash,
        bytes: bytes.len() as u64,
        kind: kind.as_str(),
        chunks,
        pages_indexed: 0,
        pages_skipped: 0,
        notes: Vec::new(),
    })
}

/// Chunks the parts of a document one by one (a chunk never spans two
/// pages) and gives each chunk its part's page. Byte and line positions
/// count in the parts' text joined by blank lines.
pub(crate) fn chunk_parts(parts: &[Part], kind: DocKind, cfg: ChunkConfig) -> Vec<NewChunk> {
    let mut out = Vec::new();
    let (mut byte_base, mut line_base) = (0usize, 0usize);
    for part in parts {
        for mut c in chunk_text(&part.text, kind, cfg) {
            c.byte_start += byte_base;
            c.byte_end += byte_base;
            c.line_start += line_base;
            c.line_end += line_base;
            c.page = part.page;
            out.push(c);
        }
        byte_base += part.text.len() + 2;
        line_base += part.text.matches('\n').count() + 2;
    }
    out
}

/// Notes naming the pages of `doc` that gave no text: scans without a text
/// layer, and blank pages (or slides).
fn page_notes(path: &Path, format: Format, doc: &formats::Extracted) -> Vec<String> {
    let mut notes = Vec::new();
    let scanned = doc.scanned_pages();
    if !scanned.is_empty() {
        notes.push(format!(
            "{}: {} of {} pages have no text layer (scanned images; OCR is not done) and \
             were skipped: p. {}",
            path.display(),
            scanned.len(),
            doc.pages,
            formats::page_list(&scanned)
        ));
    }
    let blank: Vec<u32> = doc
        .empty_pages
        .iter()
        .filter(|(_, why)| *why == formats::EmptyPage::Blank)
        .map(|(p, _)| *p)
        .collect();
    if !blank.is_empty() {
        notes.push(format!(
            "{}: {} of {} {} have no text and were skipped: {}",
            path.display(),
            blank.len(),
            doc.pages,
            if format == Format::Pptx {
                "slides"
            } else {
                "pages"
            },
            formats::page_list(&blank)
        ));
    }
    notes
}

/// Reads a PDF, Office or EPUB file. A file that cannot be read (corrupt,
/// encrypted, no text) is skipped with why; any old version is removed.
fn read_document(
    path: &Path,
    format: Format,
    bytes: &[u8],
    hash: String,
    chunk: ChunkConfig,
) -> FileOutcome {
    let doc = match formats::extract(format, bytes) {
        Ok(d) => d,
        Err(e) => return FileOutcome::Skipped(e.to_string()),
    };
    let kind = if format.is_markdown() {
        DocKind::Markdown
    } else {
        DocKind::Text
    };
    let chunks = chunk_parts(&doc.parts, kind, chunk);
    if chunks.is_empty() {
        return FileOutcome::Skipped(format!("empty {} (no text)", format.as_str()));
    }
    let notes = page_notes(path, format, &doc);
    FileOutcome::Changed(Prepared {
        key: path.to_string_lossy().into_owned(),
        hash,
        bytes: bytes.len() as u64,
        kind: format.as_str(),
        chunks,
        pages_indexed: doc.parts.iter().filter(|p| p.page.is_some()).count() as u64,
        pages_skipped: doc.empty_pages.len() as u64,
        notes,
    })
}

/// Adds `roots` to the store's list of indexed roots (what context paths
/// are shown relative to).
pub(crate) fn record_roots(store: &Store, roots: &[PathBuf]) -> Result<()> {
    let mut all: Vec<String> = match store.db.meta(crate::source::ROOTS_KEY)? {
        Some(s) => serde_json::from_str(&s).unwrap_or_default(),
        None => Vec::new(),
    };
    let before = all.len();
    for r in roots {
        let r = r.to_string_lossy().into_owned();
        if !all.contains(&r) {
            all.push(r);
        }
    }
    if all.len() != before {
        let s = serde_json::to_string(&all)
            .map_err(|e| EngineError::Invalid(format!("indexed roots: {e}")))?;
        store.db.set_meta(crate::source::ROOTS_KEY, &s)?;
    }
    Ok(())
}

/// Why the walk must not take `e` (a symbolic link), or `None` to take it.
/// Without `follow`, no link is taken; with it, a link is taken only when
/// its canonicalized target lies inside one of `roots` (canonical too).
fn link_verdict(e: &ignore::DirEntry, follow: bool, roots: &[PathBuf]) -> Option<String> {
    if !e.path_is_symlink() {
        return None;
    }
    if !follow {
        return Some(
            "symbolic link not followed (--follow-links follows links inside the indexed folders)"
                .into(),
        );
    }
    match std::fs::canonicalize(e.path()) {
        Ok(t) if roots.iter().any(|r| t.starts_with(r)) => None,
        Ok(t) => Some(format!(
            "symbolic link to {}, outside the indexed folders",
            t.display()
        )),
        Err(err) => Some(format!("broken symbolic link: {err}")),
    }
}

/// Splits `files` into batches of at most `max_files` files and about
/// `max_bytes` bytes (a batch holds at least one file), so that reading a
/// batch in parallel holds a bounded amount of file data in memory.
fn byte_batches(files: &[PathBuf], max_bytes: u64, max_files: usize) -> Vec<&[PathBuf]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, p) in files.iter().enumerate() {
        let len = std::fs::metadata(p).map_or(0, |m| m.len());
        if i > start && (bytes.saturating_add(len) > max_bytes || i - start >= max_files) {
            out.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(len);
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// Splits a window of texts into embedding batches of at most `max_texts`
/// texts and about `max_bytes` bytes (a batch holds at least one text).
fn embed_batches<T>(
    items: &[T],
    len: impl Fn(&T) -> usize,
    max_texts: usize,
    max_bytes: usize,
) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, it) in items.iter().enumerate() {
        let n = len(it);
        if i > start && (bytes.saturating_add(n) > max_bytes || i - start >= max_texts) {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(n);
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// A file's modification time in Unix seconds, when the system reports one.
fn modified_secs(path: &Path) -> Option<i64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_secs()).ok()?,
    })
}

fn write_prepared(store: &Store, docs: &[Prepared]) -> Result<u64> {
    Ok(store.db.transaction(|tx| {
        let mut n = 0;
        for d in docs {
            n +=
                Db::replace_document(tx, &d.key, &d.hash, d.bytes, d.kind, &d.chunks)?.len() as u64;
        }
        Ok(n)
    })?)
}

/// Walks `root` as `index` does: `.gitignore` (also outside git
/// repositories), no hidden entries, links per `opts.follow_links`, nothing
/// inside the store. Files found go to `files`; entries that cannot be
/// taken are counted as skipped in `report`, with why.
fn walk_root(
    root: &Path,
    canon_roots: &[PathBuf],
    store_dir: &Path,
    opts: &IndexOptions,
    report: &mut IndexReport,
    progress: &dyn Progress,
    files: &mut Vec<PathBuf>,
) {
    let skip = |report: &mut IndexReport, path: &Path, why: String| {
        report.files_skipped += 1;
        let msg = format!("skipped {}: {why}", path.display());
        progress.note(&msg);
        report.notes.push(msg);
        report.skipped.push(SkippedFile {
            path: path.to_string_lossy().into_owned(),
            reason: why,
        });
    };
    // Links the walk did not take, with why (the filter runs inside the walk).
    let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(PathBuf, String)>::new()));
    let walk = ignore::WalkBuilder::new(root)
        .follow_links(opts.follow_links)
        .require_git(false)
        .filter_entry({
            let links = links.clone();
            let roots = canon_roots.to_vec();
            let follow = opts.follow_links;
            move |e| match link_verdict(e, follow, &roots) {
                None => true,
                Some(why) => {
                    links
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((e.path().to_path_buf(), why));
                    false
                }
            }
        })
        .build();
    for entry in walk {
        match entry {
            Ok(e) => {
                if e.file_type().is_some_and(|t| t.is_file()) {
                    let mut p = e.into_path();
                    if opts.follow_links {
                        // One key per file, however many links lead to it.
                        p = std::fs::canonicalize(&p).unwrap_or(p);
                    }
                    if !p.starts_with(store_dir) {
                        files.push(p);
                    }
                } else if e.file_type().is_none() {
                    // stdin or a broken link
                    skip(report, e.path(), "not a file".into());
                }
            }
            Err(err) => {
                report.files_skipped += 1;
                let msg = format!("skipped: {err}");
                progress.note(&msg);
                report.notes.push(msg);
                report.skipped.push(SkippedFile {
                    path: String::new(),
                    reason: err.to_string(),
                });
            }
        }
    }
    let links = std::mem::take(&mut *links.lock().unwrap_or_else(|p| p.into_inner()));
    for (path, why) in links {
        skip(report, &path, why);
    }
}

/// Reads, hashes and chunks `files` in bounded batches and writes changed
/// documents to SQLite. Keys of files whose document stays (read, unchanged
/// or unreadable) go to `keep`.
fn read_files(
    store: &Store,
    files: &[PathBuf],
    known: &HashMap<String, String>,
    opts: &IndexOptions,
    progress: &dyn Progress,
    report: &mut IndexReport,
    keep: &mut HashSet<String>,
) -> Result<()> {
    let note = |report: &mut IndexReport, msg: String| {
        progress.note(&msg);
        report.notes.push(msg);
    };
    progress.stage("reading", Some(files.len() as u64));
    for batch in byte_batches(files, opts.read_batch_bytes, 256) {
        let outcomes: Vec<(&PathBuf, FileOutcome, Option<i64>)> = batch
            .par_iter()
            .map(|p| {
                let key = p.to_string_lossy();
                // Read before the content, so a write during the read
                // leaves an older time and the next run looks again.
                let modified = modified_secs(p);
                let o = read_file_caught(
                    p,
                    opts.max_file_bytes,
                    opts.chunk,
                    known.get(key.as_ref()).map(String::as_str),
                );
                (p, o, modified)
            })
            .collect();
        let mut prepared = Vec::new();
        // Modification times of the documents that stay, for date filters
        // (also filled in for documents indexed before times were stored).
        let mut times: Vec<(String, i64)> = Vec::new();
        for (p, o, modified) in outcomes {
            let key = p.to_string_lossy().into_owned();
            if let (Some(m), FileOutcome::Unchanged | FileOutcome::Changed(_)) = (modified, &o) {
                times.push((key.clone(), m));
            }
            match o {
                FileOutcome::Unchanged => {
                    report.files_unchanged += 1;
                    keep.insert(key);
                }
                FileOutcome::Changed(mut d) => {
                    keep.insert(key);
                    *report
                        .files_read_by_kind
                        .entry(d.kind.to_string())
                        .or_default() += 1;
                    report.pages_indexed += d.pages_indexed;
                    report.pages_skipped += d.pages_skipped;
                    for n in std::mem::take(&mut d.notes) {
                        note(report, n);
                    }
                    prepared.push(d);
                }
                FileOutcome::Skipped(why) => {
                    report.files_skipped += 1;
                    note(report, format!("skipped {}: {why}", p.display()));
                    report.skipped.push(SkippedFile {
                        path: key,
                        reason: why,
                    });
                }
                FileOutcome::Unreadable(why) => {
                    report.files_skipped += 1;
                    keep.insert(key.clone());
                    note(report, format!("skipped {}: {why}", p.display()));
                    report.skipped.push(SkippedFile {
                        path: key,
                        reason: why,
                    });
                }
            }
        }
        report.files_indexed += prepared.len() as u64;
        report.chunks_added += write_prepared(store, &prepared)?;
        if !times.is_empty() {
            store.db.transaction(|tx| {
                for (key, m) in &times {
                    Db::set_modified(tx, key, *m)?;
                }
                Ok(())
            })?;
        }
        progress.inc(batch.len() as u64);
    }
    Ok(())
}

fn delete_documents(store: &Store, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    store.db.transaction(|tx| {
        for k in keys {
            Db::delete_document(tx, k)?;
        }
        Ok(())
    })?;
    Ok(())
}

fn known_documents(store: &Store) -> Result<HashMap<String, String>> {
    Ok(store
        .db
        .documents()?
        .into_iter()
        .map(|d| (d.path, d.content_hash))
        .collect())
}

fn canonical_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    roots
        .iter()
        .map(|root| {
            std::fs::canonicalize(root)
                .map_err(|e| EngineError::path(root, format!("cannot index: {e}")))
        })
        .collect()
}

/// Indexes files and folders. Folders are walked respecting `.gitignore`
/// (also outside git repositories) and skipping hidden entries; documents
/// under a walked root that no longer exist are removed.
pub fn index_paths(
    store: &Store,
    embedder: Option<&dyn TextEmbedder>,
    roots: &[PathBuf],
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport> {
    let _guard = store.write_guard()?;
    let t0 = Instant::now();
    check_embedder(store, embedder)?;
    let mut report = IndexReport::default();
    let store_dir = std::fs::canonicalize(store.dir()).unwrap_or_else(|_| store.dir().into());

    // 1. Walk.
    progress.stage("scanning", None);
    let mut files: Vec<PathBuf> = Vec::new();
    let canon_roots = canonical_roots(roots)?;
    for root in &canon_roots {
        walk_root(
            root,
            &canon_roots,
            &store_dir,
            opts,
            &mut report,
            progress,
            &mut files,
        );
    }
    record_roots(store, &canon_roots)?;
    // Documents under a walked root that were not seen (deleted, now ignored,
    // now binary) are removed.
    sync_files(
        store,
        embedder,
        files,
        opts,
        progress,
        report,
        t0,
        |k, _| canon_roots.iter().any(|r| Path::new(k).starts_with(r)),
    )
}

/// The part of an indexing run after the file list is known: reads, hashes
/// and chunks `files` (writing changed documents), removes the known
/// documents not kept for which `gone(key, files)` holds, embeds what is
/// pending and completes the report.
#[allow(clippy::too_many_arguments)]
fn sync_files(
    store: &Store,
    embedder: Option<&dyn TextEmbedder>,
    mut files: Vec<PathBuf>,
    opts: &IndexOptions,
    progress: &dyn Progress,
    mut report: IndexReport,
    t0: Instant,
    gone: impl Fn(&str, &[PathBuf]) -> bool,
) -> Result<IndexReport> {
    files.sort();
    files.dedup();
    // Entries the walk could not enter (loops, unreadable directories) were
    // counted as skipped; count them as seen too, so that
    // seen = indexed + unchanged + skipped.
    report.files_seen = files.len() as u64 + report.files_skipped;
    let known = known_documents(store)?;
    let mut keep: HashSet<String> = HashSet::new();
    read_files(
        store,
        &files,
        &known,
        opts,
        progress,
        &mut report,
        &mut keep,
    )?;
    let gone: Vec<String> = known
        .keys()
        .filter(|k| !keep.contains(*k) && gone(k, &files))
        .cloned()
        .collect();
    delete_documents(store, &gone)?;
    report.files_removed = gone.len() as u64;
    failpoint("after-sqlite");
    finish_pending(store, embedder, opts, progress, &mut report)?;
    report.seconds = t0.elapsed().as_secs_f64();
    report.chunks_per_second = chunks_per_second(report.chunks_added, report.seconds);
    progress.finish();
    Ok(report)
}

/// Whether `path` (under `root`) is one the walk of `root` would not take:
/// a hidden entry on the way, or one matched by a `.gitignore` or `.ignore`
/// file in `root` or a folder between (the rules `index` walks by; global
/// git excludes are not read here).
pub fn is_ignored(root: &Path, path: &Path, is_dir: bool) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return true;
    };
    if rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    {
        return true;
    }
    // Ignore files in root and every folder above `path` inside it.
    let mut dir = root.to_path_buf();
    let mut dirs = vec![dir.clone()];
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            dir.push(c);
            dirs.push(dir.clone());
        }
    }
    for d in dirs {
        for name in [".gitignore", ".ignore"] {
            let f = d.join(name);
            if !f.is_file() {
                continue;
            }
            let (gi, _) = ignore::gitignore::Gitignore::new(&f);
            if gi.matched_path_or_any_parents(path, is_dir).is_ignore() {
                return true;
            }
        }
    }
    false
}

/// Brings the store up to date with changed paths under already indexed
/// `roots` (what a file watcher reports), without walking whole roots: a
/// changed file is read (by content hash, as `index` does), a folder is
/// walked (documents under it that are gone are removed), and a path that
/// no longer exists removes its document, or every document under it when
/// it was a folder. Paths outside the roots, ignored or hidden are left
/// alone.
pub fn index_changes(
    store: &Store,
    embedder: Option<&dyn TextEmbedder>,
    roots: &[PathBuf],
    changed: &[PathBuf],
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport> {
    let _guard = store.write_guard()?;
    let t0 = Instant::now();
    check_embedder(store, embedder)?;
    let mut report = IndexReport::default();
    let store_dir = std::fs::canonicalize(store.dir()).unwrap_or_else(|_| store.dir().into());
    let canon_roots = canonical_roots(roots)?;
    let mut changed: Vec<PathBuf> = changed.to_vec();
    changed.sort();
    changed.dedup();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut walked: Vec<PathBuf> = Vec::new();
    let mut vanished: Vec<PathBuf> = Vec::new();
    for p in &changed {
        let Some(root) = canon_roots.iter().find(|r| p.starts_with(r)) else {
            continue;
        };
        if p.starts_with(&store_dir) {
            continue;
        }
        match std::fs::symlink_metadata(p) {
            Err(_) => vanished.push(p.clone()),
            Ok(m) if m.is_dir() => {
                if !is_ignored(root, p, true) || p == root {
                    walked.push(p.clone());
                }
            }
            Ok(m) if m.is_file() => {
                if is_ignored(root, p, false) {
                    // Now ignored (e.g. renamed to a hidden name): as gone.
                    vanished.push(p.clone());
                } else {
                    files.push(p.clone());
                }
            }
            // A link: the walk of its folder applies the link rules.
            Ok(_) => match p.parent() {
                Some(parent) if parent.starts_with(root) => walked.push(parent.to_path_buf()),
                _ => {}
            },
        }
    }
    // A folder walked covers everything under it.
    walked.sort();
    walked.dedup();
    let mut tops: Vec<PathBuf> = Vec::new();
    for w in walked {
        if !tops.iter().any(|t| w.starts_with(t)) {
            tops.push(w);
        }
    }
    files.retain(|f| !tops.iter().any(|t| f.starts_with(t)));
    for top in &tops {
        walk_root(
            top,
            &canon_roots,
            &store_dir,
            opts,
            &mut report,
            progress,
            &mut files,
        );
    }
    let under = |k: &str, p: &Path| Path::new(k).starts_with(p);
    sync_files(
        store,
        embedder,
        files,
        opts,
        progress,
        report,
        t0,
        |k, files| {
            tops.iter().any(|t| under(k, t))
                || vanished.iter().any(|v| under(k, v))
                || files.iter().any(|f| Path::new(k) == f)
        },
    )
}

fn chunks_per_second(chunks: u64, seconds: f64) -> f64 {
    if chunks == 0 || seconds <= 0.0 {
        0.0
    } else {
        chunks as f64 / seconds
    }
}

/// Indexes in-memory documents keyed by `key` (evaluation, tests, API use).
/// Documents are replaced when their text changes; nothing is removed.
pub fn index_texts(
    store: &Store,
    embedder: Option<&dyn TextEmbedder>,
    docs: &[(String, String)],
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport> {
    let _guard = store.write_guard()?;
    let t0 = Instant::now();
    check_embedder(store, embedder)?;
    let mut report = IndexReport::default();
    let known: HashMap<String, String> = store
        .db
        .documents()?
        .into_iter()
        .map(|d| (d.path, d.content_hash))
        .collect();
    progress.stage("chunking", Some(docs.len() as u64));
    for batch in docs.chunks(512) {
        let prepared: Vec<Prepared> = batch
            .par_iter()
            .filter_map(|(key, text)| {
                let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
                if known.get(key) == Some(&hash) {
                    return None;
                }
                let chunks = chunk_text(text, DocKind::Text, opts.chunk);
                Some(Prepared {
                    key: key.clone(),
                    hash,
                    bytes: text.len() as u64,
                    kind: DocKind::Text.as_str(),
                    chunks,
                    pages_indexed: 0,
                    pages_skipped: 0,
                    notes: Vec::new(),
                })
            })
            .collect();
        report.files_seen += batch.len() as u64;
        report.files_indexed += prepared.len() as u64;
        report.chunks_added += write_prepared(store, &prepared)?;
        progress.inc(batch.len() as u64);
    }
    report.files_unchanged = report.files_seen - report.files_indexed;
    finish_pending(store, embedder, opts, progress, &mut report)?;
    report.seconds = t0.elapsed().as_secs_f64();
    progress.finish();
    Ok(report)
}

/// Brings tantivy and the vector store in line with SQLite.
pub(crate) fn finish_pending(
    store: &Store,
    embedder: Option<&dyn TextEmbedder>,
    opts: &IndexOptions,
    progress: &dyn Progress,
    report: &mut IndexReport,
) -> Result<()> {
    // 3. Lexical: deletes, then unlexed chunks, one commit.
    let deletes = store.db.pending_deletes(true)?;
    let pending = store.db.pending()?;
    progress.stage("postings", Some(pending.unlexed_chunks));
    store.lexical.delete(&deletes)?;
    let mut lexed: Vec<u64> = Vec::new();
    let mut after = 0u64;
    loop {
        let batch = store.db.unlexed_chunks_after(after, 4096)?;
        let Some(last) = batch.last() else { break };
        after = last.0;
        store.lexical.add(&batch)?;
        lexed.extend(batch.iter().map(|c| c.0));
        progress.inc(batch.len() as u64);
    }
    failpoint("before-lexical-commit");
    store.lexical.commit()?;
    failpoint("after-lexical-commit");
    store.db.mark_lexed(&lexed)?;
    store.db.clear_pending_deletes(true, &deletes)?;
    store.lexical.close_writer();
    report.chunks_lexed = lexed.len() as u64;

    // 4. Vectors.
    match embedder {
        None => {
            store.db.drop_vector_deletes()?;
            if store.db.chunk_count()? > 0 {
                let msg = "no embedder configured: the store is BM25-only (set --model or \
                           ANECTX_MODEL to add dense retrieval)"
                    .to_string();
                progress.note(&msg);
                report.notes.push(msg);
            }
        }
        Some(e) => {
            // The vectors on disk are this embedder's (checked before): read
            // what another process wrote since this one last read them, so
            // the rewrite below keeps them.
            store.refresh_vectors()?;
            let deletes = store.db.pending_deletes(false)?;
            if !deletes.is_empty() {
                let mut v = store.vectors_mut();
                v.remove(&deletes);
                v.rewrite()?;
                drop(v);
                store.db.clear_pending_deletes(false, &deletes)?;
            }
            let todo = store.db.pending()?.unembedded_chunks;
            progress.stage("embedding", Some(todo));
            let t = Instant::now();
            let mut after = 0u64;
            let batch_size = opts.embed_batch.max(1);
            loop {
                // Sort a window by length so batches pad little.
                let mut window = store.db.unembedded_chunks_after(after, batch_size * 16)?;
                let Some(last) = window.last() else { break };
                after = last.0;
                window.sort_by_key(|c| c.1.len());
                for b in embed_batches(
                    &window,
                    |c| c.1.len(),
                    batch_size,
                    opts.embed_batch_bytes.max(1),
                ) {
                    let texts: Vec<&str> = b.iter().map(|c| c.1.as_str()).collect();
                    let vecs = e.embed(&texts)?;
                    let ids: Vec<u64> = b.iter().map(|c| c.0).collect();
                    store.vectors_mut().append(&ids, &vecs)?;
                    failpoint("mid-embed");
                    store.db.mark_embedded(&ids)?;
                    report.chunks_embedded += ids.len() as u64;
                    progress.inc(ids.len() as u64);
                }
            }
            // The graph (large stores) is written once a run, not per batch.
            store.vectors_mut().save_index()?;
            if store.finish_reembedding()? {
                let msg = format!(
                    "re-embedding finished: every chunk has a vector from {}",
                    e.info().description
                );
                progress.note(&msg);
                report.notes.push(msg);
            }
            report.embed_seconds = t.elapsed().as_secs_f64();
            report.embedder = Some(e.info().description.clone());
        }
    }
    report.chunks_total = store.db.chunk_count()?;
    report.documents_total = store.db.document_count()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_one_file_is_caught_noted_and_skipped() {
        let root = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("good.txt"), "quokka facts").unwrap();
        std::fs::write(root.path().join(PANIC_FILE), "anything").unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let r = index_paths(
            &store,
            None,
            &[root.path().to_path_buf()],
            &IndexOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(r.files_indexed, 1, "{r:?}");
        assert_eq!(r.files_skipped, 1, "{r:?}");
        assert_eq!(
            r.files_seen,
            r.files_indexed + r.files_unchanged + r.files_skipped
        );
        let notes = r.notes.join("\n");
        assert!(
            notes.contains(PANIC_FILE) && notes.contains("deliberate test panic"),
            "{notes}"
        );
        assert_eq!(store.db.document_count().unwrap(), 1);
    }

    /// A file that cannot be read is noted and its indexed version kept (a
    /// skipped file would be removed).
    #[test]
    fn an_unreadable_file_keeps_its_old_version() {
        let root = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("good.md"),
            "# Good\n\nnumbats eat termites.\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join(EIO_FILE),
            "# Flaky\n\nquolls hunt at night.\n",
        )
        .unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let roots = [root.path().to_path_buf()];
        let run = || index_paths(&store, None, &roots, &IndexOptions::default(), &NoProgress);
        assert_eq!(run().unwrap().files_indexed, 2);
        // Changed on disk, then unreadable: the old version must stay.
        std::fs::write(root.path().join(EIO_FILE), "# Flaky\n\nsomething new.\n").unwrap();
        FAIL_READS.store(true, std::sync::atomic::Ordering::SeqCst);
        let rep = run();
        FAIL_READS.store(false, std::sync::atomic::Ordering::SeqCst);
        let rep = rep.unwrap();
        let notes = rep.notes.join("\n");
        assert!(notes.contains("cannot read"), "{notes}");
        assert_eq!(
            (
                rep.files_seen,
                rep.files_unchanged,
                rep.files_skipped,
                rep.files_removed
            ),
            (2, 1, 1, 0),
            "{rep:?}"
        );
        assert_eq!(store.db.document_count().unwrap(), 2);
        let hits = store
            .lexical
            .search("quolls hunt at night", 5, Default::default())
            .unwrap();
        assert!(!hits.is_empty(), "the old version no longer answers");
    }

    /// Pages without text are named in notes and counted, with why.
    #[test]
    fn pages_without_text_are_named() {
        use formats::{EmptyPage, Extracted};
        let doc = Extracted {
            parts: vec![Part {
                page: Some(1),
                text: "text".into(),
            }],
            pages: 6,
            empty_pages: vec![
                (2, EmptyPage::Blank),
                (4, EmptyPage::Scanned),
                (5, EmptyPage::Scanned),
            ],
        };
        let notes = page_notes(Path::new("a.pdf"), Format::Pdf, &doc);
        assert_eq!(
            notes,
            vec![
                "a.pdf: 2 of 6 pages have no text layer (scanned images; OCR is not done) \
                 and were skipped: p. 4, 5"
                    .to_string(),
                "a.pdf: 1 of 6 pages have no text and were skipped: 2".to_string(),
            ]
        );
        let many: Vec<u32> = (1..=20).collect();
        assert_eq!(
            formats::page_list(&many),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, and 8 more"
        );
        // Chunks of separate parts keep their pages and never span two.
        let parts = vec![
            Part {
                page: Some(1),
                text: "one\ntwo".into(),
            },
            Part {
                page: Some(3),
                text: "three".into(),
            },
        ];
        let chunks = chunk_parts(&parts, DocKind::Text, ChunkConfig::default());
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].page, chunks[1].page), (Some(1), Some(3)));
        assert_eq!((chunks[1].line_start, chunks[1].byte_start), (4, 9));
    }

    #[test]
    fn batches_are_bounded_by_bytes_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..10)
            .map(|i| {
                let p = dir.path().join(format!("{i}.txt"));
                std::fs::write(&p, vec![b'a'; 100]).unwrap();
                p
            })
            .collect();
        let sizes: Vec<usize> = byte_batches(&files, 250, 256)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 2, 2, 2]);
        let sizes: Vec<usize> = byte_batches(&files, 1 << 20, 3)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        // A file larger than the byte cap is a batch of its own.
        let sizes: Vec<usize> = byte_batches(&files, 10, 256)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, vec![1; 10]);
        let texts = ["aaaa", "bb", "cccccc", "d"];
        let b: Vec<usize> = embed_batches(&texts, |t| t.len(), 32, 6)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(b, vec![2, 1, 1]);
        let b: Vec<usize> = embed_batches(&texts, |t| t.len(), 2, 1 << 20)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(b, vec![2, 2]);
    }
}
