//! Time without syscalls: the TSC, calibrated once against the OS clock.
//!
//! Inside the HPC VMM every `clock_gettime` is a VM exit (~65 us on the development machine), so
//! timed regions read the TSC (`rdtsc` runs at native speed in the guest) and convert cycles to
//! seconds with a rate measured once at start-up. `Instant::now` is used only at the edges of
//! the measured phase and during calibration.

use std::time::{Duration, Instant};

/// Reads the time-stamp counter, ordered after earlier loads (`lfence; rdtsc`).
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `lfence` and `rdtsc` are available on every x86-64 CPU and touch no memory.
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Fallback for other targets (tests only): nanoseconds since first use.
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// TSC rate measured against the OS monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tsc {
    /// Ticks per second.
    pub hz: f64,
}

impl Tsc {
    /// Measures the TSC rate over about `window` of busy waiting (a few hundred clock reads).
    pub fn calibrate(window: Duration) -> Self {
        // Bracket each clock read with two TSC reads and use the midpoint, so the cost of the
        // clock read itself (a VM exit in the VMM) cancels out.
        let sample = || {
            let a = rdtsc();
            let t = Instant::now();
            let b = rdtsc();
            (t, a / 2 + b / 2)
        };
        // Two clock reads around one sleep: three system calls in all, however long the
        // window (polling the clock would cost one VM exit per read inside the HPC VMM).
        let (t0, c0) = sample();
        std::thread::sleep(window);
        let (t1, c1) = sample();
        let secs = t1.duration_since(t0).as_secs_f64();
        Self {
            hz: (c1.wrapping_sub(c0)) as f64 / secs,
        }
    }

    /// Seconds in `ticks`.
    pub fn secs(&self, ticks: u64) -> f64 {
        ticks as f64 / self.hz
    }

    /// True when the rate is plausible for a real TSC (100 MHz - 20 GHz).
    pub fn plausible(&self) -> bool {
        (1e8..2e10).contains(&self.hz)
    }
}

/// Order statistics of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median (nearest rank).
    pub median: f64,
    /// Mean.
    pub mean: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// 99.9th percentile (nearest rank).
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Statistics of `v` (sorted in place). `None` when empty.
    pub fn of(v: &mut [f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(Self {
            n,
            min: v[0],
            median: percentile_sorted(v, 50.0),
            mean: v.iter().sum::<f64>() / n as f64,
            p99: percentile_sorted(v, 99.0),
            p999: percentile_sorted(v, 99.9),
            max: v[n - 1],
        })
    }
}

/// Nearest-rank percentile `p` (0-100) of sorted, non-empty `v`.
pub fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    let n = v.len();
    // The small slack keeps 99.9% of 1000 at rank 999 despite 99.9 not being exact in binary.
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
    v[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_calibrates_and_counts_forward() {
        let tsc = Tsc::calibrate(Duration::from_millis(20));
        assert!(tsc.plausible(), "{tsc:?}");
        let a = rdtsc();
        std::thread::sleep(Duration::from_millis(30));
        let dt = tsc.secs(rdtsc() - a);
        assert!((0.025..0.5).contains(&dt), "30 ms sleep measured as {dt} s");
    }

    #[test]
    fn stats_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let s = Stats::of(&mut v).unwrap();
        assert_eq!(
            (s.min, s.median, s.p99, s.p999, s.max),
            (1.0, 500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(s.mean, 500.5);
        assert_eq!(Stats::of(&mut [7.0]).unwrap().p999, 7.0);
        assert!(Stats::of(&mut []).is_none());
    }
}
