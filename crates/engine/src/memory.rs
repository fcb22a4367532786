//! Usage memory: what the log says about which chunks served which question.
//!
//! Built from the interaction log ([`UsageMemory::build`]): for every logged
//! question, the shown chunks its answers used (usage labels of one analyzer
//! version, weight [`MemoryConfig::used_weight`] per use) and explicit
//! feedback (weight [`MemoryConfig::feedback_weight`]; a −1 rating subtracts).
//! Two signals come out of it, both empty for a question the log has never
//! seen anything like:
//!
//! - **Asked as.** Per chunk, the questions whose answers used it (the
//!   [`MemoryConfig::per_chunk_cap`] most recent; older ones drop out), as a
//!   text field scored with BM25 ([`UsageMemory::asked_as`]). The engine fuses
//!   its ranking with a small weight ([`crate::ContextOptions::memory_weight`]).
//! - **Near duplicates.** Logged questions whose embedding (or, without an
//!   embedder, whose analysed terms) lie within a cosine threshold of the new
//!   question ([`UsageMemory::near_duplicates`]); the chunks they used join
//!   the candidate pool with their usage share and similarity, and chunks they
//!   were shown but never used carry a negative feature.
//!
//! The memory is derived data: [`crate::Engine::rebuild_memory`] rebuilds it
//! from the log at any time, and an empty log gives no memory at all.

use std::collections::{HashMap, HashSet};

use anectx_store::{Db, Feedback, LoggedInteraction};
use serde::{Deserialize, Serialize};

use crate::Result;

/// How the memory is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Questions kept per chunk in the "asked as" field (most recent first).
    pub per_chunk_cap: usize,
    /// Weight of one "used" usage label.
    pub used_weight: f32,
    /// Weight of one explicit +1 (or, negated, −1) on a chunk.
    pub feedback_weight: f32,
    /// Cap on one question's weight in a chunk's field (a question asked a
    /// hundred times must not drown every other term).
    pub max_question_weight: f32,
    /// BM25 parameters of the "asked as" field.
    pub k1: f32,
    pub b: f32,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            per_chunk_cap: 32,
            used_weight: 1.0,
            feedback_weight: 2.0,
            max_question_weight: 4.0,
            k1: 1.2,
            b: 0.75,
        }
    }
}

/// Size and provenance of a memory (for `memory stats` and reports).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Interactions read from the log.
    pub interactions: u64,
    /// Interactions that had usage labels of the analyzer version or feedback.
    pub labelled: u64,
    /// Distinct questions remembered.
    pub questions: u64,
    /// Chunks with a non-empty "asked as" field.
    pub chunks: u64,
    /// (question, chunk) pairs with positive weight.
    pub pairs: u64,
    /// Feedback rows applied.
    pub feedback: u64,
    pub analyzer_version: String,
    /// Whether near duplicates are found by embedding (else by terms).
    pub embedded: bool,
    /// Row id of the last logged interaction read (the log watermark): the
    /// memory holds what the log said up to and including it.
    #[serde(default)]
    pub watermark: i64,
}

/// One remembered question.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Question {
    /// The question as first asked (embedded for near-duplicate search).
    pub(crate) text: String,
    /// Analysed terms, in order (the "asked as" field).
    pub(crate) terms: Vec<String>,
    /// The same terms, sorted and deduplicated (near-duplicate search).
    pub(crate) distinct: Vec<String>,
    /// Chunk → accumulated weight (uses and feedback; may be ≤ 0).
    pub(crate) used: HashMap<u64, f32>,
    /// Chunk → times shown.
    pub(crate) shown: HashMap<u64, u32>,
    pub(crate) asks: u32,
    /// Row id of the latest interaction that asked it (recency).
    pub(crate) last: i64,
}

impl Question {
    pub(crate) fn new(text: String, terms: Vec<String>) -> Self {
        let mut distinct = terms.clone();
        distinct.sort_unstable();
        distinct.dedup();
        Self {
            text,
            terms,
            distinct,
            used: HashMap::new(),
            shown: HashMap::new(),
            asks: 0,
            last: 0,
        }
    }
}

/// A logged question close to the one asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub question: usize,
    pub similarity: f32,
}

