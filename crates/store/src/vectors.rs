//! Chunk embeddings: f16 on disk and in memory, with int8 codes and sign
//! bits for fast scans, and an HNSW graph when asked for.
//!
//! File layout (`vectors.f16`): a 16-byte header (`ANXVEC01`, dimension as
//! u32 LE, 4 reserved bytes) followed by records of `chunk id (u64 LE)` and
//! `dim` f16 values (LE). Appends are fsync'd per batch; a torn tail from a
//! crash is cut off on load. Later records for the same id win, and records
//! whose chunk SQLite does not list as embedded are ignored, so a crash
//! between writing vectors and recording them only costs re-embedding.
//!
//! The graph (`vectors.hnsw`, see [`FlatVectors::save_index`]) is derived
//! data: it names the vector of every node by a hash, and a graph that does
//! not match the vector file exactly (a crash between the two, a damaged
//! file) is dropped and rebuilt on load; one that covers a prefix of the
//! vectors gets the rest inserted.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::failpoint;
use crate::hnsw::{Graph, Space};
use crate::{Result, StoreError};

const MAGIC: &[u8; 8] = b"ANXVEC01";
const HEADER: usize = 16;
const GRAPH_MAGIC: &[u8; 8] = b"ANXHNSW1";
/// Rows per parallel block in exact search.
const BLOCK: usize = 4096;
/// The id of a deleted row kept as a graph waypoint.
const TOMB: u64 = u64::MAX;

