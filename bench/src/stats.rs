//! Samples and their summary statistics.

use std::time::Duration;

use crate::proc::Timed;

/// All samples of one operation of one subject (a runtime or the floor).
#[derive(Debug, Clone)]
pub struct Series {
    pub op: &'static str,
    pub subject: String,
    pub samples: Vec<Timed>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub peak_rss_kib: i64,
}

impl Series {
    pub fn new(op: &'static str, subject: &str) -> Series {
        Series {
            op,
            subject: subject.to_string(),
            samples: Vec::new(),
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        let mut ms: Vec<f64> = self.samples.iter().map(|t| millis(t.elapsed)).collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        Some(Summary {
            n,
            median_ms: median(&ms),
            p90_ms: nearest_rank(&ms, 0.90),
            mean_ms: ms.iter().sum::<f64>() / n as f64,
            min_ms: ms[0],
            max_ms: ms[n - 1],
            peak_rss_kib: self.samples.iter().map(|t| t.maxrss_kib).max().unwrap_or(0),
        })
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The smallest sample with at least fraction `q` of all samples at or below it.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(ms: &[u64]) -> Series {
        let mut s = Series::new("run", "x");
        s.samples = ms
            .iter()
            .map(|&m| Timed {
                elapsed: Duration::from_millis(m),
                maxrss_kib: m as i64,
            })
            .collect();
        s
    }

    #[test]
    fn summary_of_ten() {
        let s = series(&[10, 1, 9, 2, 8, 3, 7, 4, 6, 5]).summary().unwrap();
        assert_eq!(s.n, 10);
        assert!((s.median_ms - 5.5).abs() < 1e-9);
        assert!((s.p90_ms - 9.0).abs() < 1e-9);
        assert!((s.mean_ms - 5.5).abs() < 1e-9);
        assert!((s.min_ms - 1.0).abs() < 1e-9);
        assert!((s.max_ms - 10.0).abs() < 1e-9);
        assert_eq!(s.peak_rss_kib, 10);
    }

    #[test]
    fn summary_of_one_and_none() {
        let s = series(&[3]).summary().unwrap();
        assert!((s.median_ms - 3.0).abs() < 1e-9 && (s.p90_ms - 3.0).abs() < 1e-9);
        assert!(series(&[]).summary().is_none());
    }
}
