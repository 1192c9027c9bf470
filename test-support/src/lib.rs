//! Helpers shared by the tests of several skiff crates. It depends on none of them, so any crate's
//! tests can use it (skiffd's own included) without a dependency cycle.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

pub mod stream;
