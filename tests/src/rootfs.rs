//! The cached busybox rootfs every bundle is copied from.
//!
//! Built once per machine by `tests/images/busybox-rootfs.sh` at a fixed path; a file lock
//! keeps parallel test processes from building it at the same time.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the cached rootfs lives (override with `SKIFF_TEST_ROOTFS`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SKIFF_TEST_ROOTFS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/var/tmp/skiff-test/busybox"),
    }
}

/// The cached busybox rootfs, built on first use.
pub fn busybox() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dest = cache_dir();
        let parent = dest.parent().expect("rootfs cache dir has a parent");
        fs::create_dir_all(parent).expect("create rootfs cache parent");
        let lock = fs::File::create(parent.join(".busybox.lock")).expect("create rootfs lock");
        // SAFETY: flock on an fd we own for the duration of this call.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock rootfs lock: {}",
            std::io::Error::last_os_error()
        );
        let script = crate::binary::workspace_dir().join("tests/images/busybox-rootfs.sh");
        let out = Command::new(&script)
            .arg(&dest)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} {} failed: {}\n{}",
            script.display(),
            dest.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        drop(lock);
        dest
    })
}

/// Copies the cached rootfs to `dest` (which must not exist yet).
pub fn copy_to(dest: &Path) {
    let src = busybox();
    let out = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dest)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "cp -a {} {} failed: {}",
        src.display(),
        dest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