/// Nearest-neighbour search over chunk vectors. The exact implementation is
/// [`FlatVectors`]; an approximate index can implement this trait instead.
pub trait VectorIndex: Send + Sync {
    fn dim(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` chunks with the highest inner product with `query` (cosine for
    /// normalised vectors), best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>>;
    /// The `k` chunks of `allowed` with the highest inner product, best
    /// first: the top `k` of the allowed chunks, not the allowed part of the
    /// overall top `k`.
    fn search_in(&self, query: &[f32], k: usize, allowed: &HashSet<u64>)
        -> Result<Vec<(u64, f32)>>;
    /// The stored vector of a chunk (as stored: rounded to f16).
    fn get(&self, id: u64) -> Option<Vec<f32>>;
}

/// How [`FlatVectors::search`] finds the nearest vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorSearch {
    /// Chosen by the number of vectors.
    #[default]
    Auto,
    /// Exact inner products over every vector.
    Exact,
    /// A scan of int8 codes (one scale per vector) that shortlists
    /// [`int8_shortlist`] candidates, re-scored exactly.
    Int8,
    /// A walk of the HNSW graph over the int8 codes that finds
    /// [`hnsw_ef`] candidates, re-scored exactly.
    Hnsw,
    /// A scan of sign bits (48 bytes a 384-dimensional vector; Hamming
    /// distance between the centred query and rows) that keeps
    /// [`bits_shortlist`] rows, scored on int8 codes for
    /// [`int8_shortlist`] candidates, re-scored exactly.
    Bits,
}

/// From this many vectors [`VectorSearch::Auto`] runs [`VectorSearch::Bits`].
pub const AUTO_BITS_MIN: usize = 20_000;

/// Rows the sign-bit pass of [`VectorSearch::Bits`] keeps for int8
/// scoring out of `n`: 1/128 of them, at least 2,000. On the built-in
/// embedder's vectors of 100,000 generated chunks, 2,000 held the whole
/// exact top ten of 200 short queries (and 97.7 % of it for documents used
/// as queries); on a million synthetic chunks 1/128 held all of it.
pub fn bits_shortlist(n: usize) -> usize {
    (n / 128).max(2000)
}

/// Candidates the int8 scan keeps for exact re-scoring when `k` are asked.
pub fn int8_shortlist(k: usize) -> usize {
    (4 * k).max(k + 100)
}

/// Candidates the graph walk keeps for exact re-scoring when `k` are asked.
pub fn hnsw_ef(k: usize) -> usize {
    (5 * k).max(k + 250)
}

impl VectorSearch {
    pub const ALL: [VectorSearch; 5] =
        [Self::Auto, Self::Exact, Self::Int8, Self::Hnsw, Self::Bits];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Exact => "exact",
            Self::Int8 => "int8",
            Self::Hnsw => "hnsw",
            Self::Bits => "bits",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// What `self` runs for a store of `n` vectors.
    pub fn resolve(self, n: usize) -> Self {
        match self {
            Self::Auto if n >= AUTO_BITS_MIN => Self::Bits,
            Self::Auto => Self::Exact,
            s => s,
        }
    }
}

/// The vector store: exact, int8 and graph search over one set of rows.
#[derive(Debug)]
pub struct FlatVectors {
    path: PathBuf,
    dim: usize,
    /// Chunk id of each row; [`TOMB`] for a deleted row the graph still
    /// uses as a waypoint (only while a graph exists).
    ids: Vec<u64>,
    /// Row-major f16 vectors, as on disk.
    data: Vec<f16>,
    rows: HashMap<u64, usize>,
    /// Int8 codes of every row (row-major, like `data`), derived from the
    /// stored vectors and kept in step with them; never written to disk.
    codes: Vec<i8>,
    /// Per-row scale: row ≈ codes × scale.
    scales: Vec<f32>,
    /// Per-row sign bits of the centred vector (the int8 codes' signs),
    /// [`FlatVectors::words`] u64 words a row: the first, cheapest pass of
    /// [`VectorSearch::Bits`].
    bits: Vec<u64>,
    /// Rows when the centre was last computed (without a graph the centre
    /// follows the data as it grows; see [`FlatVectors::maybe_recentre`]).
    centred_at: usize,
    search: VectorSearch,
    /// The graph over all rows (node i = row i), when graph search runs.
    graph: Option<Graph>,
    /// Rows whose id is [`TOMB`].
    dead: usize,
    /// The graph changed since it was written.
    graph_dirty: bool,
    /// The graph was read from its file (not built here).
    graph_loaded: bool,
    /// Subtracted from every vector before it is coded (empty: nothing).
    /// The graph's similarities are inner products of centred vectors:
    /// embedders put every vector in a narrow cone, and centring spreads
    /// them, so the graph's links and the walk tell neighbours apart
    /// better. A query is not centred: q·(x − c) = q·x − q·c ranks rows as
    /// q·x does, so scans and walks keep the exact order's shape, and the
    /// final scores are exact.
    centre: Vec<f32>,
    /// The file as this value last read or wrote it (`None`: no file). A
    /// writer compares it with the file before it writes (see
    /// [`FlatVectors::changed_on_disk`]): another process may have written
    /// since, and a rewrite from stale memory would drop its vectors.
    disk: Option<FileStamp>,
}

/// What identifies a version of the vector file: appends change its length,
/// a rewrite (a rename) its inode, and either its modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }

    /// The file at `path` now (`None`: there is none).
    fn at(path: &Path) -> Result<Option<Self>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(Self::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }
}

fn vec_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Vectors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A 64-bit hash of 8-byte words (FNV-style multiply with a fold), for
/// naming a row's vector and checking the graph file.
fn hash_words(words: impl Iterator<Item = u64>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in words {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

fn row_hash(row: &[f16]) -> u64 {
    hash_words(row.chunks(4).map(|c| {
        c.iter()
            .enumerate()
            .fold(0u64, |w, (i, x)| w | (x.to_bits() as u64) << (16 * i))
    }))
}

fn bytes_hash(b: &[u8]) -> u64 {
    hash_words(b.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    }))
}

impl FlatVectors {
    /// Loads the vectors of `live` chunks from `path` (missing file: empty),
    /// and the graph beside it when it matches them.
    /// `dim` is the dimension SQLite records for the store's embedder.
    pub fn load(path: &Path, dim: Option<usize>, live: &HashSet<u64>) -> Result<Self> {
        Self::load_with(path, dim, live, VectorSearch::Auto)
    }

    /// [`FlatVectors::load`] with a search mode (so a graph is loaded or
    /// built only when that mode runs graph search).
    pub fn load_with(
        path: &Path,
        dim: Option<usize>,
        live: &HashSet<u64>,
        search: VectorSearch,
    ) -> Result<Self> {
        let mut me = Self::empty(path.to_path_buf(), dim.unwrap_or(0));
        me.search = search;
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                // The stamp is taken before reading: a write that lands
                // meanwhile leaves it older than what was read, so the next
                // check reads the file again (never the other way round).
                let meta = f.metadata().map_err(|e| StoreError::io(path, e))?;
                me.disk = Some(FileStamp::of(&meta));
                f.read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(me),
            Err(e) => return Err(StoreError::io(path, e)),
        }
        // A short header or a torn last record is a write in progress in
        // another process, or one a crash cut short: read what is whole and
        // leave the file alone (a reader must not cut another process's
        // write; the next writer trims a crash's leftovers, see `append`).
        if bytes.len() < HEADER {
            return Ok(me);
        }
        if &bytes[..8] != MAGIC {
            return Err(vec_err(path, "not an anectx vector file (bad magic)"));
        }
        let file_dim = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        match dim {
            Some(d) if d != file_dim => {
                return Err(vec_err(
                    path,
                    format!("holds {file_dim}-dimensional vectors, the store records {d}"),
                ))
            }
            _ => me.dim = file_dim,
        }
        let rec = 8 + 2 * me.dim;
        let body = &bytes[HEADER..];
        let whole = body.len() / rec * rec;
        let mut row = vec![f16::ZERO; me.dim];
        for r in body[..whole].chunks_exact(rec) {
            let id = u64::from_le_bytes(r[..8].try_into().map_err(|_| vec_err(path, "short id"))?);
            if !live.contains(&id) {
                continue;
            }
            for (o, b) in row.iter_mut().zip(r[8..].chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
            }
            // Later records for an id win. Codes and bits are made once,
            // below, when the centre is known.
            match me.rows.get(&id) {
                Some(&at) => me.data[at * me.dim..(at + 1) * me.dim].copy_from_slice(&row),
                None => {
                    me.rows.insert(id, me.ids.len());
                    me.ids.push(id);
                    me.data.extend_from_slice(&row);
                }
            }
        }
        drop(bytes);
        let n = me.ids.len();
        me.codes = vec![0; n * me.dim];
        me.scales = vec![0.0; n];
        // The data's mean is the centre from 1,024 vectors (as in
        // `maybe_recentre`); below that, none.
        me.recentre(if n >= 1024 { None } else { Some(Vec::new()) });
        // Growth by doubling can leave up to half of each buffer unused.
        me.shrink();
        if me.resolved_search() == VectorSearch::Hnsw {
            me.load_graph();
        }
        Ok(me)
    }

    /// The vectors at `path` without reading them (none in memory): the
    /// first check of [`FlatVectors::changed_on_disk`] finds the file
    /// changed, so a writer reads it before it writes.
    pub fn unread(path: &Path, dim: Option<usize>) -> Self {
        Self::empty(path.to_path_buf(), dim.unwrap_or(0))
    }

    fn empty(path: PathBuf, dim: usize) -> Self {
        Self {
            path,
            dim,
            ids: Vec::new(),
            data: Vec::new(),
            rows: HashMap::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            bits: Vec::new(),
            centred_at: 0,
            search: VectorSearch::Auto,
            graph: None,
            dead: 0,
            graph_dirty: false,
            graph_loaded: false,
            centre: Vec::new(),
            disk: None,
        }
    }

    /// Whether the file differs from what this value last read or wrote:
    /// another process wrote it since. A writer holding the store's lock
    /// reads it again before it writes vectors (`Store::refresh_vectors`).
    pub fn changed_on_disk(&self) -> Result<bool> {
        if self.path.as_os_str().is_empty() {
            return Ok(false);
        }
        Ok(FileStamp::at(&self.path)? != self.disk)
    }

    fn shrink(&mut self) {
        self.data.shrink_to_fit();
        self.codes.shrink_to_fit();
        self.scales.shrink_to_fit();
        self.bits.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.rows.shrink_to_fit();
    }

    /// An in-memory store not backed by a file (tests, benches).
    pub fn in_memory(dim: usize) -> Self {
        Self::empty(PathBuf::new(), dim)
    }

    /// The graph file beside the vector file.
    pub fn graph_path(&self) -> PathBuf {
        self.path.with_extension("hnsw")
    }

    /// Sets the dimension of an empty store.
    pub fn set_dim(&mut self, dim: usize) -> Result<()> {
        if self.dim == dim {
            return Ok(());
        }
        if !self.ids.is_empty() || self.path.exists() {
            return Err(StoreError::Dimension {
                got: dim,
                want: self.dim,
            });
        }
        self.dim = dim;
        Ok(())
    }

    /// Sets how searches run (kept across appends and removals). Choosing
    /// graph search builds the graph if there is none.
    pub fn set_search(&mut self, search: VectorSearch) {
        self.search = search;
        if self.graph.is_none() && self.resolved_search() == VectorSearch::Hnsw {
            self.load_graph();
        }
    }

    /// The search asked for.
    pub fn search_mode(&self) -> VectorSearch {
        self.search
    }

    /// The search that runs at the current size ([`VectorSearch::Auto`] resolved).
    pub fn resolved_search(&self) -> VectorSearch {
        self.search.resolve(self.len())
    }

    /// Whether a graph is held.
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Bytes held in memory for the vectors, their codes, the graph and the
    /// lookup tables (approximate: the hash map counts its capacity at 16
    /// bytes a slot plus one control byte).
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity() * 2
            + self.ids.capacity() * 8
            + self.rows.capacity() * 17
            + self.codes.capacity()
            + self.scales.capacity() * 4
            + self.bits.capacity() * 8
            + self.graph.as_ref().map_or(0, Graph::memory_bytes)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.rows.contains_key(&id)
    }

    fn row(&self, r: usize) -> &[f16] {
        &self.data[r * self.dim..(r + 1) * self.dim]
    }

    fn code(&self, r: usize) -> &[i8] {
        &self.codes[r * self.dim..(r + 1) * self.dim]
    }

    /// Stores `v` for `id` in memory. An id already held is overwritten in
    /// place, unless a graph links its row: then the old row becomes a
    /// waypoint and the new vector a new node.
    fn upsert_mem(&mut self, id: u64, v: &[f16]) {
        let d = self.dim;
        if let Some(&r) = self.rows.get(&id) {
            if self.graph.is_none() {
                self.data[r * d..(r + 1) * d].copy_from_slice(v);
                self.scales[r] = encode(v, &self.centre, &mut self.codes[r * d..(r + 1) * d]);
                self.set_bits(r);
                return;
            }
            self.rows.remove(&id);
            self.ids[r] = TOMB;
            self.dead += 1;
        }
        let r = self.ids.len();
        self.rows.insert(id, r);
        self.ids.push(id);
        self.data.extend_from_slice(v);
        self.codes.resize((r + 1) * d, 0);
        let scale = encode(v, &self.centre, &mut self.codes[r * d..(r + 1) * d]);
        self.scales.push(scale);
        self.bits.resize((r + 1) * self.words(), 0);
        self.set_bits(r);
        if self.graph.is_some() {
            self.graph_insert(r);
        }
    }

    /// Appends vectors (row-major, `ids.len() * dim`) durably and in memory.
    /// Values are rounded to f16 in memory too, so memory matches disk.
    pub fn append(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        if self.dim == 0 || vectors.len() != ids.len() * self.dim {
            return Err(StoreError::Dimension {
                got: if ids.is_empty() {
                    0
                } else {
                    vectors.len() / ids.len()
                },
                want: self.dim,
            });
        }
        let mut records = Vec::with_capacity(ids.len() * (8 + 2 * self.dim));
        let mut rounded = vec![f16::ZERO; self.dim];
        for (id, v) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            records.extend_from_slice(&id.to_le_bytes());
            rounded.convert_from_f32_slice(v);
            for h in &rounded {
                records.extend_from_slice(&h.to_bits().to_le_bytes());
            }
            self.upsert_mem(*id, &rounded);
        }
        if !self.path.as_os_str().is_empty() {
            let mut f = crate::private::private_file_options()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| StoreError::io(&self.path, e))?;
            let len = f
                .metadata()
                .map_err(|e| StoreError::io(&self.path, e))?
                .len();
            // A crash inside an earlier write can leave a short header or a
            // torn last record: cut it before appending, so every record
            // stays aligned. Only a writer does this (the caller holds the
            // store's write lock), never a reader.
            let rec = (8 + 2 * self.dim) as u64;
            let whole = if len < HEADER as u64 {
                0
            } else {
                HEADER as u64 + (len - HEADER as u64) / rec * rec
            };
            if whole != len {
                tracing::warn!(
                    path = %self.path.display(),
                    "cutting a torn record off the vector file (interrupted run)"
                );
                f.set_len(whole)
                    .map_err(|e| StoreError::io(&self.path, e))?;
            }
            let mut buf = Vec::with_capacity(records.len() + HEADER);
            if whole == 0 {
                buf.extend_from_slice(MAGIC);
                buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
                buf.extend_from_slice(&[0u8; 4]);
            }
            buf.extend_from_slice(&records);
            f.write_all(&buf)
                .map_err(|e| StoreError::io(&self.path, e))?;
            f.sync_data().map_err(|e| StoreError::io(&self.path, e))?;
            let meta = f.metadata().map_err(|e| StoreError::io(&self.path, e))?;
            self.disk = Some(FileStamp::of(&meta));
        }
        self.maybe_recentre();
        self.ensure_graph();
        Ok(())
    }

    /// Removes ids from memory; [`FlatVectors::rewrite`] makes it durable.
    /// With a graph, removed rows stay as waypoints until they are a quarter
    /// of all rows; then the rows are compacted and the graph rebuilt.
    pub fn remove(&mut self, ids: &[u64]) {
        if self.graph.is_some() {
            for id in ids {
                if let Some(r) = self.rows.remove(id) {
                    self.ids[r] = TOMB;
                    self.dead += 1;
                    self.graph_dirty = true;
                }
            }
            if self.dead * 4 > self.ids.len() {
                self.compact();
                self.ensure_graph();
            }
            return;
        }
        let d = self.dim;
        for id in ids {
            if let Some(r) = self.rows.remove(id) {
                let last = self.ids.len() - 1;
                if r != last {
                    let moved = self.ids[last];
                    self.ids[r] = moved;
                    self.data.copy_within(last * d..(last + 1) * d, r * d);
                    self.codes.copy_within(last * d..(last + 1) * d, r * d);
                    let w = self.words();
                    self.bits.copy_within(last * w..(last + 1) * w, r * w);
                    self.scales[r] = self.scales[last];
                    self.rows.insert(moved, r);
                }
                self.ids.pop();
                self.data.truncate(last * d);
                self.codes.truncate(last * d);
                self.bits.truncate(last * self.words());
                self.scales.pop();
            }
        }
    }

    /// Drops the waypoint rows (and the graph, which names rows by position).
    fn compact(&mut self) {
        let d = self.dim;
        let keep: Vec<usize> = (0..self.ids.len())
            .filter(|&r| self.ids[r] != TOMB)
            .collect();
        let mut ids = Vec::with_capacity(keep.len());
        let mut data = Vec::with_capacity(keep.len() * d);
        let mut codes = Vec::with_capacity(keep.len() * d);
        let mut scales = Vec::with_capacity(keep.len());
        for &r in &keep {
            ids.push(self.ids[r]);
            data.extend_from_slice(self.row(r));
            codes.extend_from_slice(self.code(r));
            scales.push(self.scales[r]);
        }
        self.rows = ids.iter().enumerate().map(|(r, &id)| (id, r)).collect();
        self.ids = ids;
        self.data = data;
        self.codes = codes;
        self.scales = scales;
        self.rebuild_bits();
        self.dead = 0;
        self.graph = None;
        self.graph_dirty = true;
    }

    /// Rewrites the file from memory (compaction), atomically via rename.
    pub fn rewrite(&mut self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let tmp = self.path.with_extension("f16.tmp");
        let mut buf = Vec::with_capacity(HEADER + self.len() * (8 + 2 * self.dim));
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
        buf.extend_from_slice(&[0u8; 4]);
        for (r, id) in self.ids.iter().enumerate() {
            if *id == TOMB {
                continue;
            }
            buf.extend_from_slice(&id.to_le_bytes());
            for x in self.row(r) {
                buf.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        write_atomically(&tmp, &self.path, &buf)?;
        self.disk = FileStamp::at(&self.path)?;
        Ok(())
    }

    /// Builds the graph when graph search runs and there is none.
    fn ensure_graph(&mut self) {
        if self.graph.is_some() || self.resolved_search() != VectorSearch::Hnsw {
            return;
        }
        if self.dead > 0 {
            self.compact();
        }
        let t = std::time::Instant::now();
        self.recentre(None);
        self.graph = Some(Graph::new());
        self.graph_loaded = false;
        for r in 0..self.ids.len() {
            self.graph_insert(r);
        }
        self.graph_dirty = true;
        tracing::info!(
            vectors = self.ids.len(),
            seconds = t.elapsed().as_secs_f64(),
            "built the vector graph"
        );
    }

    /// Sets the centre (`None`: the mean of the live vectors) and codes
    /// every row again.
    fn recentre(&mut self, centre: Option<Vec<f32>>) {
        let d = self.dim;
        let centre = centre.unwrap_or_else(|| {
            let live = self.len().max(1) as f64;
            let sums = self
                .data
                .par_chunks(d.max(1))
                .zip(self.ids.par_iter())
                .filter(|(_, &id)| id != TOMB)
                .fold(
                    || vec![0f64; d],
                    |mut acc, (row, _)| {
                        for (a, x) in acc.iter_mut().zip(row) {
                            *a += x.to_f64();
                        }
                        acc
                    },
                )
                .reduce(
                    || vec![0f64; d],
                    |mut a, b| {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                        a
                    },
                );
            sums.iter().map(|s| (s / live) as f32).collect()
        });
        self.centre = centre;
        let c = &self.centre;
        self.codes
            .par_chunks_mut(d.max(1))
            .zip(self.scales.par_iter_mut())
            .zip(self.data.par_chunks(d.max(1)))
            .for_each(|((codes, scale), row)| *scale = encode(row, c, codes));
        self.centred_at = self.ids.len();
        self.rebuild_bits();
    }

    /// u64 words of sign bits a row.
    fn words(&self) -> usize {
        self.dim.div_ceil(64)
    }

    /// Sets row `r`'s sign bits from its codes.
    fn set_bits(&mut self, r: usize) {
        let (d, w) = (self.dim, self.words());
        let out = &mut self.bits[r * w..(r + 1) * w];
        sign_bits(&self.codes[r * d..(r + 1) * d], out);
    }

    fn rebuild_bits(&mut self) {
        let (d, w) = (self.dim.max(1), self.words().max(1));
        self.bits.resize(self.ids.len() * w, 0);
        self.bits
            .par_chunks_mut(w)
            .zip(self.codes.par_chunks(d))
            .for_each(|(out, codes)| sign_bits(codes, out));
    }

    /// Without a graph, moves the centre to the data's mean each time the
    /// rows double (from 1,024), so the sign bits stay informative as a
    /// store grows from empty; with a graph the centre stays (the graph's
    /// similarities were measured around it).
    fn maybe_recentre(&mut self) {
        let n = self.ids.len();
        if self.graph.is_none() && n >= 1024 && n >= 2 * self.centred_at {
            self.recentre(None);
        }
    }

    /// Links row `r` (the next node) into the graph.
    fn graph_insert(&mut self, r: usize) {
        let Some(mut g) = self.graph.take() else {
            return;
        };
        let space = CodeSpace {
            dim: self.dim,
            codes: &self.codes,
            scales: &self.scales,
            target: self.code(r),
            target_scale: self.scales[r],
        };
        pulp::Arch::new().dispatch(GraphInsert {
            graph: &mut g,
            space: &space,
            node: r as u32,
        });
        self.graph = Some(g);
        self.graph_dirty = true;
    }

    /// Writes the graph beside the vector file (atomically via rename) when
    /// it changed. A crash before the rename leaves the last graph, which
    /// load checks against the vectors and extends or rebuilds.
    pub fn save_index(&mut self) -> Result<()> {
        if self.path.as_os_str().is_empty() || !self.graph_dirty {
            return Ok(());
        }
        let Some(g) = &self.graph else {
            return Ok(());
        };
        let d = self.dim;
        let mut buf = Vec::with_capacity(64 + self.ids.len() * (16 + 140));
        buf.extend_from_slice(GRAPH_MAGIC);
        buf.extend_from_slice(&(d as u32).to_le_bytes());
        buf.extend_from_slice(&[0u8; 4]);
        buf.extend_from_slice(&(self.ids.len() as u64).to_le_bytes());
        for c in &self.centre {
            buf.extend_from_slice(&c.to_le_bytes());
        }
        for (r, &id) in self.ids.iter().enumerate() {
            buf.extend_from_slice(&id.to_le_bytes());
            if id == TOMB {
                buf.extend(self.code(r).iter().map(|&c| c as u8));
                buf.extend_from_slice(&self.scales[r].to_le_bytes());
            } else {
                buf.extend_from_slice(&row_hash(self.row(r)).to_le_bytes());
            }
        }
        g.write(&mut buf);
        let sum = bytes_hash(&buf);
        buf.extend_from_slice(&sum.to_le_bytes());
        let path = self.graph_path();
        let tmp = path.with_extension("hnsw.tmp");
        if std::env::var("ANECTX_FAILPOINT").is_ok_and(|v| v == "hnsw-mid-write") {
            // Half a graph reaches the disk, then the process dies.
            let _ = std::fs::write(&tmp, &buf[..buf.len() / 2]);
            failpoint("hnsw-mid-write");
        }
        write_atomically(&tmp, &path, &buf)?;
        self.graph_dirty = false;
        Ok(())
    }

    /// Loads the graph file when it matches the vectors (see the module
    /// notes); otherwise builds the graph afresh.
    fn load_graph(&mut self) {
        let path = self.graph_path();
        match std::fs::read(&path) {
            Ok(bytes) => match self.attach_graph(&bytes) {
                Ok(()) => {}
                Err(why) => tracing::warn!(
                    path = %path.display(),
                    "rebuilding the vector graph: {why}"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "rebuilding the vector graph: {e}"),
        }
        self.ensure_graph();
    }

    /// Adopts a graph file: every live node must name a held vector by its
    /// hash, each at most once. Rows are then put in the graph's order, and
    /// vectors the graph lacks are inserted.
    fn attach_graph(&mut self, b: &[u8]) -> std::result::Result<(), &'static str> {
        let d = self.dim;
        if b.len() < 32 || &b[..8] != GRAPH_MAGIC {
            return Err("not a graph file");
        }
        let (body, sum) = b.split_at(b.len() - 8);
        if bytes_hash(body).to_le_bytes() != sum {
            return Err("checksum mismatch (a torn or damaged file)");
        }
        if u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize != d {
            return Err("dimension differs from the vectors");
        }
        let n = u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8])) as usize;
        let centre: Vec<f32> = body
            .get(24..24 + 4 * d)
            .ok_or("truncated centre")?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut at = 24 + 4 * d;
        // Each node: Some(row) for a live vector, None for a waypoint.
        let mut nodes: Vec<Option<usize>> = Vec::with_capacity(n.min(body.len() / 16));
        let mut way_codes: Vec<i8> = Vec::new();
        let mut way_scales: Vec<f32> = Vec::new();
        let mut used = vec![false; self.ids.len()];
        let u64_at = |at: usize| -> std::result::Result<u64, &'static str> {
            body.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or("truncated node table")
        };
        for _ in 0..n {
            let id = u64_at(at)?;
            at += 8;
            if id == TOMB {
                let c = body.get(at..at + d + 4).ok_or("truncated waypoint")?;
                way_codes.extend(c[..d].iter().map(|&x| x as i8));
                way_scales.push(f32::from_le_bytes(c[d..].try_into().unwrap_or([0; 4])));
                at += d + 4;
                nodes.push(None);
                continue;
            }
            let h = u64_at(at)?;
            at += 8;
            let r = *self.rows.get(&id).ok_or("names a vector no longer held")?;
            if used[r] || row_hash(self.row(r)) != h {
                return Err("names a vector that changed since");
            }
            used[r] = true;
            nodes.push(Some(r));
        }
        let (graph, len) = Graph::read(&body[at..]).map_err(|c| c.0)?;
        if at + len != body.len() || graph.len() != n {
            return Err("graph does not match its node table");
        }
        // The codes of the graph's centre (the waypoints' are read as such).
        if centre != self.centre {
            self.recentre(Some(centre));
        }
        // Rows in graph order: its nodes, then vectors it lacks.
        let mut ids = Vec::with_capacity(self.ids.len() + way_scales.len());
        let mut data = Vec::with_capacity((self.ids.len() + way_scales.len()) * d);
        let mut codes = Vec::with_capacity(data.capacity());
        let mut scales = Vec::with_capacity(ids.capacity());
        let mut w = 0usize;
        let rest = (0..self.ids.len()).filter(|&r| !used[r]);
        for src in nodes.iter().copied().chain(rest.map(Some)) {
            match src {
                Some(r) => {
                    ids.push(self.ids[r]);
                    data.extend_from_slice(self.row(r));
                    codes.extend_from_slice(self.code(r));
                    scales.push(self.scales[r]);
                }
                None => {
                    ids.push(TOMB);
                    data.extend(std::iter::repeat_n(f16::ZERO, d));
                    codes.extend_from_slice(&way_codes[w * d..(w + 1) * d]);
                    scales.push(way_scales[w]);
                    w += 1;
                }
            }
        }
        self.dead = way_scales.len();
        self.rows = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id != TOMB)
            .map(|(r, &id)| (id, r))
            .collect();
        self.ids = ids;
        self.data = data;
        self.codes = codes;
        self.scales = scales;
        self.rebuild_bits();
        self.graph = Some(graph);
        self.graph_dirty = false;
        self.graph_loaded = true;
        for r in n..self.ids.len() {
            self.graph_insert(r);
        }
        Ok(())
    }
}

fn write_atomically(tmp: &Path, path: &Path, buf: &[u8]) -> Result<()> {
    let mut f = crate::private::private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(|e| StoreError::io(tmp, e))?;
    f.write_all(buf).map_err(|e| StoreError::io(tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| StoreError::io(path, e))?;
    Ok(())
}

/// Inner product, written so the compiler vectorises it (8 accumulators).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Int8 codes of an f16 vector minus `centre` (empty: none), and their scale.
fn encode(v: &[f16], centre: &[f32], codes: &mut [i8]) -> f32 {
    let mut f = v.to_f32_vec();
    if !centre.is_empty() {
        f.iter_mut().zip(centre).for_each(|(x, c)| *x -= c);
    }
    quantize(&f, codes)
}

/// Sign bits of int8 codes (bit set: code ≥ 0), 64 a word.
fn sign_bits(codes: &[i8], out: &mut [u64]) {
    out.fill(0);
    for (i, &c) in codes.iter().enumerate() {
        if c >= 0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
}

/// Inner product of a query with an f16 row (converted in `buf`, which
/// must be as long as the row).
#[inline]
fn dot_f16(query: &[f32], row: &[f16], buf: &mut [f32]) -> f32 {
    row.convert_to_f32_slice(buf);
    dot(query, buf)
}

/// Int8 codes of `v` (`codes.len() == v.len()`), symmetric around 0, and
/// the scale that maps them back (`v ≈ codes × scale`; 0 for a zero vector).
pub fn quantize(v: &[f32], codes: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if !(max > 0.0 && max.is_finite()) {
        codes.fill(0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (c, x) in codes.iter_mut().zip(v) {
        *c = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

/// Inner product of int8 codes, accumulated in i32 (exact: |a·b| ≤
/// 128² × dim, far from overflow for any embedding dimension). Written with
/// wrapping arithmetic, which cannot wrap here, so that builds with overflow
/// checks (the dev profile, which tests and `cargo run` use) vectorise the
/// loop too: with checked adds it ran 4–5× slower than the exact f32 scan.
#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = acc[i].wrapping_add((x[i] as i32).wrapping_mul(y[i] as i32));
        }
    }
    let mut s: i32 = acc.iter().fold(0i32, |t, &v| t.wrapping_add(v));
    for (x, y) in ra.iter().zip(rb) {
        s = s.wrapping_add((*x as i32).wrapping_mul(*y as i32));
    }
    s
}

/// Similarities over int8 codes for the graph: `target` is a query's or a
/// row's codes.
struct CodeSpace<'a> {
    dim: usize,
    codes: &'a [i8],
    scales: &'a [f32],
    target: &'a [i8],
    target_scale: f32,
}

impl Space for CodeSpace<'_> {
    #[inline(always)]
    fn to(&self, n: u32) -> f32 {
        let n = n as usize;
        let c = &self.codes[n * self.dim..(n + 1) * self.dim];
        dot_i8(self.target, c) as f32 * self.target_scale * self.scales[n]
    }

    #[inline(always)]
    fn pair(&self, a: u32, b: u32) -> f32 {
        let (a, b) = (a as usize, b as usize);
        let d = self.dim;
        dot_i8(
            &self.codes[a * d..(a + 1) * d],
            &self.codes[b * d..(b + 1) * d],
        ) as f32
            * self.scales[a]
            * self.scales[b]
    }
}

/// A graph insert compiled for the best instruction set the CPU has (see
/// [`Int8Block`]).
struct GraphInsert<'a, 'b> {
    graph: &'a mut Graph,
    space: &'a CodeSpace<'b>,
    node: u32,
}

impl pulp::WithSimd for GraphInsert<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.graph.insert(self.space, self.node);
    }
}

/// A graph search compiled for the best instruction set the CPU has.
struct GraphSearch<'a, 'b> {
    graph: &'a Graph,
    space: &'a CodeSpace<'b>,
    ef: usize,
}

impl pulp::WithSimd for GraphSearch<'_, '_> {
    type Output = Vec<(f32, u32)>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        self.graph.search(self.space, self.ef)
    }
}

/// Hamming distances of a block of sign-bit rows to the query's, compiled
/// for the best instruction set the CPU has (a popcount instruction).
struct Hamming<'a> {
    query: &'a [u64],
    bits: &'a [u64],
    out: &'a mut [u16],
}

impl pulp::WithSimd for Hamming<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let w = self.query.len();
        for (o, row) in self.out.iter_mut().zip(self.bits.chunks_exact(w)) {
            *o = row
                .iter()
                .zip(self.query)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum::<u32>() as u16;
        }
    }
}

/// Int8 scores of chosen rows (score, row), compiled like [`Int8Block`].
struct Int8Rows<'a> {
    query: &'a [i8],
    codes: &'a [i8],
    scales: &'a [f32],
    dim: usize,
    rows: &'a [usize],
    out: &'a mut Vec<(f32, u64)>,
}

impl pulp::WithSimd for Int8Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let d = self.dim;
        for &r in self.rows {
            let s = dot_i8(self.query, &self.codes[r * d..(r + 1) * d]) as f32 * self.scales[r];
            self.out.push((s, r as u64));
        }
    }
}

/// Scores one block of int8 rows. Run through `pulp`'s runtime dispatch so
/// the plain loop in [`dot_i8`] is compiled for the best instruction set
/// the CPU has (AVX2/AVX-512 on x86-64, NEON on Apple silicon).
struct Int8Block<'a> {
    query: &'a [i8],
    codes: &'a [i8],
    out: &'a mut Vec<i32>,
}

impl pulp::WithSimd for Int8Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let d = self.query.len();
        self.out.clear();
        self.out
            .extend(self.codes.chunks_exact(d).map(|r| dot_i8(self.query, r)));
    }
}

fn top_k(v: &mut Vec<(f32, u64)>, k: usize) {
    let cmp = |a: &(f32, u64), b: &(f32, u64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if v.len() > k {
        v.select_nth_unstable_by(k, cmp);
        v.truncate(k);
    }
    v.sort_unstable_by(cmp);
}

impl VectorIndex for FlatVectors {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        if query.len() != self.dim {
            return Err(StoreError::Dimension {
                got: query.len(),
                want: self.dim,
            });
        }
        if k == 0 || self.rows.is_empty() {
            return Ok(Vec::new());
        }
        match self.resolved_search() {
            VectorSearch::Hnsw if self.graph.is_some() => Ok(self.search_graph(query, k)),
            VectorSearch::Int8 | VectorSearch::Hnsw => Ok(self.search_int8(query, k)),
            VectorSearch::Bits => Ok(self.search_bits(query, k)),
            _ => Ok(self.search_exact(query, k)),
        }
    }

    /// Exact inner products with the allowed vectors only (whatever the
    /// search mode: a filter usually leaves few enough rows).
    fn search_in(
        &self,
        query: &[f32],
        k: usize,
        allowed: &HashSet<u64>,
    ) -> Result<Vec<(u64, f32)>> {
        if query.len() != self.dim {
            return Err(StoreError::Dimension {
                got: query.len(),
                want: self.dim,
            });
        }
        if k == 0 || allowed.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(u64, usize)> = allowed
            .iter()
            .filter_map(|id| self.rows.get(id).map(|&r| (*id, r)))
            .collect();
        let score =
            |buf: &mut Vec<f32>, &(id, r): &(u64, usize)| (dot_f16(query, self.row(r), buf), id);
        let mut all: Vec<(f32, u64)> = if rows.len() > BLOCK {
            rows.par_iter()
                .map_init(|| vec![0f32; self.dim], score)
                .collect()
        } else {
            let mut buf = vec![0f32; self.dim];
            rows.iter().map(|x| score(&mut buf, x)).collect()
        };
        top_k(&mut all, k);
        Ok(all.into_iter().map(|(s, id)| (id, s)).collect())
    }

    fn get(&self, id: u64) -> Option<Vec<f32>> {
        self.rows.get(&id).map(|&r| self.row(r).to_f32_vec())
    }
}

impl FlatVectors {
    /// Exact scores of candidate rows (live ones only), best `k`.
    fn rescore(
        &self,
        query: &[f32],
        rows: impl Iterator<Item = usize>,
        k: usize,
    ) -> Vec<(u64, f32)> {
        let mut buf = vec![0f32; self.dim];
        let mut exact: Vec<(f32, u64)> = rows
            .filter(|&r| self.ids[r] != TOMB)
            .map(|r| (dot_f16(query, self.row(r), &mut buf), self.ids[r]))
            .collect();
        top_k(&mut exact, k);
        exact.into_iter().map(|(s, id)| (id, s)).collect()
    }

    /// A graph walk for [`hnsw_ef`] candidates, re-scored exactly.
    fn search_graph(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let Some(g) = &self.graph else {
            return self.search_exact(query, k);
        };
        let mut q8 = vec![0i8; self.dim];
        let qs = quantize(query, &mut q8);
        if qs == 0.0 || hnsw_ef(k) >= self.len() {
            return self.search_exact(query, k);
        }
        let space = CodeSpace {
            dim: self.dim,
            codes: &self.codes,
            scales: &self.scales,
            target: &q8,
            target_scale: qs,
        };
        // Waypoints take places among the candidates; ask for more.
        let ef = hnsw_ef(k) + hnsw_ef(k) * self.dead / self.ids.len().max(1);
        let found = pulp::Arch::new().dispatch(GraphSearch {
            graph: g,
            space: &space,
            ef,
        });
        self.rescore(query, found.into_iter().map(|(_, n)| n as usize), k)
    }

    /// Sign-bit scan for [`bits_shortlist`] rows, int8 scores of those for
    /// [`int8_shortlist`], exact scores of those.
    fn search_bits(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let (d, w, n) = (self.dim, self.words(), self.ids.len());
        let short = bits_shortlist(self.len());
        let mut q8 = vec![0i8; d];
        if short >= self.len() || quantize(query, &mut q8) == 0.0 {
            return self.search_int8(query, k);
        }
        let mut qb = vec![0u64; w];
        for (i, q) in query.iter().enumerate() {
            if q - self.centre.get(i).copied().unwrap_or(0.0) >= 0.0 {
                qb[i / 64] |= 1 << (i % 64);
            }
        }
        let arch = pulp::Arch::new();
        let keep = int8_shortlist(k);
        // Pass 1, per block: Hamming distances and their histogram over
        // live rows.
        let mut dist = vec![0u16; n];
        let hists: Vec<Vec<u32>> = dist
            .par_chunks_mut(BLOCK)
            .zip(self.bits.par_chunks(BLOCK * w))
            .zip(self.ids.par_chunks(BLOCK))
            .map(|((out, bits), ids)| {
                arch.dispatch(Hamming {
                    query: &qb,
                    bits,
                    out,
                });
                let mut h = vec![0u32; d + 1];
                for (&x, &id) in out.iter().zip(ids) {
                    if id != TOMB {
                        h[x as usize] += 1;
                    }
                }
                h
            })
            .collect();
        // The distance at which the shortlist fills, and how many rows at
        // exactly that distance each block gives (the first ones, by row).
        let mut below = 0usize;
        let mut at = d;
        for h in 0..=d {
            let c: usize = hists.iter().map(|b| b[h] as usize).sum();
            if below + c >= short {
                at = h;
                break;
            }
            below += c;
        }
        let mut ties = short - below;
        let block_ties: Vec<usize> = hists
            .iter()
            .map(|b| {
                let t = ties.min(b[at] as usize);
                ties -= t;
                t
            })
            .collect();
        // Pass 2, per block: int8 scores of the shortlisted rows, and the
        // block's best `keep` of them.
        let mut scored: Vec<(f32, u64)> = dist
            .par_chunks(BLOCK)
            .zip(block_ties.par_iter())
            .enumerate()
            .flat_map_iter(|(b, (dists, &t))| {
                let base = b * BLOCK;
                let mut ties = t;
                let mut rows = Vec::new();
                for (i, &x) in dists.iter().enumerate() {
                    let x = x as usize;
                    if x > at || self.ids[base + i] == TOMB {
                        continue;
                    }
                    if x < at {
                        rows.push(base + i);
                    } else if ties > 0 {
                        rows.push(base + i);
                        ties -= 1;
                    }
                }
                let mut out = Vec::with_capacity(rows.len());
                arch.dispatch(Int8Rows {
                    query: &q8,
                    codes: &self.codes,
                    scales: &self.scales,
                    dim: d,
                    rows: &rows,
                    out: &mut out,
                });
                top_k(&mut out, keep);
                out
            })
            .collect();
        top_k(&mut scored, keep);
        self.rescore(query, scored.into_iter().map(|(_, r)| r as usize), k)
    }

    /// Int8 scan for a shortlist, then exact scores of the shortlist.
    fn search_int8(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let d = self.dim;
        let n = self.ids.len();
        let short = int8_shortlist(k);
        let mut q8 = vec![0i8; d];
        if quantize(query, &mut q8) == 0.0 || short >= self.len() {
            return self.search_exact(query, k);
        }
        let arch = pulp::Arch::new();
        // Row indices (as u64) with their approximate scores.
        let block = |(b, codes): (usize, &[i8])| -> Vec<(f32, u64)> {
            let mut dots = Vec::with_capacity(BLOCK);
            arch.dispatch(Int8Block {
                query: &q8,
                codes,
                out: &mut dots,
            });
            let base = b * BLOCK;
            let mut v: Vec<(f32, u64)> = dots
                .iter()
                .enumerate()
                .filter(|(i, _)| self.ids[base + i] != TOMB)
                .map(|(i, &s)| (s as f32 * self.scales[base + i], (base + i) as u64))
                .collect();
            top_k(&mut v, short);
            v
        };
        let mut all: Vec<(f32, u64)> = if n > BLOCK {
            self.codes
                .par_chunks(BLOCK * d)
                .enumerate()
                .flat_map_iter(block)
                .collect()
        } else {
            block((0, &self.codes))
        };
        top_k(&mut all, short);
        self.rescore(query, all.into_iter().map(|(_, r)| r as usize), k)
    }

    /// Exact inner products with every vector.
    fn search_exact(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let d = self.dim;
        let block = |(b, rows): (usize, &[f16])| -> Vec<(f32, u64)> {
            let mut buf = vec![0f32; d];
            let mut v: Vec<(f32, u64)> = rows
                .chunks_exact(d)
                .enumerate()
                .filter(|(i, _)| self.ids[b * BLOCK + i] != TOMB)
                .map(|(i, r)| (dot_f16(query, r, &mut buf), self.ids[b * BLOCK + i]))
                .collect();
            top_k(&mut v, k);
            v
        };
        let mut all: Vec<(f32, u64)> = if self.ids.len() > BLOCK {
            self.data
                .par_chunks(BLOCK * d)
                .enumerate()
                .flat_map_iter(block)
                .collect()
        } else {
            block((0, &self.data))
        };
        top_k(&mut all, k);
        all.into_iter().map(|(s, id)| (id, s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn unit(v: &[f32]) -> Vec<f32> {
        let n = dot(v, v).sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// The allowed chunks' own top `k`, in every search mode.
    #[test]
    fn search_in_ranks_only_the_allowed_vectors() {
        for mode in [VectorSearch::Exact, VectorSearch::Int8] {
            let mut v = FlatVectors::in_memory(2);
            v.set_search(mode);
            let mut data = Vec::new();
            let ids: Vec<u64> = (1..=50).collect();
            for i in &ids {
                // Close to the query for small ids, far for large ones.
                data.extend(unit(&[1.0, *i as f32 / 10.0]));
            }
            v.append(&ids, &data).unwrap();
            let q = unit(&[1.0, 0.0]);
            let top: Vec<u64> = v.search(&q, 3).unwrap().iter().map(|h| h.0).collect();
            assert_eq!(top, vec![1, 2, 3]);
            let allowed = HashSet::from([40u64, 45, 30, 999]);
            let hits: Vec<u64> = v
                .search_in(&q, 2, &allowed)
                .unwrap()
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(hits, vec![30, 40], "{mode:?}");
            assert!(v.search_in(&q, 2, &HashSet::new()).unwrap().is_empty());
        }
    }

    #[test]
    fn persists_searches_and_repairs_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f16");
        let mut v = FlatVectors::load(&p, Some(3), &HashSet::new()).unwrap();
        let a = unit(&[1.0, 0.0, 0.0]);
        let b = unit(&[0.6, 0.8, 0.0]);
        let c = unit(&[0.0, 0.0, 1.0]);
        v.append(&[1, 2, 3], &[a.clone(), b.clone(), c.clone()].concat())
            .unwrap();
        let hits = v.search(&unit(&[1.0, 0.1, 0.0]), 2).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(v.search(&[1.0, 0.0], 2).is_err());
        // Append a torn record by hand, then reload with only 1 and 3 live.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[7u8; 5]).unwrap();
        drop(f);
        let live: HashSet<u64> = [1, 3].into_iter().collect();
        let mut v2 = FlatVectors::load(&p, Some(3), &live).unwrap();
        assert_eq!(v2.len(), 2);
        assert!(!v2.contains(2));
        assert!((v2.get(3).unwrap()[2] - 1.0).abs() < 1e-3);
        // Loading reads the whole records and leaves the file alone: the
        // torn tail may be another process's write in progress.
        assert_eq!(
            std::fs::metadata(&p).unwrap().len() as usize,
            HEADER + 3 * (8 + 6) + 5
        );
        // Wrong recorded dimension is refused.
        assert!(FlatVectors::load(&p, Some(4), &live).is_err());
        // The next append (a writer's) cuts the torn tail first, so the new
        // record is aligned and read back.
        v2.append(&[4], &b).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len() as usize,
            HEADER + 4 * (8 + 6)
        );
        let live4: HashSet<u64> = [1, 3, 4].into_iter().collect();
        let reread = FlatVectors::load(&p, Some(3), &live4).unwrap();
        assert_eq!(reread.len(), 3);
        assert!((reread.get(4).unwrap()[1] - 0.8).abs() < 1e-3);
        // A torn header (a crash while the first record was written) reads
        // as empty and is replaced by the next append.
        let q = dir.path().join("w.f16");
        std::fs::write(&q, &MAGIC[..5]).unwrap();
        let mut w = FlatVectors::load(&q, Some(3), &HashSet::new()).unwrap();
        assert_eq!(w.len(), 0);
        assert_eq!(std::fs::metadata(&q).unwrap().len(), 5);
        w.append(&[9], &c).unwrap();
        let nine: HashSet<u64> = [9].into_iter().collect();
        assert_eq!(FlatVectors::load(&q, Some(3), &nine).unwrap().len(), 1);
        // Remove + rewrite compacts.
        let mut v3 = v2;
        v3.remove(&[4]);
        v3.remove(&[1]);
        v3.rewrite().unwrap();
        let all: HashSet<u64> = [1, 2, 3].into_iter().collect();
        let v4 = FlatVectors::load(&p, Some(3), &all).unwrap();
        assert_eq!(v4.len(), 1);
        assert!(v4.contains(3));
    }

    /// `n` unit vectors in `dim` dimensions around 40 random centres (so
    /// neighbours are close, as with real embeddings), seeded.
    fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        clustered_with(n, dim, seed, 40, 0.35, 1)
    }

    /// `n` unit vectors, the i-th around centre `i × stride` (of `centres`
    /// random ones) with uniform noise of width `spread`, seeded.
    pub(super) fn clustered_with(
        n: usize,
        dim: usize,
        seed: u64,
        centres: usize,
        spread: f32,
        stride: usize,
    ) -> Vec<f32> {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..centres)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &centres[(i * stride) % centres.len()];
            let v: Vec<f32> = c.iter().map(|m| m + spread * next()).collect();
            out.extend(unit(&v));
        }
        out
    }

    pub(super) fn ids_of(h: &[(u64, f32)]) -> Vec<u64> {
        h.iter().map(|x| x.0).collect()
    }

    /// Recall@10 of int8 search against exact search over `queries`.
    fn recall(v: &mut FlatVectors, queries: &[f32]) -> f64 {
        let d = v.dim();
        let mut sum = 0.0;
        let n = queries.len() / d;
        for q in queries.chunks_exact(d) {
            v.set_search(VectorSearch::Exact);
            let truth = ids_of(&v.search(q, 10).unwrap());
            v.set_search(VectorSearch::Int8);
            let got = ids_of(&v.search(q, 10).unwrap());
            sum += truth.iter().filter(|t| got.contains(t)).count() as f64 / truth.len() as f64;
        }
        sum / n as f64
    }

    #[test]
    fn int8_search_recalls_exact_top_ten() {
        let (n, d) = (6000, 48);
        let data = clustered(n, d, 11);
        let mut v = FlatVectors::in_memory(d);
        v.append(&(0..n as u64).collect::<Vec<_>>(), &data).unwrap();
        let queries = clustered(200, d, 99);
        let r = recall(&mut v, &queries);
        assert!(r >= 0.98, "int8 recall@10 {r}");
        // Scores returned are exact, so the best hit is the exact best hit.
        let q = &queries[..d];
        v.set_search(VectorSearch::Exact);
        let e = v.search(q, 10).unwrap();
        v.set_search(VectorSearch::Int8);
        let a = v.search(q, 10).unwrap();
        assert_eq!(e[0], a[0]);
        // Auto picks a fast path only from AUTO_BITS_MIN vectors.
        v.set_search(VectorSearch::Auto);
        assert_eq!(v.resolved_search(), VectorSearch::Exact);
        let mut big = FlatVectors::in_memory(4);
        let m = AUTO_BITS_MIN;
        big.append(&(0..m as u64).collect::<Vec<_>>(), &clustered(m, 4, 5))
            .unwrap();
        assert_eq!(big.resolved_search(), VectorSearch::Bits);
    }

    /// A store at `p` (searching with `mode`) holding ids `0..n` of
    /// `data`, then ids 0..100 updated to the vectors of `n..n + 100` and
    /// ids 100..400 deleted durably; with the ids left.
    pub(super) fn updated_and_deleted(
        p: &Path,
        n: usize,
        data: &[f32],
        mode: VectorSearch,
    ) -> (FlatVectors, HashSet<u64>) {
        let d = data.len() / (n + 400);
        let mut live: HashSet<u64> = (0..n as u64).collect();
        let mut v = FlatVectors::load_with(p, Some(d), &live, mode).unwrap();
        v.append(&(0..n as u64).collect::<Vec<_>>(), &data[..n * d])
            .unwrap();
        v.append(
            &(0..100u64).collect::<Vec<_>>(),
            &data[n * d..(n + 100) * d],
        )
        .unwrap();
        v.remove(&(100..400u64).collect::<Vec<_>>());
        v.rewrite().unwrap();
        for id in 100..400 {
            live.remove(&id);
        }
        (v, live)
    }

    /// Int8 results of `v` equal those of an index loaded afresh from the
    /// same file (codes rebuilt from the stored vectors).
    fn agrees_with_fresh_load(v: &mut FlatVectors, p: &Path, live: &HashSet<u64>) {
        let mut fresh = FlatVectors::load(p, Some(v.dim()), live).unwrap();
        fresh.set_search(VectorSearch::Int8);
        v.set_search(VectorSearch::Int8);
        assert_eq!(fresh.len(), v.len());
        for q in clustered(30, v.dim(), 1234).chunks_exact(v.dim()) {
            assert_eq!(
                ids_of(&fresh.search(q, 10).unwrap()),
                ids_of(&v.search(q, 10).unwrap())
            );
        }
    }

    #[test]
    fn int8_index_follows_inserts_updates_deletes_and_survives_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f16");
        let (n, d) = (3000, 32);
        let data = clustered(n + 400, d, 3);
        let (mut v, mut live) = updated_and_deleted(&p, n, &data, VectorSearch::Auto);
        agrees_with_fresh_load(&mut v, &p, &live);
        // An updated vector is found by int8 search under its new value.
        let q = &data[n * d..(n + 1) * d];
        v.set_search(VectorSearch::Int8);
        assert_eq!(v.search(q, 1).unwrap()[0].0, 0);
        // A deleted id is never returned.
        let gone = &data[200 * d..201 * d];
        assert!(!ids_of(&v.search(gone, 50).unwrap()).contains(&200));
        let r = recall(&mut v, &clustered(100, d, 77));
        assert!(r >= 0.98, "int8 recall@10 after updates {r}");

        // Crash 1: a batch is written but SQLite never recorded it (ids
        // 5000.. are not live): reloading ignores it.
        let extra: Vec<f32> = data[(n + 100) * d..(n + 200) * d].to_vec();
        let mut w = FlatVectors::load(&p, Some(d), &live).unwrap();
        w.append(&(5000..5100u64).collect::<Vec<_>>(), &extra)
            .unwrap();
        drop(w);
        // Crash 2: the process dies inside the next write, leaving a torn
        // record at the end of the file.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&4242u64.to_le_bytes()).unwrap();
        f.write_all(&[0x3c; 11]).unwrap();
        drop(f);
        let mut after = FlatVectors::load(&p, Some(d), &live).unwrap();
        assert_eq!(after.len(), live.len());
        assert!(!after.contains(5000) && !after.contains(4242));
        after.set_search(VectorSearch::Int8);
        // Its answers are those of the index before the crash.
        for q in clustered(30, d, 4321).chunks_exact(d) {
            assert_eq!(
                ids_of(&after.search(q, 10).unwrap()),
                ids_of(&v.search(q, 10).unwrap())
            );
        }
        // A restart after the work is recorded (ids 5000.. live) sees it.
        live.extend(5000..5100u64);
        let mut later = FlatVectors::load(&p, Some(d), &live).unwrap();
        later.set_search(VectorSearch::Int8);
        assert_eq!(
            later.search(&extra[..d], 1).unwrap()[0].0,
            5000,
            "a recorded vector is searchable after the restart"
        );
    }

    #[test]
    fn parallel_search_matches_sequential() {
        let d = 16;
        let n = BLOCK * 2 + 17;
        let mut v = FlatVectors::in_memory(d);
        let mut x = 1u64;
        let mut data = Vec::with_capacity(n * d);
        for _ in 0..n * d {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.push(((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5);
        }
        let ids: Vec<u64> = (0..n as u64).collect();
        v.append(&ids, &data).unwrap();
        let q: Vec<f32> = data[5 * d..6 * d].to_vec();
        let hits = v.search(&q, 5).unwrap();
        let mut brute: Vec<(f32, u64)> = (0..n)
            .map(|i| (dot(&q, &v.get(i as u64).unwrap()), i as u64))
            .collect();
        top_k(&mut brute, 5);
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            brute.iter().map(|h| h.1).collect::<Vec<_>>()
        );
    }
}

#[cfg(test)]
mod graph_tests {
    use super::tests::{clustered_with, ids_of, unit, updated_and_deleted};
    use super::*;

    /// `n` unit vectors around 200 random centres, seeded.
    fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        clustered_with(n, dim, seed, 200, 0.5, 7)
    }

    /// `n` unit vectors shaped like sentence embeddings: a 24-dimensional
    /// latent point (a mixture of 50 topics) mapped into `dim` dimensions
    /// by a fixed random matrix, plus a common offset (embedders put every
    /// vector in a narrow cone) and a little noise. Seeded.
    fn embedding_like(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut fixed = 4242u64;
        let rnd = |x: &mut u64| {
            *x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let latent = 24;
        let map: Vec<f32> = (0..latent * dim).map(|_| rnd(&mut fixed)).collect();
        let offset: Vec<f32> = (0..dim).map(|_| rnd(&mut fixed) * 2.0).collect();
        let topics: Vec<Vec<f32>> = (0..50)
            .map(|_| (0..latent).map(|_| rnd(&mut fixed)).collect())
            .collect();
        let mut x = seed;
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let t = &topics[((rnd(&mut x) + 0.5) * 49.99) as usize];
            let z: Vec<f32> = t.iter().map(|m| m + 0.6 * rnd(&mut x)).collect();
            let v: Vec<f32> = (0..dim)
                .map(|j| {
                    let mut s = offset[j] + 0.02 * rnd(&mut x);
                    for (i, zi) in z.iter().enumerate() {
                        s += zi * map[i * dim + j];
                    }
                    s
                })
                .collect();
            out.extend(unit(&v));
        }
        out
    }

    /// Recall@k of graph search against exact search.
    fn recall(v: &mut FlatVectors, queries: &[f32], k: usize) -> f64 {
        let d = v.dim();
        let mut sum = 0.0;
        for q in queries.chunks_exact(d) {
            let truth = ids_of(&v.search_exact(q, k));
            let got = ids_of(&v.search(q, k).unwrap());
            assert_eq!(got.len(), truth.len());
            sum += truth.iter().filter(|t| got.contains(t)).count() as f64 / k as f64;
        }
        sum / (queries.len() / d) as f64
    }

    fn answers(v: &FlatVectors, queries: &[f32]) -> Vec<Vec<u64>> {
        queries
            .chunks_exact(v.dim())
            .map(|q| ids_of(&v.search(q, 10).unwrap()))
            .collect()
    }

    #[test]
    fn graph_search_recalls_exact_search_and_auto_picks_it_by_size() {
        let (n, d) = (12_000, 48);
        let mut v = FlatVectors::in_memory(d);
        v.append(&(0..n as u64).collect::<Vec<_>>(), &clustered(n, d, 11))
            .unwrap();
        assert!(!v.has_graph());
        v.set_search(VectorSearch::Hnsw);
        assert!(v.has_graph());
        let queries = clustered(300, d, 99);
        for k in [10, 50] {
            let r = recall(&mut v, &queries, k);
            assert!(r >= 0.98, "graph recall@{k} {r}");
        }
        // Auto: exact, then sign bits, by size; the graph only when asked.
        assert_eq!(
            VectorSearch::Auto.resolve(AUTO_BITS_MIN - 1),
            VectorSearch::Exact
        );
        assert_eq!(
            VectorSearch::Auto.resolve(AUTO_BITS_MIN),
            VectorSearch::Bits
        );
        assert_eq!(VectorSearch::Auto.resolve(usize::MAX), VectorSearch::Bits);
        let mut big = FlatVectors::in_memory(8);
        big.set_search(VectorSearch::Hnsw);
        big.append(&(0..3000).collect::<Vec<_>>(), &clustered(3000, 8, 5))
            .unwrap();
        assert!(big.has_graph(), "asking for the graph builds it");
    }

    /// Sign bits, then int8, then exact: recall against exact search on
    /// every size, through appends, updates and deletes (the bits follow
    /// the rows), and the centre follows the data as the store grows. The
    /// data is embedding-shaped: on uniformly noisy clusters (`clustered`,
    /// no low-dimensional structure) a 2,000-row shortlist of 20,000
    /// recalled 0.92 of the top ten.
    #[test]
    fn bits_search_recalls_exact_search() {
        let d = 384;
        let data = embedding_like(60_000, d, 17);
        let mut v = FlatVectors::in_memory(d);
        v.set_search(VectorSearch::Bits);
        let queries = embedding_like(200, d, 98);
        for (from, to) in [(0usize, 5000usize), (5000, 20_000), (20_000, 60_000)] {
            v.append(
                &(from as u64..to as u64).collect::<Vec<_>>(),
                &data[from * d..to * d],
            )
            .unwrap();
            assert_eq!(v.centred_at, to, "centred as the store doubled");
            for k in [10, 50] {
                let r = recall(&mut v, &queries, k);
                assert!(r >= 0.98, "bits recall@{k} at {to}: {r}");
            }
        }
        // Updates and deletes (swap-removes move rows and their bits).
        v.append(
            &(0..500u64).collect::<Vec<_>>(),
            &data[50_000 * d..50_500 * d],
        )
        .unwrap();
        v.remove(&(1000..9000u64).collect::<Vec<_>>());
        assert!(recall(&mut v, &queries, 10) >= 0.98);
        let q = &data[50_100 * d..50_101 * d];
        let top = ids_of(&v.search(q, 2).unwrap());
        assert!(top.contains(&100) && top.contains(&50_100), "{top:?}");
        assert!(!ids_of(&v.search(&data[1500 * d..1501 * d], 50).unwrap()).contains(&1500));
    }

    #[test]
    fn graph_follows_updates_and_deletes_and_reloads_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f16");
        let (n, d) = (6000, 32);
        let data = clustered(n + 400, d, 3);
        // Deleted rows become waypoints of the graph.
        let (mut v, live) = updated_and_deleted(&p, n, &data, VectorSearch::Hnsw);
        assert!(v.has_graph());
        v.save_index().unwrap();
        assert_eq!(v.len(), live.len());
        assert!(v.dead > 0, "deleted rows stay as waypoints");
        let q = &data[n * d..(n + 1) * d];
        assert_eq!(v.search(q, 1).unwrap()[0].0, 0, "an update is found");
        let gone = &data[200 * d..201 * d];
        assert!(!ids_of(&v.search(gone, 50).unwrap()).contains(&200));
        let queries = clustered(200, d, 77);
        assert!(recall(&mut v, &queries, 10) >= 0.98);
        // Reloading adopts the written graph: the same answers.
        let before = answers(&v, &queries);
        let mut back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        assert!(
            back.graph_loaded && !back.graph_dirty,
            "graph adopted, not rebuilt"
        );
        assert_eq!(back.dead, v.dead);
        assert_eq!(answers(&back, &queries), before);
        // Deleting past a quarter of the rows compacts and rebuilds.
        back.remove(&(400..2500u64).collect::<Vec<_>>());
        assert_eq!(back.dead, 0);
        assert!(back.has_graph());
        assert!(recall(&mut back, &queries, 10) >= 0.98);
    }

    /// The graph file is derived data: any mismatch with the vectors (a
    /// crash between writing the two, a damaged file) is detected on load,
    /// and the store answers as a freshly built one would.
    #[test]
    fn a_graph_that_does_not_match_the_vectors_is_extended_or_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f16");
        let gp = p.with_extension("hnsw");
        let (n, d) = (4000, 32);
        let data = clustered(n + 500, d, 8);
        let mut live: HashSet<u64> = (0..n as u64).collect();
        let queries = clustered(100, d, 5);
        let mut v = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        v.append(&(0..n as u64).collect::<Vec<_>>(), &data[..n * d])
            .unwrap();
        v.save_index().unwrap();
        let saved = std::fs::read(&gp).unwrap();
        // Crash 1: more vectors recorded, the graph not written again.
        v.append(
            &(n as u64..n as u64 + 500).collect::<Vec<_>>(),
            &data[n * d..],
        )
        .unwrap();
        live.extend(n as u64..n as u64 + 500);
        let expect = answers(&v, &queries);
        let back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        assert!(back.graph_loaded);
        assert_eq!(back.len(), n + 500);
        assert_eq!(
            answers(&back, &queries),
            expect,
            "the old graph is extended to the same graph"
        );
        // Crash 2: a torn temporary file beside it is ignored.
        std::fs::write(p.with_extension("hnsw.tmp"), &saved[..saved.len() / 3]).unwrap();
        let back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        assert!(back.graph_loaded);
        assert_eq!(answers(&back, &queries), expect);
        // A damaged graph file (one flipped byte, or cut short) is rebuilt.
        for damage in 0..2 {
            let mut bad = saved.clone();
            if damage == 0 {
                // The low byte of the last node's last link (the checksum is
                // the final 8 bytes): the link now names another valid node,
                // which only the checksum can tell.
                let at = bad.len() - 12;
                bad[at] ^= 0x01;
            } else {
                bad.truncate(bad.len() - 100);
            }
            std::fs::write(&gp, &bad).unwrap();
            let mut back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
            assert!(back.has_graph() && !back.graph_loaded, "rebuilt");
            assert_eq!(back.len(), n + 500);
            assert!(recall(&mut back, &queries, 10) >= 0.98);
        }
        // A vector changed after the graph was written (same id, a new
        // value; the graph names the old one by its hash): rebuilt.
        std::fs::write(&gp, &saved).unwrap();
        let fresh = clustered(1, d, 12345);
        let mut w = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Exact).unwrap();
        w.append(&[3000], &fresh).unwrap();
        drop(w);
        let back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        assert!(back.has_graph() && !back.graph_loaded, "rebuilt");
        assert_eq!(back.search(&fresh, 1).unwrap()[0].0, 3000);
        // Vectors deleted after the graph was written: rebuilt, and a
        // deleted chunk is never returned.
        std::fs::write(&gp, &saved).unwrap();
        let mut w = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        w.remove(&(0..50u64).collect::<Vec<_>>());
        w.rewrite().unwrap();
        drop(w);
        std::fs::write(&gp, &saved).unwrap();
        for id in 0..50 {
            live.remove(&id);
        }
        let mut back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        assert!(back.has_graph() && !back.graph_loaded, "rebuilt");
        assert_eq!(back.len(), live.len());
        let q = &data[..d];
        assert!(!ids_of(&back.search(q, 20).unwrap()).contains(&0));
        assert!(recall(&mut back, &queries, 10) >= 0.98);
    }

    /// A process killed while writing the graph (ANECTX_FAILPOINT) leaves a
    /// store that loads and answers as before. The child is this test
    /// binary, run again with the failpoint set.
    #[test]
    fn killed_while_writing_the_graph() {
        let d = 24;
        let n = 3000;
        let data = clustered(n + 300, d, 21);
        if let Ok(dir) = std::env::var("ANECTX_TEST_GRAPH_CHILD") {
            let p = Path::new(&dir).join("v.f16");
            let live: HashSet<u64> = (0..n as u64).collect();
            let mut v = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
            v.append(
                &(n as u64..n as u64 + 300).collect::<Vec<_>>(),
                &data[n * d..],
            )
            .unwrap();
            v.save_index().unwrap();
            unreachable!("the failpoint aborts");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f16");
        let mut live: HashSet<u64> = (0..n as u64).collect();
        let mut v = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        v.append(&(0..n as u64).collect::<Vec<_>>(), &data[..n * d])
            .unwrap();
        v.save_index().unwrap();
        let saved = std::fs::read(p.with_extension("hnsw")).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "vectors::graph_tests::killed_while_writing_the_graph",
                "--nocapture",
            ])
            .env("ANECTX_TEST_GRAPH_CHILD", dir.path())
            .env("ANECTX_FAILPOINT", "hnsw-mid-write")
            .output()
            .unwrap();
        assert!(!out.status.success(), "the child must die at the failpoint");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("hnsw-mid-write: aborting"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(p.with_extension("hnsw")).unwrap(), saved);
        assert!(
            p.with_extension("hnsw.tmp").exists(),
            "a torn temporary file"
        );
        // The child's vectors reached the file; SQLite recorded them or not.
        for recorded in [false, true] {
            if recorded {
                live.extend(n as u64..n as u64 + 300);
            }
            let mut back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
            assert_eq!(back.len(), live.len());
            assert!(back.graph_loaded, "the last whole graph is used");
            assert!(recall(&mut back, &clustered(100, d, 2), 10) >= 0.98);
            let q = &data[(n + 10) * d..(n + 11) * d];
            let top = back.search(q, 1).unwrap()[0].0;
            assert_eq!(top == n as u64 + 10, recorded, "top {top}");
        }
        // A later write replaces the torn file.
        let mut back = FlatVectors::load_with(&p, Some(d), &live, VectorSearch::Hnsw).unwrap();
        back.graph_dirty = true;
        back.save_index().unwrap();
        assert!(!p.with_extension("hnsw.tmp").exists());
    }
}
