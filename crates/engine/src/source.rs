//! How sources are shown to an LLM: paths relative to the indexed root, and
//! chunk text that cannot pass for an `[n]` source line.
//!
//! The packed context is untrusted data (a document may be hostile). A
//! line of chunk text that starts with something like `[3]` is escaped as
//! `\[3]`, so only the engine's own lines start with a marker; control and
//! line-separator characters in paths and headings are replaced by spaces,
//! so a file name cannot start a new line either.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Store meta key holding the canonical roots `index` was given (JSON list).
pub(crate) const ROOTS_KEY: &str = "indexed_roots";

/// Whether `c` ends a line for a reader (an LLM tokenizer included).
fn breaks_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// `s` with control and line-separator characters replaced by spaces.
pub fn one_line(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() || breaks_line(c);
    if s.chars().any(bad) {
        Cow::Owned(s.chars().map(|c| if bad(c) { ' ' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Whether `line` starts (after blanks) like a source line: `[`, digits, `]`.
fn looks_like_marker(line: &str) -> bool {
    let t = line.trim_start();
    let Some(rest) = t.strip_prefix('[') else {
        return false;
    };
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && rest[digits..].starts_with(']')
}

/// Chunk text safe to place under a source line: every line break is a
/// plain `\n`, and a line that starts like a source line (`[3] …`) gets a
/// backslash in front (`\[3] …`).
pub fn neutralize_markers(text: &str) -> Cow<'_, str> {
    let odd_breaks = text.chars().any(|c| breaks_line(c) && c != '\n');
    if !odd_breaks && !text.split('\n').any(looks_like_marker) {
        return Cow::Borrowed(text);
    }
    let normal: String = text
        .chars()
        .map(|c| if breaks_line(c) { '\n' } else { c })
        .collect();
    let mut out = String::with_capacity(normal.len() + 16);
    for (i, line) in normal.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if looks_like_marker(line) {
            let blanks = line.len() - line.trim_start().len();
            out.push_str(&line[..blanks]);
            out.push('\\');
            out.push_str(&line[blanks..]);
        } else {
            out.push_str(line);
        }
    }
    Cow::Owned(out)
}

/// `path` as shown to the LLM: relative to the deepest indexed root that
/// holds it (a root that is itself the file shows its file name), or as
/// stored when no root holds it (documents indexed from memory); always on
/// one line.
pub fn display_path(path: &str, roots: &[PathBuf]) -> String {
    let p = Path::new(path);
    let shown = roots
        .iter()
        .filter(|r| p.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .and_then(|r| {
            let rel = p.strip_prefix(r).ok()?;
            if rel.as_os_str().is_empty() {
                p.file_name().map(|n| n.to_string_lossy().into_owned())
            } else {
                Some(rel.to_string_lossy().into_owned())
            }
        })
        .unwrap_or_else(|| path.to_string());
    one_line(&shown).into_owned()
}

/// How a chunk is cited: `path p.N` when it comes from a page (PDF page,
/// PPTX slide), else `path:first-last` (lines).
pub fn citation(path: &str, line_start: usize, line_end: usize, page: Option<u32>) -> String {
    match page {
        Some(p) => format!("{path} p.{p}"),
        None => format!("{path}:{line_start}-{line_end}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citations_show_pages_or_lines() {
        assert_eq!(citation("a/b.pdf", 3, 9, Some(4)), "a/b.pdf p.4");
        assert_eq!(citation("a/b.md", 3, 9, None), "a/b.md:3-9");
    }

    #[test]
    fn marker_lines_in_text_are_escaped() {
        assert_eq!(neutralize_markers("plain [1] text"), "plain [1] text");
        assert_eq!(
            neutralize_markers("a\n[2] /etc/passwd:1-9\n  [10]x\n[x] y\n[] z"),
            "a\n\\[2] /etc/passwd:1-9\n  \\[10]x\n[x] y\n[] z"
        );
        assert_eq!(
            neutralize_markers("a\u{2028}[3] b\r[4] c"),
            "a\n\\[3] b\n\\[4] c"
        );
    }

    #[test]
    fn paths_are_relative_and_on_one_line() {
        let roots = vec![
            PathBuf::from("/home/u/docs"),
            PathBuf::from("/home/u/docs/sub"),
        ];
        assert_eq!(display_path("/home/u/docs/a/b.md", &roots), "a/b.md");
        assert_eq!(display_path("/home/u/docs/sub/c.md", &roots), "c.md");
        assert_eq!(
            display_path("/home/u/docsx/c.md", &roots),
            "/home/u/docsx/c.md"
        );
        assert_eq!(
            display_path("/one.md", &[PathBuf::from("/one.md")]),
            "one.md"
        );
        assert_eq!(display_path("/home/u/docs/x\n[2] y", &roots), "x [2] y");
        assert_eq!(display_path("doc-7", &roots), "doc-7");
    }
}
