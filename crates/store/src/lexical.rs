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
use tantivy::postings::{Postings, SegmentPostings};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, TERMINATED,
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
    ///
    /// Searches skip work with MaxScore (see [`LexicalIndex::search_pruned`]);
    /// they return the same chunks with the same scores as scoring every
    /// posting.
    pub fn search_in(
        &self,
        query: &str,
        k: usize,
        params: Bm25Params,
        allowed: Option<&std::collections::HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        let Some(q) = self.prepare(query, k, params)? else {
            return Ok(Vec::new());
        };
        // The bounds need non-negative length norms.
        let prunable = params.k1 >= 0.0 && (0.0..=1.0).contains(&params.b);
        if prunable && q.terms.len() <= MAX_PRUNED_TERMS {
            self.search_pruned(&q, k, allowed)
        } else {
            self.search_exhaustive(&q, k, allowed)
        }
    }

    /// The query's terms with their weights, and the length-norm table;
    /// `None` when nothing can match.
    fn prepare(&self, query: &str, k: usize, params: Bm25Params) -> Result<Option<Prepared>> {
        let mut qtf: HashMap<String, f32> = HashMap::new();
        for t in self.analyze(query) {
            *qtf.entry(t).or_default() += 1.0;
        }
        if qtf.is_empty() || k == 0 {
            return Ok(None);
        }
        let searcher = self.reader.searcher();
        let mut n_docs = 0u64;
        let mut total_tokens = 0u64;
        for seg in searcher.segment_readers() {
            n_docs += u64::from(seg.max_doc());
            total_tokens += seg.inverted_index(self.text)?.total_num_tokens();
        }
        if n_docs == 0 {
            return Ok(None);
        }
        let avgdl = (total_tokens as f32 / n_docs as f32).max(1.0);
        let mut terms: Vec<QueryTerm> = qtf
            .into_iter()
            .filter_map(|(t, w)| {
                let term = Term::from_field_text(self.text, &t);
                let df = searcher.doc_freq(&term).ok()?;
                if df == 0 {
                    return None;
                }
                let idf = (1.0 + (n_docs as f32 - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
                let weight = w * idf * (params.k1 + 1.0);
                Some(QueryTerm {
                    term,
                    weight,
                    // tf / (tf + norm) < 1 for any tf when norm ≥ 0; the
                    // margin covers rounding in `term_score`.
                    bound: weight * (1.0 + 1e-5),
                })
            })
            .collect();
        if terms.is_empty() {
            return Ok(None);
        }
        // Smallest bound first (MaxScore's order); one fixed order, so both
        // paths add a document's terms up the same way on every call.
        terms.sort_by(|a, b| {
            a.bound
                .total_cmp(&b.bound)
                .then_with(|| a.term.serialized_term().cmp(b.term.serialized_term()))
        });
        // Length normalisation per quantised field norm.
        let mut norm = [0f32; 256];
        for (id, n) in norm.iter_mut().enumerate() {
            let dl = FieldNormReader::id_to_fieldnorm(id as u8) as f32;
            *n = params.k1 * (1.0 - params.b + params.b * dl / avgdl);
        }
        Ok(Some(Prepared {
            searcher,
            terms,
            norm,
        }))
    }

    fn postings(
        &self,
        seg: &tantivy::SegmentReader,
        term: &Term,
    ) -> Result<Option<SegmentPostings>> {
        seg.inverted_index(self.text)?
            .read_postings(term, IndexRecordOption::WithFreqs)
            .map_err(|e| StoreError::Invalid(format!("reading postings: {e}")))
    }

    /// Scores every posting of every query term (term at a time).
    fn search_exhaustive(
        &self,
        q: &Prepared,
        k: usize,
        allowed: Option<&std::collections::HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        let mut hits: Vec<(f32, u64)> = Vec::new();
        for seg in q.searcher.segment_readers() {
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
            for t in &q.terms {
                let Some(mut post) = self.postings(seg, &t.term)? else {
                    continue;
                };
                let mut doc = post.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        let n = q.norm[norms.fieldnorm_id(doc) as usize];
                        let s = &mut scores[doc as usize];
                        if *s == 0.0 {
                            touched.push(doc);
                        }
                        *s += term_score(t.weight, post.term_freq(), n);
                    }
                    doc = post.advance();
                }
            }
            let ids = seg.fast_fields().u64(CHUNK_ID)?;
            let mut local: Vec<(f32, u64)> = touched
                .iter()
                .filter_map(|&d| ids.first(d).map(|id| (scores[d as usize], id)))
                .filter(|(_, id)| allowed.is_none_or(|a| a.contains(id)))
                .collect();
            top_k(&mut local, k);
            hits.extend(local);
            for &d in &touched {
                scores[d as usize] = 0.0;
            }
            SCORES.with(|c| *c.borrow_mut() = scores);
        }
        top_k(&mut hits, k);
        Ok(hits.into_iter().map(|(s, id)| (id, s)).collect())
    }

    /// MaxScore (Turtle & Flood 1995), document at a time. Each term's score
    /// is at most its bound. With the terms in increasing order of bound, the
    /// longest prefix whose bounds add up to less than the current `k`-th
    /// best score is *non-essential*: a document that only they match cannot
    /// enter the top `k`. Candidates come from the essential terms' postings
    /// alone; the non-essential ones are looked up (skipping ahead in their
    /// postings) only while the candidate can still reach the `k`-th score.
    /// Common terms (low IDF, the longest postings) become non-essential as
    /// soon as the top `k` fills, so most of their postings are never read.
    /// A document is dropped only when its bound is strictly below the
    /// `k`-th score, so ties are settled by chunk id exactly as by
    /// [`LexicalIndex::search_exhaustive`]. With `allowed`, a candidate
    /// outside it is skipped before its non-essential terms are looked up,
    /// and the `k`-th score is that of the allowed chunks.
    fn search_pruned(
        &self,
        q: &Prepared,
        k: usize,
        allowed: Option<&std::collections::HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        let m = q.terms.len();
        // prefix[i]: the bounds of terms 0..=i added up.
        let prefix: Vec<f32> = q
            .terms
            .iter()
            .scan(0f32, |s, t| {
                *s += t.bound;
                Some(*s)
            })
            .collect();
        let mut top = TopK::new(k);
        for seg in q.searcher.segment_readers() {
            let norms = seg.get_fieldnorms_reader(self.text)?;
            let alive = seg.alive_bitset();
            let ids = seg.fast_fields().u64(CHUNK_ID)?;
            let mut posts: Vec<Option<SegmentPostings>> = Vec::with_capacity(m);
            for t in &q.terms {
                posts.push(self.postings(seg, &t.term)?);
            }
            let mut cur: Vec<DocId> = posts
                .iter()
                .map(|p| p.as_ref().map_or(TERMINATED, |p| p.doc()))
                .collect();
            // First essential term.
            let mut e = 0;
            let mut theta = top.threshold();
            while e < m && prefix[e] < theta {
                e += 1;
            }
            loop {
                let doc = cur[e..].iter().copied().min().unwrap_or(TERMINATED);
                if doc == TERMINATED {
                    break;
                }
                // Deleted and filtered-out documents are stepped over.
                let allowed_id = match allowed {
                    _ if alive.is_some_and(|a| !a.is_alive(doc)) => Err(()),
                    None => Ok(None),
                    Some(a) => match ids.first(doc) {
                        Some(id) if a.contains(&id) => Ok(Some(id)),
                        _ => Err(()),
                    },
                };
                let mut score = 0f32;
                let norm = q.norm[norms.fieldnorm_id(doc) as usize];
                for i in e..m {
                    if cur[i] == doc {
                        if let Some(p) = posts[i].as_mut() {
                            if allowed_id.is_ok() {
                                score += term_score(q.terms[i].weight, p.term_freq(), norm);
                            }
                            cur[i] = p.advance();
                        }
                    }
                }
                let Ok(allowed_id) = allowed_id else {
                    continue;
                };
                let mut reachable = true;
                for i in (0..e).rev() {
                    if score + prefix[i] < theta {
                        reachable = false;
                        break;
                    }
                    let Some(p) = posts[i].as_mut() else {
                        continue;
                    };
                    if cur[i] < doc {
                        cur[i] = p.seek(doc);
                    }
                    if cur[i] == doc {
                        score += term_score(q.terms[i].weight, p.term_freq(), norm);
                    }
                }
                if !reachable || score < theta {
                    continue;
                }
                let Some(id) = allowed_id.or_else(|| ids.first(doc)) else {
                    continue;
                };
                if top.offer(score, id) {
                    theta = top.threshold();
                    while e < m && prefix[e] < theta {
                        e += 1;
                    }
                    if e == m {
                        // No document left can reach the top k.
                        break;
                    }
                }
            }
        }
        Ok(top.into_sorted())
    }
}

