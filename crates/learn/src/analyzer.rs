//! Usage analyzer: which of the shown chunks an answer drew on, from the
//! answer text and the chunk texts alone.
//!
//! Signals, cheapest first (see `serving-anchors.md` §4–5):
//!
//! 1. **Citation markers** `[n]`, `[1, 2]`, `[1-3]` in the answer. A citation
//!    only counts fully when the text supports it (some lexical evidence), so
//!    a wrong citation is not taken at face value.
//! 2. **Longest shared run** of content words (case, punctuation and
//!    stopwords normalised away, light suffix stemming).
//! 3. **N-gram containment**: the best fraction of one chunk sentence's
//!    content-word n-grams that occur in the answer. Per sentence, so a long
//!    chunk of which one sentence was quoted still scores 1.
//! 4. **Overlap**: the best coverage of one answer sentence by the chunk,
//!    counting a word only when the chunk has it within a few words of one
//!    of its neighbours in the sentence (scattered single-word matches, which
//!    a long chunk offers by chance, do not count), words weighted by their
//!    rarity among the shown chunks, shrunk for short sentences and
//!    corrected for chance: the coverage the chunk reaches on sentences of
//!    the *other* shown chunks is subtracted first. Catches paraphrase.
//!
//! Runs and overlap are attributed per answer sentence: a sentence credits
//! only the chunks that explain it (nearly) as well as the best shown chunk
//! does, so a sentence quoted from one chunk does not also count for a long
//! chunk on the same subject. A citation is checked against the sentence
//! that carries it.
//! 5. Optionally the **maximum cosine** between an answer sentence and a
//!    chunk sentence under a [`TextEmbedder`].
//!
//! The signals are combined by a noisy-or into a score in `0..=1`; a chunk is
//! `used` when the score reaches [`AnalyzerConfig::threshold`]. The evidence
//! is returned with every label, since the heuristic will change
//! ([`ANALYZER_VERSION`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anectx_engine::TextEmbedder;
use serde::{Deserialize, Serialize};

use crate::{LearnError, Result};

/// Version of the labelling heuristic; bump whenever it changes, labels are
/// stored keyed by it.
pub const ANALYZER_VERSION: &str = "usage-v1";

/// Thresholds and weights of the analyzer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyzerConfig {
    /// Word n-gram size for containment (content words).
    pub ngram: usize,
    /// A shared run of at most this many content words is no evidence.
    pub run_min: usize,
    /// A shared run of this many content words counts as a quote.
    pub run_full: usize,
    /// Containment at or below this is no evidence (shared technical
    /// bigrams such as "boundary layer" occur by chance).
    pub containment_lo: f32,
    /// Containment at which the containment signal saturates.
    pub containment_hi: f32,
    /// Chance-corrected overlap at or below this is no evidence.
    pub overlap_lo: f32,
    /// Chance-corrected overlap at which the overlap signal saturates.
    pub overlap_hi: f32,
    /// An answer sentence credits a chunk's overlap only if the chunk covers
    /// it within this margin of the best-covering shown chunk: a sentence
    /// taken from one chunk does not also count for a long chunk that
    /// happens to contain many of its words.
    pub competition_margin: f32,
    /// Answer sentences with fewer content words do not count for overlap.
    pub min_sentence_words: usize,
    /// Containment is only taken from chunk sentences with at least this many n-grams.
    pub min_ngrams: usize,
    /// Weight of the run signal in the noisy-or.
    pub run_weight: f32,
    /// Weight of the containment signal.
    pub containment_weight: f32,
    /// Weight of the overlap signal.
    pub overlap_weight: f32,
    /// Weight of a citation backed by lexical or embedding support.
    pub cite_weight: f32,
    /// Weight of a citation without support (a possibly wrong citation).
    pub unsupported_cite_weight: f32,
    /// Lexical score from which a citation counts as supported.
    pub cite_support: f32,
    /// A citation also counts as supported when the sentence carrying it
    /// shares a run of `run_min` words with the cited chunk, or this much
    /// proximity coverage (before chance correction).
    pub cite_support_coverage: f32,
    /// Cosine at or below which sentence similarity is no evidence.
    pub embed_lo: f32,
    /// Cosine at which sentence similarity saturates.
    pub embed_hi: f32,
    /// Weight of the embedding signal.
    pub embed_weight: f32,
    /// At most this many sentences per text are embedded.
    pub max_embed_sentences: usize,
    /// Score from which a chunk counts as used.
    pub threshold: f32,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            ngram: 2,
            run_min: 3,
            run_full: 7,
            containment_lo: 0.3,
            containment_hi: 0.7,
            overlap_lo: 0.15,
            overlap_hi: 0.45,
            competition_margin: 0.1,
            min_sentence_words: 3,
            min_ngrams: 4,
            run_weight: 0.9,
            containment_weight: 0.9,
            overlap_weight: 0.9,
            cite_weight: 0.9,
            unsupported_cite_weight: 0.3,
            cite_support: 0.15,
            cite_support_coverage: 0.3,
            embed_lo: 0.55,
            embed_hi: 0.85,
            embed_weight: 0.6,
            max_embed_sentences: 64,
            threshold: 0.5,
        }
    }
}

