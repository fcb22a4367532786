//! A small, reproducible mutation fuzzer for stable Rust (no nightly, no
//! cargo-fuzz): targets are ordinary tests that mutate seed corpora.
//!
//! Environment:
//! - `ANECTX_FUZZ_SECS`: run each target for this many seconds (default: a
//!   fixed number of cases, [`Budget::default_cases`], so CI runs it quickly);
//! - `ANECTX_FUZZ_SEED`: the seed (default 0x5eed; printed, so a run can be
//!   repeated: the cases are a function of the seed alone);
//! - `ANECTX_FUZZ_CASE_SECS`: the longest a single case may take before it
//!   counts as a hang (default 60).
//!
//! A panicking or hanging case fails the test, naming the seed and the case
//! number and saving the input under `$TMPDIR/anectx-fuzz/`. Timed runs also
//! keep the running input in `<target>-<seed>-current.bin` there, so an
//! input that aborts the process (a failed allocation) can be found.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// xorshift64*: small, fast and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        (self.next_u64() % u64::from(den)) < u64::from(num)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'<', b'>', b'&', b';', b'#', b'"', b'\\', b'{', b'}', b'[', b']',
    b'\n', b'\r', b'/', b'%', b'(', b')', b'*', b'`', b'=', 0xc3, 0xa9, 0xe2, 0x80,
];

/// Applies 1 to 8 random byte-level mutations to `input` (bit flips,
/// interesting bytes and integers, inserted, deleted or repeated ranges,
/// ranges spliced from `others`), keeping it within `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut b = input.to_vec();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = b.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                b[i] = *rng.pick(INTERESTING);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                b.drain(i..i + n);
            }
            4 if len > 0 => {
                // Repeat a range (deep nesting, long runs).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let piece = b[i..i + n].to_vec();
                let times = 1 + rng.below(64);
                for _ in 0..times {
                    b.splice(i..i, piece.iter().copied());
                }
            }
            5 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| *rng.pick(INTERESTING)).collect();
                b.splice(i..i, bytes);
            }
            6 if !others.is_empty() => {
                let o = rng.pick(others);
                if !o.is_empty() {
                    let j = rng.below(o.len());
                    let n = 1 + rng.below((o.len() - j).min(256));
                    let i = rng.below(len + 1);
                    b.splice(i..i, o[j..j + n].iter().copied());
                }
            }
            7 if len > 0 => {
                let keep = rng.below(len);
                b.truncate(keep);
            }
            8 if len >= 4 => {
                let i = rng.below(len - 3);
                let v: u32 = *rng.pick(&[0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 0xffff, 255]);
                let bytes = if rng.chance(1, 2) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                b[i..i + 4].copy_from_slice(&bytes);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                b[i] = b[i].wrapping_add(1 + rng.below(3) as u8);
            }
            _ => b.push(rng.next_u64() as u8),
        }
        b.truncate(max_len);
    }
    b
}

/// How long a target runs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub seed: u64,
    pub secs: Option<f64>,
    pub cases: usize,
    pub case_limit: Duration,
}

impl Budget {
    /// From the environment (see the module docs); `default_cases` when
    /// `ANECTX_FUZZ_SECS` is not set.
    pub fn from_env(default_cases: usize) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let seed = var("ANECTX_FUZZ_SEED")
            .map(|s| {
                let s = s.trim();
                s.strip_prefix("0x")
                    .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
                    .expect("ANECTX_FUZZ_SEED must be an integer")
            })
            .unwrap_or(0x5eed);
        let secs = var("ANECTX_FUZZ_SECS").map(|s| s.parse().expect("ANECTX_FUZZ_SECS"));
        let case_limit = var("ANECTX_FUZZ_CASE_SECS")
            .map_or(60.0, |s| s.parse().expect("ANECTX_FUZZ_CASE_SECS"));
        Self {
            seed,
            secs,
            cases: default_cases,
            case_limit: Duration::from_secs_f64(case_limit),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub cases: usize,
    pub elapsed: Duration,
}

/// Runs `target` on inputs made by `make` until the budget is spent. Each
/// case runs on its own thread: a panic or a case running past the case
/// limit fails the run with the seed, the case number and the saved input
/// (`save` turns an input into bytes for the file).
pub fn run<T, M, S>(
    name: &str,
    budget: Budget,
    mut make: M,
    save: S,
    target: Arc<dyn Fn(T) + Send + Sync>,
) -> Report
where
    T: Send + 'static,
    M: FnMut(&mut Rng) -> T,
    S: Fn(&T) -> Vec<u8>,
{
    eprintln!(
        "fuzz {name}: seed {:#x}, {}",
        budget.seed,
        budget
            .secs
            .map_or_else(|| format!("{} cases", budget.cases), |s| format!("{s} s"))
    );
    let mut rng = Rng::new(budget.seed);
    let start = Instant::now();
    let mut cases = 0usize;
    // In timed runs each input is written before it runs, so one that kills
    // the process (an abort on a failed allocation cannot be caught) is
    // still on disk afterwards.
    let dir = std::env::temp_dir().join("anectx-fuzz");
    let current = budget.secs.map(|_| {
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!("{name}-{:x}-current.bin", budget.seed))
    });
    loop {
        let more = match budget.secs {
            Some(s) => start.elapsed().as_secs_f64() < s,
            None => cases < budget.cases,
        };
        if !more {
            break;
        }
        let input = make(&mut rng);
        let saved = save(&input);
        if let Some(c) = &current {
            let _ = std::fs::write(c, &saved);
        }
        let (tx, rx) = mpsc::channel();
        let t = target.clone();
        std::thread::spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| t(input)));
            let _ = tx.send(r.map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into())
            }));
        });
        let failure = match rx.recv_timeout(budget.case_limit) {
            Ok(Ok(())) => None,
            Ok(Err(panic)) => Some(format!("panicked: {panic}")),
            Err(_) => Some(format!(
                "ran past {} s (a hang)",
                budget.case_limit.as_secs_f64()
            )),
        };
        if let Some(f) = failure {
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{:x}-{cases}.bin", budget.seed));
            let _ = std::fs::write(&file, &saved);
            panic!(
                "fuzz {name}: case {cases} (seed {:#x}) {f}; input saved to {}",
                budget.seed,
                file.display()
            );
        }
        cases += 1;
    }
    let elapsed = start.elapsed();
    if let Some(c) = &current {
        let _ = std::fs::remove_file(c);
    }
    eprintln!(
        "fuzz {name}: {cases} cases in {:.1} s, nothing found",
        elapsed.as_secs_f64()
    );
    Report { cases, elapsed }
}