/// Queries of at most this many distinct terms are pruned; longer ones (a
/// pasted paragraph) are scored term at a time, because each candidate scans
/// every essential term's position to find the next document (a linear
/// scan, not a heap). The cut-over was not timed.
const MAX_PRUNED_TERMS: usize = 32;

/// One query term: its BM25 weight `qtf · idf · (k1 + 1)` and an upper bound
/// of its score in any document.
struct QueryTerm {
    term: Term,
    weight: f32,
    bound: f32,
}

struct Prepared {
    searcher: tantivy::Searcher,
    terms: Vec<QueryTerm>,
    /// `k1 · (1 − b + b · dl / avgdl)` per quantised field norm.
    norm: [f32; 256],
}

/// BM25 of one term in one document.
#[inline]
fn term_score(weight: f32, tf: u32, norm: f32) -> f32 {
    #[cfg(test)]
    SCORED.with(|c| c.set(c.get() + 1));
    let tf = tf as f32;
    weight * tf / (tf + norm)
}

/// The `k` best `(score, chunk id)` so far: higher score first, ties by
/// lower chunk id.
struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<Worst>,
}

/// Heap entry ordered so that the worst hit is the heap's maximum.
#[derive(PartialEq)]
struct Worst(f32, u64);
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            // `k` comes from callers (`context --k`) and may be huge.
            heap: std::collections::BinaryHeap::with_capacity(k.min(1024) + 1),
        }
    }

    /// The score a hit needs to enter (−∞ until `k` hits are held).
    fn threshold(&self) -> f32 {
        match self.heap.peek() {
            Some(w) if self.heap.len() >= self.k => w.0,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Adds a hit if it beats the worst held; returns whether it entered.
    fn offer(&mut self, score: f32, id: u64) -> bool {
        let hit = Worst(score, id);
        if self.heap.len() < self.k {
            self.heap.push(hit);
            return true;
        }
        match self.heap.peek() {
            Some(w) if hit < *w => {
                self.heap.pop();
                self.heap.push(hit);
                true
            }
            _ => false,
        }
    }

    fn into_sorted(self) -> Vec<(u64, f32)> {
        // Ascending in `Worst` order is best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| (w.1, w.0))
            .collect()
    }
}

#[cfg(test)]
thread_local! {
    /// Postings scored on this thread (tests check that pruning skips some).
    static SCORED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
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

    /// A generated corpus with Zipf-distributed words over several
    /// segments, with deletes and replacements.
    fn zipf_index(dir: &Path) -> (LexicalIndex, Vec<String>) {
        let ix = LexicalIndex::open(dir).unwrap();
        let vocab: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let word = |next: &mut dyn FnMut() -> f64| {
            let r = (400f64.powf(next()) as usize).saturating_sub(1).min(399);
            vocab[r].clone()
        };
        let mut id = 0u64;
        for _batch in 0..4 {
            let docs: Vec<(u64, String)> = (0..600)
                .map(|_| {
                    id += 1;
                    let len = 5 + (next() * 60.0) as usize;
                    let text: Vec<String> = (0..len).map(|_| word(&mut next)).collect();
                    (id, text.join(" "))
                })
                .collect();
            ix.add(&docs).unwrap();
            ix.commit().unwrap();
        }
        ix.delete(&(1..200).step_by(3).collect::<Vec<u64>>())
            .unwrap();
        let replaced: Vec<(u64, String)> = (900..1000)
            .map(|i| (i, format!("{} {} w1 w1", word(&mut next), word(&mut next))))
            .collect();
        ix.add(&replaced).unwrap();
        ix.commit().unwrap();
        let queries: Vec<String> = (0..60)
            .map(|_| {
                let len = 1 + (next() * 8.0) as usize;
                let q: Vec<String> = (0..len).map(|_| word(&mut next)).collect();
                q.join(" ")
            })
            .chain(["w0 w0 w1 w399".to_string(), "w0".to_string()])
            .collect();
        (ix, queries)
    }

    fn scored() -> u64 {
        SCORED.with(|c| c.get())
    }

    /// MaxScore returns what scoring every posting returns: the same chunks
    /// in the same order with the same scores (up to the order in which a
    /// document's terms are added), for any k, BM25 parameters and filter,
    /// across segments, deletes and replacements; and it reads fewer
    /// postings.
    #[test]
    fn pruned_search_equals_exhaustive_search() {
        let dir = tempfile::tempdir().unwrap();
        let (ix, queries) = zipf_index(dir.path());
        assert!(ix.reader.searcher().segment_readers().len() > 1);
        let (mut pruned_reads, mut all_reads) = (0u64, 0u64);
        // No filter, a third of the chunks, and five chunks.
        let filters: [Option<std::collections::HashSet<u64>>; 4] = [
            None,
            Some((0..3000).step_by(3).collect()),
            Some([5, 77, 901, 1500, 2300].into()),
            None,
        ];
        for params in [
            Bm25Params::default(),
            Bm25Params { k1: 1.2, b: 0.75 },
            Bm25Params { k1: 0.0, b: 0.5 },
            Bm25Params { k1: 2.0, b: 1.0 },
            Bm25Params { k1: 0.9, b: 0.0 },
        ] {
            for q in &queries {
                for k in [1, 3, 10, 50, 5000, usize::MAX] {
                    let prep = ix.prepare(q, k, params).unwrap().unwrap();
                    let before = scored();
                    let allowed = filters
                        .get(k.wrapping_add(q.len()) % filters.len())
                        .unwrap();
                    let allowed = allowed.as_ref();
                    let want = ix.search_exhaustive(&prep, k, allowed).unwrap();
                    let mid = scored();
                    let got = ix.search_pruned(&prep, k, allowed).unwrap();
                    all_reads += mid - before;
                    pruned_reads += scored() - mid;
                    assert_eq!(got.len(), want.len(), "{q:?} k={k} {params:?}");
                    let tol = 1e-4 * want.first().map_or(1.0, |h| h.1.abs().max(1.0));
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g.1 - w.1).abs() <= tol,
                            "{q:?} k={k} rank {i}: {g:?} vs {w:?}"
                        );
                        // Ids agree except among scores tied within rounding.
                        let tied = want
                            .iter()
                            .chain(&got)
                            .any(|h| h.0 != w.0 && (h.1 - w.1).abs() <= tol);
                        if !tied {
                            assert_eq!(g.0, w.0, "{q:?} k={k} rank {i} {params:?}");
                        }
                    }
                    // The public entry point takes the pruned path.
                    assert_eq!(ix.search_in(q, k, params, allowed).unwrap(), got);
                }
            }
        }
        assert!(
            pruned_reads * 2 < all_reads,
            "pruning read {pruned_reads} postings, scoring all reads {all_reads}"
        );
    }
}
