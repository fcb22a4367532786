//! The usage memory on disk: a checked, self-describing snapshot.
//!
//! ```text
//! magic     8 bytes   b"ANXMEM\r\n"
//! format    u32 LE    MEMORY_FORMAT
//! checksum  32 bytes  blake3 of the body
//! length    u64 LE    bytes in the body
//! body                analyzer version, embedder id, watermark, config,
//!                     counts, questions (text, terms, used, shown, asks,
//!                     last), question vectors
//! ```
//!
//! Only what the log determines is stored (the questions and their
//! evidence, and the vectors, which are costly to recompute); the "asked
//! as" index is derived again when the file is read, so a file and a fresh
//! build of the same log are the same memory. A file is refused with a
//! [`MemoryFileError`] when it is not a memory file, has another format
//! version, is truncated or longer than it says, fails its checksum, does
//! not decode, or was built with another analyzer version or embedder.

use std::collections::HashMap;

use crate::memory::{MemoryConfig, MemoryStats, Question, UsageMemory};

/// First bytes of every memory file.
pub const MEMORY_MAGIC: &[u8; 8] = b"ANXMEM\r\n";
/// Version of the layout above; a file of another version is refused.
pub const MEMORY_FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 32 + 8;

/// Why a memory file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryFileError {
    #[error("not a usage-memory file (it does not start with the memory magic bytes)")]
    NotAMemoryFile,
    #[error("memory file format {found}, but this build reads format {expected}")]
    Format { found: u32, expected: u32 },
    #[error("truncated memory file: {have} bytes where {want} were written")]
    Truncated { have: u64, want: u64 },
    #[error("memory file has {extra} bytes after its end")]
    TrailingBytes { extra: u64 },
    #[error("memory file checksum {found} does not match its content's {computed}")]
    Checksum { found: String, computed: String },
    #[error("memory file does not decode: {0}")]
    Corrupt(String),
    #[error("memory built with analyzer version {found}, but {expected} labels the log now")]
    Analyzer { found: String, expected: String },
    #[error("memory built with embedder {found}, but the store's embedder is {expected}")]
    Embedder { found: String, expected: String },
}

/// What a memory file says about itself (read before the whole body).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryFileInfo {
    pub analyzer_version: String,
    pub embedder: String,
    pub watermark: i64,
}

struct W(Vec<u8>);

impl W {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MemoryFileError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                MemoryFileError::Corrupt(format!("a field runs past the end at {}", self.at))
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], MemoryFileError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self) -> Result<u32, MemoryFileError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, MemoryFileError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn i64(&mut self) -> Result<i64, MemoryFileError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    fn f32(&mut self) -> Result<f32, MemoryFileError> {
        let v = f32::from_bits(u32::from_le_bytes(self.arr()?));
        if v.is_finite() {
            Ok(v)
        } else {
            Err(MemoryFileError::Corrupt(format!(
                "a non-finite number at {}",
                self.at - 4
            )))
        }
    }
    /// A count of items of at least `min_size` bytes each, checked against
    /// what is left (so a corrupt count cannot allocate wildly).
    fn len(&mut self, min_size: usize) -> Result<usize, MemoryFileError> {
        let n = self.u64()?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min_size.max(1) as u64) > left {
            return Err(MemoryFileError::Corrupt(format!(
                "a count of {n} at {} exceeds the file",
                self.at - 8
            )));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<String, MemoryFileError> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| {
            MemoryFileError::Corrupt(format!("text that is not UTF-8 at {}", self.at - n))
        })
    }
}

fn sorted<K: Copy + Ord, V: Copy>(m: &HashMap<K, V>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = m.iter().map(|(k, v)| (*k, *v)).collect();
    v.sort_by_key(|x| x.0);
    v
}

