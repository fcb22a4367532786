//! Chunk postings in tantivy, scored with BM25 computed here.
//!
//! tantivy's built-in scorer fixes `k1 = 1.2, b = 0.75`. To make both
//! configurable (and match the Lucene/Anserini defaults `k1 = 0.9, b = 0.4`)
//! the score is computed from tantivy's postings (term frequencies), document
//! frequencies and field norms (document lengths, 1-byte quantised as in
//! Lucene). The analyzer is tantivy's `default` (split on non-alphanumerics,
//! lower-case, drop tokens over 40 bytes): no stemming, no stop words.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::Postings;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, TERMINATED,
};

use crate::{Result, StoreError};

const CHUNK_ID: &str = "chunk_id";
const TEXT: &str = "text";
const WRITER_HEAP: usize = 64 << 20;

/// BM25 parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25Params {
    /// Lucene/Anserini defaults: `k1 = 0.9`, `b = 0.4`.
    fn default() -> Self {
        Self { k1: 0.9, b: 0.4 }
    }
}

/// The tantivy index of chunk texts.
pub struct LexicalIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    chunk_id: Field,
    text: Field,
    analyzer: TextAnalyzer,
}

impl LexicalIndex {
    /// Opens or creates the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        crate::private::create_private_dir(dir)?;
        let mut sb = Schema::builder();
        let chunk_id = sb.add_u64_field(CHUNK_ID, INDEXED | FAST);
        let text_opts = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let text = sb.add_text_field(TEXT, text_opts);
        let schema = sb.build();
        let mmap = MmapDirectory::open(dir).map_err(|e| {
            StoreError::Invalid(format!(
                "opening the lexical index in {}: {e}",
                dir.display()
            ))
        })?;
        let index = Index::open_or_create(mmap, schema.clone())?;
        if index.schema() != schema {
            return Err(StoreError::Invalid(format!(
                "the lexical index in {} has an unexpected schema",
                dir.display()
            )));
        }
        let analyzer = index.tokenizer_for_field(text)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            reader,
            writer: Mutex::new(None),
            chunk_id,
            text,
            analyzer,
        })
    }

    /// Calls `f` with each token of `text` as the index sees it, without
    /// collecting them (no allocation per token).
    pub fn for_each_token(&self, text: &str, mut f: impl FnMut(&str)) {
        let mut a = self.analyzer.clone();
        let mut stream = a.token_stream(text);
        while stream.advance() {
            f(&stream.token().text);
        }
    }

    /// Tokens of `text` as the index sees them.
    pub fn analyze(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_token(text, |t| out.push(t.to_string()));
        out
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let w = self
                .index
                .writer_with_num_threads(1, WRITER_HEAP)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => StoreError::Invalid(
                        "another anectx process is writing to this store; wait for it to finish"
                            .into(),
                    ),
                    e => e.into(),
                })?;
            *guard = Some(w);
        }
        let w = guard
            .as_mut()
            .ok_or_else(|| StoreError::Invalid("no writer".into()))?;
        f(w)
    }

    /// Queues `(chunk_id, text)` pairs, replacing any entry with the same id.
    pub fn add(&self, chunks: &[(u64, String)]) -> Result<()> {
        self.with_writer(|w| {
            for (id, text) in chunks {
                w.delete_term(Term::from_field_u64(self.chunk_id, *id));
                let mut doc = TantivyDocument::default();
                doc.add_u64(self.chunk_id, *id);
                doc.add_text(self.text, text);
                w.add_document(doc)?;
            }
            Ok(())
        })
    }

    /// Queues deletion of chunk ids.
    pub fn delete(&self, ids: &[u64]) -> Result<()> {
        self.with_writer(|w| {
            for id in ids {
                w.delete_term(Term::from_field_u64(self.chunk_id, *id));
            }
            Ok(())
        })
    }

    /// Makes queued changes durable and visible.
    pub fn commit(&self) -> Result<()> {
        self.with_writer(|w| {
            w.commit()?;
            Ok(())
        })?;
        // New segment files get the process umask: make them owner-only.
        crate::private::tighten(&self.dir)?;
        self.reload()
    }

    /// Picks up commits made by other processes.
    pub fn reload(&self) -> Result<()> {
        Ok(self.reader.reload()?)
    }

    /// Releases the writer (and its directory lock).
    pub fn close_writer(&self) {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }

    /// Live (not deleted) chunks in the index.
    pub fn num_docs(&self) -> Result<u64> {
        Ok(self.reader.searcher().num_docs())
    }

    /// BM25 top `k` chunks for `query`: `(chunk_id, score)`, best first.
    /// Query terms repeated in the query count once per occurrence.
    pub fn search(&self, query: &str, k: usize, params: Bm25Params) -> Result<Vec<(u64, f32)>> {
        self.search_in(query, k, params, None)
    }

    /// [`LexicalIndex::search`] among the chunks in `allowed` only (all
    /// chunks when `None`): the top `k` of the allowed chunks, not the
    /// allowed part of the overall top `k`. Scores (IDF, length norms) are
    /// those of the whole index.
    pub fn search_in(
        &self,
        query: &str,
        k: usize,
        params: Bm25Params,
        allowed: Option<&std::collections::HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        let mut qtf: HashMap<String, f32> = HashMap::new();
        for t in self.analyze(query) {
            *qtf.entry(t).or_default() += 1.0;
        }
        if qtf.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let segments = searcher.segment_readers();
        let mut n_docs = 0u64;
        let mut total_tokens = 0u64;
        for seg in segments {
            n_docs += u64::from(seg.max_doc());
            total_tokens += seg.inverted_index(self.text)?.total_num_tokens();
        }
        if n_docs == 0 {
            return Ok(Vec::new());
        }
        let avgdl = (total_tokens as f32 / n_docs as f32).max(1.0);
        let terms: Vec<(Term, f32, f32)> = qtf
            .into_iter()
            .filter_map(|(t, w)| {
                let term = Term::from_field_text(self.text, &t);
                let df = searcher.doc_freq(&term).ok()?;
                if df == 0 {
                    return None;
                }
                let idf = (1.0 + (n_docs as f32 - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
                Some((term, idf, w))
            })
            .collect();
        // Length normalisation per quantised field norm.
        let mut norm = [0f32; 256];
        for (id, n) in norm.iter_mut().enumerate() {
            let dl = FieldNormReader::id_to_fieldnorm(id as u8) as f32;
            *n = params.k1 * (1.0 - params.b + params.b * dl / avgdl);
        }
        let mut hits: Vec<(f32, u64)> = Vec::new();
        for seg in segments {
            let inv = seg.inverted_index(self.text)?;
            let norms = seg.get_fieldnorms_reader(self.text)?;
            let alive = seg.alive_bitset();
            // A per-thread buffer, cleared through `touched` after use,
            // instead of a fresh zeroed array of every document per query
            // (4 MB at a million chunks).
            let mut scores = SCORES.with(|c| std::mem::take(&mut *c.borrow_mut()));
            if scores.len() < seg.max_doc() as usize {
                scores.resize(seg.max_doc() as usize, 0.0);
            }
            let mut touched: Vec<u32> = Vec::new();
            for (term, idf, w) in &terms {
                let Some(mut post) = inv
                    .read_postings(term, IndexRecordOption::WithFreqs)
                    .map_err(|e| StoreError::Invalid(format!("reading postings: {e}")))?
                else {
                    continue;
                };
                let mut doc = post.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        let tf = post.term_freq() as f32;
                        let n = norm[norms.fieldnorm_id(doc) as usize];
                        let s = &mut scores[doc as usize];
                        if *s == 0.0 {
                            touched.push(doc);
                        }
                        *s += w * idf * tf * (params.k1 + 1.0) / (tf + n);
                    }
                    doc = post.advance();
                }
            }
            let ids = seg.fast_fields().u64(CHUNK_ID)?;
            match allowed {
                None => {
                    let mut local: Vec<(f32, u32)> =
                        touched.iter().map(|&d| (scores[d as usize], d)).collect();
                    top_k(&mut local, k);
                    for (s, d) in local {
                        if let Some(id) = ids.first(d) {
                            hits.push((s, id));
                        }
                    }
                }
                Some(allowed) => {
                    let mut local: Vec<(f32, u64)> = touched
                        .iter()
                        .filter_map(|&d| ids.first(d).map(|id| (scores[d as usize], id)))
                        .filter(|(_, id)| allowed.contains(id))
                        .collect();
                    top_k(&mut local, k);
                    hits.extend(local);
                }
            }
            for &d in &touched {
                scores[d as usize] = 0.0;
            }
            SCORES.with(|c| *c.borrow_mut() = scores);
        }
        top_k(&mut hits, k);
        Ok(hits.into_iter().map(|(s, id)| (id, s)).collect())
    }
}

