//! Chunk embeddings: f16 on disk, f32 in memory, exact search.
//!
//! File layout (`vectors.f16`): a 16-byte header (`ANXVEC01`, dimension as
//! u32 LE, 4 reserved bytes) followed by records of `chunk id (u64 LE)` and
//! `dim` f16 values (LE). Appends are fsync'd per batch; a torn tail from a
//! crash is cut off on load. Later records for the same id win, and records
//! whose chunk SQLite does not list as embedded are ignored, so a crash
//! between writing vectors and recording them only costs re-embedding.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use half::f16;
use rayon::prelude::*;

use crate::{Result, StoreError};

const MAGIC: &[u8; 8] = b"ANXVEC01";
const HEADER: usize = 16;
/// Rows per parallel block in exact search.
const BLOCK: usize = 4096;

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
    /// The stored vector of a chunk.
    fn get(&self, id: u64) -> Option<&[f32]>;
}

/// How [`FlatVectors::search`] finds the nearest vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorSearch {
    /// Chosen by the number of vectors.
    #[default]
    Auto,
    /// Exact inner products over every f32 vector.
    Exact,
    /// A scan of int8 codes (one scale per vector) that shortlists
    /// [`int8_shortlist`] candidates, re-scored exactly in f32.
    Int8,
}

/// From this many vectors [`VectorSearch::Auto`] runs [`VectorSearch::Int8`].
pub const AUTO_INT8_MIN: usize = 20_000;

/// Candidates the int8 scan keeps for exact re-scoring when `k` are asked.
pub fn int8_shortlist(k: usize) -> usize {
    (4 * k).max(k + 100)
}

