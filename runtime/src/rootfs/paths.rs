//! `linux.readonlyPaths` and `linux.maskedPaths`, applied after pivot_root.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sys::stat::{fstat, SFlag};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

use super::resolve::{is_dir, relative, RootDir};
use super::sys::{self, fd_path};
use super::{path_err, RootfsError};

/// Bind `path` onto itself and make it read-only, nosuid, nodev, noexec. A missing path is skipped.
pub fn make_readonly(root: &RootDir, path: &str) -> Result<(), RootfsError> {
    let Some(fd) = resolve_existing(root, path)? else {
        return Ok(());
    };
    check_proc(path, &fd)?;
    let at = fd_path(fd.as_fd());
    sys::mount(Some(&at), &at, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(path_err(path, "bind onto itself"))?;
    let mounted = root.resolve(path).map_err(path_err(path, "resolve"))?;
    let before = sys::mount_id(fd.as_fd()).map_err(path_err(path, "statx"))?;
    let after = sys::mount_id(mounted.as_fd()).map_err(path_err(path, "statx"))?;
    if before == after {
        return Err(RootfsError::Refused {
            path: path.to_owned(),
            reason: "the path no longer leads to its new bind mount".into(),
        });
    }
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::remount_bind(&fd_path(mounted.as_fd()), flags).map_err(path_err(path, "remount read-only"))
}

/// Hide `path`: /dev/null over a file, an empty read-only tmpfs over a directory. A missing path
/// is skipped.
pub fn mask(root: &RootDir, path: &str) -> Result<(), RootfsError> {
    let Some(fd) = resolve_existing(root, path)? else {
        return Ok(());
    };
    check_proc(path, &fd)?;
    let at = fd_path(fd.as_fd());
    if is_dir(&fd).map_err(path_err(path, "stat"))? {
        sys::mount(
            Some(Path::new("tmpfs")),
            &at,
            Some("tmpfs"),
            libc::MS_RDONLY,
            None,
        )
        .map_err(path_err(path, "mount read-only tmpfs over directory"))
    } else {
        let null = dev_null(root)?;
        sys::mount(Some(&fd_path(null.as_fd())), &at, None, libc::MS_BIND, None)
            .map_err(path_err(path, "bind /dev/null over file"))
    }
}

fn resolve_existing(root: &RootDir, path: &str) -> Result<Option<OwnedFd>, RootfsError> {
    match root.resolve(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(path_err(path, "resolve")(e)),
    }
}

/// A path under /proc must really be on procfs: if something else was mounted over /proc (or
/// over the part the path is in), masking it would hide nothing.
fn check_proc(path: &str, fd: &OwnedFd) -> Result<(), RootfsError> {
    let rel = relative(path);
    if rel != "proc" && !rel.starts_with("proc/") {
        return Ok(());
    }
    let st = fstatfs(fd).map_err(|e| path_err(path, "statfs")(io::Error::from(e)))?;
    if st.filesystem_type() != PROC_SUPER_MAGIC {
        return Err(RootfsError::Refused {
            path: path.to_owned(),
            reason: "is not on procfs (something is mounted over /proc)".into(),
        });
    }
    Ok(())
}

/// The container's /dev/null, checked to be the real 1:3 character device.
fn dev_null(root: &RootDir) -> Result<OwnedFd, RootfsError> {
    let fd = root
        .resolve("/dev/null")
        .map_err(path_err("/dev/null", "resolve"))?;
    let st = fstat(&fd).map_err(|e| path_err("/dev/null", "stat")(e.into()))?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr || st.st_rdev != libc::makedev(1, 3) {
        return Err(RootfsError::Refused {
            path: "/dev/null".into(),
            reason: "is not the 1:3 character device".into(),
        });
    }
    Ok(fd)
}
