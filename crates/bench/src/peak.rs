//! The machine's f32 peak, measured with a multi-threaded FMA loop.
//!
//! Each thread keeps twelve independent vector accumulators (enough to hide
//! the FMA latency on current cores) and runs `acc = acc × b + c` on them.
//! The loop is compiled for the best instruction set the CPU has (AVX-512,
//! AVX2+FMA, NEON, else scalar) through `pulp`'s runtime dispatch, the same
//! way candle's matrix kernels pick theirs. One FMA counts as two FLOPs.

use std::time::{Duration, Instant};

use pulp::{Simd, WithSimd};

use crate::report::PeakInfo;

const ACCUMULATORS: usize = 12;

struct FmaLoop {
    iters: u64,
}

impl WithSimd for FmaLoop {
    /// (checksum, f32 lanes per register)
    type Output = (f32, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f32, usize) {
        let b = simd.splat_f32s(0.999_999);
        let c = simd.splat_f32s(1e-6);
        let mut acc = [simd.splat_f32s(0.5); ACCUMULATORS];
        for _ in 0..self.iters {
            for a in acc.iter_mut() {
                *a = simd.mul_add_f32s(*a, b, c);
            }
        }
        let mut sum = 0.0;
        for a in acc {
            sum += simd.reduce_sum_f32s(a);
        }
        (
            sum,
            std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>(),
        )
    }
}

fn run_loop(iters: u64) -> (f32, usize) {
    pulp::Arch::new().dispatch(FmaLoop { iters })
}

/// f32 lanes of the dispatched instruction set.
pub fn simd_lanes() -> usize {
    run_loop(0).1
}

fn isa_name(lanes: usize) -> String {
    match (std::env::consts::ARCH, lanes) {
        (_, 16) => "avx512".into(),
        ("x86_64", 8) => "avx2+fma".into(),
        ("aarch64", 4) => "neon".into(),
        (_, 1) => "scalar".into(),
        (arch, n) => format!("{arch} {n}-lane"),
    }
}

/// Runs `iters` FMA iterations on each of `threads` threads at once and
/// returns GFLOP/s.
fn gflops(threads: usize, iters: u64) -> f64 {
    let lanes = simd_lanes();
    let start = Instant::now();
    let sums: Vec<f32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || run_loop(std::hint::black_box(iters)).0))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
    });
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(sums);
    let flops = threads as f64 * iters as f64 * (ACCUMULATORS * lanes * 2) as f64;
    flops / secs / 1e9
}

/// Iterations that take about `target` on one thread.
fn calibrate(target: Duration) -> u64 {
    let mut iters = 10_000u64;
    loop {
        let t = Instant::now();
        std::hint::black_box(run_loop(std::hint::black_box(iters)));
        let e = t.elapsed();
        if e >= target / 8 || iters > 1 << 40 {
            let scale = target.as_secs_f64() / e.as_secs_f64().max(1e-9);
            return ((iters as f64 * scale) as u64).max(1);
        }
        iters *= 4;
    }
}

/// Measures the peak with `threads` threads, each repeat lasting about `per_run`.
pub fn measure(threads: usize, per_run: Duration, repeats: usize) -> PeakInfo {
    let threads = threads.max(1);
    let iters = calibrate(per_run);
    let best = |n: usize| {
        (0..repeats.max(1))
            .map(|_| gflops(n, iters))
            .fold(0.0f64, f64::max)
    };
    let one = best(1);
    let all = best(threads);
    let lanes = simd_lanes();
    PeakInfo {
        method: format!(
            "f32 FMA loop, {ACCUMULATORS} independent accumulators per thread, \
             best of {repeats}, 2 FLOPs per FMA"
        ),
        isa: isa_name(lanes),
        simd_lanes: lanes,
        threads,
        gflops_all_threads: all,
        gflops_one_thread: one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_loop_converges_and_counts() {
        // acc → c / (1 - b) = 1 for every lane; the sum is accumulators × lanes.
        let (sum, lanes) = run_loop(2_000_000);
        assert!(lanes >= 1);
        let expect = (ACCUMULATORS * lanes) as f32;
        assert!((sum - expect).abs() / expect < 0.2, "{sum} vs {expect}");
        let p = measure(1, Duration::from_millis(5), 1);
        assert!(p.gflops_one_thread > 0.0 && p.gflops_all_threads > 0.0);
        assert_eq!(p.threads, 1);
    }
}
