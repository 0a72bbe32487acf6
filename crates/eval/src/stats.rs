//! Small statistics helpers.

use serde::Serialize;

/// Mean, standard deviation, coefficient of variation, median, min and max of samples.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub stdev: f64,
    pub cv: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summarize(xs: &[f64]) -> Summary {
    if xs.is_empty() {
        return Summary::default();
    }
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let mut s = xs.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Summary {
        n,
        mean,
        stdev: var.sqrt(),
        cv: if mean != 0.0 { var.sqrt() / mean } else { 0.0 },
        median,
        min: s[0],
        max: s[n - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert_eq!(s.median, 2.5);
        assert!((s.stdev - 1.2909944).abs() < 1e-6);
        assert_eq!(summarize(&[]).n, 0);
    }
}
