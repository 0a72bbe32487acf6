//! FWQ: the fixed-work-quantum noise probe (LLNL's FWQ benchmark).
//!
//! Every thread repeats the same small, fixed amount of pure computation (a dependent chain of
//! 64-bit xorshift-multiplies, no memory traffic) and records how long each repetition took, in TSC
//! ticks: no syscall and no clock read other than `rdtsc` happens inside the sampling loop. On a
//! quiet core every sample takes the same time; anything else the core does (interrupts, other
//! tasks, VM exits, page faults) shows up as a *detour*, a sample longer than the minimum.
//!
//! Reported: per-sample minimum, median, mean, 99.9th percentile and maximum, and the detours
//! (sample minus the thread's minimum) at the median, 99.9th percentile and maximum, in
//! microseconds, over all threads. `--dump FILE` writes every sample (after the measured phase)
//! as CSV `thread,sample,ticks,ns`. Verified when every quantum computed the expected value
//! and the TSC calibration is plausible.

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::team;
use crate::timing::{rdtsc, Stats, Tsc};
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// Usage text.
pub const USAGE: &str = "\
fwq: fixed-work-quantum OS/hypervisor noise probe (LLNL FWQ), per thread.

Options:
  --samples N    quanta per thread (default 15000; small 500)
  --work N       xorshift-multiply steps per quantum (default 131072, ~0.18 ms at 2.6 GHz)
  --dump FILE    write every sample to FILE as CSV (thread,sample,ticks,ns)";

/// Problem parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Quanta per thread.
    pub samples: usize,
    /// Dependent xorshift-multiply steps per quantum.
    pub work: u64,
    /// Where to write all samples.
    pub dump: Option<String>,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        Self {
            samples: size.pick(500, 15_000, 60_000),
            work: 1 << 17,
            dump: None,
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        Ok(Self {
            samples: args.positive("samples")?.unwrap_or(d.samples),
            work: args.positive("work")?.map_or(d.work, |w| w as u64),
            dump: args.value("dump", "a file path")?,
        })
    }
}

/// One quantum of work: `steps` dependent xorshift-multiply steps, about 5 cycles each (shift,
/// xor, multiply). The shift keeps the compiler from folding unrolled steps together, which it
/// does for a plain multiply-add chain.
#[inline(never)]
pub fn quantum(seed: u64, steps: u64) -> u64 {
    let mut x = seed;
    for _ in 0..steps {
        x = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    x
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Threads used.
    pub threads: usize,
    /// The parameters.
    pub cfg: Config,
    /// Sample statistics in microseconds, over all threads.
    pub sample_us: Stats,
    /// Detour statistics in microseconds (sample minus its thread's minimum), over all threads.
    pub detour_us: Stats,
    /// Share of the sampled time spent in detours.
    pub noise_fraction: f64,
    /// Quanta whose result was wrong.
    pub wrong: usize,
    /// TSC rate used.
    pub tsc_hz: f64,
    /// Where the samples were written, and whether that worked.
    pub dumped: Option<Result<String, String>>,
    /// Setup seconds.
    pub setup_s: f64,
    /// Measured-phase seconds.
    pub time_s: f64,
}

impl Outcome {
    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        self.wrong == 0
            && (1e8..2e10).contains(&self.tsc_hz)
            && self.sample_us.min > 0.0
            && !matches!(self.dumped, Some(Err(_)))
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let (s, d) = (&self.sample_us, &self.detour_us);
        let mut result = AppResult::new("fwq", self.threads, self.time_s, self.verified())
            .with("samples", self.cfg.samples)
            .with("work", self.cfg.work)
            .with("min_us", s.min)
            .with("median_us", s.median)
            .with("mean_us", s.mean)
            .with("p999_us", s.p999)
            .with("max_us", s.max)
            .with("median_detour_us", d.median)
            .with("p99_detour_us", d.p99)
            .with("p999_detour_us", d.p999)
            .with("max_detour_us", d.max)
            .with("noise_fraction", self.noise_fraction)
            .with("wrong", self.wrong)
            .with("tsc_hz", self.tsc_hz)
            .with("setup_s", self.setup_s);
        let mut lines = vec![
            format!(
                "fwq: {} threads x {} quanta of {} steps, TSC {:.3} GHz",
                self.threads,
                self.cfg.samples,
                self.cfg.work,
                self.tsc_hz / 1e9
            ),
            format!(
                "  sample us: min {:.2} median {:.2} mean {:.2} p99.9 {:.2} max {:.2}",
                s.min, s.median, s.mean, s.p999, s.max
            ),
            format!(
                "  detour us: median {:.3} p99 {:.2} p99.9 {:.2} max {:.2}; noise {:.4}%",
                d.median,
                d.p99,
                d.p999,
                d.max,
                100.0 * self.noise_fraction
            ),
            format!(
                "  setup {:.3} s, measured {:.3} s",
                self.setup_s, self.time_s
            ),
        ];
        match &self.dumped {
            Some(Ok(path)) => {
                result.set("dump", path.as_str());
                lines.push(format!("  samples written to {path}"));
            }
            Some(Err(e)) => lines.push(format!("  could not write the samples: {e}")),
            None => {}
        }
        Report { result, lines }
    }
}

