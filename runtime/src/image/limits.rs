//! How much a pull may unpack. A layer's compressed size says nothing of what it inflates to (a
//! megabyte of gzip makes a gigabyte of zeros), so the uncompressed stream is counted: per layer,
//! and per image across all its layers, those already in the store included. A tar entry that
//! declares more than what is left is refused before anything of it is written.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest::LIMIT_EXCEEDED;

/// Default limit on one layer, uncompressed: larger than the layers of common images, CUDA and
/// other toolchain images included, small enough that a hostile one cannot fill a node's disk.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 8 << 30;

/// Default limit on a whole image, uncompressed (the sum of its layers).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 16 << 30;

/// The uncompressed bytes of one image, shared by the threads that unpack its layers.
#[derive(Debug)]
pub(crate) struct ImageBudget {
    used: AtomicU64,
    pub(crate) limit: u64,
}

impl ImageBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Counts `n` more bytes; false once the image is over its limit.
    pub(crate) fn add(&self, n: u64) -> bool {
        let used = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        used <= self.limit
    }

    pub(crate) fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }
}

/// Counts everything read through it against an image's budget, failing once it is spent.
pub(crate) struct Metered<'a, R> {
    pub(crate) inner: R,
    pub(crate) budget: &'a ImageBudget,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.budget.add(n as u64) {
            return Err(io::Error::other(LIMIT_EXCEEDED));
        }
        Ok(n)
    }
}

/// A size as people write it: bytes, or a number with a `K`, `M`, `G` or `T` suffix (`KiB`, `Ki`
/// and `KB` alike, all powers of 1024), e.g. `8GiB` or `512M`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "ki" | "kb" | "kib" => 10,
        "m" | "mi" | "mb" | "mib" => 20,
        "g" | "gi" | "gb" | "gib" => 30,
        "t" | "ti" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a size greater than 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size(" 2 TB "), Ok(2 << 40));
        for bad in ["", "G", "1.5G", "-1", "0", "3 parsecs", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn budget_counts_across_readers() {
        let b = ImageBudget::new(10);
        let mut out = Vec::new();
        let r = Metered {
            inner: &[1u8; 6][..],
            budget: &b,
        };
        std::io::copy(&mut { r }, &mut out).unwrap();
        assert_eq!(b.remaining(), 4);
        let mut r = Metered {
            inner: &[1u8; 6][..],
            budget: &b,
        };
        assert!(r.read_to_end(&mut out).is_err());
        assert!(b.over());
    }
}
