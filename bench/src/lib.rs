//! What the benchmark binaries share.

pub mod cpu;
pub mod mem;
