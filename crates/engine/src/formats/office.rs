//! DOCX, PPTX and XLSX with `office_oxide`, as Markdown so that the
//! heading-aware chunker applies. PPTX slides count as pages. Empty output
//! is "no text", never an empty document (the converter has returned
//! empty text with `Ok` for files it could not read).

use std::io::Cursor;

use office_oxide::{Document, DocumentFormat, DocumentIR};

use super::{EmptyPage, Extracted, Format, FormatError, Part};

/// The magic bytes of an OLE compound file: what an encrypted OOXML file
/// (and a legacy `.doc`/`.xls`/`.ppt`) is.
const CFB_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

fn label(format: Format) -> &'static str {
    match format {
        Format::Docx => "DOCX",
        Format::Pptx => "PPTX",
        Format::Xlsx => "XLSX",
        Format::Pdf => "PDF",
        Format::Epub => "EPUB",
    }
}

/// Whether `hay` holds `needle` encoded as UTF-16LE (a compound file's
/// directory entry names are).
fn contains_utf16le(hay: &[u8], needle: &str) -> bool {
    let n: Vec<u8> = needle.encode_utf16().flat_map(u16::to_le_bytes).collect();
    hay.windows(n.len()).any(|w| w == n.as_slice())
}

/// Reads an Office Open XML document.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, FormatError> {
    let name = label(format);
    let corrupt = |detail: String| FormatError::Corrupt {
        format: name,
        detail,
    };
    if bytes.is_empty() {
        return Err(corrupt("empty file".into()));
    }
    if bytes.starts_with(&CFB_MAGIC) {
        // An encrypted package: [MS-OFFCRYPTO] keeps the zip in an
        // `EncryptedPackage` stream of a compound file.
        if contains_utf16le(bytes, "EncryptedPackage") {
            return Err(FormatError::Encrypted { format: name });
        }
        return Err(corrupt(
            "an OLE compound file, not an Office Open XML zip (a legacy binary file renamed?)"
                .into(),
        ));
    }
    if !bytes.starts_with(b"PK") {
        return Err(corrupt("not a zip archive".into()));
    }
    let df = match format {
        Format::Docx => DocumentFormat::Docx,
        Format::Pptx => DocumentFormat::Pptx,
        Format::Xlsx => DocumentFormat::Xlsx,
        Format::Pdf | Format::Epub => {
            return Err(corrupt("not an Office format".into()));
        }
    };
    let doc = Document::from_reader(Cursor::new(bytes.to_vec()), df)
        .map_err(|e| corrupt(e.to_string()))?;
    let mut out = Extracted::default();
    if format == Format::Pptx {
        let ir = doc.to_ir();
        out.pages = u32::try_from(ir.sections.len()).unwrap_or(u32::MAX);
        for (i, section) in ir.sections.into_iter().enumerate() {
            let slide = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let one = DocumentIR {
                metadata: ir.metadata.clone(),
                sections: vec![section],
            };
            let md = one.to_markdown();
            if md.trim().is_empty() {
                out.empty_pages.push((slide, EmptyPage::Blank));
            } else {
                out.parts.push(Part {
                    page: Some(slide),
                    text: md,
                });
            }
        }
        if out.parts.is_empty() {
            return Err(FormatError::NoText {
                format: name,
                detail: format!("none of its {} slides has text", out.pages),
            });
        }
    } else {
        let md = doc.to_markdown();
        if md.trim().is_empty() {
            return Err(FormatError::NoText {
                format: name,
                detail: "the converter found no text (an empty document, or content it \
                         cannot read)"
                    .into(),
            });
        }
        out.parts.push(Part {
            page: None,
            text: md,
        });
    }
    Ok(out)
}
