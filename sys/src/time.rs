//! Wall-clock time as the CRI counts it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, the CRI's timestamp unit; 0 for a clock set before 1970.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_ns_is_after_2020_and_moves_forward() {
        let a = now_ns();
        assert!(a > 1_577_836_800_000_000_000, "{a}");
        assert!(now_ns() >= a);
    }
}
