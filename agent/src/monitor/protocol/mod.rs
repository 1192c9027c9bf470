//! The contract between skiffd and `skiff-monitor`: the command lines skiffd writes, the report
//! and records the helpers write back. Both sides import it from here and nowhere else.

mod container_args;
mod exec_args;
mod pin_options;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use container_args::ContainerArgs;
pub use exec_args::{ExecArgs, ExecOutcome};
pub use pin_options::{pin_path, PinOptions, EXIT_BAD_SYSCTL, PINNABLE};

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
    /// Written by skiffd, not the monitor: the monitor ended without recording the exit, and
    /// `finished_at` is when skiffd noticed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl ExitRecord {
    /// The record at `path`, if the monitor has written it.
    pub fn read(path: &Path) -> Option<ExitRecord> {
        let data = std::fs::read(path).ok()?;
        serde_json::from_slice(&data).ok()
    }
}