impl AnalyzerConfig {
    fn validate(&self) -> Result<()> {
        let unit = [
            ("run_weight", self.run_weight),
            ("containment_weight", self.containment_weight),
            ("overlap_weight", self.overlap_weight),
            ("cite_weight", self.cite_weight),
            ("unsupported_cite_weight", self.unsupported_cite_weight),
            ("embed_weight", self.embed_weight),
            ("threshold", self.threshold),
            ("cite_support", self.cite_support),
            ("cite_support_coverage", self.cite_support_coverage),
            ("competition_margin", self.competition_margin),
        ];
        for (name, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                return Err(LearnError::Invalid(format!(
                    "analyzer config: {name} must be in 0..=1, got {v}"
                )));
            }
        }
        if self.ngram == 0 {
            return Err(LearnError::Invalid(
                "analyzer config: ngram must be ≥ 1".into(),
            ));
        }
        if self.run_full <= self.run_min {
            return Err(LearnError::Invalid(format!(
                "analyzer config: run_full ({}) must exceed run_min ({})",
                self.run_full, self.run_min
            )));
        }
        for (name, lo, hi) in [
            ("overlap", self.overlap_lo, self.overlap_hi),
            ("containment", self.containment_lo, self.containment_hi),
            ("embed", self.embed_lo, self.embed_hi),
        ] {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(LearnError::Invalid(format!(
                    "analyzer config: {name}_lo ({lo}) must be below {name}_hi ({hi})"
                )));
            }
        }
        Ok(())
    }
}

/// A chunk as the LLM saw it: its `[marker]` and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownChunk<'a> {
    pub marker: u32,
    pub text: &'a str,
}

/// The raw signals behind a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The answer cites the chunk's marker.
    pub cited: bool,
    /// Longest run of content words that an answer sentence attributed to
    /// this chunk shares with it (runs do not cross answer sentences, which
    /// are at most [`MAX_SENTENCE_WORDS`] words long).
    pub longest_shared_run: usize,
    /// Best fraction of one chunk sentence's content n-grams found in the answer.
    pub ngram_containment: f32,
    /// Best chance-corrected coverage of an answer sentence attributed to
    /// this chunk (0..1).
    pub overlap: f32,
    /// Best cosine between an answer sentence and a chunk sentence, with an embedder.
    pub max_sentence_sim: Option<f32>,
}

/// Usage label of one shown chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageLabel {
    pub marker: u32,
    /// Usage score in `0..=1`.
    pub score: f32,
    pub used: bool,
    pub evidence: Evidence,
}

/// Labels which shown chunks an answer used.
#[derive(Clone)]
pub struct Analyzer {
    cfg: AnalyzerConfig,
    embedder: Option<Arc<dyn TextEmbedder>>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("cfg", &self.cfg)
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.info().clone()),
            )
            .finish()
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new(AnalyzerConfig::default())
    }
}