/// Runs the probe on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let tsc = Tsc::calibrate(Duration::from_millis(50));
    let seed = 0x2545_F491_4F6C_DD1D;
    let expected = quantum(seed, cfg.work);
    let out = team::run(threads, |ctx| {
        let mut ticks = vec![1u64; cfg.samples];
        crate::first_touch(&mut ticks);
        // Warm up (frequency ramp, caches, branch predictors) before the measured phase.
        for _ in 0..16 {
            black_box(quantum(black_box(seed), cfg.work));
        }
        let mut wrong = 0usize;
        ctx.barrier();
        let start = ctx.is_leader().then(Instant::now);
        for t in ticks.iter_mut() {
            let t0 = rdtsc();
            let r = quantum(black_box(seed), cfg.work);
            let t1 = rdtsc();
            *t = t1.wrapping_sub(t0);
            wrong += usize::from(r != expected);
        }
        ctx.barrier();
        let elapsed = start.map(|s| s.elapsed().as_secs_f64());
        (ticks, wrong, elapsed)
    });
    let time_s = out[0].2.unwrap_or(0.0);
    let wrong = out.iter().map(|o| o.1).sum();
    let dumped = cfg.dump.as_ref().map(|path| {
        dump(path, &out, &tsc)
            .map(|()| path.clone())
            .map_err(|e| format!("{path}: {e}"))
    });
    let us = |t: u64| tsc.secs(t) * 1e6;
    let mut samples = Vec::with_capacity(threads * cfg.samples);
    let mut detours = Vec::with_capacity(threads * cfg.samples);
    for (ticks, _, _) in &out {
        let min = ticks.iter().copied().min().unwrap_or(0);
        samples.extend(ticks.iter().map(|&t| us(t)));
        detours.extend(ticks.iter().map(|&t| us(t - min)));
    }
    let total: f64 = samples.iter().sum();
    let detour_total: f64 = detours.iter().sum();
    let empty = Stats {
        n: 0,
        min: 0.0,
        median: 0.0,
        mean: 0.0,
        p99: 0.0,
        p999: 0.0,
        max: 0.0,
    };
    let sample_us = Stats::of(&mut samples).unwrap_or(empty);
    let detour_us = Stats::of(&mut detours).unwrap_or(empty);
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        cfg: cfg.clone(),
        sample_us,
        detour_us,
        noise_fraction: if total > 0.0 {
            detour_total / total
        } else {
            0.0
        },
        wrong,
        tsc_hz: tsc.hz,
        dumped,
        setup_s,
        time_s,
    }
}

fn dump(path: &str, out: &[(Vec<u64>, usize, Option<f64>)], tsc: &Tsc) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "thread,sample,ticks,ns")?;
    for (tid, (ticks, _, _)) in out.iter().enumerate() {
        for (i, &t) in ticks.iter().enumerate() {
            writeln!(w, "{tid},{i},{t},{:.0}", tsc.secs(t) * 1e9)?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantum_is_the_xorshift_multiply_chain() {
        assert_eq!(quantum(1, 0), 1);
        assert_eq!(quantum(1, 1), 0x9E37_79B9_7F4A_7C15);
        assert_eq!(quantum(5, 3), quantum(quantum(5, 2), 1));
    }

    #[test]
    fn samples_are_recorded_and_dumped() {
        let dir = std::env::temp_dir().join(format!("fwq-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("samples.csv").to_string_lossy().into_owned();
        let cfg = Config {
            samples: 200,
            work: 1 << 12,
            dump: Some(path.clone()),
        };
        let o = run(&cfg, 2);
        assert!(o.verified(), "{o:?}");
        assert_eq!(o.sample_us.n, 400);
        assert!(o.sample_us.min <= o.sample_us.median && o.sample_us.median <= o.sample_us.max);
        assert_eq!(o.detour_us.min, 0.0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 401);
        assert!(text.lines().nth(400).unwrap().starts_with("1,199,"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_dump_fails_verification() {
        let cfg = Config {
            samples: 10,
            work: 16,
            dump: Some("/nonexistent-dir/x.csv".into()),
        };
        let o = run(&cfg, 1);
        assert!(!o.verified());
        assert!(matches!(o.dumped, Some(Err(_))));
    }
}
