//! Token-window chunking with overlap, aware of Markdown headings.
//!
//! Tokens here are the engine's own pre-tokens: runs of alphanumeric
//! characters, and each other non-space character. They approximate word
//! pieces from below; chunks are cut at line ends when one falls in the last
//! quarter of a window. Markdown is split into sections at ATX headings
//! (outside fenced code) and chunks never cross a heading; each chunk records
//! its heading path (`Top > Sub`).

use anectx_store::NewChunk;
use serde::{Deserialize, Serialize};

use crate::extract::DocKind;

/// Chunk sizes in pre-tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkConfig {
    pub max_tokens: usize,
    pub overlap: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap: 32,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    start: usize,
    end: usize,
}

fn pretokens(text: &str, base: usize) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut run: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '_' {
            run.get_or_insert(i);
        } else {
            if let Some(s) = run.take() {
                out.push(Tok {
                    start: base + s,
                    end: base + i,
                });
            }
            if !c.is_whitespace() {
                out.push(Tok {
                    start: base + i,
                    end: base + i + c.len_utf8(),
                });
            }
        }
    }
    if let Some(s) = run {
        out.push(Tok {
            start: base + s,
            end: base + text.len(),
        });
    }
    out
}

/// Number of pre-tokens in `text` (what budgets and chunk sizes count).
pub fn count_tokens(text: &str) -> usize {
    pretokens(text, 0).len()
}

/// Longest heading path, in characters, recorded with a chunk (and longest
/// title kept per heading level): a 1 MB heading line must not be copied
/// into every chunk of its section. Longer ones end in `…`.
pub const MAX_HEADING_CHARS: usize = 200;

/// `s` cut to at most `max` characters, ending in `…` when cut.
fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep = s
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(0, |(i, _)| i);
            let mut t = s[..keep].to_string();
            t.push('…');
            t
        }
    }
}

/// Splits Markdown into `(byte_start, byte_end, heading path)` sections.
fn markdown_sections(text: &str) -> Vec<(usize, usize, Option<String>)> {
    let mut sections = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut start = 0;
    let mut heading: Option<String> = None;
    let mut in_fence = false;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
        }
        let level = t.chars().take_while(|&c| c == '#').count();
        let is_heading = !in_fence
            && (1..=6).contains(&level)
            && line.len() - t.len() < 4
            && t[level..].starts_with([' ', '\t', '\n', '\r']);
        if is_heading {
            if pos > start {
                sections.push((start, pos, heading.clone()));
            }
            let title = truncate_chars(
                t[level..].trim().trim_end_matches('#').trim(),
                MAX_HEADING_CHARS,
            );
            stack.retain(|(l, _)| *l < level);
            stack.push((level, title));
            let path = stack
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" > ");
            heading = Some(truncate_chars(&path, MAX_HEADING_CHARS));
            start = pos;
        }
        pos += line.len();
    }
    if text.len() > start {
        sections.push((start, text.len(), heading));
    }
    sections
}

/// Chunks `text` of the given kind.
pub fn chunk_text(text: &str, kind: DocKind, cfg: ChunkConfig) -> Vec<NewChunk> {
    let max = cfg.max_tokens.max(8);
    let overlap = cfg.overlap.min(max / 2);
    let sections = if kind == DocKind::Markdown {
        markdown_sections(text)
    } else {
        vec![(0, text.len(), None)]
    };
    // Line starts for byte → line lookups.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_of = |b: usize| line_starts.partition_point(|&s| s <= b);
    let mut out = Vec::new();
    for (s0, s1, heading) in sections {
        let toks = pretokens(&text[s0..s1], s0);
        if toks.is_empty() {
            continue;
        }
        let newline_after = |i: usize| -> bool {
            let end = toks[i].end;
            let next = toks.get(i + 1).map_or(s1, |t| t.start);
            text[end..next].contains('\n')
        };
        let mut s = 0;
        loop {
            let mut e = (s + max).min(toks.len());
            if e < toks.len() {
                let floor = s + max * 3 / 4;
                if let Some(cut) = (floor..e).rev().find(|&i| newline_after(i - 1)) {
                    e = cut;
                }
            }
            let (b0, b1) = (toks[s].start, toks[e - 1].end);
            out.push(NewChunk {
                text: text[b0..b1].to_string(),
                heading: heading.clone(),
                byte_start: b0,
                byte_end: b1,
                line_start: line_of(b0),
                line_end: line_of(b1.saturating_sub(1).max(b0)),
                tokens: e - s,
                page: None,
            });
            if e >= toks.len() {
                break;
            }
            s = e.saturating_sub(overlap).max(s + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_overlap_and_cover_everything() {
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let cfg = ChunkConfig {
            max_tokens: 30,
            overlap: 5,
        };
        let chunks = chunk_text(&text, DocKind::Text, cfg);
        assert!(chunks.len() >= 4);
        assert!(chunks.iter().all(|c| c.tokens <= 30));
        assert_eq!(chunks[0].byte_start, 0);
        assert_eq!(chunks.last().unwrap().byte_end, text.trim_end().len());
        for w in chunks.windows(2) {
            // Overlap: the next chunk starts before the previous one ends.
            assert!(w[1].byte_start < w[0].byte_end);
            assert_eq!(&text[w[0].byte_start..w[0].byte_end], w[0].text);
        }
        assert_eq!(count_tokens("a, b_c! déjà"), 5);
    }

    #[test]
    fn markdown_headings_split_sections() {
        let md =
            "intro line\n# Top\nalpha\n```\n# not a heading\n```\n## Sub\nbeta\n# Other\ngamma\n";
        let chunks = chunk_text(md, DocKind::Markdown, ChunkConfig::default());
        let heads: Vec<_> = chunks.iter().map(|c| c.heading.clone()).collect();
        assert_eq!(
            heads,
            vec![
                None,
                Some("Top".to_string()),
                Some("Top > Sub".to_string()),
                Some("Other".to_string())
            ]
        );
        assert!(chunks[1].text.contains("# not a heading"));
        assert_eq!(chunks[2].line_start, 7);
        assert_eq!(chunks[3].line_end, 10);
    }

    #[test]
    fn a_huge_heading_is_capped_in_every_chunk() {
        // A 1 MB heading line (multi-byte characters, so the cut must fall
        // on a character boundary), then a body of several chunks.
        let big = "é".repeat(1 << 19);
        let body: String = (0..2000).map(|i| format!("w{i} ")).collect();
        let md = format!("# {big}\n{body}\n## Sub\nsub text\n");
        let chunks = chunk_text(&md, DocKind::Markdown, ChunkConfig::default());
        assert!(chunks.len() > 10, "{}", chunks.len());
        for c in &chunks {
            let h = c.heading.as_deref().unwrap();
            assert!(h.chars().count() <= MAX_HEADING_CHARS, "{}", h.len());
            assert!(h.starts_with("éé"), "{h}");
        }
        assert!(chunks
            .last()
            .unwrap()
            .heading
            .as_deref()
            .unwrap()
            .ends_with('…'));
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(chunk_text("", DocKind::Text, ChunkConfig::default()).is_empty());
        assert!(chunk_text(" \n\t\n", DocKind::Markdown, ChunkConfig::default()).is_empty());
    }
}
