use anectx_learn::analyzer::{content_words, split_sentences};
use anectx_learn::simllm::{SimChunk, SimLlm, SimLlmConfig};

const TEXTS: [&str; 6] = [
    "experimental investigation of the aerodynamics of a wing in a slipstream . an experimental \
     study of a wing in a propeller slipstream was made in order to determine the spanwise \
     distribution of the lift increase due to slipstream at different angles of attack . the \
     results were intended in part as an evaluation basis for different theoretical treatments .",
    "correlation between maternal and fetal plasma levels of glucose and free fatty acids . \
     correlation coefficients have been determined between the levels of glucose and ffa in \
     maternal and fetal plasma collected at delivery . significant correlations were obtained .",
    "The present study is a history of the DEWEY Decimal Classification. The first edition of \
     the DDC was published in 1876, and future editions will continue to appear as needed.",
    "the boundary layer on a flat plate with suction was computed by an integral method . \
     transition to turbulence is delayed when suction is applied near the leading edge .",
    "Information retrieval systems were compared using recall and precision, which showed \
     large differences between the methods. Users preferred the simpler system.",
    "heat transfer coefficients were measured in a wind tunnel at mach numbers up to three, \
     and the data agree with the theory within ten percent over the whole range of conditions .",
];

fn sim_chunks(relevant: &[bool]) -> Vec<SimChunk<'static>> {
    TEXTS
        .iter()
        .zip(relevant)
        .enumerate()
        .map(|(i, (t, &r))| SimChunk {
            marker: i as u32 + 1,
            text: t,
            relevant: r,
        })
        .collect()
}

const QUERY: &str = "what is known about slipstream effects on wing lift?";

