//! The promotion gate refuses a worse candidate and passes a better one, on
//! hand-built held-out interactions whose used chunks are known; and an
//! evaluation-collection check (`with_eval`) can only take a pass away.

use anectx_engine::{Candidate, Features, RelevanceModel};
use anectx_learn::gate::{gate, GateConfig};
use anectx_learn::train::{evaluate, Group, Shown};

/// Scores each candidate by its query coverage, times `sign`: `sign = 1`
/// ranks the used chunks first, `sign = -1` inverts that order.
struct ByCoverage {
    sign: f32,
}

impl RelevanceModel for ByCoverage {
    fn version(&self) -> String {
        format!("by-coverage({})", self.sign)
    }

    fn score(&self, _query: &str, c: &[Candidate]) -> anectx_engine::Result<Vec<f32>> {
        Ok(c.iter().map(|x| self.sign * x.features.coverage).collect())
    }
}

/// `n` interactions, each a different question with 30 candidates. The six
/// shown ones are labelled: those with coverage above 0.5 (three, at
/// positions that differ per interaction) were used. The 24 unshown ones
/// have coverages between the used and the unused shown ones, so the
/// coverage order ranks the used chunks first, and its inverse ranks them
/// below the top 10.
fn held_out(n: usize) -> Vec<Group> {
    const SHOWN: [f32; 6] = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1];
    (0..n)
        .map(|i| {
            let raw: Vec<Features> = (0..30)
                .map(|c| Features {
                    rrf: 1.0 / (60.0 + c as f32),
                    coverage: if c < 6 {
                        SHOWN[(c + i) % 6]
                    } else {
                        0.35 + 0.004 * (c - 6) as f32
                    },
                    tokens: 80,
                    ..Default::default()
                })
                .collect();
            let shown = (0..6)
                .map(|idx| Shown {
                    idx,
                    used: raw[idx].coverage > 0.5,
                    propensity: 0.9,
                })
                .collect();
            Group {
                interaction_id: i as i64,
                query: format!("question number {i}"),
                raw,
                shown,
                texts: Vec::new(),
            }
        })
        .collect()
}

#[test]
fn a_worse_candidate_is_refused_and_a_better_one_passes() {
    let groups = held_out(12);
    // Every interaction has at least one used and one unused shown chunk,
    // so the two orders really differ on each of them.
    for g in &groups {
        assert!(g.shown.iter().any(|s| s.used) && g.shown.iter().any(|s| !s.used));
    }
    let held: Vec<&Group> = groups.iter().collect();
    let (good, bad) = (ByCoverage { sign: 1.0 }, ByCoverage { sign: -1.0 });
    let cfg = GateConfig::default();
    let (good_ndcg, bad_ndcg) = (
        evaluate(&good, &held, cfg.ips_clip).unwrap(),
        evaluate(&bad, &held, cfg.ips_clip).unwrap(),
    );
    // The premise: the coverage order is ideal, its inverse is far worse.
    assert!((good_ndcg - 1.0).abs() < 1e-9, "{good_ndcg}");
    assert!(bad_ndcg < 0.1, "{bad_ndcg}");

    // The serving model orders well; a candidate that inverts it is refused.
    let r = gate(&bad, &good, &held, &cfg).unwrap();
    assert!(!r.passed, "a worse candidate passed the gate: {r:?}");
    assert_eq!((r.candidate, r.current), (bad_ndcg, good_ndcg));
    assert_eq!(r.current_version, "by-coverage(1)");
    assert_eq!((r.held_out_interactions, r.held_out_questions), (12, 12));
    assert!(r.reason.contains("< current"), "{}", r.reason);

    // The other way round: the better candidate passes.
    let r = gate(&good, &bad, &held, &cfg).unwrap();
    assert!(r.passed, "a better candidate was refused: {r:?}");
    assert!(r.reason.contains("≥ current"), "{}", r.reason);

    // Tolerance 0 means "at least as good": an equal candidate passes.
    let r = gate(&good, &good, &held, &cfg).unwrap();
    assert!(r.passed, "an equal candidate was refused: {r:?}");
}

#[test]
fn the_tolerance_admits_exactly_the_stated_shortfall() {
    let groups = held_out(12);
    let held: Vec<&Group> = groups.iter().collect();
    let (good, bad) = (ByCoverage { sign: 1.0 }, ByCoverage { sign: -1.0 });
    let gap = evaluate(&good, &held, 2.0).unwrap() - evaluate(&bad, &held, 2.0).unwrap();
    assert!(gap > 0.9, "{gap}");
    let with_tol = |tolerance| GateConfig {
        tolerance,
        ..GateConfig::default()
    };
    let r = gate(&bad, &good, &held, &with_tol(gap + 0.01)).unwrap();
    assert!(r.passed, "shortfall {gap} within tolerance refused: {r:?}");
    let r = gate(&bad, &good, &held, &with_tol(gap - 0.01)).unwrap();
    assert!(!r.passed, "shortfall {gap} beyond tolerance passed: {r:?}");
}

#[test]
fn too_few_held_out_interactions_refuse_even_a_better_candidate() {
    let groups = held_out(12);
    let held: Vec<&Group> = groups.iter().take(4).collect();
    let (good, bad) = (ByCoverage { sign: 1.0 }, ByCoverage { sign: -1.0 });
    let cfg = GateConfig {
        min_questions: 1,
        ..GateConfig::default()
    };
    let r = gate(&good, &bad, &held, &cfg).unwrap();
    assert!(!r.passed, "{r:?}");
    assert!(r.reason.contains("held-out interactions"), "{}", r.reason);
}

#[test]
fn with_eval_can_only_take_a_pass_away() {
    let groups = held_out(12);
    let held: Vec<&Group> = groups.iter().collect();
    let (good, bad) = (ByCoverage { sign: 1.0 }, ByCoverage { sign: -1.0 });
    let cfg = GateConfig::default();
    let passed = gate(&good, &bad, &held, &cfg).unwrap();
    let refused = gate(&bad, &good, &held, &cfg).unwrap();
    assert!(passed.passed && !refused.passed);

    // A held-out pass that is worse on the evaluation collection fails.
    let r = passed.clone().with_eval(0.40, 0.45, 0.0);
    assert!(!r.passed, "{r:?}");
    assert_eq!(r.eval, Some((0.40, 0.45)));
    assert!(r.reason.contains("evaluation nDCG@10"), "{}", r.reason);
    // ... unless the shortfall is within the tolerance.
    let r = passed.clone().with_eval(0.40, 0.45, 0.06);
    assert!(r.passed, "{r:?}");
    let r = passed.clone().with_eval(0.40, 0.45, 0.04);
    assert!(!r.passed, "{r:?}");
    // Better or equal on the evaluation collection keeps the pass.
    let r = passed.clone().with_eval(0.50, 0.45, 0.0);
    assert!(r.passed && r.eval == Some((0.50, 0.45)), "{r:?}");
    assert_eq!(r.reason, passed.reason);
    let r = passed.clone().with_eval(0.45, 0.45, 0.0);
    assert!(r.passed, "{r:?}");
    // A held-out refusal stays refused, however good the evaluation.
    let r = refused.clone().with_eval(0.90, 0.10, 0.0);
    assert!(!r.passed, "{r:?}");
    assert_eq!(r.reason, refused.reason);
}
