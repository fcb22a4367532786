use std::sync::Arc;

use anectx_engine::TextEmbedder;
use anectx_learn::analyzer::{
    parse_citations, split_sentences, Analyzer, AnalyzerConfig, ShownChunk, ANALYZER_VERSION,
};
use anectx_store::EmbedderInfo;

const WING: &str = "experimental investigation of the aerodynamics of a wing in a slipstream . \
an experimental study of a wing in a propeller slipstream was made in order to determine the \
spanwise distribution of the lift increase due to slipstream at different angles of attack of \
the wing and at different free stream to slipstream velocity ratios . the results were intended \
in part as an evaluation basis for different theoretical treatments of this problem .";

const GLUCOSE: &str = "correlation between maternal and fetal plasma levels of glucose and free \
fatty acids . correlation coefficients have been determined between the levels of glucose and ffa \
in maternal and fetal plasma collected at delivery . significant correlations were obtained between \
the maternal and fetal glucose levels and the maternal and fetal ffa levels .";

const DEWEY: &str =
    "The present study is a history of the DEWEY Decimal Classification. The first \
edition of the DDC was published in 1876, the eighteenth edition in 1971, and future editions will \
continue to appear as needed. In spite of the DDC's long and healthy life, however, its full story \
has never been told.";

const BOUNDARY: &str = "the boundary layer on a flat plate with suction was computed by an \
integral method . transition to turbulence is delayed when suction is applied near the leading \
edge . heat transfer coefficients were measured in a wind tunnel at mach numbers up to three .";

fn chunks<'a>(texts: &[&'a str]) -> Vec<ShownChunk<'a>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| ShownChunk {
            marker: i as u32 + 1,
            text: t,
        })
        .collect()
}

fn analyze(response: &str, texts: &[&str]) -> Vec<anectx_learn::analyzer::UsageLabel> {
    Analyzer::new(AnalyzerConfig::default())
        .analyze(response, &chunks(texts))
        .unwrap()
}

#[test]
fn citation_forms_parse() {
    let c = parse_citations("See [1], also [2, 4] and [6-8]; [10–11] too [^13].");
    for m in [1, 2, 4, 6, 7, 8, 10, 11, 13] {
        assert!(c.contains(m), "{m} should be cited");
    }
    for m in [0, 3, 5, 9, 12, 14] {
        assert!(!c.contains(m), "{m} should not be cited");
    }
    assert_eq!(
        c.ranges(),
        &[(1, 1), (2, 2), (4, 4), (6, 8), (10, 11), (13, 13)]
    );
    // reversed range, spaces, mixed list
    let c = parse_citations("[ 3 ,5-4 ]");
    assert_eq!(c.ranges(), &[(3, 3), (4, 5)]);
    // not markers
    for text in [
        "an array a[i] and [x, y] and []",
        "[1, ] [1-] [-2] [1-2-3] [one]",
        "unclosed [3",
        "nested [[2] counts once",
    ] {
        let c = parse_citations(text);
        if text.starts_with("nested") {
            assert_eq!(c.ranges(), &[(2, 2)], "{text}");
        } else {
            assert!(c.is_empty(), "{text}: {:?}", c.ranges());
        }
    }
    // huge numbers do not overflow or panic
    assert!(parse_citations("[99999999999999999999]").is_empty());
    assert!(parse_citations("[4294967295]").contains(u32::MAX));
}

#[test]
fn sentences_split_robustly() {
    assert_eq!(
        split_sentences("First one. Second, e.g. with an abbreviation! Third? 3.5 is a number."),
        vec![
            "First one.",
            "Second, e.g. with an abbreviation!",
            "Third?",
            "3.5 is a number."
        ]
    );
    // cranfield style: tokenised full stops
    assert_eq!(split_sentences(WING).len(), 3);
    // a long unpunctuated stretch is cut into windows of at most 40 words
    let long = (0..1000)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let parts = split_sentences(&long);
    assert!(parts.len() >= 25, "{}", parts.len());
    assert!(parts.iter().all(|p| p.split_whitespace().count() <= 40));
    let total: usize = parts.iter().map(|p| p.split_whitespace().count()).sum();
    assert_eq!(total, 1000);
    assert!(split_sentences("").is_empty());
    assert!(split_sentences(" . ... !!").is_empty());
    assert_eq!(
        split_sentences("Ünïcödé wörds. 日本語の文。次の文。").len(),
        3
    );
}

