//! Fuzzing the document readers: mutated seeds from `fuzz/corpus/extract`
//! (PDF, DOCX, XLSX, PPTX, EPUB, Markdown, HTML) through the format readers,
//! the text decoder, HTML to text and the chunker. Each case must end (no
//! hang) without a panic; bad input is a typed `FormatError` or text.
//! `scripts/fuzz.sh` runs it for a duration (see `anectx_testing::fuzz`).

use std::path::Path;
use std::sync::Arc;

use anectx_engine::chunk::chunk_text;
use anectx_engine::extract::{decode, html_to_text, Decoded, DocKind};
use anectx_engine::formats::{extract, Format};
use anectx_engine::ChunkConfig;
use anectx_testing::fuzz;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/extract");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 7, "the seed corpus is missing files");
    out
}

/// Reads `bytes` as a file called `name` would be read when indexing.
fn read_as(name: &str, bytes: &[u8]) {
    let path = Path::new(name);
    let cfg = ChunkConfig::default();
    match Format::from_path(path) {
        Some(f) => {
            if let Ok(x) = extract(f, bytes) {
                let kind = if f.is_markdown() {
                    DocKind::Markdown
                } else {
                    DocKind::Text
                };
                let _ = x.scanned_pages();
                for p in &x.parts {
                    let _ = chunk_text(&p.text, kind, cfg);
                }
            }
        }
        None => {
            if let Decoded::Text { text, .. } = decode(bytes) {
                let kind = DocKind::from_path(path);
                let text = if kind == DocKind::Html {
                    html_to_text(&text)
                } else {
                    text
                };
                let _ = chunk_text(&text, kind, cfg);
            }
        }
    }
}

#[test]
fn extractors_survive_mutated_documents() {
    let seeds = corpus();
    let all: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
    let budget = fuzz::Budget::from_env(300);
    let report = fuzz::run(
        "extract",
        budget,
        |rng| {
            let (name, bytes) = rng.pick(&seeds);
            // Sometimes read one format's bytes as another's.
            let name = if rng.chance(1, 10) {
                rng.pick(&seeds).0.clone()
            } else {
                name.clone()
            };
            (name, fuzz::mutate(rng, bytes, &all, 1 << 20))
        },
        |(name, b)| [name.as_bytes(), b"\n", b].concat(),
        Arc::new(|(name, bytes): (String, Vec<u8>)| read_as(&name, &bytes)),
    );
    assert!(report.cases > 0);
}

/// Found by this fuzzer (seed 0x5eed, case 5530): a mutated PDF on which
/// pdf_oxide 0.3.78 panics slicing a string inside a character
/// (document.rs:25363). The reader answers "corrupt" instead.
#[test]
fn a_pdf_that_panics_the_pdf_library_is_a_corrupt_file() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/regressions/pdf-oxide-char-boundary.pdf");
    let bytes = std::fs::read(&p).unwrap();
    match extract(Format::Pdf, &bytes) {
        Err(anectx_engine::formats::FormatError::Corrupt { format, detail }) => {
            assert_eq!(format, "pdf");
            assert!(detail.contains("not a char boundary"), "{detail}");
        }
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

/// Found by this fuzzer (seed 0x5eed, 600 s run): a mutated PDF on which a
/// reader asked for a 67 PB allocation, which aborts the process (no panic
/// to catch). Extraction must answer, not abort.
#[test]
fn a_pdf_that_asks_for_a_huge_allocation_does_not_abort() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/regressions/pdf-huge-allocation.pdf");
    let bytes = std::fs::read(&p).unwrap();
    match extract(Format::Pdf, &bytes) {
        Err(anectx_engine::formats::FormatError::Corrupt { format, detail }) => {
            assert!(format.eq_ignore_ascii_case("pdf"), "{format}");
            assert!(detail.contains("media box"), "{detail}");
        }
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}