/// Citation markers found in a text, as inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Citations {
    ranges: Vec<(u32, u32)>,
}

impl Citations {
    /// Whether `marker` is cited.
    pub fn contains(&self, marker: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= marker && marker <= b)
    }

    /// The cited ranges, inclusive, in order of appearance.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// Whether no marker was found.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Parses citation markers: `[3]`, `[1, 2]`, `[1,2-4]`, `[1-3]` (also with
/// en/em dashes), `[^2]`. Anything else in brackets is ignored.
pub fn parse_citations(text: &str) -> Citations {
    let mut ranges = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            break;
        };
        let inner = &after[..close];
        // a nested '[' means this '[' did not open a marker
        if let Some(nested) = inner.rfind('[') {
            rest = &after[nested..];
            continue;
        }
        if let Some(found) = parse_marker_list(inner) {
            ranges.extend(found);
        }
        rest = &after[close + 1..];
    }
    Citations { ranges }
}

fn parse_marker_list(inner: &str) -> Option<Vec<(u32, u32)>> {
    let inner = inner.trim().trim_start_matches('^');
    if inner.is_empty() || inner.len() > 200 {
        return None;
    }
    let mut out = Vec::new();
    for part in inner.split([',', ';']) {
        let part = part.trim();
        let part = part.strip_prefix("and ").unwrap_or(part).trim();
        if part.is_empty() {
            return None;
        }
        let mut ends = part.split(['-', '–', '—']);
        let a: u32 = ends.next()?.trim().parse().ok()?;
        let b: u32 = match ends.next() {
            Some(x) => x.trim().parse().ok()?,
            None => a,
        };
        if ends.next().is_some() {
            return None;
        }
        out.push((a.min(b), a.max(b)));
    }
    Some(out)
}

/// Removes citation markers (as [`parse_citations`] recognises them) from `text`.
fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if parse_marker_list(&after[..close]).is_some() => {
                out.push_str(&rest[..open]);
                out.push(' ');
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 1]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Longest piece, in words, that sentence splitting leaves in one piece;
/// longer unpunctuated stretches are cut into windows.
pub const MAX_SENTENCE_WORDS: usize = 40;

const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "al", "fig", "figs", "eq", "eqs", "vs", "cf", "etc", "approx", "dr", "mr", "mrs",
    "ms", "prof", "no", "vol", "ref", "refs", "sec", "ca", "resp", "viz",
];

/// Splits text into sentences: at `.`, `!`, `?` followed by whitespace (not
/// after common abbreviations or single letters), at line breaks between
/// blank lines, and into windows of at most [`MAX_SENTENCE_WORDS`] words
/// when a stretch has no such punctuation (cut preferably after a comma or
/// semicolon). Returns trimmed, non-empty slices of `text`.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut raw: Vec<&str> = Vec::new();
    let mut start = 0usize;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end_here = match c {
            '。' | '！' | '？' => true,
            '.' | '!' | '?' => {
                let next_ws = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
                next_ws && (c != '.' || !is_abbreviation(&text[start..i]))
            }
            '\n' => chars.peek().is_some_and(|&(_, n)| n == '\n' || n == '\r'),
            _ => false,
        };
        if end_here {
            let stop = i + c.len_utf8();
            raw.push(&text[start..stop]);
            start = stop;
        }
    }
    raw.push(&text[start..]);
    let mut out = Vec::new();
    for piece in raw {
        let piece = piece.trim();
        if piece.is_empty() || !piece.chars().any(char::is_alphanumeric) {
            continue;
        }
        window_split(piece, &mut out);
    }
    out
}

fn is_abbreviation(before: &str) -> bool {
    let last = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    if last.is_empty() {
        return false;
    }
    let lower = last.to_lowercase();
    let n = lower.chars().count();
    (n == 1 && lower.chars().all(char::is_alphabetic)) || ABBREVIATIONS.contains(&lower.as_str())
}

