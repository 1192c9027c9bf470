//! The per-container monitor: a small process, one per container, that outlives skiffd. It creates the
//! container through the runtime library with its stdio on pipes, writes the CRI log file, records the
//! exit status atomically, and serves attach.

/// Entry point of the `skiff-monitor` binary; returns its exit code.
pub fn main() -> i32 {
    eprintln!("skiff-monitor: started by skiffd only");
    2
}