impl UsageMemory {
    /// The memory as a file (see the module docs), recording `embedder`
    /// (the identity of the model its vectors came from, or `none`).
    /// The same memory always gives the same bytes.
    pub fn to_bytes(&self, embedder: &str) -> Vec<u8> {
        let mut w = W(Vec::new());
        w.str(&self.stats.analyzer_version);
        w.str(embedder);
        w.i64(self.stats.watermark);
        let c = &self.cfg;
        w.u64(c.per_chunk_cap as u64);
        for v in [
            c.used_weight,
            c.feedback_weight,
            c.max_question_weight,
            c.k1,
            c.b,
        ] {
            w.f32(v);
        }
        w.u64(self.stats.interactions);
        w.u64(self.stats.labelled);
        w.u64(self.stats.feedback);
        w.len(self.questions.len());
        for q in &self.questions {
            w.str(&q.text);
            w.len(q.terms.len());
            for t in &q.terms {
                w.str(t);
            }
            let used = sorted(&q.used);
            w.len(used.len());
            for (c, v) in used {
                w.u64(c);
                w.f32(v);
            }
            let shown = sorted(&q.shown);
            w.len(shown.len());
            for (c, n) in shown {
                w.u64(c);
                w.u32(n);
            }
            w.u32(q.asks);
            w.i64(q.last);
        }
        match &self.vectors {
            Some((v, dim)) => {
                w.len(*dim);
                w.len(v.len());
                for &x in v {
                    w.f32(x);
                }
            }
            None => {
                w.len(0);
                w.len(0);
            }
        }
        let body = w.0;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MEMORY_MAGIC);
        out.extend_from_slice(&MEMORY_FORMAT.to_le_bytes());
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a memory file and checks it: magic, format, length, checksum,
    /// content, and that it was built with `analyzer_version` and
    /// `embedder`.
    pub fn from_bytes(
        bytes: &[u8],
        analyzer_version: &str,
        embedder: &str,
    ) -> Result<Self, MemoryFileError> {
        let (info, mut r) = open(bytes)?;
        if info.analyzer_version != analyzer_version {
            return Err(MemoryFileError::Analyzer {
                found: info.analyzer_version,
                expected: analyzer_version.into(),
            });
        }
        if info.embedder != embedder {
            return Err(MemoryFileError::Embedder {
                found: info.embedder,
                expected: embedder.into(),
            });
        }
        let cfg = MemoryConfig {
            per_chunk_cap: r.u64()? as usize,
            used_weight: r.f32()?,
            feedback_weight: r.f32()?,
            max_question_weight: r.f32()?,
            k1: r.f32()?,
            b: r.f32()?,
        };
        let stats = MemoryStats {
            interactions: r.u64()?,
            labelled: r.u64()?,
            feedback: r.u64()?,
            analyzer_version: info.analyzer_version,
            watermark: info.watermark,
            ..MemoryStats::default()
        };
        let n = r.len(8 * 5)?;
        let mut questions = Vec::with_capacity(n);
        for _ in 0..n {
            let text = r.str()?;
            let nt = r.len(8)?;
            let terms = (0..nt).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
            let mut q = Question::new(text, terms);
            let nu = r.len(12)?;
            for _ in 0..nu {
                let c = r.u64()?;
                q.used.insert(c, r.f32()?);
            }
            let ns = r.len(12)?;
            for _ in 0..ns {
                let c = r.u64()?;
                q.shown.insert(c, r.u32()?);
            }
            q.asks = r.u32()?;
            q.last = r.i64()?;
            questions.push(q);
        }
        let dim = r.u64()? as usize;
        let nv = r.len(4)?;
        let mut v = Vec::with_capacity(nv);
        for _ in 0..nv {
            v.push(r.f32()?);
        }
        if r.at != r.b.len() {
            return Err(MemoryFileError::Corrupt(format!(
                "{} bytes left after the last field",
                r.b.len() - r.at
            )));
        }
        let vectors = match (dim, nv) {
            (0, 0) => None,
            (d, n) if d > 0 && n == d * questions.len() => Some((v, d)),
            (d, n) => {
                return Err(MemoryFileError::Corrupt(format!(
                    "{n} vector values for {} questions of {d} dimensions",
                    questions.len()
                )))
            }
        };
        // Nothing to embed: the vectors cover every question.
        UsageMemory::assemble(questions, vectors, &cfg, stats, None)
            .map_err(|e| MemoryFileError::Corrupt(e.to_string()))
    }
}

/// Checks a memory file's header, length and checksum; returns what it
/// says about itself and a reader at its configuration.
fn open(bytes: &[u8]) -> Result<(MemoryFileInfo, R<'_>), MemoryFileError> {
    if bytes.len() < MEMORY_MAGIC.len() || &bytes[..MEMORY_MAGIC.len()] != MEMORY_MAGIC {
        return Err(MemoryFileError::NotAMemoryFile);
    }
    if bytes.len() < HEADER {
        return Err(MemoryFileError::Truncated {
            have: bytes.len() as u64,
            want: HEADER as u64,
        });
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != MEMORY_FORMAT {
        return Err(MemoryFileError::Format {
            found: format,
            expected: MEMORY_FORMAT,
        });
    }
    let sum = &bytes[12..44];
    let len = u64::from_le_bytes(bytes[44..52].try_into().expect("8 bytes"));
    let body = &bytes[HEADER..];
    let have = body.len() as u64;
    if have < len {
        return Err(MemoryFileError::Truncated {
            have: bytes.len() as u64,
            want: HEADER as u64 + len,
        });
    }
    if have > len {
        return Err(MemoryFileError::TrailingBytes { extra: have - len });
    }
    let computed = blake3::hash(body);
    if computed.as_bytes() != sum {
        let hex = |b: &[u8]| {
            b.iter()
                .take(6)
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        };
        return Err(MemoryFileError::Checksum {
            found: hex(sum),
            computed: hex(computed.as_bytes()),
        });
    }
    let mut r = R { b: body, at: 0 };
    let info = MemoryFileInfo {
        analyzer_version: r.str()?,
        embedder: r.str()?,
        watermark: r.i64()?,
    };
    Ok((info, r))
}

/// What a memory file says about itself, after checking its header, length
/// and checksum (not its analyzer or embedder).
pub fn memory_file_info(bytes: &[u8]) -> Result<MemoryFileInfo, MemoryFileError> {
    open(bytes).map(|x| x.0)
}