fn window_split<'a>(piece: &'a str, out: &mut Vec<&'a str>) {
    // byte offsets of word starts/ends
    let words: Vec<(usize, usize)> = word_spans(piece);
    if words.len() <= MAX_SENTENCE_WORDS {
        out.push(piece);
        return;
    }
    let mut first = 0usize;
    while first < words.len() {
        let remaining = words.len() - first;
        if remaining <= MAX_SENTENCE_WORDS {
            out.push(piece[words[first].0..].trim());
            break;
        }
        // cut after a comma/semicolon in the second half of the window, else at the window end
        let lo = first + MAX_SENTENCE_WORDS / 2;
        let hi = first + MAX_SENTENCE_WORDS;
        let mut cut = hi;
        for k in (lo..hi).rev() {
            let w = &piece[words[k].0..words[k].1];
            if w.ends_with(',') || w.ends_with(';') || w.ends_with(':') {
                cut = k + 1;
                break;
            }
        }
        // keep the tail from being a tiny fragment
        if words.len() - cut < MAX_SENTENCE_WORDS / 4 {
            cut = words.len();
        }
        out.push(piece[words[first].0..words[cut - 1].1].trim());
        first = cut;
    }
}

fn word_spans(s: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if let Some(st) = start.take() {
                spans.push((st, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        spans.push((st, s.len()));
    }
    spans
}

const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "either",
    "etc", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here",
    "hers", "him", "his", "how", "however", "i", "if", "in", "into", "is", "it", "its", "itself",
    "just", "may", "might", "more", "most", "much", "must", "my", "no", "nor", "not", "now", "of",
    "off", "on", "once", "one", "only", "or", "other", "our", "ours", "out", "over", "own", "per",
    "same", "shall", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "thus", "to",
    "too", "under", "until", "up", "upon", "us", "very", "via", "was", "we", "were", "what",
    "when", "where", "whether", "which", "while", "who", "whom", "why", "will", "with", "within",
    "without", "would", "yet", "you", "your", "yours",
];

/// Whether `word` (lowercase) is a stopword of the analyzer.
pub fn is_stopword(word: &str) -> bool {
    static SET: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
    SET.get_or_init(|| STOPWORDS.iter().copied().collect())
        .contains(word)
}

/// Light suffix stemming so that plural/tense variants match.
fn stem(word: &str) -> &str {
    let n = word.len();
    let strip = |suffix: &str, min_stem: usize| -> Option<usize> {
        (word.ends_with(suffix) && n >= suffix.len() + min_stem).then(|| n - suffix.len())
    };
    if let Some(k) = strip("ies", 3) {
        return &word[..k]; // "studies" → "stud"; "study" → "stud" below
    }
    if let Some(k) = strip("ing", 4) {
        return &word[..k];
    }
    if let Some(k) = strip("ed", 4) {
        return &word[..k];
    }
    if let Some(k) = strip("es", 4) {
        if word[..k].ends_with(['s', 'x', 'z'])
            || word[..k].ends_with("ch")
            || word[..k].ends_with("sh")
        {
            return &word[..k];
        }
    }
    if word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        if let Some(k) = strip("s", 3) {
            return &word[..k];
        }
    }
    if let Some(k) = strip("y", 3) {
        return &word[..k]; // pairs with "ies": "study"/"studies" → "stud"
    }
    if let Some(k) = strip("e", 4) {
        return &word[..k]; // "increase"/"increased"/"increasing" → "increas"
    }
    word
}

/// Normalised content words of `text`: lowercased, split at anything that is
/// not alphanumeric, stopwords and one-character tokens dropped, stemmed.
pub fn content_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if raw.is_empty() {
            continue;
        }
        let lower = raw.to_lowercase();
        if lower.chars().count() < 2 || is_stopword(&lower) {
            continue;
        }
        out.push(stem(&lower).to_string());
    }
    out
}

/// Token ids shared by all texts of one analysis.
#[derive(Default)]
struct Vocab {
    ids: HashMap<String, u32>,
}

