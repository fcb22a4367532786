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

/// The character encoding a file was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// UTF-16 with a byte-order mark (what Windows editors often save).
    Utf16Le,
    Utf16Be,
    /// Text that is not UTF-8 and has no UTF-8 multi-byte sequence at all:
    /// a legacy 8-bit file, read as Windows-1252 (a superset of printable
    /// ISO-8859-1), so `café` stays `café` instead of getting U+FFFD.
    Windows1252,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8 => "UTF-8",
            Self::Utf16Le => "UTF-16LE",
            Self::Utf16Be => "UTF-16BE",
            Self::Windows1252 => "Windows-1252",
        }
    }
}

/// What a file's bytes hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Text; `lossy` when undecodable sequences had to become U+FFFD.
    Text {
        text: String,
        lossy: bool,
        encoding: Encoding,
    },
    Binary,
}

/// Windows-1252's characters for bytes 0x80–0x9F (0 where it leaves a
/// byte undefined; those become U+FFFD). Bytes 0xA0–0xFF are ISO-8859-1.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
    0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
];

fn cp1252_char(b: u8) -> char {
    match b {
        0x80..=0x9F => match CP1252_HIGH[(b - 0x80) as usize] {
            0 => char::REPLACEMENT_CHARACTER,
            u => char::from_u32(u as u32).unwrap_or(char::REPLACEMENT_CHARACTER),
        },
        _ => b as char,
    }
}

/// Whether `bytes` holds at least one well-formed UTF-8 multi-byte sequence
/// (then invalid bytes are damage in a UTF-8 file, not another encoding).
fn has_utf8_multibyte(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => return !s.is_ascii(),
            Err(e) => {
                if !rest[..e.valid_up_to()].is_ascii() {
                    return true;
                }
                let skip = e.error_len().unwrap_or(rest.len() - e.valid_up_to());
                rest = &rest[e.valid_up_to() + skip..];
            }
        }
    }
}

/// Whether at most 30 % of the bytes are above 0x7F.
fn mostly_ascii(bytes: &[u8]) -> bool {
    let high = bytes.iter().filter(|&&b| b >= 0x80).count();
    high * 10 <= bytes.len() * 3
}

fn decode_utf16(body: &[u8], little: bool) -> (String, bool) {
    let units = body.chunks_exact(2).map(|c| {
        if little {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], c[1]])
        }
    });
    let mut lossy = body.len() % 2 == 1;
    let mut text: String = char::decode_utf16(units)
        .map(|r| {
            r.unwrap_or_else(|_| {
                lossy = true;
                char::REPLACEMENT_CHARACTER
            })
        })
        .collect();
    if body.len() % 2 == 1 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    (text, lossy)
}

/// Whether decoded text looks like binary data: more than a tenth of its
/// characters are U+FFFD or control characters other than whitespace.
fn looks_binary(text: &str) -> bool {
    let (mut n, mut bad) = (0usize, 0usize);
    for c in text.chars() {
        n += 1;
        if c == char::REPLACEMENT_CHARACTER || (c.is_control() && !c.is_whitespace()) {
            bad += 1;
        }
    }
    bad * 10 > n.max(1)
}

