//! [`Filter`]: which documents a `context` call may draw from (path glob,
//! file kind, modification time). It is applied inside retrieval: BM25 and
//! the vector search rank only the allowed chunks, so a filter never
//! returns fewer hits than exist.

use std::collections::HashSet;
use std::path::Path;

use anectx_store::DocumentFacts;
use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Restrictions on the documents a `context` call draws from; empty (the
/// default) allows every document. All given restrictions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// A glob over the document's path, matched against the path relative
    /// to the indexed folder, the full path, and the file name (so `*.pdf`
    /// and `notes/**` both work). `*` stays within one path segment, `**`
    /// crosses them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File kinds: an extension (`pdf`, `md`) or a stored format (`markdown`,
    /// `code`, `text`, `pdf`, `docx`, …), case-insensitive; any one matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kind: Vec<String>,
    /// Only files modified at or after this time (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_after: Option<i64>,
    /// Only files modified before this time (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_before: Option<i64>,
}

/// Why a filter is unusable. `param` names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct FilterError {
    /// `path`, `kind`, `modified_after` or `modified_before`.
    pub param: &'static str,
    pub message: String,
}

impl FilterError {
    fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param,
            message: message.into(),
        }
    }
}

/// A checked [`Filter`], ready to match documents.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    path: Option<GlobMatcher>,
    kind: Vec<String>,
    after: Option<i64>,
    before: Option<i64>,
}

impl Filter {
    /// Whether the filter allows every document.
    pub fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.kind.is_empty()
            && self.modified_after.is_none()
            && self.modified_before.is_none()
    }

    /// Kinds from a comma-separated list (`pdf,md`, `.PDF, markdown`):
    /// trimmed, lower-cased, without a leading dot.
    pub fn parse_kinds(list: &str) -> Result<Vec<String>, FilterError> {
        let kinds: Vec<String> = list
            .split(',')
            .map(|k| k.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect();
        if kinds.iter().any(String::is_empty) {
            return Err(FilterError::new(
                "kind",
                format!(
                    "kind list {list:?} has an empty entry; give kinds separated by commas, \
                     e.g. pdf,md"
                ),
            ));
        }
        Ok(kinds)
    }

    /// Checks the filter and compiles its glob.
    pub fn compile(&self) -> Result<CompiledFilter, FilterError> {
        let path = match &self.path {
            None => None,
            Some(p) if p.trim().is_empty() => {
                return Err(FilterError::new(
                    "path",
                    "the path glob is empty; give a pattern such as `notes/**` or `*.pdf`",
                ))
            }
            Some(p) => Some(
                GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map(|g: Glob| g.compile_matcher())
                    .map_err(|e| {
                        FilterError::new("path", format!("the path glob {p:?} is invalid: {e}"))
                    })?,
            ),
        };
        let mut kind = Vec::with_capacity(self.kind.len());
        for k in &self.kind {
            let k = k.trim().trim_start_matches('.').to_ascii_lowercase();
            if k.is_empty() {
                return Err(FilterError::new("kind", "a file kind is empty"));
            }
            kind.push(k);
        }
        if let (Some(a), Some(b)) = (self.modified_after, self.modified_before) {
            if a >= b {
                return Err(FilterError::new(
                    "modified_before",
                    format!(
                        "modified_before ({}) is not after modified_after ({}): no file can match",
                        format_time(b),
                        format_time(a)
                    ),
                ));
            }
        }
        Ok(CompiledFilter {
            path,
            kind,
            after: self.modified_after,
            before: self.modified_before,
        })
    }
}