thread_local! {
    /// BM25 accumulators, one a document, all zero between searches.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps the `k` highest-scoring entries, sorted best first (ties by key).
fn top_k<T: Ord + Copy>(v: &mut Vec<(f32, T)>, k: usize) {
    let cmp = |a: &(f32, T), b: &(f32, T)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if v.len() > k {
        v.select_nth_unstable_by(k, cmp);
        v.truncate(k);
    }
    v.sort_unstable_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_matches_hand_computation() {
        let dir = tempfile::tempdir().unwrap();
        let ix = LexicalIndex::open(dir.path()).unwrap();
        let docs = vec![
            (10u64, "apple banana apple".to_string()),
            (11, "banana cherry".to_string()),
            (12, "cherry durian elderberry fig".to_string()),
        ];
        ix.add(&docs).unwrap();
        ix.commit().unwrap();
        let p = Bm25Params { k1: 0.9, b: 0.4 };
        let hits = ix.search("Apple", 10, p).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0, 10);
        // N = 3, df = 1, tf = 2, dl = 3, avgdl = 9/3.
        let idf = (1.0f32 + (3.0 - 1.0 + 0.5) / 1.5).ln();
        let n = 0.9 * (1.0 - 0.4 + 0.4 * 3.0 / 3.0);
        let want = idf * 2.0 * 1.9 / (2.0 + n);
        assert!((hits[0].1 - want).abs() < 1e-5, "{} vs {want}", hits[0].1);
        // A shorter document with the same tf ranks higher; k is honoured.
        let hits = ix.search("banana cherry", 1, p).unwrap();
        assert_eq!(hits, vec![(11, hits[0].1)]);
        // Deletes and replacements take effect.
        ix.delete(&[11]).unwrap();
        ix.add(&[(10, "kiwi".to_string())]).unwrap();
        ix.commit().unwrap();
        assert_eq!(ix.num_docs().unwrap(), 2);
        assert!(ix.search("banana", 10, p).unwrap().is_empty());
        assert_eq!(ix.search("kiwi", 10, p).unwrap()[0].0, 10);
    }

    /// The top `k` among the allowed chunks, even when every one of them
    /// ranks below `k` others overall.
    #[test]
    fn search_in_ranks_only_the_allowed_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let ix = LexicalIndex::open(dir.path()).unwrap();
        let mut docs: Vec<(u64, String)> = (0..20)
            .map(|i| (i, "apple apple apple".to_string()))
            .collect();
        docs.push((100, "apple and many other words about fruit".to_string()));
        ix.add(&docs).unwrap();
        ix.commit().unwrap();
        let p = Bm25Params::default();
        let top = ix.search("apple", 3, p).unwrap();
        assert!(top.iter().all(|h| h.0 < 20), "{top:?}");
        let allowed = std::collections::HashSet::from([100u64, 7]);
        let hits = ix.search_in("apple", 3, p, Some(&allowed)).unwrap();
        let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![7, 100]);
        assert!(ix
            .search_in("apple", 3, p, Some(&Default::default()))
            .unwrap()
            .is_empty());
    }
}
