//! Helpers shared by the tests of several skiff crates. It depends on none of them, so any crate's
//! tests can use it (skiffd's own included) without a dependency cycle.

pub mod stream;