impl Vocab {
    fn ids(&mut self, text: &str) -> Vec<u32> {
        content_words(text)
            .into_iter()
            .map(|w| {
                let next = self.ids.len() as u32;
                *self.ids.entry(w).or_insert(next)
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
struct SentenceEvidence {
    run: usize,
    overlap: f32,
    /// Proximity coverage before the chance correction.
    raw: f32,
    strength: f32,
}

struct Doc {
    /// Content-word ids per sentence.
    sentences: Vec<Vec<u32>>,
    /// All content-word ids in order.
    flat: Vec<u32>,
    set: HashSet<u32>,
}

impl Doc {
    fn new(vocab: &mut Vocab, sentences: &[&str]) -> Self {
        let sentences: Vec<Vec<u32>> = sentences.iter().map(|s| vocab.ids(s)).collect();
        let flat: Vec<u32> = sentences.iter().flatten().copied().collect();
        let set = flat.iter().copied().collect();
        Self {
            sentences,
            flat,
            set,
        }
    }
}

fn ngram_hash(gram: &[u32]) -> u64 {
    // FNV-1a over the ids; deterministic across runs
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &id in gram {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn ngram_set(tokens: &[u32], n: usize) -> HashSet<u64> {
    if n == 0 || tokens.len() < n {
        return HashSet::new();
    }
    tokens.windows(n).map(ngram_hash).collect()
}

/// At most this many positions are kept per token of a chunk (a token that
/// repeats more often carries no positional evidence).
const MAX_POSITIONS: usize = 256;
/// Neighbouring answer words (either side) checked for proximity support.
const NEIGHBOUR_WINDOW: usize = 2;
/// Two words are near in a chunk when at most this many content words apart.
const NEAR: u32 = 3;

/// Coverage is shrunk by this many (average) words.
const PRIOR_WORDS: f32 = 1.0;

/// Positions of each content word in a chunk.
struct PositionIndex {
    positions: HashMap<u32, Vec<u32>>,
}

impl PositionIndex {
    fn new(flat: &[u32]) -> Self {
        let mut positions: HashMap<u32, Vec<u32>> = HashMap::new();
        for (p, &t) in flat.iter().enumerate() {
            let list = positions.entry(t).or_default();
            if list.len() < MAX_POSITIONS {
                list.push(p as u32);
            }
        }
        Self { positions }
    }

    /// Longest run of `sentence` that occurs contiguously in the chunk.
    fn run(&self, sentence: &[u32]) -> usize {
        let mut best = 0usize;
        let mut prev: HashMap<u32, usize> = HashMap::new();
        for t in sentence {
            let mut cur = HashMap::new();
            if let Some(list) = self.positions.get(t) {
                for &p in list {
                    let len = p
                        .checked_sub(1)
                        .and_then(|q| prev.get(&q))
                        .copied()
                        .unwrap_or(0)
                        + 1;
                    best = best.max(len);
                    cur.insert(p, len);
                }
            }
            prev = cur;
        }
        best
    }

    /// Whether some occurrences of `a` and `b` lie within [`NEAR`] words.
    fn near(&self, a: u32, b: u32) -> bool {
        let (Some(pa), Some(pb)) = (self.positions.get(&a), self.positions.get(&b)) else {
            return false;
        };
        let (mut i, mut j) = (0, 0);
        while i < pa.len() && j < pb.len() {
            if pa[i].abs_diff(pb[j]) <= NEAR {
                return true;
            }
            if pa[i] < pb[j] {
                i += 1;
            } else {
                j += 1;
            }
        }
        false
    }

    /// Weighted share of the sentence's distinct words that the chunk
    /// contains *near a neighbour of theirs in the sentence*: scattered
    /// matches of single words (which a long chunk offers by chance) do
    /// not count.
    fn coverage(&self, sentence: &[u32], weight: &impl Fn(u32) -> f32) -> f32 {
        let mut supported: HashSet<u32> = HashSet::new();
        let mut seen: HashSet<u32> = HashSet::new();
        let mut total = 0.0f32;
        for (i, &t) in sentence.iter().enumerate() {
            if seen.insert(t) {
                total += weight(t);
            }
            if supported.contains(&t) || !self.positions.contains_key(&t) {
                continue;
            }
            let lo = i.saturating_sub(NEIGHBOUR_WINDOW);
            let hi = (i + NEIGHBOUR_WINDOW).min(sentence.len() - 1);
            if (lo..=hi).any(|j| j != i && sentence[j] != t && self.near(t, sentence[j])) {
                supported.insert(t);
            }
        }
        let hit: f32 = supported.iter().map(|&t| weight(t)).sum();
        if total > 0.0 {
            // shrink towards 0 by PRIOR_WORDS average words: a short sentence
            // covered in full is weaker evidence than a long one
            let mean = total / seen.len() as f32;
            hit / (total + PRIOR_WORDS * mean)
        } else {
            0.0
        }
    }
}

fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
    if !x.is_finite() {
        return 0.0;
    }
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Most sentences of other chunks used to estimate a chunk's chance coverage.
const MAX_REFERENCE_SENTENCES: usize = 400;

impl Analyzer {
    /// An analyzer with lexical and citation signals.
    pub fn new(cfg: AnalyzerConfig) -> Self {
        Self {
            cfg,
            embedder: None,
        }
    }

    /// Adds the sentence-similarity signal from `e`.
    pub fn with_embedder(mut self, e: Arc<dyn TextEmbedder>) -> Self {
        self.embedder = Some(e);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AnalyzerConfig {
        &self.cfg
    }

    /// The heuristic's version, [`ANALYZER_VERSION`].
    pub fn version(&self) -> &'static str {
        ANALYZER_VERSION
    }

    /// One label per chunk, in the order of `chunks`.
    pub fn analyze(&self, response: &str, chunks: &[ShownChunk<'_>]) -> Result<Vec<UsageLabel>> {
        self.cfg.validate()?;
        let cfg = &self.cfg;
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let citations = parse_citations(response);
        // sentences first, then the markers of each: a citation is checked
        // against the sentence that carries it
        let raw_sentences = split_sentences(response);
        let sentence_citations: Vec<Citations> =
            raw_sentences.iter().map(|s| parse_citations(s)).collect();
        let clean: Vec<String> = raw_sentences.iter().map(|s| strip_citations(s)).collect();
        let resp_sentences: Vec<&str> = clean.iter().map(String::as_str).collect();
        let chunk_sentences: Vec<Vec<&str>> =
            chunks.iter().map(|c| split_sentences(c.text)).collect();

        let mut vocab = Vocab::default();
        let resp = Doc::new(&mut vocab, &resp_sentences);
        let docs: Vec<Doc> = chunk_sentences
            .iter()
            .map(|s| Doc::new(&mut vocab, s))
            .collect();

        // rarity weights among the shown chunks
        let n = docs.len() as f32;
        let mut df: HashMap<u32, u32> = HashMap::new();
        for d in &docs {
            for &t in &d.set {
                *df.entry(t).or_insert(0) += 1;
            }
        }
        let weight = |t: u32| -> f32 {
            let f = df.get(&t).copied().unwrap_or(0) as f32;
            (1.0 + (n + 1.0) / (f + 1.0)).ln()
        };
        let indexes: Vec<PositionIndex> =
            docs.iter().map(|d| PositionIndex::new(&d.flat)).collect();

        let resp_grams = ngram_set(&resp.flat, cfg.ngram);

        // per answer sentence and chunk: shared run and proximity coverage
        let sentence_evidence: Vec<Vec<SentenceEvidence>> = indexes
            .iter()
            .enumerate()
            .map(|(ci, idx)| {
                // chance coverage of a sentence by this chunk, from the other chunks' sentences
                let mut reference: Vec<f32> = docs
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != ci)
                    .flat_map(|(_, d)| d.sentences.iter())
                    .filter(|s| s.len() >= cfg.min_sentence_words)
                    .take(MAX_REFERENCE_SENTENCES)
                    .map(|s| idx.coverage(s, &weight))
                    .collect();
                let base = chance_baseline(&mut reference, docs[ci].set.len());
                resp.sentences
                    .iter()
                    .map(|s| {
                        let run = idx.run(s);
                        let raw = if s.len() >= cfg.min_sentence_words {
                            idx.coverage(s, &weight)
                        } else {
                            0.0
                        };
                        let overlap = if raw > base {
                            (raw - base) / (1.0 - base).max(1e-3)
                        } else {
                            0.0
                        };
                        // how well this chunk explains the sentence, for the competition
                        let strength = (run as f32 / s.len().max(1) as f32).max(raw);
                        SentenceEvidence {
                            run,
                            overlap,
                            raw,
                            strength,
                        }
                    })
                    .collect()
            })
            .collect();
        let sentence_score = |run: usize, overlap: f32| -> f32 {
            noisy_or(&[
                (
                    cfg.run_weight,
                    ramp(run as f32, cfg.run_min as f32, cfg.run_full as f32),
                ),
                (
                    cfg.overlap_weight,
                    ramp(overlap, cfg.overlap_lo, cfg.overlap_hi),
                ),
            ])
        };
        let best_per_sentence: Vec<f32> = (0..resp.sentences.len())
            .map(|si| {
                sentence_evidence
                    .iter()
                    .map(|row| row[si].strength)
                    .fold(0.0f32, f32::max)
            })
            .collect();

        let sims = match &self.embedder {
            Some(e) => Some(self.sentence_sims(e.as_ref(), &resp_sentences, &chunk_sentences)?),
            None => None,
        };

        let mut labels = Vec::with_capacity(chunks.len());
        for (ci, (chunk, doc)) in chunks.iter().zip(&docs).enumerate() {
            let cited = citations.contains(chunk.marker);

            // containment: best chunk sentence; fall back to the whole chunk
            let mut containment = 0.0f32;
            let mut any_sentence = false;
            for s in &doc.sentences {
                let grams = ngram_set(s, cfg.ngram);
                if grams.len() < cfg.min_ngrams {
                    continue;
                }
                any_sentence = true;
                let hit = grams.iter().filter(|g| resp_grams.contains(g)).count();
                containment = containment.max(hit as f32 / grams.len() as f32);
            }
            if !any_sentence {
                let grams = ngram_set(&doc.flat, cfg.ngram);
                if grams.len() >= cfg.min_ngrams.min(2) {
                    let hit = grams.iter().filter(|g| resp_grams.contains(g)).count();
                    containment = hit as f32 / grams.len() as f32;
                }
            }

            // run and overlap from the answer sentences this chunk explains
            // (nearly) as well as any other shown chunk does
            let (mut run, mut overlap, mut cite_check) = (0usize, 0.0f32, 0.0f32);
            for (si, e) in sentence_evidence[ci].iter().enumerate() {
                if e.strength > 0.0 && e.strength + cfg.competition_margin >= best_per_sentence[si]
                {
                    run = run.max(e.run);
                    overlap = overlap.max(e.overlap);
                }
                if sentence_citations[si].contains(chunk.marker) {
                    // the citing sentence itself, without the competition
                    let own = sentence_score(e.run, e.overlap);
                    let weak = e.raw >= cfg.cite_support_coverage || e.run >= cfg.run_min;
                    cite_check = cite_check.max(if weak { own.max(cfg.cite_support) } else { own });
                }
            }

            let max_sentence_sim = sims.as_ref().and_then(|s| s[ci]);

            let run_s = ramp(run as f32, cfg.run_min as f32, cfg.run_full as f32);
            let ov_s = ramp(overlap, cfg.overlap_lo, cfg.overlap_hi);
            let cont_s = ramp(containment, cfg.containment_lo, cfg.containment_hi);
            let emb_s = max_sentence_sim.map_or(0.0, |x| ramp(x, cfg.embed_lo, cfg.embed_hi));
            let lexical = noisy_or(&[
                (cfg.run_weight, run_s),
                (cfg.containment_weight, cont_s),
                (cfg.overlap_weight, ov_s),
            ]);
            let support = lexical.max(cite_check).max(emb_s * cfg.embed_weight);
            let cite_s = if !cited {
                0.0
            } else if support >= cfg.cite_support {
                cfg.cite_weight
            } else {
                cfg.unsupported_cite_weight
            };
            let score = noisy_or(&[(1.0, lexical), (cfg.embed_weight, emb_s), (1.0, cite_s)]);
            let score = if score.is_finite() {
                score.clamp(0.0, 1.0)
            } else {
                0.0
            };
            labels.push(UsageLabel {
                marker: chunk.marker,
                score,
                used: score >= cfg.threshold,
                evidence: Evidence {
                    cited,
                    longest_shared_run: run,
                    ngram_containment: containment,
                    overlap,
                    max_sentence_sim,
                },
            });
        }
        Ok(labels)
    }

    /// Per chunk, the best cosine between an answer sentence and one of its
    /// sentences (`None` for a chunk or answer without sentences).
    fn sentence_sims(
        &self,
        e: &dyn TextEmbedder,
        resp: &[&str],
        chunks: &[Vec<&str>],
    ) -> Result<Vec<Option<f32>>> {
        let cap = self.cfg.max_embed_sentences.max(1);
        let resp: Vec<&str> = resp.iter().take(cap).copied().collect();
        if resp.is_empty() {
            return Ok(vec![None; chunks.len()]);
        }
        let mut texts: Vec<&str> = resp.clone();
        let mut spans = Vec::with_capacity(chunks.len());
        for c in chunks {
            let start = texts.len();
            texts.extend(c.iter().take(cap).copied());
            spans.push(start..texts.len());
        }
        let dim = e.info().dim;
        let vecs = e.embed(&texts)?;
        if dim == 0 || vecs.len() != texts.len() * dim {
            return Err(LearnError::Invalid(format!(
                "embedder returned {} values for {} texts of dimension {dim}",
                vecs.len(),
                texts.len()
            )));
        }
        let row = |i: usize| &vecs[i * dim..(i + 1) * dim];
        let cos = |a: &[f32], b: &[f32]| -> f32 {
            let (mut d, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
            for (x, y) in a.iter().zip(b) {
                d += x * y;
                na += x * x;
                nb += y * y;
            }
            let den = (na * nb).sqrt();
            if den > 0.0 && den.is_finite() {
                d / den
            } else {
                0.0
            }
        };
        Ok(spans
            .into_iter()
            .map(|span| {
                if span.is_empty() {
                    return None;
                }
                let mut best = f32::NEG_INFINITY;
                for ci in span {
                    for ri in 0..resp.len() {
                        best = best.max(cos(row(ri), row(ci)));
                    }
                }
                best.is_finite().then_some(best)
            })
            .collect())
    }
}

/// Chance coverage of a sentence by a chunk: the 75th percentile of its
/// coverage of other chunks' sentences, blended with a length prior when
/// there are few of them.
fn chance_baseline(reference: &mut [f32], chunk_vocab: usize) -> f32 {
    let prior = 0.2 * chunk_vocab as f32 / (chunk_vocab as f32 + 150.0);
    if reference.is_empty() {
        return prior;
    }
    reference.sort_by(f32::total_cmp);
    let k = ((reference.len() as f32 - 1.0) * 0.75).round() as usize;
    let p = reference[k.min(reference.len() - 1)];
    let m = reference.len() as f32;
    let w = m / (m + 5.0);
    (w * p + (1.0 - w) * prior).clamp(0.0, 0.9)
}

fn noisy_or(parts: &[(f32, f32)]) -> f32 {
    1.0 - parts
        .iter()
        .map(|&(w, s)| 1.0 - (w * s).clamp(0.0, 1.0))
        .product::<f32>()
}