impl CompiledFilter {
    /// Whether document `d` is allowed; `relative` is its path relative to
    /// the indexed folder (as citations show it).
    pub fn allows(&self, d: &DocumentFacts, relative: &str) -> bool {
        if let Some(g) = &self.path {
            let name = Path::new(&d.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !(g.is_match(relative) || g.is_match(&d.path) || g.is_match(&name)) {
                return false;
            }
        }
        if !self.kind.is_empty() {
            let ext = Path::new(&d.path)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            let kind = d.kind.to_ascii_lowercase();
            if !self
                .kind
                .iter()
                .any(|k| *k == kind || ext.as_deref() == Some(k.as_str()))
            {
                return false;
            }
        }
        if self.after.is_some() || self.before.is_some() {
            // A document without a known time cannot be shown to match.
            let Some(m) = d.modified else {
                return false;
            };
            if self.after.is_some_and(|a| m < a) || self.before.is_some_and(|b| m >= b) {
                return false;
            }
        }
        true
    }

    /// The ids of the allowed documents.
    pub fn allowed_documents(
        &self,
        docs: &[DocumentFacts],
        relative: impl Fn(&str) -> String,
    ) -> HashSet<i64> {
        docs.iter()
            .filter(|d| self.allows(d, &relative(&d.path)))
            .map(|d| d.id)
            .collect()
    }
}

/// Parses a date for `modified_after` / `modified_before`: `YYYY-MM-DD`
/// (midnight UTC) or RFC 3339 (`2024-05-01T12:30:00Z`,
/// `2024-05-01T12:30:00.5+02:00`). Returns Unix seconds.
pub fn parse_time(param: &'static str, s: &str) -> Result<i64, FilterError> {
    let bad = |why: &str| {
        FilterError::new(
            param,
            format!(
                "{param} {s:?} is not a date: {why}; use YYYY-MM-DD or RFC 3339 \
                 (e.g. 2024-05-01 or 2024-05-01T12:30:00Z)"
            ),
        )
    };
    let t = s.trim();
    let num = |part: &str, what: &str| -> Result<i64, FilterError> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("the {what} is not a number")));
        }
        part.parse::<i64>()
            .map_err(|_| bad(&format!("the {what} is out of range")))
    };
    if t.len() < 10 || !t.is_char_boundary(10) {
        return Err(bad("too short"));
    }
    let (date, rest) = t.split_at(10);
    let b = date.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return Err(bad("expected YYYY-MM-DD"));
    }
    let (y, mo, d) = (
        num(&date[0..4], "year")?,
        num(&date[5..7], "month")?,
        num(&date[8..10], "day")?,
    );
    if !(1..=12).contains(&mo) {
        return Err(bad("the month must be 01 to 12"));
    }
    if d < 1 || d > days_in_month(y, mo) {
        return Err(bad("no such day in that month"));
    }
    let days = days_from_civil(y, mo, d);
    if rest.is_empty() {
        return Ok(days * 86_400);
    }
    let rest = rest
        .strip_prefix(['T', 't', ' '])
        .ok_or_else(|| bad("expected `T` between the date and the time"))?;
    if rest.len() < 8 || !rest.is_char_boundary(8) {
        return Err(bad("expected a time HH:MM:SS"));
    }
    let (time, mut zone) = rest.split_at(8);
    let tb = time.as_bytes();
    if tb[2] != b':' || tb[5] != b':' {
        return Err(bad("expected a time HH:MM:SS"));
    }
    let (h, mi, sec) = (
        num(&time[0..2], "hour")?,
        num(&time[3..5], "minute")?,
        num(&time[6..8], "second")?,
    );
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad("the time is out of range"));
    }
    if let Some(frac) = zone.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected digits after `.`"));
        }
        zone = &frac[digits..];
    }
    let offset = match zone {
        "Z" | "z" => 0,
        "" => {
            return Err(bad(
                "the time has no zone; add `Z` or an offset like +02:00",
            ))
        }
        z => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad("expected `Z` or an offset like +02:00")),
            };
            let z = &z[1..];
            if z.len() != 5 || z.as_bytes()[2] != b':' {
                return Err(bad("expected an offset like +02:00"));
            }
            let (oh, om) = (
                num(&z[0..2], "offset hour")?,
                num(&z[3..5], "offset minute")?,
            );
            if oh > 23 || om > 59 {
                return Err(bad("the offset is out of range"));
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    // Inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str, kind: &str, modified: Option<i64>) -> DocumentFacts {
        DocumentFacts {
            id: 1,
            path: path.into(),
            kind: kind.into(),
            modified,
        }
    }

    #[test]
    fn dates_parse_as_rfc3339_or_plain_days() {
        assert_eq!(parse_time("modified_after", "1970-01-01").unwrap(), 0);
        assert_eq!(
            parse_time("modified_after", "2024-05-01").unwrap(),
            1_714_521_600
        );
        assert_eq!(
            parse_time("modified_after", "2024-05-01T12:30:00Z").unwrap(),
            1_714_521_600 + 12 * 3600 + 30 * 60
        );
        assert_eq!(
            parse_time("modified_after", "2024-05-01T12:30:00.250+02:00").unwrap(),
            1_714_521_600 + 10 * 3600 + 30 * 60
        );
        assert_eq!(
            parse_time("x", "2024-02-29").unwrap(),
            parse_time("x", "2024-03-01").unwrap() - 86_400
        );
        assert_eq!(format_time(1_714_566_600), "2024-05-01T12:30:00Z");
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2023-02-29",
            "2024-05-01T12:30",
            "2024-05-01T12:30:00",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:30:00+2",
            "2024/05/01",
            "20240501",
            "2024-05-01T12:30:00Zjunk",
            "２０２４-05-01",
        ] {
            let e = parse_time("modified_before", bad).unwrap_err();
            assert_eq!(e.param, "modified_before");
            assert!(e.message.contains("YYYY-MM-DD"), "{bad}: {e}");
        }
    }

    #[test]
    fn each_restriction_matches_what_it_says() {
        let f = |filter: Filter| filter.compile().unwrap();
        let pdf = doc("/home/u/docs/reports/q1.PDF", "pdf", Some(1000));
        let md = doc("/home/u/docs/notes/a.md", "markdown", Some(2000));
        let rel = |d: &DocumentFacts| d.path.trim_start_matches("/home/u/docs/").to_string();
        let allows = |c: &CompiledFilter, d: &DocumentFacts| c.allows(d, &rel(d));
        let glob = |p: &str| {
            f(Filter {
                path: Some(p.into()),
                ..Filter::default()
            })
        };
        assert!(allows(&glob("notes/**"), &md) && !allows(&glob("notes/**"), &pdf));
        assert!(allows(&glob("*.md"), &md) && !allows(&glob("*.md"), &pdf));
        assert!(allows(&glob("/home/u/docs/reports/*"), &pdf));
        // `*` does not cross a directory (`notes/**` above does).
        assert!(!allows(&glob("notes*"), &md));
        let kinds = |k: &str| {
            f(Filter {
                kind: Filter::parse_kinds(k).unwrap(),
                ..Filter::default()
            })
        };
        assert!(allows(&kinds("pdf"), &pdf) && !allows(&kinds("pdf"), &md));
        assert!(allows(&kinds("md"), &md) && allows(&kinds("Markdown"), &md));
        assert!(allows(&kinds(".pdf, md"), &md) && allows(&kinds(".pdf, md"), &pdf));
        let after = f(Filter {
            modified_after: Some(1500),
            ..Filter::default()
        });
        assert!(allows(&after, &md) && !allows(&after, &pdf));
        let before = f(Filter {
            modified_before: Some(2000),
            ..Filter::default()
        });
        assert!(!allows(&before, &md) && allows(&before, &pdf));
        assert!(!allows(&before, &doc("x.md", "markdown", None)));
        assert!(Filter::default().is_empty());
    }

    #[test]
    fn bad_filters_name_their_field() {
        let e = Filter {
            path: Some("docs/[".into()),
            ..Filter::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(e.param, "path");
        assert!(e.message.contains("docs/["), "{e}");
        assert_eq!(
            Filter {
                path: Some(" ".into()),
                ..Filter::default()
            }
            .compile()
            .unwrap_err()
            .param,
            "path"
        );
        assert_eq!(Filter::parse_kinds("pdf,,md").unwrap_err().param, "kind");
        let e = Filter {
            modified_after: Some(2000),
            modified_before: Some(1000),
            ..Filter::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(e.param, "modified_before");
        assert!(e.message.contains("not after"), "{e}");
    }
}