/// What near-duplicate questions say about one chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DupEvidence {
    /// Σ over neighbours of similarity × (use weight / asks), clipped at 0.
    pub used: f32,
    /// Highest similarity of a neighbour that used the chunk.
    pub similarity: f32,
    /// Σ over neighbours of similarity × share of the neighbour's asks in
    /// which the chunk was shown and never used (negative evidence).
    pub unused: f32,
    /// Σ over neighbours of similarity × times the chunk was shown to the
    /// neighbour and never used: the amount of negative evidence, which
    /// grows with each further showing (the share in `unused` does not).
    #[serde(default)]
    pub unused_shows: f32,
}

/// The usage memory. Immutable once built; the engine swaps whole memories.
/// Two memories are equal when they hold the same questions, evidence,
/// vectors, configuration and statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageMemory {
    pub(crate) questions: Vec<Question>,
    /// L2-normalised question embeddings, `dim` per question, when embedded.
    pub(crate) vectors: Option<(Vec<f32>, usize)>,
    /// Term → (chunk slot, weighted term frequency) of the "asked as" field.
    postings: HashMap<String, Vec<(u32, f32)>>,
    chunk_ids: Vec<u64>,
    field_len: Vec<f32>,
    avg_len: f32,
    pub(crate) cfg: MemoryConfig,
    pub(crate) stats: MemoryStats,
}

/// Embeds a batch of texts, `dim` floats per text.
pub type EmbedFn<'a> = dyn Fn(&[&str]) -> Result<Vec<f32>> + 'a;

/// Term-set cosine a near duplicate needs at least.
const MIN_TERM_COSINE: f32 = 0.5;

fn normalise(q: &str) -> String {
    q.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cosine of two term sets (binary weights), and the share of `a`'s terms
/// found in `b` (containment).
/// `b` holds distinct terms.
fn term_overlap(a: &HashSet<&str>, b: &[String]) -> (f32, f32) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 0.0);
    }
    let common = b.iter().filter(|t| a.contains(t.as_str())).count() as f32;
    (
        common / ((a.len() * b.len()) as f32).sqrt(),
        common / a.len() as f32,
    )
}

/// Folds logged interactions into remembered questions (the part of a
/// memory the log determines; the index is derived from it).
struct Accum<'a> {
    cfg: &'a MemoryConfig,
    analyze: &'a dyn Fn(&str) -> Vec<String>,
    /// Normalised question → index into `questions`.
    index: HashMap<String, usize>,
    questions: Vec<Question>,
    stats: MemoryStats,
}

impl<'a> Accum<'a> {
    fn new(
        analyzer_version: &str,
        cfg: &'a MemoryConfig,
        analyze: &'a dyn Fn(&str) -> Vec<String>,
    ) -> Self {
        Self {
            cfg,
            analyze,
            index: HashMap::new(),
            questions: Vec::new(),
            stats: MemoryStats {
                analyzer_version: analyzer_version.to_string(),
                ..MemoryStats::default()
            },
        }
    }

    /// One logged interaction (row `id`), the shown chunks its answer used
    /// (`None`: no usage label says so) and the feedback on it.
    fn add(&mut self, id: i64, it: &LoggedInteraction, used: Option<&[u64]>, fb: &[Feedback]) {
        let cfg = self.cfg;
        self.stats.interactions += 1;
        let key = normalise(&it.query);
        if key.is_empty() {
            return;
        }
        let qi = match self.index.get(&key) {
            Some(&qi) => qi,
            None => {
                let terms = (self.analyze)(&it.query);
                self.questions.push(Question::new(it.query.clone(), terms));
                self.index.insert(key, self.questions.len() - 1);
                self.questions.len() - 1
            }
        };
        let q = &mut self.questions[qi];
        q.asks += 1;
        q.last = id;
        let shown: Vec<u64> = it
            .candidates
            .iter()
            .filter(|c| c.position.is_some())
            .map(|c| c.chunk_id)
            .collect();
        for &c in &shown {
            *q.shown.entry(c).or_default() += 1;
        }
        if used.is_some() || !fb.is_empty() {
            self.stats.labelled += 1;
        }
        for &c in used.into_iter().flatten() {
            *q.used.entry(c).or_default() += cfg.used_weight;
        }
        for f in fb {
            let sign = match f.rating {
                Some(r) if r < 0 => -1.0,
                _ => 1.0,
            };
            // Chunks named by the feedback; without any, a rating applies
            // to what the answer used (or, for +1 with no usage labels, to
            // everything shown).
            let targets: Vec<u64> = if !f.chunk_ids.is_empty() {
                f.chunk_ids.clone()
            } else if let Some(u) = used.filter(|u| !u.is_empty()) {
                u.to_vec()
            } else if f.rating.is_some() {
                shown.clone()
            } else {
                Vec::new()
            };
            for c in targets {
                *q.used.entry(c).or_default() += sign * cfg.feedback_weight;
            }
            self.stats.feedback += 1;
        }
    }
}

