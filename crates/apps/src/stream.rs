//! STREAM: sustainable memory bandwidth (McCalpin's copy, scale, add, triad).
//!
//! Three arrays of `n` doubles, each thread working on its own block (first-touched by it).
//! Every repetition runs the four kernels with a barrier after each; each kernel is timed with
//! the TSC (no syscalls in the loop). Bandwidths are STREAM's "best rate" (fastest repetition,
//! the first excluded when there are several); the measured phase is all repetitions. Verified
//! with STREAM's own check: the final arrays against the scalar recurrence, relative error
//! below `1e-13`. Problem size is global.

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::team::{self, Shared};
use crate::timing::{rdtsc, Tsc};
use std::time::{Duration, Instant};

/// Usage text.
pub const USAGE: &str = "\
stream: STREAM copy/scale/add/triad memory bandwidth, global size.

Options:
  --n N          elements per array (default 16777216 = 128 MiB per array, 4x a 32 MiB L3;
                 small 1048576)
  --ntimes N     repetitions of the four kernels (default 40; small 5)";

/// Problem parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Elements per array.
    pub n: usize,
    /// Repetitions.
    pub ntimes: usize,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        Self {
            n: size.pick(1 << 20, 1 << 24, 1 << 26),
            ntimes: size.pick(5, 40, 20),
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        Ok(Self {
            n: args.positive("n")?.unwrap_or(d.n),
            ntimes: args.positive("ntimes")?.unwrap_or(d.ntimes),
        })
    }
}

/// Kernel names, in execution order.
pub const KERNELS: [&str; 4] = ["copy", "scale", "add", "triad"];
/// Bytes moved per element by each kernel (reads + writes).
const WORDS: [usize; 4] = [2, 2, 3, 3];

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Threads used.
    pub threads: usize,
    /// The parameters.
    pub cfg: Config,
    /// Best bandwidth of each kernel in MB/s (10^6 bytes).
    pub best_mbs: [f64; 4],
    /// Average time of each kernel in seconds.
    pub avg_s: [f64; 4],
    /// Largest relative error of the three arrays against the scalar recurrence.
    pub error: f64,
    /// TSC rate used.
    pub tsc_hz: f64,
    /// Setup seconds.
    pub setup_s: f64,
    /// Measured-phase seconds.
    pub time_s: f64,
}

impl Outcome {
    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        self.error <= 1e-13 && self.best_mbs.iter().all(|b| b.is_finite() && *b > 0.0)
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let mut result = AppResult::new("stream", self.threads, self.time_s, self.verified())
            .with("n", self.cfg.n)
            .with("ntimes", self.cfg.ntimes)
            .with("array_mib", (self.cfg.n * 8) as f64 / (1 << 20) as f64);
        for (k, name) in KERNELS.iter().enumerate() {
            result.set(&format!("{name}_mbs"), self.best_mbs[k]);
        }
        result.set("error", self.error);
        result.set("setup_s", self.setup_s);
        let mut lines = vec![format!(
            "stream: {} elements ({:.1} MiB per array), {} repetitions, {} threads",
            self.cfg.n,
            (self.cfg.n * 8) as f64 / (1 << 20) as f64,
            self.cfg.ntimes,
            self.threads
        )];
        lines.push("  kernel   best MB/s   avg time s".into());
        for (k, name) in KERNELS.iter().enumerate() {
            lines.push(format!(
                "  {name:<6} {:>11.1} {:>12.6}",
                self.best_mbs[k], self.avg_s[k]
            ));
        }
        lines.push(format!(
            "  check: max relative error {:.2e}; setup {:.3} s, measured {:.3} s",
            self.error, self.setup_s, self.time_s
        ));
        Report { result, lines }
    }
}

/// Runs STREAM on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let tsc = Tsc::calibrate(Duration::from_millis(50));
    let n = cfg.n;
    let (mut a, mut b, mut c) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
    let (sa, sb, sc) = (
        Shared::new(&mut a),
        Shared::new(&mut b),
        Shared::new(&mut c),
    );
    let scalar = 3.0;
    let out = team::run(threads, |ctx| {
        let own = ctx.range(n);
        // SAFETY: every thread touches only its own block of each array, throughout.
        let (a, b, c) = unsafe {
            (
                sa.part_mut(own.clone()),
                sb.part_mut(own.clone()),
                sc.part_mut(own),
            )
        };
        a.fill(1.0);
        b.fill(2.0);
        c.fill(0.0);
        a.iter_mut().for_each(|x| *x *= 2.0);
        let mut ticks = vec![[0u64; 4]; cfg.ntimes];
        ctx.barrier();
        let start = ctx.is_leader().then(Instant::now);
        for t in ticks.iter_mut() {
            let mut t0 = rdtsc();
            for (k, tk) in t.iter_mut().enumerate() {
                match k {
                    0 => c.copy_from_slice(a),
                    1 => b
                        .iter_mut()
                        .zip(c.iter())
                        .for_each(|(bj, cj)| *bj = scalar * cj),
                    2 => c
                        .iter_mut()
                        .zip(a.iter().zip(b.iter()))
                        .for_each(|(cj, (aj, bj))| *cj = aj + bj),
                    _ => a
                        .iter_mut()
                        .zip(b.iter().zip(c.iter()))
                        .for_each(|(aj, (bj, cj))| *aj = bj + scalar * cj),
                }
                ctx.barrier();
                let t1 = rdtsc();
                *tk = t1 - t0;
                t0 = t1;
            }
        }
        let elapsed = start.map(|s| s.elapsed().as_secs_f64());
        // STREAM's check: replay the recurrence on scalars.
        let (mut aj, mut bj, mut cj) = (2.0f64, 2.0f64, 0.0f64);
        for _ in 0..cfg.ntimes {
            cj = aj;
            bj = scalar * cj;
            cj = aj + bj;
            aj = bj + scalar * cj;
        }
        let err = |v: &[f64], e: f64| v.iter().fold(0.0f64, |m, x| m.max(((x - e) / e).abs()));
        let error = ctx.max(err(a, aj).max(err(b, bj)).max(err(c, cj)));
        (ticks, elapsed, error)
    });
    let (ticks, elapsed, error) = &out[0];
    let time_s = elapsed.unwrap_or(0.0);
    let mut best_mbs = [0.0; 4];
    let mut avg_s = [0.0; 4];
    let counted = if ticks.len() > 1 {
        &ticks[1..]
    } else {
        &ticks[..]
    };
    for k in 0..4 {
        let best = counted.iter().map(|t| t[k]).min().unwrap_or(0);
        best_mbs[k] = (WORDS[k] * 8 * n) as f64 / tsc.secs(best) / 1e6;
        avg_s[k] = counted.iter().map(|t| tsc.secs(t[k])).sum::<f64>() / counted.len() as f64;
    }
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        cfg: *cfg,
        best_mbs,
        avg_s,
        error: *error,
        tsc_hz: tsc.hz,
        setup_s,
        time_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_follow_the_recurrence() {
        for threads in [1, 3] {
            let o = run(
                &Config {
                    n: 10_001,
                    ntimes: 4,
                },
                threads,
            );
            assert!(o.verified(), "{o:?}");
            assert_eq!(o.error, 0.0, "small integers stay exact: {o:?}");
            assert!(o.best_mbs.iter().all(|&b| b > 10.0), "{o:?}");
        }
    }
}
