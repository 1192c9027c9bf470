//! CPU rates from cumulative counters: kubelet reads `usage_nano_cores` (cores × 1e9) and expects the
//! runtime to keep the previous sample, as cAdvisor does.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    at_nanos: i64,
    usage_nanos: u64,
    rate: Option<u64>,
}

/// The last sample per object (container or sandbox id).
#[derive(Debug, Default)]
pub struct Rates {
    last: Mutex<HashMap<String, Sample>>,
}

/// Samples closer than this reuse the previous rate: a rate over a few microseconds is noise.
const MIN_INTERVAL_NANOS: i64 = 10_000_000;

impl Rates {
    /// Records `usage_nanos` at `at_nanos` for `id` and returns the rate since the previous sample,
    /// `None` for the first sample. A counter that went backwards (a new cgroup under an old id)
    /// starts over.
    pub fn observe(&self, id: &str, at_nanos: i64, usage_nanos: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = last.get(id).copied();
        let rate = match prev {
            Some(p) if usage_nanos < p.usage_nanos => None,
            Some(p) if at_nanos - p.at_nanos < MIN_INTERVAL_NANOS => {
                return p.rate;
            }
            Some(p) => Some(rate(p.usage_nanos, usage_nanos, at_nanos - p.at_nanos)),
            None => None,
        };
        last.insert(
            id.to_string(),
            Sample {
                at_nanos,
                usage_nanos,
                rate,
            },
        );
        rate
    }

    /// Drops the samples of objects that no longer exist.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|id, _| alive(id));
    }
}

/// Nanoseconds of CPU per second of wall time, i.e. cores × 1e9.
fn rate(from: u64, to: u64, interval_nanos: i64) -> u64 {
    let used = u128::from(to - from);
    let interval = interval_nanos.max(1) as u128;
    (used * 1_000_000_000 / interval).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn rate_between_samples() {
        let r = Rates::default();
        assert_eq!(r.observe("a", 10 * S, 5_000_000_000), None);
        // Half a core over two seconds.
        assert_eq!(r.observe("a", 12 * S, 6_000_000_000), Some(500_000_000));
        // Two cores over one second.
        assert_eq!(r.observe("a", 13 * S, 8_000_000_000), Some(2_000_000_000));
        // Idle.
        assert_eq!(r.observe("a", 14 * S, 8_000_000_000), Some(0));
        // Objects are independent.
        assert_eq!(r.observe("b", 14 * S, 1), None);
    }

    #[test]
    fn close_samples_reuse_the_last_rate_and_resets_start_over() {
        let r = Rates::default();
        r.observe("a", S, 0);
        assert_eq!(r.observe("a", 2 * S, S as u64), Some(1_000_000_000));
        assert_eq!(
            r.observe("a", 2 * S + 1000, S as u64 + 1),
            Some(1_000_000_000)
        );
        assert_eq!(r.observe("a", 3 * S, 10), None);
        assert_eq!(r.observe("a", 4 * S, 10 + S as u64 / 4), Some(250_000_000));
        r.retain(|id| id != "a");
        assert_eq!(r.observe("a", 5 * S, 0), None);
    }
}
