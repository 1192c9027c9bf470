//! What the benchmark binaries share.

pub mod containerd;
pub mod cpu;
pub mod mem;
pub mod sandbox;
