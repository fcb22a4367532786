//! EPUB: a zip of XHTML chapters. The package document (found through
//! `META-INF/container.xml`) lists the chapters in reading order (the
//! spine); each is read with the HTML reader and becomes a `#` heading
//! (its first `<h1>`–`<h3>` or `<title>`, else its file name) with its text.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use super::{Extracted, FormatError, Part};
use crate::extract::html_to_text;

const FORMAT: &str = "EPUB";

/// Most bytes read from one entry of the archive (a zip bomb stops here).
const MAX_ENTRY_BYTES: u64 = 64 << 20;

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        format: FORMAT,
        detail: detail.into(),
    }
}

type Archive = zip::ZipArchive<Cursor<Vec<u8>>>;

fn read_entry(zip: &mut Archive, name: &str) -> Result<Vec<u8>, FormatError> {
    let entry = zip
        .by_name(name)
        .map_err(|e| corrupt(format!("{name}: {e}")))?;
    let mut out = Vec::new();
    entry
        .take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(format!("{name}: {e}")))?;
    if out.len() as u64 > MAX_ENTRY_BYTES {
        return Err(corrupt(format!(
            "{name} decompresses to more than {} MB",
            MAX_ENTRY_BYTES >> 20
        )));
    }
    Ok(out)
}

/// The tags named `local` (with or without a namespace prefix) in `xml`,
/// as their attribute text (what lies between the name and the `>`).
fn tags<'a>(xml: &'a str, local: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let name_len = tag
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(tag.len());
        let name = &tag[..name_len];
        let base = name.rsplit(':').next().unwrap_or(name);
        if base == local {
            out.push(&tag[name_len..]);
        }
        rest = &rest[end..];
    }
    out
}

/// The value of attribute `name` in a tag's attribute text.
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    loop {
        let i = rest.find(name)?;
        let before_ok = i == 0 || rest[..i].ends_with(|c: char| c.is_whitespace());
        let after = rest[i + name.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                let q = v.chars().next()?;
                if q == '"' || q == '\'' {
                    let body = &v[1..];
                    return body.find(q).map(|j| &body[..j]);
                }
            }
        }
        rest = &rest[i + name.len()..];
    }
}

/// Decodes `%XX` escapes and the XML entities a path may hold.
fn decode_href(href: &str) -> String {
    let href = href
        .replace("&amp;", "&")
        .replace("&apos;", "'")
        .replace("&quot;", "\"");
    let b = href.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `href` resolved against the folder of the package document `opf`.
fn resolve(opf: &str, href: &str) -> String {
    let href = decode_href(href.split('#').next().unwrap_or(href));
    let mut parts: Vec<&str> = match opf.rfind('/') {
        Some(i) => opf[..i].split('/').collect(),
        None => Vec::new(),
    };
    for seg in href.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The chapter's title: its first `<h1>`–`<h3>`, else `<title>`.
fn chapter_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    for tag in ["h1", "h2", "h3", "title"] {
        let open = format!("<{tag}");
        let mut from = 0;
        while let Some(i) = lower[from..].find(&open) {
            let at = from + i;
            let after = lower.as_bytes().get(at + open.len()).copied();
            from = at + open.len();
            if !matches!(after, Some(b'>' | b' ' | b'\t' | b'\n' | b'\r')) {
                continue;
            }
            let Some(gt) = lower[at..].find('>') else {
                break;
            };
            let start = at + gt + 1;
            let Some(end) = lower[start..].find(&format!("</{tag}")) else {
                break;
            };
            let t = html_to_text(&html[start..start + end]);
            let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
            if !t.is_empty() {
                return Some(t);
            }
        }
    }
    None
}

/// Reads the chapters of an EPUB in reading order.
pub fn extract(bytes: &[u8]) -> Result<Extracted, FormatError> {
    if !bytes.starts_with(b"PK") {
        return Err(corrupt("not a zip archive"));
    }
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes.to_vec())).map_err(|e| corrupt(e.to_string()))?;
    let container = read_entry(&mut zip, "META-INF/container.xml")?;
    let container = String::from_utf8_lossy(&container);
    let opf_path = tags(&container, "rootfile")
        .into_iter()
        .find_map(|a| attr(a, "full-path"))
        .map(decode_href)
        .ok_or_else(|| corrupt("META-INF/container.xml names no package document"))?;
    let opf = read_entry(&mut zip, &opf_path)?;
    let opf = String::from_utf8_lossy(&opf);
    let manifest: HashMap<&str, (&str, &str)> = tags(&opf, "item")
        .into_iter()
        .filter_map(|a| {
            Some((
                attr(a, "id")?,
                (attr(a, "href")?, attr(a, "media-type").unwrap_or("")),
            ))
        })
        .collect();
    let spine: Vec<&str> = tags(&opf, "itemref")
        .into_iter()
        .filter(|a| attr(a, "linear") != Some("no"))
        .filter_map(|a| attr(a, "idref"))
        .collect();
    if spine.is_empty() {
        return Err(corrupt("the package document has no spine (no chapters)"));
    }
    // Font obfuscation also lives in encryption.xml; only other algorithms
    // mean encrypted content (DRM).
    let drm = match read_entry(&mut zip, "META-INF/encryption.xml") {
        Ok(x) => {
            let x = String::from_utf8_lossy(&x).into_owned();
            tags(&x, "EncryptionMethod").into_iter().any(|a| {
                attr(a, "Algorithm").is_some_and(|alg| {
                    !alg.contains("idpf.org/2008/embedding")
                        && !alg.contains("ns.adobe.com/pdf/enc#RC")
                })
            })
        }
        Err(_) => false,
    };
    let mut out = Extracted::default();
    let mut unreadable = 0usize;
    for idref in &spine {
        let Some((href, media)) = manifest.get(idref) else {
            unreadable += 1;
            continue;
        };
        if !(media.contains("html") || media.is_empty()) {
            continue;
        }
        let name = resolve(&opf_path, href);
        let Ok(raw) = read_entry(&mut zip, &name) else {
            unreadable += 1;
            continue;
        };
        let html = match std::str::from_utf8(&raw) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let text = html_to_text(&html);
        if text.trim().is_empty() {
            continue;
        }
        let title = chapter_title(&html)
            .unwrap_or_else(|| name.rsplit('/').next().unwrap_or(&name).to_string());
        out.parts.push(Part {
            page: None,
            text: format!("# {title}\n\n{text}\n"),
        });
    }
    if out.parts.is_empty() {
        if drm {
            return Err(FormatError::Encrypted { format: FORMAT });
        }
        return Err(FormatError::NoText {
            format: FORMAT,
            detail: format!(
                "none of its {} chapters has text{}",
                spine.len(),
                if unreadable > 0 {
                    format!(" ({unreadable} could not be read)")
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_paths() {
        let t = tags(
            r#"<opf:item id="c1" href="Text/ch%201.xhtml" media-type='application/xhtml+xml'/>"#,
            "item",
        );
        assert_eq!(t.len(), 1);
        assert_eq!(attr(t[0], "id"), Some("c1"));
        assert_eq!(attr(t[0], "media-type"), Some("application/xhtml+xml"));
        assert_eq!(
            resolve("OEBPS/content.opf", "Text/ch%201.xhtml#x"),
            "OEBPS/Text/ch 1.xhtml"
        );
        assert_eq!(resolve("content.opf", "../a.xhtml"), "a.xhtml");
        // `id` must not match inside `idref`.
        assert_eq!(attr(r#" idref="x" id="y""#, "id"), Some("y"));
    }
}
