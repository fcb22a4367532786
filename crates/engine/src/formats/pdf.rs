//! PDF: text per page with `pdf_oxide` (pure Rust). Pages without a text
//! layer are reported, not indexed as empty: a page holding images is a
//! scan (OCR is not done), one holding nothing is blank.

use pdf_oxide::{Error as PdfError, PdfDocument};

use super::{EmptyPage, Extracted, FormatError, Part};

const FORMAT: &str = "PDF";

fn corrupt(e: impl std::fmt::Display) -> FormatError {
    FormatError::Corrupt {
        format: FORMAT,
        detail: e.to_string(),
    }
}

fn map_err(e: PdfError) -> FormatError {
    match e {
        PdfError::EncryptedPdf => FormatError::Encrypted { format: FORMAT },
        other => corrupt(other),
    }
}

/// Reads the text of every page of a PDF.
/// The largest page coordinate accepted (PDF limits a page to 14,400 units
/// a side; this leaves room for odd but real files).
const MAX_PAGE_COORD: f32 = 1.0e6;

pub fn extract(bytes: &[u8]) -> Result<Extracted, FormatError> {
    // The header may follow up to 1 KiB of junk (PDF 1.7, annex H.3).
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(corrupt("no %PDF- header"));
    }
    let doc = PdfDocument::from_bytes(bytes.to_vec()).map_err(map_err)?;
    // Opening tries the empty user password; a document still locked
    // needs a password we do not have. (Text extraction would return
    // empty strings for it, which must not pass as "no text".)
    if doc.is_encrypted() && !doc.authenticate(b"").unwrap_or(false) {
        return Err(FormatError::Encrypted { format: FORMAT });
    }
    let n = doc.page_count().map_err(map_err)?;
    let mut out = Extracted {
        pages: u32::try_from(n).unwrap_or(u32::MAX),
        ..Extracted::default()
    };
    for i in 0..n {
        let page = u32::try_from(i + 1).unwrap_or(u32::MAX);
        // pdf_oxide's layout analysis sizes a buffer by the page width
        // (one slot per 10 units): a mutated media box of 10^17 units asks
        // for petabytes and aborts the process, which no panic handler can
        // catch. Found by the extractor fuzzer.
        if let Ok((x0, y0, x1, y1)) = doc.get_page_media_box(i) {
            if [x0, y0, x1, y1]
                .iter()
                .any(|v| !v.is_finite() || v.abs() > MAX_PAGE_COORD)
            {
                return Err(corrupt(format!(
                    "page {page}'s media box [{x0} {y0} {x1} {y1}] is far beyond any page size \
                     (PDF pages are at most 14,400 units wide)"
                )));
            }
        }
        let text = doc.extract_text(i).map_err(map_err)?;
        // Control characters other than whitespace are noise from fonts
        // without a usable encoding.
        let text: String = text
            .chars()
            .filter(|c| !c.is_control() || c.is_whitespace())
            .collect();
        if text.trim().is_empty() {
            let images = doc.page_image_handles(i).map(|v| v.len()).unwrap_or(0);
            let why = if images > 0 {
                EmptyPage::Scanned
            } else {
                EmptyPage::Blank
            };
            out.empty_pages.push((page, why));
            continue;
        }
        out.parts.push(Part {
            page: Some(page),
            text,
        });
    }
    if out.parts.is_empty() {
        let scanned = out.scanned_pages().len();
        return Err(FormatError::NoText {
            format: FORMAT,
            detail: if scanned > 0 {
                format!(
                    "none of its {n} pages has a text layer ({scanned} are scanned images; \
                     OCR is not done)"
                )
            } else {
                format!("none of its {n} pages has text")
            },
        });
    }
    Ok(out)
}