/// Decodes file bytes. A byte-order mark picks UTF-8 (dropped) or UTF-16;
/// otherwise NUL bytes in the first 8 KiB mean binary. Valid UTF-8 is read
/// as is; invalid UTF-8 without any multi-byte sequence and with few bytes
/// above 0x7F is read as Windows-1252; other invalid sequences become
/// U+FFFD. Text that is mostly U+FFFD or control characters is binary.
pub fn decode(bytes: &[u8]) -> Decoded {
    let (text, lossy, encoding) = if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        let (t, lossy) = decode_utf16(body, true);
        (t, lossy, Encoding::Utf16Le)
    } else if let Some(body) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        let (t, lossy) = decode_utf16(body, false);
        (t, lossy, Encoding::Utf16Be)
    } else {
        let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
        if bytes[..bytes.len().min(8192)].contains(&0) {
            return Decoded::Binary;
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_owned(), false, Encoding::Utf8),
            // Western 8-bit text has few bytes above 0x7F; many of them
            // suggest a multi-byte legacy encoding (Shift-JIS, GBK…) that
            // Windows-1252 would turn into mojibake.
            Err(_) if !has_utf8_multibyte(bytes) && mostly_ascii(bytes) => {
                let t: String = bytes.iter().map(|&b| cp1252_char(b)).collect();
                let lossy = t.contains(char::REPLACEMENT_CHARACTER);
                (t, lossy, Encoding::Windows1252)
            }
            Err(_) => (
                String::from_utf8_lossy(bytes).into_owned(),
                true,
                Encoding::Utf8,
            ),
        }
    };
    if (lossy || encoding != Encoding::Utf8) && looks_binary(&text) {
        return Decoded::Binary;
    }
    Decoded::Text {
        text,
        lossy,
        encoding,
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

/// How far past a `&` the closing `;` of an entity is looked for (`&#x10FFFF;`
/// is the longest entity decoded).
const MAX_ENTITY_SCAN: usize = 11;

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
            // `tag` ends before the `>`, or at the end of the text when
            // there is none (never inside a character: `<é` at the end).
            let (tag_end, end) = lower[i..]
                .find('>')
                .map_or((b.len(), b.len()), |j| (i + j, i + j + 1));
            let tag = &lower[i + 1..tag_end];
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
            // Look for the `;` in the next few bytes only: scanning the whole
            // rest of the text for every `&` is quadratic (4 MB of `&`).
            let window = &b[i..b.len().min(i + MAX_ENTITY_SCAN)];
            let semi = window.iter().position(|&c| c == b';');
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
    fn html_ending_inside_a_tag_with_a_multibyte_char_does_not_panic() {
        assert_eq!(html_to_text("x <é"), "x");
        assert_eq!(html_to_text("<é"), "");
        assert_eq!(html_to_text("a <p>b <é"), "a\nb");
        assert_eq!(html_to_text("a &é"), "a &é");
    }

    #[test]
    fn entity_scanning_is_linear() {
        // Quadratic scanning (each `&` searching the rest of the text for a
        // `;`) takes minutes on this; linear scanning, milliseconds.
        let amps = "&".repeat(4 << 20);
        assert_eq!(html_to_text(&amps).len(), 4 << 20);
        // Entities still decode next to runs of `&`.
        assert_eq!(html_to_text("&&amp;&#65;&;&"), "&&A&;&");
    }

    #[test]
    fn detects_binary_and_bad_utf8() {
        assert_eq!(decode(b"a\0b"), Decoded::Binary);
        assert_eq!(
            decode(b"plain"),
            Decoded::Text {
                text: "plain".into(),
                lossy: false,
                encoding: Encoding::Utf8,
            }
        );
        // A UTF-8 file with one damaged byte stays UTF-8; the byte becomes U+FFFD.
        let mut damaged = "naïve café and some more text ".as_bytes().to_vec();
        damaged.push(0xff);
        match decode(&damaged) {
            Decoded::Text {
                text,
                lossy,
                encoding,
            } => {
                assert!(lossy);
                assert_eq!(encoding, Encoding::Utf8);
                assert!(
                    text.starts_with("naïve café") && text.ends_with('\u{FFFD}'),
                    "{text}"
                );
            }
            Decoded::Binary => panic!("mostly valid text was called binary"),
        }
        // Control bytes and undecodable sequences: binary.
        assert_eq!(decode(&[0x01, 0x02, 0x80, 0x03, 0x04]), Decoded::Binary);
        let mut junk = "é".as_bytes().to_vec();
        junk.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xc0, 0xc1]);
        assert_eq!(decode(&junk), Decoded::Binary);
        // A UTF-16 mark in front of binary data does not make it text.
        assert_eq!(
            decode(&[0xFF, 0xFE, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00]),
            Decoded::Binary
        );
    }

    #[test]
    fn legacy_and_utf16_text_is_read_without_loss() {
        // Windows-1252 / Latin-1: no replacement characters.
        assert_eq!(
            decode(b"caf\xe9 au lait \x96 na\xefve \x80 5"),
            Decoded::Text {
                text: "café au lait – naïve € 5".into(),
                lossy: false,
                encoding: Encoding::Windows1252,
            }
        );
        // UTF-16 with a byte-order mark, both byte orders: the NUL bytes
        // inside do not make it binary.
        let s = "Zürich notes ✓\r\n";
        let mut le = vec![0xFF, 0xFE];
        let mut be = vec![0xFE, 0xFF];
        for u in s.encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
            be.extend_from_slice(&u.to_be_bytes());
        }
        for (bytes, encoding) in [(le, Encoding::Utf16Le), (be, Encoding::Utf16Be)] {
            assert_eq!(
                decode(&bytes),
                Decoded::Text {
                    text: s.into(),
                    lossy: false,
                    encoding,
                }
            );
        }
        // Mostly high bytes (here Shift-JIS for "日本語のテキスト") are not
        // read as Windows-1252 mojibake.
        let sjis = b"\x93\xfa\x96\x7b\x8c\xea\x82\xcc\x83\x65\x83\x4c\x83\x58\x83\x67";
        assert!(!matches!(
            decode(sjis),
            Decoded::Text {
                encoding: Encoding::Windows1252,
                ..
            }
        ));
        // A UTF-8 byte-order mark is dropped.
        assert_eq!(
            decode(b"\xEF\xBB\xBFhello"),
            Decoded::Text {
                text: "hello".into(),
                lossy: false,
                encoding: Encoding::Utf8,
            }
        );
    }

    #[test]
    fn kinds_by_extension() {
        assert_eq!(DocKind::from_path(Path::new("a/B.MD")), DocKind::Markdown);
        assert_eq!(DocKind::from_path(Path::new("x.rs")), DocKind::Code);
        assert_eq!(DocKind::from_path(Path::new("index.htm")), DocKind::Html);
        assert_eq!(DocKind::from_path(Path::new("README")), DocKind::Text);
    }
}