#[test]
fn same_seed_same_answers_other_seed_differs() {
    let chunks = sim_chunks(&[true, false, true, false, true, false]);
    let run = |seed: u64| -> Vec<_> {
        let mut sim = SimLlm::new(SimLlmConfig {
            seed,
            ..SimLlmConfig::default()
        });
        (0..20).map(|_| sim.answer(QUERY, &chunks)).collect()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
    // within one run the answers vary from call to call
    assert!(a.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn used_markers_follow_the_rates() {
    let relevant = [true, true, true, false, false, false];
    let chunks = sim_chunks(&relevant);
    let cfg = SimLlmConfig {
        use_relevant: 0.7,
        use_irrelevant: 0.2,
        seed: 9,
        ..SimLlmConfig::default()
    };
    let mut sim = SimLlm::new(cfg);
    let draws = 2000;
    let (mut rel_used, mut irr_used, mut none) = (0usize, 0usize, 0usize);
    for _ in 0..draws {
        let ans = sim.answer(QUERY, &chunks);
        assert!(
            ans.used.windows(2).all(|w| w[0] < w[1]),
            "shown order, no repeats"
        );
        for m in &ans.used {
            assert!((1..=6).contains(m));
            if relevant[*m as usize - 1] {
                rel_used += 1;
            } else {
                irr_used += 1;
            }
        }
        none += usize::from(ans.used.is_empty());
    }
    // 6000 Bernoulli(0.7) draws: mean 4200, sd ≈ 35; bounds at > 5 sd
    assert!((4000..=4400).contains(&rel_used), "{rel_used}");
    // 6000 Bernoulli(0.2): mean 1200, sd ≈ 31
    assert!((1030..=1370).contains(&irr_used), "{irr_used}");
    // P(nothing used) = 0.3^3 · 0.8^3 ≈ 0.0138 → ≈ 28 of 2000
    assert!((5..=60).contains(&none), "{none}");

    // extreme rates are exact
    for (ur, ui, want_rel, want_irr) in [(1.0, 0.0, 3, 0), (0.0, 1.0, 0, 3), (0.0, 0.0, 0, 0)] {
        let mut sim = SimLlm::new(SimLlmConfig {
            use_relevant: ur,
            use_irrelevant: ui,
            ..SimLlmConfig::default()
        });
        for _ in 0..50 {
            let ans = sim.answer(QUERY, &chunks);
            let r = ans
                .used
                .iter()
                .filter(|&&m| relevant[m as usize - 1])
                .count();
            assert_eq!((r, ans.used.len() - r), (want_rel, want_irr));
            assert!(!ans.text.is_empty());
        }
    }
}

#[test]
fn citations_follow_the_cite_rate_and_name_used_chunks_only() {
    let chunks = sim_chunks(&[true; 6]);
    for (cite_rate, lo, hi) in [(0.0, 0, 0), (1.0, 6000, 6000), (0.3, 1600, 2000)] {
        let mut sim = SimLlm::new(SimLlmConfig {
            use_relevant: 1.0,
            cite_rate,
            seed: 3,
            ..SimLlmConfig::default()
        });
        let mut cited = 0;
        for _ in 0..1000 {
            let ans = sim.answer(QUERY, &chunks);
            for m in 1..=6u32 {
                if ans.text.contains(&format!("[{m}]")) {
                    assert!(ans.used.contains(&m));
                    cited += 1;
                }
            }
        }
        // 6000 Bernoulli(0.3): mean 1800, sd ≈ 35
        assert!((lo..=hi).contains(&cited), "cite_rate {cite_rate}: {cited}");
    }
}

/// Longest run of shared content words between two texts (quadratic; tests only).
fn shared_run(a: &str, b: &str) -> usize {
    let (a, b) = (content_words(a), content_words(b));
    let mut best = 0;
    let mut prev = vec![0usize; b.len() + 1];
    for x in &a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            if x == y {
                cur[j + 1] = prev[j] + 1;
                best = best.max(cur[j + 1]);
            }
        }
        prev = cur;
    }
    best
}

#[test]
fn quotes_are_verbatim_and_paraphrases_are_harder() {
    let chunks = sim_chunks(&[true, true, true, true, true, true]);
    let answer_with = |quote_rate: f32, seed: u64| {
        let mut sim = SimLlm::new(SimLlmConfig {
            use_relevant: 1.0,
            quote_rate,
            cite_rate: 0.0,
            max_sentences_per_chunk: 1,
            seed,
            ..SimLlmConfig::default()
        });
        sim.answer(QUERY, &chunks)
    };
    // quoting: every chunk's sentence appears verbatim
    let quoted = answer_with(1.0, 1);
    assert_eq!(quoted.used, vec![1, 2, 3, 4, 5, 6]);
    for t in TEXTS {
        assert!(
            split_sentences(t)
                .iter()
                .any(|s| quoted.text.contains(s.trim_end_matches(['.', ' ']))),
            "no verbatim sentence of {t:?} in {:?}",
            quoted.text
        );
    }
    // paraphrasing: no sentence verbatim, shorter shared runs, words still shared
    let (mut quote_runs, mut para_runs) = (0usize, 0usize);
    for seed in 0..30 {
        let para = answer_with(0.0, seed);
        let quoted = answer_with(1.0, seed);
        for t in TEXTS {
            for s in split_sentences(t) {
                let core = s.trim_end_matches(['.', ' ']);
                assert!(
                    core.split_whitespace().count() < 6 || !para.text.contains(core),
                    "{core:?} copied"
                );
            }
            para_runs += shared_run(&para.text, t);
            quote_runs += shared_run(&quoted.text, t);
            let shared = content_words(t)
                .iter()
                .filter(|w| content_words(&para.text).contains(w))
                .count();
            assert!(
                shared >= 2,
                "a paraphrase keeps some words of {t:?}: {}",
                para.text
            );
        }
    }
    assert!(
        2 * para_runs < quote_runs,
        "paraphrase runs {para_runs} vs quote runs {quote_runs}"
    );
}

#[test]
fn degenerate_inputs() {
    let mut sim = SimLlm::new(SimLlmConfig::default());
    let ans = sim.answer("", &[]);
    assert!(ans.used.is_empty());
    assert!(!ans.text.is_empty());
    // chunks without usable sentences are never reported as used
    let empty = [
        SimChunk {
            marker: 1,
            text: "",
            relevant: true,
        },
        SimChunk {
            marker: 2,
            text: "🙂 …",
            relevant: true,
        },
        SimChunk {
            marker: 3,
            text: "ünïcödé wörds everywhere here",
            relevant: true,
        },
    ];
    let mut sim = SimLlm::new(SimLlmConfig {
        use_relevant: 1.0,
        quote_rate: 0.0,
        ..SimLlmConfig::default()
    });
    for _ in 0..20 {
        let ans = sim.answer("ünïcödé?", &empty);
        assert_eq!(ans.used, vec![3]);
    }
    // out-of-range and NaN rates are clamped
    let mut sim = SimLlm::new(SimLlmConfig {
        use_relevant: 7.0,
        use_irrelevant: f32::NAN,
        quote_rate: -1.0,
        cite_rate: 2.0,
        max_sentences_per_chunk: 0,
        seed: 1,
    });
    let chunks = sim_chunks(&[true, false, true, false, true, false]);
    let ans = sim.answer(QUERY, &chunks);
    assert_eq!(ans.used, vec![1, 3, 5]);
    // a huge chunk without punctuation
    let huge: String = (0..100_000).map(|i| format!("word{} ", i % 977)).collect();
    let big = [SimChunk {
        marker: 1,
        text: &huge,
        relevant: true,
    }];
    let ans = SimLlm::new(SimLlmConfig {
        use_relevant: 1.0,
        ..SimLlmConfig::default()
    })
    .answer(QUERY, &big);
    assert_eq!(ans.used, vec![1]);
    assert!(ans.text.len() < 2000, "{}", ans.text.len());
}