impl UsageMemory {
    /// Builds the memory from the interactions of `db` that `keep` accepts,
    /// with usage labels of `analyzer_version` and all feedback.
    /// `analyze` turns text into index terms (the engine passes its lexical
    /// analyser, so stemming and stop words match BM25); `embed`, when given,
    /// embeds the distinct questions for near-duplicate search. Returns
    /// `None` when nothing in the log says a chunk was used.
    pub fn build(
        db: &Db,
        analyzer_version: &str,
        cfg: &MemoryConfig,
        analyze: &dyn Fn(&str) -> Vec<String>,
        embed: Option<&EmbedFn<'_>>,
        keep: &dyn Fn(&LoggedInteraction) -> bool,
    ) -> Result<Option<Self>> {
        Self::build_until(db, analyzer_version, cfg, analyze, embed, keep, i64::MAX)
    }

    /// [`UsageMemory::build`] over the interactions with row id ≤ `until`
    /// only (the log as it was when a memory with that watermark was built).
    pub fn build_until(
        db: &Db,
        analyzer_version: &str,
        cfg: &MemoryConfig,
        analyze: &dyn Fn(&str) -> Vec<String>,
        embed: Option<&EmbedFn<'_>>,
        keep: &dyn Fn(&LoggedInteraction) -> bool,
        until: i64,
    ) -> Result<Option<Self>> {
        let mut used_by: HashMap<i64, Vec<u64>> = HashMap::new();
        for l in db.labels(analyzer_version)? {
            if l.used && l.interaction_id <= until {
                used_by
                    .entry(l.interaction_id)
                    .or_default()
                    .push(l.chunk_id);
            }
        }
        let mut feedback: HashMap<String, Vec<Feedback>> = HashMap::new();
        for f in db.feedback()? {
            feedback
                .entry(f.interaction_uid.clone())
                .or_default()
                .push(f);
        }
        let mut acc = Accum::new(analyzer_version, cfg, analyze);
        let mut after = 0i64;
        'pages: loop {
            let page = db.interactions(after, 500)?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (id, it) in &page {
                if *id > until {
                    break 'pages;
                }
                acc.stats.watermark = *id;
                if keep(it) {
                    let fb = feedback.get(&it.uid).map(Vec::as_slice).unwrap_or(&[]);
                    acc.add(*id, it, used_by.get(id).map(Vec::as_slice), fb);
                }
            }
        }
        let m = Self::assemble(acc.questions, None, cfg, acc.stats, embed)?;
        Ok((m.stats.pairs > 0).then_some(m))
    }

    /// This memory plus the interactions logged after its watermark (usage
    /// labels of its analyzer version, and the feedback on those
    /// interactions), and how many were read. Only the new questions are
    /// embedded (all of them, when this memory was built without vectors
    /// and `embed` is given). Feedback given later on interactions at or
    /// below the watermark is not folded in (a full rebuild folds it).
    /// The result may hold no (question, chunk) pair yet; callers serve it
    /// only when it does ([`MemoryStats::pairs`] > 0).
    pub fn extend(
        &self,
        db: &Db,
        analyze: &dyn Fn(&str) -> Vec<String>,
        embed: Option<&EmbedFn<'_>>,
    ) -> Result<(Self, u64)> {
        let version = self.stats.analyzer_version.clone();
        let mut acc = Accum::new(&version, &self.cfg, analyze);
        acc.stats = self.stats.clone();
        acc.questions = self.questions.clone();
        for (i, q) in acc.questions.iter().enumerate() {
            acc.index.insert(normalise(&q.text), i);
        }
        let mut read = 0u64;
        loop {
            let page = db.interactions(acc.stats.watermark, 500)?;
            let Some(last) = page.last() else { break };
            let last = last.0;
            for (id, it) in &page {
                let used: Vec<u64> = db
                    .labels_of(*id)?
                    .into_iter()
                    .filter(|l| l.used && l.analyzer_version == version)
                    .map(|l| l.chunk_id)
                    .collect();
                let fb = db.feedback_for(&it.uid)?;
                acc.add(*id, it, (!used.is_empty()).then_some(used.as_slice()), &fb);
                read += 1;
            }
            acc.stats.watermark = last;
        }
        if read == 0 {
            return Ok((self.clone(), 0));
        }
        let m = Self::assemble(
            acc.questions,
            self.vectors.clone(),
            &self.cfg,
            acc.stats,
            embed,
        )?;
        Ok((m, read))
    }

    /// Treats the interactions up to `watermark` as read without folding
    /// them in: a later [`UsageMemory::extend`] starts after it.
    pub fn skip_to(&mut self, watermark: i64) {
        self.stats.watermark = self.stats.watermark.max(watermark);
    }

    /// An empty memory at `watermark` (nothing remembered yet), to
    /// [`UsageMemory::extend`] from.
    pub fn empty(analyzer_version: &str, cfg: &MemoryConfig, watermark: i64) -> Self {
        Self {
            questions: Vec::new(),
            vectors: None,
            postings: HashMap::new(),
            chunk_ids: Vec::new(),
            field_len: Vec::new(),
            avg_len: f32::MIN_POSITIVE,
            cfg: cfg.clone(),
            stats: MemoryStats {
                analyzer_version: analyzer_version.to_string(),
                watermark,
                ..MemoryStats::default()
            },
        }
    }

    /// Derives the "asked as" index and the near-duplicate vectors from the
    /// questions. `vectors`, when given, embed the first questions (they
    /// are kept, and only the rest are embedded).
    pub(crate) fn assemble(
        questions: Vec<Question>,
        vectors: Option<(Vec<f32>, usize)>,
        cfg: &MemoryConfig,
        mut stats: MemoryStats,
        embed: Option<&EmbedFn<'_>>,
    ) -> Result<Self> {
        // The "asked as" field: per chunk, its most recent questions.
        let mut per_chunk: HashMap<u64, Vec<(i64, usize, f32)>> = HashMap::new();
        stats.pairs = 0;
        for (qi, q) in questions.iter().enumerate() {
            for (&c, &w) in &q.used {
                if w > 0.0 {
                    per_chunk.entry(c).or_default().push((
                        q.last,
                        qi,
                        w.min(cfg.max_question_weight),
                    ));
                    stats.pairs += 1;
                }
            }
        }
        let mut chunk_ids: Vec<u64> = per_chunk.keys().copied().collect();
        chunk_ids.sort_unstable();
        let mut postings: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
        let mut field_len = Vec::with_capacity(chunk_ids.len());
        for (slot, c) in chunk_ids.iter().enumerate() {
            let entries = per_chunk.get_mut(c).expect("key exists");
            entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            entries.truncate(cfg.per_chunk_cap.max(1));
            let mut tf: HashMap<&str, f32> = HashMap::new();
            let mut len = 0f32;
            for &(_, qi, w) in entries.iter() {
                for t in &questions[qi].terms {
                    *tf.entry(t.as_str()).or_default() += w;
                    len += w;
                }
            }
            field_len.push(len);
            for (t, f) in tf {
                postings
                    .entry(t.to_string())
                    .or_default()
                    .push((slot as u32, f));
            }
        }
        let avg_len = if field_len.is_empty() {
            0.0
        } else {
            field_len.iter().sum::<f32>() / field_len.len() as f32
        };
        let vectors = match (embed, vectors) {
            // Kept as they are when there is nothing new to embed.
            (_, Some((v, dim))) if dim > 0 && v.len() == questions.len() * dim => Some((v, dim)),
            (Some(embed), old) => {
                let (mut all, mut dim) = old.unwrap_or_default();
                let from = all.len().checked_div(dim).unwrap_or(0);
                let start = all.len();
                for batch in questions[from..].chunks(64) {
                    let refs: Vec<&str> = batch.iter().map(|q| q.text.as_str()).collect();
                    all.extend(embed(&refs)?);
                }
                if dim == 0 && questions.len() > from {
                    dim = (all.len() - start) / (questions.len() - from);
                }
                if dim > 0 && all.len() == questions.len() * dim {
                    for row in all[start..].chunks_exact_mut(dim) {
                        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                        row.iter_mut().for_each(|x| *x /= n);
                    }
                    Some((all, dim))
                } else {
                    None
                }
            }
            (None, _) => None,
        };
        stats.questions = questions.len() as u64;
        stats.chunks = chunk_ids.len() as u64;
        stats.embedded = vectors.is_some();
        Ok(Self {
            questions,
            vectors,
            postings,
            chunk_ids,
            field_len,
            avg_len: avg_len.max(f32::MIN_POSITIVE),
            cfg: cfg.clone(),
            stats,
        })
    }

    pub fn stats(&self) -> &MemoryStats {
        &self.stats
    }

    /// Whether near duplicates are found by embedding.
    pub fn embedded(&self) -> bool {
        self.vectors.is_some()
    }

    /// BM25 over the "asked as" field for the analysed query terms, best
    /// first, at most `k`.
    pub fn asked_as(&self, query_terms: &[String], k: usize) -> Vec<(u64, f32)> {
        let n = self.chunk_ids.len() as f32;
        let mut acc: HashMap<u32, f32> = HashMap::new();
        let uniq: HashSet<&str> = query_terms.iter().map(String::as_str).collect();
        for t in uniq {
            let Some(list) = self.postings.get(t) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(slot, tf) in list {
                let norm =
                    1.0 - self.cfg.b + self.cfg.b * self.field_len[slot as usize] / self.avg_len;
                *acc.entry(slot).or_default() +=
                    idf * tf * (self.cfg.k1 + 1.0) / (tf + self.cfg.k1 * norm);
            }
        }
        let mut out: Vec<(u64, f32)> = acc
            .into_iter()
            .map(|(s, v)| (self.chunk_ids[s as usize], v))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out
    }

    /// Logged questions within `threshold` similarity of the query, most
    /// similar first. The similarity is the larger of the embedding cosine
    /// (when the memory and the query are embedded) and the share of the
    /// query's terms the logged question contains: a question asked again
    /// with words left out or reordered is contained in the original. Either
    /// way a neighbour must share terms with the query (term-set cosine ≥
    /// 0.5), so that an embedder's bias towards one topic, or a one-word
    /// query, cannot make unrelated questions duplicates.
    pub fn near_duplicates(
        &self,
        query_terms: &[String],
        query_vec: Option<&[f32]>,
        threshold: f32,
    ) -> Vec<Neighbor> {
        let qset: HashSet<&str> = query_terms.iter().map(String::as_str).collect();
        if qset.is_empty() {
            return Vec::new();
        }
        let qv = match (&self.vectors, query_vec) {
            (Some((_, dim)), Some(v)) if v.len() == *dim => {
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                Some(v.iter().map(|x| x / n).collect::<Vec<f32>>())
            }
            _ => None,
        };
        let mut out: Vec<Neighbor> = self
            .questions
            .iter()
            .enumerate()
            .filter_map(|(i, q)| {
                let (cosine, contained) = term_overlap(&qset, &q.distinct);
                if cosine < MIN_TERM_COSINE {
                    return None;
                }
                let sim = match (&qv, &self.vectors) {
                    (Some(qv), Some((all, dim))) => {
                        let row = &all[i * dim..(i + 1) * dim];
                        let e: f32 = row.iter().zip(qv).map(|(a, b)| a * b).sum();
                        e.max(contained)
                    }
                    _ => cosine.max(contained),
                };
                (sim >= threshold).then_some(Neighbor {
                    question: i,
                    similarity: sim.min(1.0),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.question.cmp(&b.question))
        });
        out
    }

    /// What the neighbours say about each chunk they were shown or used.
    pub fn duplicate_evidence(&self, neighbors: &[Neighbor]) -> HashMap<u64, DupEvidence> {
        let mut out: HashMap<u64, DupEvidence> = HashMap::new();
        for nb in neighbors {
            let q = &self.questions[nb.question];
            let asks = q.asks.max(1) as f32;
            for (&c, &w) in &q.used {
                let e = out.entry(c).or_default();
                e.used += nb.similarity * w / asks;
                if w > 0.0 {
                    e.similarity = e.similarity.max(nb.similarity);
                }
            }
            for (&c, &shown) in &q.shown {
                if q.used.get(&c).copied().unwrap_or(0.0) <= 0.0 {
                    let e = out.entry(c).or_default();
                    e.unused += nb.similarity * shown as f32 / asks;
                    e.unused_shows += nb.similarity * shown as f32;
                }
            }
        }
        for e in out.values_mut() {
            e.used = e.used.max(0.0);
        }
        out
    }
}