impl VectorSearch {
    pub const ALL: [VectorSearch; 3] = [Self::Auto, Self::Exact, Self::Int8];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Exact => "exact",
            Self::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// Exact (brute-force) vector store.
#[derive(Debug)]
pub struct FlatVectors {
    path: PathBuf,
    dim: usize,
    ids: Vec<u64>,
    data: Vec<f32>,
    rows: HashMap<u64, usize>,
    /// Int8 codes of every row (row-major, like `data`), derived from the
    /// stored vectors and kept in step with them; never written to disk.
    codes: Vec<i8>,
    /// Per-row scale: row ≈ codes × scale.
    scales: Vec<f32>,
    search: VectorSearch,
}

fn vec_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Vectors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl FlatVectors {
    /// Loads the vectors of `live` chunks from `path` (missing file: empty).
    /// `dim` is the dimension SQLite records for the store's embedder.
    pub fn load(path: &Path, dim: Option<usize>, live: &HashSet<u64>) -> Result<Self> {
        let mut me = Self {
            path: path.to_path_buf(),
            dim: dim.unwrap_or(0),
            ids: Vec::new(),
            data: Vec::new(),
            rows: HashMap::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            search: VectorSearch::Auto,
        };
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(me),
            Err(e) => return Err(StoreError::io(path, e)),
        }
        if bytes.len() < HEADER {
            // A crash while writing the header: nothing was recorded yet.
            std::fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
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
        if whole != body.len() {
            tracing::warn!(
                path = %path.display(),
                "cutting a torn record off the vector file (interrupted run)"
            );
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io(path, e))?;
            f.set_len((HEADER + whole) as u64)
                .map_err(|e| StoreError::io(path, e))?;
        }
        let mut row = vec![0f32; me.dim];
        for r in body[..whole].chunks_exact(rec) {
            let id = u64::from_le_bytes(r[..8].try_into().map_err(|_| vec_err(path, "short id"))?);
            if !live.contains(&id) {
                continue;
            }
            for (o, b) in row.iter_mut().zip(r[8..].chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
            me.upsert_mem(id, &row);
        }
        // Growth by doubling can leave up to half of each buffer unused.
        me.data.shrink_to_fit();
        me.codes.shrink_to_fit();
        me.scales.shrink_to_fit();
        me.ids.shrink_to_fit();
        me.rows.shrink_to_fit();
        Ok(me)
    }

    /// An in-memory store not backed by a file (tests, benches).
    pub fn in_memory(dim: usize) -> Self {
        Self {
            path: PathBuf::new(),
            dim,
            ids: Vec::new(),
            data: Vec::new(),
            rows: HashMap::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            search: VectorSearch::Auto,
        }
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

    /// Sets how searches run (kept across appends and removals).
    pub fn set_search(&mut self, search: VectorSearch) {
        self.search = search;
    }

    /// The search asked for.
    pub fn search_mode(&self) -> VectorSearch {
        self.search
    }

    /// The search that runs at the current size ([`VectorSearch::Auto`] resolved).
    pub fn resolved_search(&self) -> VectorSearch {
        match self.search {
            VectorSearch::Auto if self.ids.len() >= AUTO_INT8_MIN => VectorSearch::Int8,
            VectorSearch::Auto => VectorSearch::Exact,
            s => s,
        }
    }

    /// Bytes held in memory for the vectors and their lookup tables
    /// (approximate: the hash map counts its capacity at 16 bytes a slot
    /// plus one control byte).
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity() * 4
            + self.ids.capacity() * 8
            + self.rows.capacity() * 17
            + self.codes.capacity()
            + self.scales.capacity() * 4
    }

    pub fn contains(&self, id: u64) -> bool {
        self.rows.contains_key(&id)
    }

    fn upsert_mem(&mut self, id: u64, v: &[f32]) {
        let d = self.dim;
        let r = match self.rows.get(&id) {
            Some(&r) => {
                self.data[r * d..(r + 1) * d].copy_from_slice(v);
                r
            }
            None => {
                let r = self.ids.len();
                self.rows.insert(id, r);
                self.ids.push(id);
                self.data.extend_from_slice(v);
                self.codes.resize((r + 1) * d, 0);
                self.scales.push(0.0);
                r
            }
        };
        self.scales[r] = quantize(v, &mut self.codes[r * d..(r + 1) * d]);
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
        let mut buf = Vec::with_capacity(ids.len() * (8 + 2 * self.dim) + HEADER);
        let fresh = !self.path.as_os_str().is_empty()
            && std::fs::metadata(&self.path)
                .map(|m| m.len() == 0)
                .unwrap_or(true);
        if fresh {
            buf.extend_from_slice(MAGIC);
            buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
            buf.extend_from_slice(&[0u8; 4]);
        }
        let mut rounded = vec![0f32; self.dim];
        for (id, v) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            buf.extend_from_slice(&id.to_le_bytes());
            for (r, x) in rounded.iter_mut().zip(v) {
                let h = f16::from_f32(*x);
                *r = h.to_f32();
                buf.extend_from_slice(&h.to_bits().to_le_bytes());
            }
            self.upsert_mem(*id, &rounded);
        }
        if !self.path.as_os_str().is_empty() {
            let mut f = crate::private::private_file_options()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| StoreError::io(&self.path, e))?;
            f.write_all(&buf)
                .map_err(|e| StoreError::io(&self.path, e))?;
            f.sync_data().map_err(|e| StoreError::io(&self.path, e))?;
        }
        Ok(())
    }

    /// Removes ids from memory; [`FlatVectors::rewrite`] makes it durable.
    pub fn remove(&mut self, ids: &[u64]) {
        let d = self.dim;
        for id in ids {
            if let Some(r) = self.rows.remove(id) {
                let last = self.ids.len() - 1;
                if r != last {
                    let moved = self.ids[last];
                    self.ids[r] = moved;
                    self.data.copy_within(last * d..(last + 1) * d, r * d);
                    self.codes.copy_within(last * d..(last + 1) * d, r * d);
                    self.scales[r] = self.scales[last];
                    self.rows.insert(moved, r);
                }
                self.ids.pop();
                self.data.truncate(last * d);
                self.codes.truncate(last * d);
                self.scales.pop();
            }
        }
    }

    /// Rewrites the file from memory (compaction), atomically via rename.
    pub fn rewrite(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let tmp = self.path.with_extension("f16.tmp");
        let mut buf = Vec::with_capacity(HEADER + self.ids.len() * (8 + 2 * self.dim));
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
        buf.extend_from_slice(&[0u8; 4]);
        for (id, v) in self.ids.iter().zip(self.data.chunks_exact(self.dim.max(1))) {
            buf.extend_from_slice(&id.to_le_bytes());
            for x in v {
                buf.extend_from_slice(&f16::from_f32(*x).to_bits().to_le_bytes());
            }
        }
        let mut f = crate::private::private_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(&buf).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| StoreError::io(&self.path, e))?;
        Ok(())
    }
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
        self.ids.len()
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        if query.len() != self.dim {
            return Err(StoreError::Dimension {
                got: query.len(),
                want: self.dim,
            });
        }
        if k == 0 || self.ids.is_empty() {
            return Ok(Vec::new());
        }
        match self.resolved_search() {
            VectorSearch::Int8 => Ok(self.search_int8(query, k)),
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
        let d = self.dim;
        let rows: Vec<(u64, usize)> = allowed
            .iter()
            .filter_map(|id| self.rows.get(id).map(|&r| (*id, r)))
            .collect();
        let score = |&(id, r): &(u64, usize)| (dot(query, &self.data[r * d..(r + 1) * d]), id);
        let mut all: Vec<(f32, u64)> = if rows.len() > BLOCK {
            rows.par_iter().map(score).collect()
        } else {
            rows.iter().map(score).collect()
        };
        top_k(&mut all, k);
        Ok(all.into_iter().map(|(s, id)| (id, s)).collect())
    }

    fn get(&self, id: u64) -> Option<&[f32]> {
        self.rows
            .get(&id)
            .map(|&r| &self.data[r * self.dim..(r + 1) * self.dim])
    }
}