#[test]
fn verbatim_quote_is_used_and_unrelated_is_not() {
    let response = "Regarding wings in slipstreams: an experimental study of a wing in a \
        propeller slipstream was made in order to determine the spanwise distribution of the \
        lift increase due to slipstream at different angles of attack of the wing.";
    let labels = analyze(response, &[WING, GLUCOSE, DEWEY]);
    assert_eq!(labels.len(), 3);
    assert_eq!(
        labels.iter().map(|l| l.marker).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let wing = &labels[0];
    assert!(wing.used, "{wing:?}");
    assert!(wing.score > 0.9, "{wing:?}");
    assert!(wing.evidence.longest_shared_run >= 10, "{wing:?}");
    assert!(wing.evidence.ngram_containment > 0.5, "{wing:?}");
    assert!(!wing.evidence.cited);
    assert_eq!(wing.evidence.max_sentence_sim, None);
    for l in &labels[1..] {
        assert!(!l.used, "{l:?}");
        assert!(l.score < 0.2, "{l:?}");
        assert!(l.evidence.longest_shared_run <= 1, "{l:?}");
    }
}

#[test]
fn paraphrase_is_detected() {
    // reordered clauses, synonyms, dropped words, different inflection
    let response = "The question is about fetal blood. In other words, between the \
        maternal and fetal glucose level and ffa level notable correlation was derived. \
        Coefficient of correlation were established for glucose and ffa level of plasma \
        of mothers and fetuses at delivery.";
    let labels = analyze(response, &[WING, GLUCOSE, DEWEY, BOUNDARY]);
    let g = &labels[1];
    assert!(g.used, "{g:?}");
    assert!(g.evidence.longest_shared_run < 8, "not a quote: {g:?}");
    assert!(g.evidence.overlap > 0.3, "{g:?}");
    for (i, l) in labels.iter().enumerate() {
        if i != 1 {
            assert!(!l.used, "{l:?}");
        }
    }
}

#[test]
fn a_long_chunk_does_not_win_by_chance() {
    // the answer paraphrases the short boundary-layer chunk; a very long
    // chunk in the same field contains many of the answer's words by chance
    let long: String = (0..30)
        .map(|i| {
            format!(
                "measurements number {i} of the flow on the plate were made in the tunnel \
                 and the layer thickness heat and transition data at mach numbers were \
                 compared with theory for the edge of the wing and the method of suction . "
            )
        })
        .collect();
    let response = "Applying suction close to the leading edge postpones the transition to \
        turbulence. An integral method served to compute the flat plate boundary layer.";
    let labels = analyze(response, &[&long, BOUNDARY, GLUCOSE]);
    let (l, b) = (&labels[0], &labels[1]);
    assert!(b.used, "{b:?}");
    assert!(!l.used, "{l:?}");
    assert!(b.score > l.score + 0.3, "{b:?} vs {l:?}");
    assert!(b.evidence.overlap > l.evidence.overlap, "{b:?} vs {l:?}");
}

#[test]
fn citations_are_cross_checked_against_the_text() {
    // [2] is cited correctly (supported by paraphrase), [3] is cited wrongly
    let response = "Correlations between maternal and fetal glucose levels were significant \
        [2, 3].";
    let labels = analyze(response, &[WING, GLUCOSE, DEWEY]);
    assert!(labels[1].evidence.cited && labels[2].evidence.cited);
    assert!(!labels[0].evidence.cited);
    assert!(labels[1].used, "{:?}", labels[1]);
    assert!(
        !labels[2].used,
        "an unsupported citation alone: {:?}",
        labels[2]
    );
    assert!(
        labels[2].score > labels[0].score,
        "a citation still counts a little"
    );
    // a range marker
    let labels = analyze(
        "As reported [1-2], glucose levels correlate.",
        &[WING, GLUCOSE],
    );
    assert!(labels[0].evidence.cited && labels[1].evidence.cited);
    assert!(!labels[0].used && labels[1].used, "{labels:?}");
    // markers themselves are not words of the answer
    let labels = analyze("[1] [1] [1]", &[WING]);
    assert_eq!(labels[0].evidence.longest_shared_run, 0);
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let a = Analyzer::default();
    assert!(a.analyze("anything", &[]).unwrap().is_empty());
    let labels = a.analyze("", &chunks(&[WING, "", "   ", "🙂🙂"])).unwrap();
    assert_eq!(labels.len(), 4);
    assert!(labels.iter().all(|l| !l.used && l.score == 0.0));
    let labels = a
        .analyze("🙂 ünïcödé [1]", &chunks(&["", "ünïcödé"]))
        .unwrap();
    assert_eq!(labels.len(), 2);
    // huge texts: a 200k-word answer and chunk finish and find the quote
    let big: String = (0..200_000).map(|i| format!("t{} ", i % 50_000)).collect();
    let response = format!("{big} {WING}");
    let labels = a.analyze(&response, &chunks(&[WING, &big])).unwrap();
    assert!(labels[0].used && labels[1].used);
    // runs are counted within one answer sentence (≤ 40 words)
    assert!(
        labels[1].evidence.longest_shared_run >= 30,
        "{:?}",
        labels[1]
    );
    // duplicate markers are labelled independently
    let dup = [
        ShownChunk {
            marker: 4,
            text: WING,
        },
        ShownChunk {
            marker: 4,
            text: GLUCOSE,
        },
    ];
    assert_eq!(a.analyze(WING, &dup).unwrap().len(), 2);
    // an invalid configuration is an error, not a panic
    let bad = Analyzer::new(AnalyzerConfig {
        threshold: f32::NAN,
        ..AnalyzerConfig::default()
    });
    assert!(bad.analyze(WING, &chunks(&[WING])).is_err());
    let bad = Analyzer::new(AnalyzerConfig {
        ngram: 0,
        ..AnalyzerConfig::default()
    });
    assert!(bad.analyze(WING, &chunks(&[WING])).is_err());
}

#[test]
fn labels_serialize_with_evidence() {
    assert_eq!(ANALYZER_VERSION, "usage-v1");
    let labels = analyze(WING, &[WING]);
    let v = serde_json::to_value(&labels[0]).unwrap();
    assert_eq!(v["marker"], 1);
    assert_eq!(v["used"], true);
    assert!(v["evidence"]["longest_shared_run"].as_u64().unwrap() > 10);
    assert!(v["evidence"]["max_sentence_sim"].is_null());
    let back: anectx_learn::analyzer::UsageLabel = serde_json::from_value(v).unwrap();
    assert_eq!(back, labels[0]);
}

/// A bag-of-words embedder: hashed word counts, L2-normalised.
struct BagEmbedder {
    info: EmbedderInfo,
    fail: bool,
}

impl BagEmbedder {
    fn new(fail: bool) -> Self {
        Self {
            info: EmbedderInfo {
                fingerprint: "bag".into(),
                description: "hashed bag of words".into(),
                dim: 64,
            },
            fail,
        }
    }
}

impl TextEmbedder for BagEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> anectx_engine::Result<Vec<f32>> {
        if self.fail {
            return Ok(vec![0.0; 3]); // wrong length
        }
        let mut out = Vec::new();
        for t in texts {
            let mut v = vec![0.0f32; 64];
            for w in t.split_whitespace() {
                let w = w.to_lowercase();
                let h = w
                    .bytes()
                    .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
                v[(h % 64) as usize] += 1.0;
            }
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            out.extend(v.iter().map(|x| x / n));
        }
        Ok(out)
    }
}

