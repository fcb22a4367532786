//! A simulated LLM for offline runs of the learning loop.
//!
//! Given a query and the shown chunks (each flagged relevant or not, which
//! only the simulator knows), it writes an answer that draws on a shown
//! relevant chunk with probability [`SimLlmConfig::use_relevant`] and on a
//! non-relevant one with probability [`SimLlmConfig::use_irrelevant`]. From
//! every chunk it uses it takes `1..=max_sentences_per_chunk` sentences,
//! each quoted verbatim (probability [`SimLlmConfig::quote_rate`]) or
//! paraphrased: clauses reordered, words dropped, swapped, inflected
//! differently or replaced by simple synonyms, with a framing phrase in
//! front, so that a paraphrase shares only short runs of words with its
//! source. A used chunk gets a `[marker]` with probability
//! [`SimLlmConfig::cite_rate`]. Filler sentences of its own, built from
//! the query's words, surround the borrowed ones.
//!
//! Deterministic for a given seed and sequence of calls.

use anectx_core::rng::Rng;
use serde::{Deserialize, Serialize};

use crate::analyzer::{is_stopword, split_sentences};

/// Rates of the simulated LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimLlmConfig {
    /// Probability of using a shown relevant chunk.
    pub use_relevant: f32,
    /// Probability of using a shown non-relevant chunk.
    pub use_irrelevant: f32,
    /// Probability that a borrowed sentence is quoted verbatim rather than paraphrased.
    pub quote_rate: f32,
    /// Probability that a used chunk is cited with its `[marker]`.
    pub cite_rate: f32,
    /// At most this many sentences are taken from one chunk (at least 1).
    pub max_sentences_per_chunk: usize,
    pub seed: u64,
}

impl Default for SimLlmConfig {
    fn default() -> Self {
        Self {
            use_relevant: 0.85,
            use_irrelevant: 0.1,
            quote_rate: 0.5,
            cite_rate: 0.3,
            max_sentences_per_chunk: 2,
            seed: 0,
        }
    }
}

/// A shown chunk, with the simulator's knowledge of its relevance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimChunk<'a> {
    pub marker: u32,
    pub text: &'a str,
    pub relevant: bool,
}

/// A simulated answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAnswer {
    pub text: String,
    /// Markers of the chunks the answer actually drew on, in the order shown.
    pub used: Vec<u32>,
}

/// The simulated LLM; see the module documentation.
#[derive(Debug, Clone)]
pub struct SimLlm {
    cfg: SimLlmConfig,
    rng: Rng,
}

/// Fisher–Yates with [`Rng::pick`] (the simulator's own draws).
fn pick_shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.pick(i + 1);
        v.swap(i, j);
    }
}

fn rate(p: f32) -> f32 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

const SYNONYMS: &[(&str, &str)] = &[
    ("study", "investigation"),
    ("studies", "investigations"),
    ("investigation", "study"),
    ("results", "findings"),
    ("result", "outcome"),
    ("show", "demonstrate"),
    ("shows", "indicates"),
    ("shown", "demonstrated"),
    ("method", "technique"),
    ("methods", "techniques"),
    ("increase", "rise"),
    ("increased", "raised"),
    ("increases", "grows"),
    ("decrease", "reduction"),
    ("decreased", "lowered"),
    ("obtained", "derived"),
    ("used", "employed"),
    ("using", "employing"),
    ("use", "usage"),
    ("effect", "influence"),
    ("effects", "influences"),
    ("significant", "notable"),
    ("large", "big"),
    ("small", "minor"),
    ("high", "elevated"),
    ("low", "modest"),
    ("determine", "establish"),
    ("determined", "established"),
    ("found", "observed"),
    ("data", "measurements"),
    ("analysis", "examination"),
    ("problem", "issue"),
    ("problems", "issues"),
    ("theoretical", "analytical"),
    ("experimental", "empirical"),
    ("experiments", "tests"),
    ("experiment", "test"),
    ("presented", "described"),
    ("present", "describe"),
    ("paper", "report"),
    ("approximately", "roughly"),
    ("important", "key"),
    ("various", "several"),
    ("different", "distinct"),
    ("measured", "recorded"),
    ("compared", "contrasted"),
    ("agreement", "accord"),
    ("good", "close"),
    ("number", "count"),
    ("given", "provided"),
    ("new", "novel"),
    ("general", "broad"),
    ("case", "instance"),
    ("cases", "instances"),
    ("value", "magnitude"),
    ("values", "magnitudes"),
    ("patients", "subjects"),
    ("information", "knowledge"),
    ("system", "framework"),
    ("systems", "frameworks"),
    ("users", "patrons"),
    ("research", "inquiry"),
    ("documents", "records"),
    ("article", "paper"),
    ("articles", "papers"),
    ("velocity", "speed"),
    ("distribution", "spread"),
    ("solution", "answer"),
    ("solutions", "answers"),
    ("equation", "formula"),
    ("equations", "formulas"),
    ("simple", "basic"),
    ("accurate", "precise"),
    ("approximate", "rough"),
    ("obtain", "get"),
    ("described", "outlined"),
    ("developed", "devised"),
    ("discussed", "considered"),
    ("considered", "examined"),
    ("proposed", "suggested"),
    ("observed", "seen"),
    ("normal", "typical"),
    ("similar", "comparable"),
    ("rapid", "fast"),
    ("total", "overall"),
    ("major", "main"),
    ("required", "needed"),
    ("possible", "feasible"),
    ("however", "yet"),
    ("therefore", "hence"),
];