impl FlatVectors {
    /// Int8 scan for a shortlist, then exact f32 scores of the shortlist.
    fn search_int8(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let d = self.dim;
        let n = self.ids.len();
        let short = int8_shortlist(k);
        let mut q8 = vec![0i8; d];
        if quantize(query, &mut q8) == 0.0 || short >= n {
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
        let mut exact: Vec<(f32, u64)> = all
            .into_iter()
            .map(|(_, r)| {
                let r = r as usize;
                (dot(query, &self.data[r * d..(r + 1) * d]), self.ids[r])
            })
            .collect();
        top_k(&mut exact, k);
        exact.into_iter().map(|(s, id)| (id, s)).collect()
    }

    /// Exact inner products with every vector.
    fn search_exact(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let d = self.dim;
        let block = |(b, rows): (usize, &[f32])| -> Vec<(f32, u64)> {
            let mut v: Vec<(f32, u64)> = rows
                .chunks_exact(d)
                .enumerate()
                .map(|(i, r)| (dot(query, r), self.ids[b * BLOCK + i]))
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

    fn unit(v: &[f32]) -> Vec<f32> {
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
        let v2 = FlatVectors::load(&p, Some(3), &live).unwrap();
        assert_eq!(v2.len(), 2);
        assert!(!v2.contains(2));
        assert!((v2.get(3).unwrap()[2] - 1.0).abs() < 1e-3);
        assert_eq!(
            std::fs::metadata(&p).unwrap().len() as usize,
            HEADER + 3 * (8 + 6)
        );
        // Wrong recorded dimension is refused.
        assert!(FlatVectors::load(&p, Some(4), &live).is_err());
        // Remove + rewrite compacts.
        let mut v3 = v2;
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
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..40)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c.iter().map(|m| m + 0.35 * next()).collect();
            out.extend(unit(&v));
        }
        out
    }

    fn ids_of(h: &[(u64, f32)]) -> Vec<u64> {
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
        // Auto picks int8 only from AUTO_INT8_MIN vectors.
        v.set_search(VectorSearch::Auto);
        assert_eq!(v.resolved_search(), VectorSearch::Exact);
        let mut big = FlatVectors::in_memory(4);
        let m = AUTO_INT8_MIN;
        big.append(&(0..m as u64).collect::<Vec<_>>(), &clustered(m, 4, 5))
            .unwrap();
        assert_eq!(big.resolved_search(), VectorSearch::Int8);
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
        let mut live: HashSet<u64> = (0..n as u64).collect();
        let mut v = FlatVectors::load(&p, Some(d), &live).unwrap();
        v.append(&(0..n as u64).collect::<Vec<_>>(), &data[..n * d])
            .unwrap();
        // Update: ids 0..100 get the vectors of 3000..3100.
        v.append(
            &(0..100u64).collect::<Vec<_>>(),
            &data[n * d..(n + 100) * d],
        )
        .unwrap();
        // Delete 100..400, durably.
        v.remove(&(100..400u64).collect::<Vec<_>>());
        v.rewrite().unwrap();
        for id in 100..400 {
            live.remove(&id);
        }
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
            .map(|i| (dot(&q, v.get(i as u64).unwrap()), i as u64))
            .collect();
        top_k(&mut brute, 5);
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            brute.iter().map(|h| h.1).collect::<Vec<_>>()
        );
    }
}
