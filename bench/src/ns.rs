//! The benchmark's private mount namespace.
//!
//! crun 1.8 refuses a hybrid cgroup layout (v1 controllers plus a cgroup2 mount at
//! /sys/fs/cgroup/unified). To compare all runtimes on the same layout, the benchmark
//! moves itself into a private mount namespace and detaches the cgroup2 mount there
//! only; every runtime it starts inherits that view. The host's mounts are untouched.

use std::ffi::CString;
use std::path::Path;

use crate::error::{last_os_error, Result};
use crate::fail;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const HYBRID_CGROUP2: &str = "/sys/fs/cgroup/unified";

/// The cgroup layout as the runtimes will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupView {
    /// cgroup2 mounted on /sys/fs/cgroup.
    Unified,
    /// Only v1 controllers were mounted to begin with.
    Legacy,
    /// Hybrid host; its cgroup2 mount was detached in the private namespace.
    HybridDetached,
    /// Hybrid host, left as it is (`--keep-cgroup2`).
    Hybrid,
}

impl CgroupView {
    pub fn describe(self) -> &'static str {
        match self {
            CgroupView::Unified => "cgroup v2 (unified)",
            CgroupView::Legacy => "cgroup v1",
            CgroupView::HybridDetached => {
                "cgroup v1: hybrid host, cgroup2 at /sys/fs/cgroup/unified detached in a private mount namespace"
            }
            CgroupView::Hybrid => "hybrid cgroup v1 + cgroup2 at /sys/fs/cgroup/unified",
        }
    }
}

/// Enters a private mount namespace and, on a hybrid host, detaches the cgroup2
/// mount inside it (unless `keep_cgroup2`).
pub fn enter_private(keep_cgroup2: bool) -> Result<CgroupView> {
    // SAFETY: unshare takes no pointers; it only changes this process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(fail!(
            "unshare(CLONE_NEWNS): {} (the benchmark must run as root)",
            last_os_error()
        ));
    }
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| fail!("making / recursively private: {e}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail!("reading /proc/self/mountinfo: {e}"))?;
    let view = classify(&mountinfo);
    if view != CgroupView::Hybrid || keep_cgroup2 {
        return Ok(view);
    }
    let target = cstring(HYBRID_CGROUP2)?;
    // SAFETY: `target` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(fail!(
            "detaching {HYBRID_CGROUP2} in the private namespace: {}",
            last_os_error()
        ));
    }
    Ok(CgroupView::HybridDetached)
}

/// Mounts a fresh tmpfs on `dir`, so runtime state lives in memory as /run does.
pub fn mount_tmpfs(dir: &Path) -> Result<()> {
    let target = dir
        .to_str()
        .ok_or_else(|| fail!("state directory {} is not UTF-8", dir.display()))?;
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|e| fail!("mounting tmpfs on {target}: {e}"))
}

/// Reads the cgroup layout from a mountinfo table.
fn classify(mountinfo: &str) -> CgroupView {
    let fstype_at = |point: &str| {
        mountinfo.lines().rev().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            (mount_point == point).then(|| right.split(' ').next().unwrap_or("").to_string())
        })
    };
    match (
        fstype_at(CGROUP_ROOT).as_deref(),
        fstype_at(HYBRID_CGROUP2).as_deref(),
    ) {
        (Some("cgroup2"), _) => CgroupView::Unified,
        (_, Some("cgroup2")) => CgroupView::Hybrid,
        _ => CgroupView::Legacy,
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| fail!("path {s:?} contains a NUL byte"))
}

fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::result::Result<(), std::io::Error> {
    let to_c = |s: Option<&str>| s.map(CString::new).transpose();
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let source = to_c(source).map_err(invalid)?;
    let fstype = to_c(fstype).map_err(invalid)?;
    let data = to_c(data).map_err(invalid)?;
    let target = CString::new(target).map_err(invalid)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string owned by this
    // frame for the duration of the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn classifies_layouts() {
        assert_eq!(classify(HYBRID), CgroupView::Hybrid);
        let legacy: String = HYBRID.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(classify(&legacy), CgroupView::Legacy);
        let unified = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(classify(unified), CgroupView::Unified);
    }
}
