//! Reading files into text: kind detection, binary detection, HTML to text.

use std::path::Path;

/// What a file holds, which decides how it is read and chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    Markdown,
    Rst,
    Html,
    Code,
    Text,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Markdown => "markdown",
            Self::Rst => "rst",
            Self::Html => "html",
            Self::Code => "code",
            Self::Text => "text",
        }
    }

    /// Kind by file extension; unknown extensions are read as text when
    /// their content is not binary.
    pub fn from_path(path: &Path) -> Self {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "md" | "markdown" | "mdx" => Self::Markdown,
            "rst" => Self::Rst,
            "html" | "htm" | "xhtml" => Self::Html,
            "rs" | "py" | "js" | "ts" | "tsx" | "jsx" | "go" | "c" | "h" | "cc" | "cpp" | "hpp"
            | "java" | "kt" | "swift" | "m" | "mm" | "rb" | "php" | "cs" | "scala" | "sh"
            | "bash" | "zsh" | "sql" | "lua" | "r" | "jl" | "hs" | "ml" | "ex" | "exs" | "erl"
            | "clj" | "dart" | "zig" | "nim" | "toml" | "yaml" | "yml" | "json" | "xml" | "css"
            | "scss" | "proto" | "cmake" | "gradle" => Self::Code,
            _ => Self::Text,
        }
    }
}

/// Why a file's bytes cannot be indexed as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Text, and whether invalid UTF-8 had to be replaced.
    Text {
        text: String,
        lossy: bool,
    },
    Binary,
}

/// Decodes file bytes: NUL bytes in the first 8 KiB, or mostly invalid UTF-8,
/// mean binary; otherwise invalid sequences become U+FFFD.
pub fn decode(bytes: &[u8]) -> Decoded {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Decoded::Binary;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Decoded::Text {
            text: s.to_owned(),
            lossy: false,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let bad = text.chars().filter(|&c| c == '\u{FFFD}').count();
            if bad * 10 > text.chars().count().max(1) {
                Decoded::Binary
            } else {
                Decoded::Text { text, lossy: true }
            }
        }
    }
}

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "td",
    "th",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "hr",
    "dd",
    "dt",
    "title",
    "main",
    "aside",
    "figure",
    "figcaption",
];

/// Converts HTML to plain text: drops `script`, `style`, comments and tags,
/// turns block elements into line breaks and decodes common entities.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    let b = html.as_bytes();
    while i < b.len() {
        if b[i] == b'<' {
            if lower[i..].starts_with("<!--") {
                i = lower[i..].find("-->").map_or(b.len(), |j| i + j + 3);
                continue;
            }
            let end = lower[i..].find('>').map_or(b.len(), |j| i + j + 1);
            let tag = &lower[i + 1..end.saturating_sub(1).max(i + 1)];
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if (name == "script" || name == "style") && !tag.starts_with('/') {
                let close = format!("</{name}");
                i = lower[end..]
                    .find(&close)
                    .and_then(|j| lower[end + j..].find('>').map(|k| end + j + k + 1))
                    .unwrap_or(b.len());
                continue;
            }
            if BLOCK_TAGS.contains(&name.as_str()) && !out.ends_with('\n') {
                out.push('\n');
            }
            i = end;
        } else if b[i] == b'&' {
            let semi = html[i..].find(';').filter(|&j| j <= 10);
            let decoded = semi.and_then(|j| decode_entity(&html[i + 1..i + j]));
            match (semi, decoded) {
                (Some(j), Some(c)) => {
                    out.push(c);
                    i += j + 1;
                }
                _ => {
                    out.push('&');
                    i += 1;
                }
            }
        } else {
            let next = html[i..].find(['<', '&']).map_or(html.len(), |j| i + j);
            out.push_str(&html[i..next]);
            i = next;
        }
    }
    // Collapse runs of blank lines and trailing spaces.
    let mut clean = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let t = line.trim_end();
        if t.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        clean.push_str(t);
        clean.push('\n');
    }
    clean.trim().to_string()
}

fn decode_entity(e: &str) -> Option<char> {
    Some(match e {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let num = e.strip_prefix('#')?;
            let v = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(v)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        let t = html_to_text(
            "<html><head><title>T</title><style>p{}</style><script>var x = '<p>';</script></head>\
             <body><!-- c --><h1>Hello &amp; welcome</h1><p>A&nbsp;b &#65;&#x42; &bogus; x<y</p></body></html>",
        );
        assert!(t.contains("Hello & welcome"), "{t}");
        assert!(t.contains("A b AB &bogus; x"), "{t}");
        assert!(!t.contains("var x"), "{t}");
        assert!(!t.contains("p{}"), "{t}");
    }

    #[test]
    fn detects_binary_and_bad_utf8() {
        assert_eq!(decode(b"a\0b"), Decoded::Binary);
        assert_eq!(
            decode(b"plain"),
            Decoded::Text {
                text: "plain".into(),
                lossy: false
            }
        );
        match decode(b"caf\xe9 au lait, with some more text") {
            Decoded::Text { text, lossy } => {
                assert!(lossy);
                assert!(text.contains('\u{FFFD}'));
            }
            Decoded::Binary => panic!("mostly valid text was called binary"),
        }
        assert_eq!(decode(&[0xff, 0xfe, 0xfd, 0xfc]), Decoded::Binary);
    }

    #[test]
    fn kinds_by_extension() {
        assert_eq!(DocKind::from_path(Path::new("a/B.MD")), DocKind::Markdown);
        assert_eq!(DocKind::from_path(Path::new("x.rs")), DocKind::Code);
        assert_eq!(DocKind::from_path(Path::new("index.htm")), DocKind::Html);
        assert_eq!(DocKind::from_path(Path::new("README")), DocKind::Text);
    }
}
