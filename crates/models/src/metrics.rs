//! Numeric comparison helpers used by parity tests and benchmarks.

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// Peak signal-to-noise ratio of `test` against `reference` in dB, with the
/// peak taken as the reference's largest magnitude (coremltools' definition).
/// Identical inputs give `f64::INFINITY`.
pub fn psnr(reference: &[f32], test: &[f32]) -> f64 {
    assert_eq!(reference.len(), test.len(), "psnr needs equal lengths");
    let peak = reference.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let mse = reference
        .iter()
        .zip(test)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / reference.len().max(1) as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    20.0 * (peak / mse.sqrt()).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_psnr() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-7);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(psnr(&[1.0, 2.0], &[1.0, 2.0]), f64::INFINITY);
        // peak 1, rmse 0.1 -> 20 dB
        let p = psnr(&[1.0, -1.0], &[1.1, -0.9]);
        assert!((p - 20.0).abs() < 1e-4, "{p}");
    }
}