fn synonym(word: &str) -> Option<&'static str> {
    SYNONYMS.iter().find(|(w, _)| *w == word).map(|&(_, s)| s)
}

const FRAMES: &[&str] = &[
    "In other words,",
    "Put differently,",
    "It appears that",
    "Broadly speaking,",
    "One source notes that",
    "Reportedly,",
    "As described,",
    "",
];

const FILLERS: &[&str] = &[
    "The question concerns {a} and {b}.",
    "Several aspects of {a} are relevant here.",
    "This answer summarises what the material says about {a} {b}.",
    "Overall, {a} remains a subject of ongoing discussion.",
    "In short, {a} depends on the conditions considered.",
    "To answer the question about {a}, a few points stand out.",
    "Questions about {b} and {a} come up often.",
    "Further work on {a} would help.",
];

const NO_ANSWER: &str =
    "The provided context does not seem to address this question directly, so no firm answer can be given.";

impl SimLlm {
    /// A simulated LLM seeded with `cfg.seed`.
    pub fn new(cfg: SimLlmConfig) -> Self {
        let rng = Rng::from_state(cfg.seed ^ 0x5eed_a11c_e5ed_0001);
        Self { cfg, rng }
    }

    /// The configuration.
    pub fn config(&self) -> &SimLlmConfig {
        &self.cfg
    }

