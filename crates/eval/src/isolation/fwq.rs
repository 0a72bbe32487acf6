//! FWQ noise from the probe's sample dump (`fwq --dump FILE`: `thread,sample,ticks,ns`).
//!
//! A detour is how much longer a quantum took than the fastest quantum of its thread. The
//! histogram uses fixed edges (microseconds) so histograms of many runs simply add up.

use serde::{Deserialize, Serialize};

/// Histogram bin edges in microseconds; the last bin is open-ended.
pub const EDGES_US: [f64; 14] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4,
];

/// Label of histogram bin `i`.
pub fn bin_label(i: usize) -> String {
    let fmt = |v: f64| {
        if v >= 1e3 {
            format!("{}ms", v / 1e3)
        } else {
            format!("{v}us")
        }
    };
    match EDGES_US.get(i + 1) {
        Some(&hi) => format!("{}-{}", fmt(EDGES_US[i]), fmt(hi)),
        None => format!(">={}", fmt(EDGES_US[i])),
    }
}

/// Noise figures of one FWQ run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwqNoise {
    pub samples: u64,
    /// Fastest quantum (over threads), microseconds.
    pub min_quantum_us: f64,
    pub median_detour_us: f64,
    pub p999_detour_us: f64,
    pub max_detour_us: f64,
    /// Share of the total time spent in detours.
    pub noise_fraction: f64,
    /// Counts per bin of [`EDGES_US`].
    pub histogram: Vec<u64>,
}

/// Failure to read a dump.
#[derive(Debug, thiserror::Error)]
pub enum FwqError {
    #[error("FWQ dump line {line}: expected `thread,sample,ticks,ns`, found {text:?}")]
    Line { line: usize, text: String },
    #[error("FWQ dump has no samples")]
    Empty,
}

/// Index of the bin holding `us`.
pub fn bin_of(us: f64) -> usize {
    EDGES_US.iter().rposition(|&e| us >= e).unwrap_or(0)
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Noise of the samples in a dump.
pub fn analyze(csv: &str) -> Result<FwqNoise, FwqError> {
    let mut per_thread: Vec<Vec<f64>> = Vec::new();
    for (i, line) in csv.lines().enumerate() {
        if i == 0 && line.starts_with("thread") {
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let parsed = (f.len() == 4)
            .then(|| Some((f[0].parse::<usize>().ok()?, f[3].parse::<f64>().ok()?)))
            .flatten();
        let Some((thread, ns)) = parsed else {
            return Err(FwqError::Line {
                line: i + 1,
                text: line.to_string(),
            });
        };
        if per_thread.len() <= thread {
            per_thread.resize(thread + 1, Vec::new());
        }
        per_thread[thread].push(ns / 1e3);
    }
    let mut detours = Vec::new();
    let mut min_quantum = f64::INFINITY;
    let (mut total, mut noise) = (0.0, 0.0);
    for t in per_thread.iter().filter(|t| !t.is_empty()) {
        let min = t.iter().copied().fold(f64::INFINITY, f64::min);
        min_quantum = min_quantum.min(min);
        for &us in t {
            detours.push(us - min);
            total += us;
            noise += us - min;
        }
    }
    if detours.is_empty() {
        return Err(FwqError::Empty);
    }
    let mut histogram = vec![0u64; EDGES_US.len()];
    for &d in &detours {
        histogram[bin_of(d)] += 1;
    }
    detours.sort_by(f64::total_cmp);
    Ok(FwqNoise {
        samples: detours.len() as u64,
        min_quantum_us: min_quantum,
        median_detour_us: quantile(&detours, 0.5),
        p999_detour_us: quantile(&detours, 0.999),
        max_detour_us: *detours.last().unwrap_or(&0.0),
        noise_fraction: if total > 0.0 { noise / total } else { 0.0 },
        histogram,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detours_are_relative_to_each_threads_fastest_quantum() {
        let mut csv = String::from("thread,sample,ticks,ns\n");
        for i in 0..1000 {
            csv += &format!("0,{i},0,{}\n", if i == 10 { 1_180_000 } else { 180_000 });
            csv += &format!("1,{i},0,{}\n", if i == 20 { 200_500 } else { 190_000 });
        }
        let n = analyze(&csv).unwrap();
        assert_eq!(n.samples, 2000);
        assert_eq!(n.min_quantum_us, 180.0);
        assert_eq!(n.max_detour_us, 1000.0);
        assert_eq!(n.median_detour_us, 0.0);
        // 2 outliers in 2000: the 99.9th percentile (rank 1998) is still a quiet sample.
        assert_eq!(n.p999_detour_us, 0.0);
        assert_eq!(n.histogram.iter().sum::<u64>(), 2000);
        assert_eq!(n.histogram[0], 1998);
        assert_eq!(n.histogram[bin_of(10.5)], 1);
        assert_eq!(n.histogram[bin_of(1000.0)], 1);
        assert!((n.noise_fraction - 1010.5 / (370.0 * 1000.0 + 1010.5)).abs() < 1e-9);
    }

    #[test]
    fn bins_and_labels() {
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(0.99), 0);
        assert_eq!(bin_of(1.0), 1);
        assert_eq!(bin_of(1e6), EDGES_US.len() - 1);
        assert_eq!(bin_label(0), "0us-1us");
        assert_eq!(bin_label(10), "1ms-2ms");
        assert_eq!(bin_label(EDGES_US.len() - 1), ">=10ms");
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 1.0), 4.0);
    }

    #[test]
    fn bad_dumps_are_refused() {
        assert!(matches!(
            analyze("thread,sample,ticks,ns\n"),
            Err(FwqError::Empty)
        ));
        assert!(matches!(
            analyze("thread,sample,ticks,ns\n0,1,2\n"),
            Err(FwqError::Line { line: 2, .. })
        ));
    }
}
