//! Pinned namespaces: a pod's network, IPC and UTS namespaces kept alive by bind mounts of their nsfs
//! files, so no process has to hold them (a shared PID namespace needs a process: see `infra`).
//!
//! Pinning runs as a `skiff-monitor` subcommand: unsharing changes the calling process, and skiffd is
//! multi-threaded, so it starts a fresh single-threaded helper for it.

mod setup;
mod userns;

use std::path::Path;

use anyhow::{Context, Result};

use crate::monitor::protocol::{PinOptions, EXIT_BAD_SYSCTL};
use setup::{clone_flag, configure, pin_from, SysctlError};

pub(crate) use setup::join;

/// `skiff-monitor pinns ...`: creates and pins a pod's namespaces.
pub fn main(args: &[String]) -> i32 {
    match PinOptions::parse(args).and_then(|o| pin(&o)) {
        Ok(()) => 0,
        Err(e) => {
            // The namespace child has said why itself.
            if let Some(f) = e.downcast_ref::<userns::ChildFailed>() {
                return f.0.max(1);
            }
            eprintln!("skiff-monitor pinns: {e:#}");
            if e.is::<SysctlError>() {
                EXIT_BAD_SYSCTL
            } else {
                1
            }
        }
    }
}

fn pin(o: &PinOptions) -> Result<()> {
    if o.userns.is_some() {
        return userns::pin(o);
    }
    let flags = o.namespaces.iter().fold(0, |f, ns| f | clone_flag(ns));
    if flags != 0 {
        // SAFETY: unshare changes only this single-threaded helper process.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare");
        }
    }
    configure(o)?;
    pin_from(o, Path::new("/proc/self"))
}