    /// Writes an answer to `query` from `chunks`.
    pub fn answer(&mut self, query: &str, chunks: &[SimChunk<'_>]) -> SimAnswer {
        let use_rel = rate(self.cfg.use_relevant);
        let use_irr = rate(self.cfg.use_irrelevant);
        let quote = rate(self.cfg.quote_rate);
        let cite = rate(self.cfg.cite_rate);
        let max_sent = self.cfg.max_sentences_per_chunk.max(1);

        let query_words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
            .map(str::to_lowercase)
            .filter(|w| !is_stopword(w))
            .collect();

        // decide usage in shown order (one draw per chunk, so rates are exact)
        let mut used = Vec::new();
        let mut borrowed: Vec<Vec<String>> = Vec::new(); // sentences per used chunk
        for c in chunks {
            let p = if c.relevant { use_rel } else { use_irr };
            if !self.rng.chance(p) {
                continue;
            }
            let mut sentences: Vec<&str> = split_sentences(c.text)
                .into_iter()
                .filter(|s| word_count(s) >= 3)
                .collect();
            // a title repeated at the start of the text is one sentence
            let mut seen = std::collections::HashSet::new();
            sentences.retain(|s| seen.insert(s.to_lowercase()));
            // an answer draws on informative sentences when the chunk has them
            if sentences.iter().any(|s| word_count(s) >= 6) {
                sentences.retain(|s| word_count(s) >= 6);
            }
            if sentences.is_empty() {
                continue; // nothing to draw on
            }
            let k = 1 + self.rng.pick(max_sent.min(sentences.len()));
            let mut idx: Vec<usize> = (0..sentences.len()).collect();
            pick_shuffle(&mut self.rng, &mut idx);
            idx.truncate(k);
            idx.sort_unstable();
            let mut out = Vec::with_capacity(k);
            for (n, &i) in idx.iter().enumerate() {
                let mut s = if self.rng.chance(quote) {
                    finish(sentences[i].trim())
                } else {
                    self.paraphrase(sentences[i])
                };
                if n == 0 && self.rng.chance(cite) {
                    s = add_marker(&s, c.marker);
                }
                out.push(s);
            }
            used.push(c.marker);
            borrowed.push(out);
        }

        // the order in which the answer presents the chunks is its own
        pick_shuffle(&mut self.rng, &mut borrowed);
        let mut parts: Vec<String> = Vec::new();
        if borrowed.is_empty() {
            parts.push(NO_ANSWER.to_string());
            if !query_words.is_empty() {
                parts.push(self.filler(&query_words));
            }
        } else {
            if !query_words.is_empty() && self.rng.chance(0.8) {
                parts.push(self.filler(&query_words));
            }
            for group in borrowed {
                parts.extend(group);
                if !query_words.is_empty() && self.rng.chance(0.3) {
                    parts.push(self.filler(&query_words));
                }
            }
        }
        SimAnswer {
            text: parts.join(" "),
            used,
        }
    }

    fn filler(&mut self, query_words: &[String]) -> String {
        let t = FILLERS[self.rng.pick(FILLERS.len())];
        let a = &query_words[self.rng.pick(query_words.len())];
        let b = &query_words[self.rng.pick(query_words.len())];
        t.replace("{a}", a).replace("{b}", b)
    }

    /// Rewrites a sentence: reorders clauses, drops, swaps, re-inflects and
    /// replaces words, and puts a framing phrase in front.
    fn paraphrase(&mut self, sentence: &str) -> String {
        let mut words: Vec<String> = sentence
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return finish(sentence.trim());
        }
        // clause reordering at a comma or a conjunction near the middle
        let marks: Vec<usize> = sentence
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .enumerate()
            .filter(|(_, w)| {
                w.ends_with(',')
                    || w.ends_with(';')
                    || matches!(
                        w.to_lowercase().as_str(),
                        "and" | "which" | "while" | "whereas" | "but" | "where"
                    )
            })
            .map(|(i, _)| i)
            .filter(|&i| i >= 3 && i + 3 < words.len())
            .collect();
        if !marks.is_empty() && self.rng.chance(0.8) {
            let at = marks[self.rng.pick(marks.len())];
            words.rotate_left(at + 1);
        } else if words.len() >= 8 && self.rng.chance(0.6) {
            let at = words.len() / 3 + self.rng.pick(words.len() / 3);
            words.rotate_left(at);
        }
        let mut out: Vec<String> = Vec::with_capacity(words.len() + 4);
        for w in words {
            let lower = w.to_lowercase();
            if let Some(s) = synonym(&lower) {
                if self.rng.chance(0.85) {
                    out.push(s.to_string());
                    continue;
                }
            }
            let stop = is_stopword(&lower);
            if self.rng.chance(if stop { 0.3 } else { 0.15 }) {
                continue;
            }
            if !stop && lower.len() > 3 && self.rng.chance(0.15) {
                out.push(reinflect(&lower));
                continue;
            }
            out.push(lower);
        }
        for i in 1..out.len() {
            if self.rng.chance(0.12) {
                out.swap(i - 1, i);
            }
        }
        let frame = FRAMES[self.rng.pick(FRAMES.len())];
        let body = out.join(" ");
        let text = if frame.is_empty() {
            body
        } else {
            format!("{frame} {body}")
        };
        finish(&capitalise(&text))
    }
}

fn word_count(s: &str) -> usize {
    s.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

fn reinflect(w: &str) -> String {
    if let Some(stem) = w.strip_suffix("ies") {
        format!("{stem}y")
    } else if w.ends_with("ss") {
        format!("{w}es")
    } else if let Some(stem) = w.strip_suffix('s') {
        stem.to_string()
    } else if let Some(stem) = w.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{w}s")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Ends a sentence with a full stop unless it already ends with `.`, `!` or `?`.
fn finish(s: &str) -> String {
    let s = s.trim();
    if s.ends_with(['.', '!', '?']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// Puts ` [marker]` before the sentence's final punctuation.
fn add_marker(s: &str, marker: u32) -> String {
    let body = s.trim_end_matches(['.', '!', '?', ' ']);
    let tail = &s[body.len()..];
    let tail = tail.trim();
    format!(
        "{body} [{marker}]{}",
        if tail.is_empty() { "." } else { tail }
    )
}
