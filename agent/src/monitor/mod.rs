//! The per-container monitor: a small process, one per container, that outlives skiffd. It creates the
//! container through the runtime library with its stdio on pipes, writes the CRI log file, records the
//! exit status atomically, and serves attach.
//!
//! The `skiff-monitor` binary also hosts skiffd's other single-threaded helpers: work that forks or
//! changes namespaces cannot run inside skiffd's multi-threaded process.

mod args;
pub mod attach;
mod container;
pub mod log;
mod memory;
mod sys;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use args::ContainerArgs;

/// What the monitor tells skiffd once the container exists (or could not be made): one JSON line on
/// the status descriptor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How the container ended, written atomically by the monitor once it has reaped the init.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The signal that killed the init, 0 if it exited.
    pub signal: i32,
    pub oom_killed: bool,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
}

impl ExitRecord {
    /// The record at `path`, if the monitor has written it.
    pub fn read(path: &Path) -> Option<ExitRecord> {
        let data = std::fs::read(path).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

/// Entry point of the `skiff-monitor` binary; returns its exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let rest = args.get(2..).unwrap_or_default();
    match args.get(1).map(String::as_str) {
        Some("container") => container_main(rest),
        Some("exec") => crate::execsync::main(rest),
        Some("pinns") => crate::pinns::main(rest),
        Some("infra") => crate::infra::main(rest),
        _ => {
            eprintln!("skiff-monitor: started by skiffd only (container|exec|pinns|infra)");
            2
        }
    }
}

/// `skiff-monitor container ...`: creates the container and monitors it until it exits.
fn container_main(args: &[String]) -> i32 {
    match ContainerArgs::parse(args) {
        Ok(a) => container::run(&a),
        Err(e) => {
            eprintln!("skiff-monitor container: {e}");
            2
        }
    }
}