#[test]
fn embedder_adds_sentence_similarity() {
    let a = Analyzer::default().with_embedder(Arc::new(BagEmbedder::new(false)));
    let response = "an experimental study of a wing in a propeller slipstream was made.";
    let labels = a.analyze(response, &chunks(&[WING, GLUCOSE])).unwrap();
    let (w, g) = (
        labels[0].evidence.max_sentence_sim.unwrap(),
        labels[1].evidence.max_sentence_sim.unwrap(),
    );
    assert!(w > 0.75, "{w}");
    assert!(g < w, "{g} vs {w}");
    assert!(labels[0].used && !labels[1].used);
    // a chunk without sentences has no similarity
    let labels = a.analyze(response, &chunks(&["", WING])).unwrap();
    assert_eq!(labels[0].evidence.max_sentence_sim, None);
    // an embedder that returns the wrong shape is an error
    let bad = Analyzer::default().with_embedder(Arc::new(BagEmbedder::new(true)));
    assert!(bad.analyze(response, &chunks(&[WING])).is_err());
}

#[test]
fn random_inputs_never_panic_and_stay_in_range() {
    // a fixed-seed generator over a nasty alphabet: brackets, digits,
    // dashes, multi-byte letters, full stops, newlines
    const ALPHABET: &[&str] = &[
        "[",
        "]",
        "1",
        "2",
        "-",
        "–",
        ",",
        " ",
        " ",
        " ",
        ".",
        ". ",
        "\n\n",
        "wing",
        "flow",
        "glucose",
        "é",
        "日本",
        "🙂",
        "^",
        "a",
        "the",
        "?",
        "。",
        "[3]",
        "[1-2]",
        "[4294967295]",
        "e.g.",
        "Fig.",
        "boundary layer",
        "layers",
    ];
    let mut rng = Xorshift(0x1234_5678_9abc_def0);
    let a = Analyzer::default().with_embedder(Arc::new(BagEmbedder::new(false)));
    for _ in 0..300 {
        let n = rng.below(120);
        let response = rng.text(ALPHABET, n);
        let texts: Vec<String> = (0..rng.below(6))
            .map(|_| {
                let n = rng.below(200);
                rng.text(ALPHABET, n)
            })
            .collect();
        let shown: Vec<ShownChunk<'_>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| ShownChunk {
                marker: i as u32 + 1,
                text: t,
            })
            .collect();
        let labels = a.analyze(&response, &shown).unwrap();
        assert_eq!(labels.len(), shown.len());
        for (l, c) in labels.iter().zip(&shown) {
            assert_eq!(l.marker, c.marker);
            assert!((0.0..=1.0).contains(&l.score), "{l:?}");
            assert_eq!(l.used, l.score >= AnalyzerConfig::default().threshold);
            assert!((0.0..=1.0).contains(&l.evidence.overlap), "{l:?}");
            assert!((0.0..=1.0).contains(&l.evidence.ngram_containment), "{l:?}");
        }
        let mut sim = anectx_learn::simllm::SimLlm::new(Default::default());
        let sim_chunks: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| anectx_learn::simllm::SimChunk {
                marker: i as u32 + 1,
                text: t,
                relevant: i % 2 == 0,
            })
            .collect();
        let ans = sim.answer(&response, &sim_chunks);
        assert!(ans
            .used
            .iter()
            .all(|m| (1..=texts.len() as u32).contains(m)));
    }
}

struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    fn text(&mut self, alphabet: &[&str], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}
