//! Running `skiff` as an unprivileged user: the container gets a user namespace that maps the caller,
//! and the host's cgroup hierarchy, which such a user may not write, is left alone.

use crate::cgroups::{self, CgroupManager, CgroupState};
use crate::spec::Spec;

/// Whether this process lacks root on the host.
pub fn is_rootless() -> bool {
    // SAFETY: geteuid has no arguments.
    unsafe { libc::geteuid() != 0 }
}

/// A cgroup manager that owns no directories: processes stay in the caller's cgroup. Limits in
/// `linux.resources` cannot be enforced then; say so rather than fail the container.
pub fn no_cgroups(spec: &Spec) -> Box<dyn CgroupManager> {
    let limits = spec
        .linux()
        .and_then(|l| l.resources.as_ref())
        .is_some_and(|r| {
            r.memory.is_some() || r.cpu.is_some() || r.pids.is_some() || r.block_io.is_some()
        });
    if limits {
        tracing::warn!(
            "linux.resources: not applied when skiff runs without root (no delegated cgroup)"
        );
    }
    cgroups::from_state(&CgroupState::default())
}
