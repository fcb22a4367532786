//! Readers for document formats that are not plain text: PDF, Office Open
//! XML (DOCX, PPTX, XLSX) and EPUB. Each format has its own module; all of
//! them return [`Extracted`] text in parts that keep their page, or a
//! [`FormatError`] saying why the file cannot be indexed.

pub mod epub;
pub mod office;
pub mod pdf;

use std::path::Path;

/// A document format with its own reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pdf,
    Docx,
    Pptx,
    Xlsx,
    Epub,
}

impl Format {
    /// The format by file extension, when it has a reader here.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pdf" => Self::Pdf,
            "docx" => Self::Docx,
            "pptx" => Self::Pptx,
            "xlsx" => Self::Xlsx,
            "epub" => Self::Epub,
            _ => return None,
        })
    }

    /// The document kind recorded in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Docx => "docx",
            Self::Pptx => "pptx",
            Self::Xlsx => "xlsx",
            Self::Epub => "epub",
        }
    }

    /// Whether the parts are Markdown (chunked by heading) rather than
    /// plain text.
    pub fn is_markdown(self) -> bool {
        !matches!(self, Self::Pdf)
    }
}

/// One part of a document's text: a PDF page, a slide, or (for formats
/// without pages) the whole document or one chapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 1-based page (PDF page, PPTX slide); `None` for formats without pages.
    pub page: Option<u32>,
    pub text: String,
}

/// Why a page gave no text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyPage {
    /// The page holds images but no text layer (a scan; OCR is not done).
    Scanned,
    /// Nothing on the page reads as text, and it holds no image.
    Blank,
}

/// Text read from a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Parts with text, in document order.
    pub parts: Vec<Part>,
    /// Pages (or slides) in the document; 0 for formats without pages.
    pub pages: u32,
    /// Pages that gave no text, with why (1-based).
    pub empty_pages: Vec<(u32, EmptyPage)>,
}

impl Extracted {
    /// Pages that are scanned images without a text layer.
    pub fn scanned_pages(&self) -> Vec<u32> {
        self.empty_pages
            .iter()
            .filter(|(_, why)| *why == EmptyPage::Scanned)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("encrypted (password-protected) {format} file; not indexed")]
    Encrypted { format: &'static str },
    #[error("corrupt or unreadable {format} file: {detail}")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error("no text in this {format} file: {detail}")]
    NoText {
        format: &'static str,
        detail: String,
    },
}

/// Reads `bytes` as `format`. A panic in a reader (third-party parsers of
/// hostile files: fuzzing found one in the PDF reader) is a
/// [`FormatError::Corrupt`], not a crash.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, FormatError> {
    let read = std::panic::AssertUnwindSafe(|| match format {
        Format::Pdf => pdf::extract(bytes),
        Format::Docx | Format::Pptx | Format::Xlsx => office::extract(format, bytes),
        Format::Epub => epub::extract(bytes),
    });
    std::panic::catch_unwind(read).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(FormatError::Corrupt {
            format: format.as_str(),
            detail: format!("the reader failed on this file ({why})"),
        })
    })
}

/// `1, 2, 3, … and N more` for notes about page lists.
pub(crate) fn page_list(pages: &[u32]) -> String {
    const SHOWN: usize = 12;
    let mut s: Vec<String> = pages.iter().take(SHOWN).map(u32::to_string).collect();
    if pages.len() > SHOWN {
        s.push(format!("and {} more", pages.len() - SHOWN));
    }
    s.join(", ")
}
