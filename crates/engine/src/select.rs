//! Fusion, diversity and packing.

use std::collections::HashMap;

/// Reciprocal rank fusion: `Σ 1 / (k + rank)` over the lists (ranks from 1).
/// Returns `(id, score)` best first, ties broken by id.
pub fn rrf(lists: &[&[(u64, f32)]], k: f32) -> Vec<(u64, f32)> {
    let weighted: Vec<(&[(u64, f32)], f32)> = lists.iter().map(|l| (*l, 1.0)).collect();
    rrf_weighted(&weighted, k)
}

/// Weighted reciprocal rank fusion: `Σ w / (k + rank)` over the lists;
/// lists with weight ≤ 0 are skipped. Returns `(id, score)` best first, ties
/// broken by id.
pub fn rrf_weighted(lists: &[(&[(u64, f32)], f32)], k: f32) -> Vec<(u64, f32)> {
    let mut acc: HashMap<u64, f32> = HashMap::new();
    for &(list, w) in lists {
        if w <= 0.0 || w.is_nan() {
            continue;
        }
        for (r, (id, _)) in list.iter().enumerate() {
            *acc.entry(*id).or_default() += w / (k + r as f32 + 1.0);
        }
    }
    let mut v: Vec<(u64, f32)> = acc.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Maximal marginal relevance: repeatedly picks the item maximising
/// `λ·rel − (1−λ)·max sim(item, picked)`. `rel` should be in `[0, 1]`;
/// `sim(i, j)` is a similarity of items `i` and `j`. Items more similar
/// than `dedup` to a picked one are dropped as near-duplicates.
/// Returns indices in pick order.
pub fn mmr(rel: &[f32], lambda: f32, dedup: f32, sim: impl Fn(usize, usize) -> f32) -> Vec<usize> {
    let n = rel.len();
    let mut max_sim = vec![f32::NEG_INFINITY; n];
    let mut alive: Vec<bool> = vec![true; n];
    let mut out = Vec::with_capacity(n);
    while let Some(best) = (0..n).filter(|&i| alive[i]).max_by(|&a, &b| {
        let s = |i: usize| lambda * rel[i] - (1.0 - lambda) * max_sim[i].max(0.0);
        s(a).total_cmp(&s(b)).then(b.cmp(&a))
    }) {
        alive[best] = false;
        out.push(best);
        for i in 0..n {
            if alive[i] {
                let s = sim(best, i);
                if s > dedup {
                    alive[i] = false;
                } else if s > max_sim[i] {
                    max_sim[i] = s;
                }
            }
        }
    }
    out
}

/// Relevance by rank for MMR: the best item gets 1, the r-th (0-based)
/// `RANK_K / (RANK_K + r)`; ties keep input order.
pub fn rank_relevance(rel: &[f32]) -> Vec<f32> {
    const RANK_K: f32 = 10.0;
    let mut idx: Vec<usize> = (0..rel.len()).collect();
    idx.sort_by(|&a, &b| rel[b].total_cmp(&rel[a]).then(a.cmp(&b)));
    let mut out = vec![0f32; rel.len()];
    for (r, &i) in idx.iter().enumerate() {
        out[i] = RANK_K / (RANK_K + r as f32);
    }
    out
}

/// Reorders items given best first so the best sit at both ends:
/// 1st, 3rd, 5th, … from the front, … 4th, 2nd at the back.
pub fn lost_in_the_middle<T>(items: Vec<T>) -> Vec<T> {
    let n = items.len();
    let mut front = Vec::with_capacity(n);
    let mut back = Vec::with_capacity(n / 2);
    for (i, x) in items.into_iter().enumerate() {
        if i % 2 == 0 {
            front.push(x);
        } else {
            back.push(x);
        }
    }
    back.reverse();
    front.extend(back);
    front
}

/// Token cost of a chunk in the packed context: the larger of the
/// pre-token count and a chars/4 estimate, plus its marker line.
pub fn token_cost(tokens: usize, text_chars: usize, header_chars: usize) -> usize {
    tokens.max(text_chars.div_ceil(4)) + header_chars.div_ceil(4) + 1
}

/// Greedy packing: takes items in order while they fit in `budget`,
/// skipping those that do not fit. Returns the indices taken.
pub fn pack(costs: &[usize], budget: usize) -> Vec<usize> {
    let mut left = budget;
    let mut out = Vec::new();
    for (i, &c) in costs.iter().enumerate() {
        if c <= left {
            left -= c;
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement() {
        let a = [(1, 9.0), (2, 8.0), (3, 7.0)];
        let b = [(3, 0.9), (4, 0.8), (1, 0.7)];
        let f = rrf(&[&a, &b], 60.0);
        let ids: Vec<u64> = f.iter().map(|x| x.0).collect();
        // 1: 1/61 + 1/63; 3: 1/63 + 1/61 — tie broken by id; then 2 before 4 (tie by id).
        assert_eq!(ids, vec![1, 3, 2, 4]);
        assert!((f[0].1 - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-6);
    }

    #[test]
    fn mmr_prefers_diverse_items_and_drops_duplicates() {
        // Items 0 and 1 are near-identical, 2 is different but less relevant.
        let rel = [1.0, 0.95, 0.6];
        let sims = [[1.0, 0.9, 0.1], [0.9, 1.0, 0.1], [0.1, 0.1, 1.0]];
        let order = mmr(&rel, 0.5, 0.99, |i, j| sims[i][j]);
        assert_eq!(order, vec![0, 2, 1]);
        let order = mmr(&rel, 1.0, 0.99, |i, j| sims[i][j]);
        assert_eq!(order, vec![0, 1, 2]);
        let order = mmr(&rel, 0.5, 0.85, |i, j| sims[i][j]);
        assert_eq!(order, vec![0, 2]);
    }

    #[test]
    fn rank_relevance_ignores_score_spread() {
        let a = rank_relevance(&[0.9, 0.1, 0.5]);
        let b = rank_relevance(&[100.0, -3.0, 99.0]);
        assert_eq!(a, b);
        assert_eq!(a[0], 1.0);
        assert!((a[2] - 10.0 / 11.0).abs() < 1e-6 && (a[1] - 10.0 / 12.0).abs() < 1e-6);
        assert!(rank_relevance(&[]).is_empty());
    }

    #[test]
    fn best_items_go_to_the_ends() {
        assert_eq!(lost_in_the_middle(vec![1, 2, 3, 4, 5]), vec![1, 3, 5, 4, 2]);
        assert_eq!(lost_in_the_middle(vec![1, 2]), vec![1, 2]);
        assert!(lost_in_the_middle(Vec::<u8>::new()).is_empty());
    }

    #[test]
    fn packing_respects_the_budget() {
        assert_eq!(pack(&[50, 80, 30, 10], 100), vec![0, 2, 3]);
        assert!(pack(&[101], 100).is_empty());
        assert_eq!(token_cost(10, 100, 8), 25 + 2 + 1);
    }
}
