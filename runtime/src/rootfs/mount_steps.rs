//! The steps every kind of mount shares: binding a host path onto a resolved destination, finding
//! the new mount again, and giving it its propagation and recursive attributes.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::options::{self, MountOptions};
use super::resolve::{Kind, RootDir};
use super::sys::{self, fd_path};
use super::{mount_err, RootfsError};

/// A bind (or rbind) of a host path. The copy of the source tree is made detached, gets its flags
/// while nobody can see it, and is then attached onto the resolved destination fd, so no remount
/// has to find the mount again by path.
pub fn bind(
    root: &RootDir,
    dest: &str,
    source: &Path,
    o: &MountOptions,
) -> Result<(), RootfsError> {
    let meta = std::fs::metadata(source).map_err(mount_err(dest, "stat bind source"))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let target = root
        .create(dest, kind)
        .map_err(mount_err(dest, "create mount point"))?;
    let recursive = o.bind == Some(true);
    let tree = match sys::open_tree_clone(source, recursive) {
        Ok(tree) => tree,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            return bind_classic(root, dest, source, o, &target);
        }
        Err(e) => {
            let what = format!("clone mount tree of {}", source.display());
            return Err(mount_err(dest, &what)(e));
        }
    };
    set_bind_flags(tree.as_fd(), o.remount_flags()).map_err(mount_err(dest, "set bind flags"))?;
    if o.has_recursive_attrs() {
        sys::mount_setattr(&tree, true, o.attr_set, o.attr_clr)
            .map_err(mount_err(dest, "mount_setattr (recursive options)"))?;
    }
    sys::move_mount_onto(tree.as_fd(), target.as_fd())
        .map_err(mount_err(dest, "attach bind mount"))?;
    // The tree fd now names the attached mount itself.
    for &flag in &o.propagation {
        sys::set_propagation(&fd_path(tree.as_fd()), flag)
            .map_err(mount_err(dest, "set propagation"))?;
    }
    Ok(())
}

/// Per-mount flags on a detached bind; flags a user namespace may not clear are kept.
pub(super) fn set_bind_flags(tree: impl AsFd + Copy, flags: libc::c_ulong) -> std::io::Result<()> {
    if flags == 0 {
        return Ok(());
    }
    let (set, clr) = options::flags_to_attr(flags, true);
    match sys::mount_setattr(tree, false, set, clr) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let (set, clr) = options::flags_to_attr(flags, false);
            sys::mount_setattr(tree, false, set, clr)
        }
        other => other,
    }
}

/// mount(2) for kernels without the new mount API (before 5.2).
fn bind_classic(
    root: &RootDir,
    dest: &str,
    source: &Path,
    o: &MountOptions,
    target: &OwnedFd,
) -> Result<(), RootfsError> {
    let rec = if o.bind == Some(true) {
        libc::MS_REC
    } else {
        0
    };
    sys::mount(
        Some(source),
        &fd_path(target.as_fd()),
        None,
        libc::MS_BIND | rec,
        None,
    )
    .map_err(mount_err(dest, &format!("bind {}", source.display())))?;
    let extra = o.remount_flags();
    if extra != 0 {
        let mounted = reopen(root, dest, target)?;
        sys::remount_bind(&fd_path(mounted.as_fd()), extra)
            .map_err(mount_err(dest, "remount bind with its flags"))?;
    }
    after_mount(root, dest, o, target)
}

/// Propagation and recursive attributes, applied to the mount now on top of `dest`.
pub fn after_mount(
    root: &RootDir,
    dest: &str,
    o: &MountOptions,
    covered: &OwnedFd,
) -> Result<(), RootfsError> {
    if o.propagation.is_empty() && !o.has_recursive_attrs() {
        return Ok(());
    }
    let mounted = reopen(root, dest, covered)?;
    for &flag in &o.propagation {
        sys::set_propagation(&fd_path(mounted.as_fd()), flag)
            .map_err(mount_err(dest, "set propagation"))?;
    }
    if o.has_recursive_attrs() {
        sys::mount_setattr(&mounted, true, o.attr_set, o.attr_clr)
            .map_err(mount_err(dest, "mount_setattr (recursive options)"))?;
    }
    Ok(())
}

/// The destination resolved again (the fd taken before mounting is on the covered inode), and
/// checked to be on a different mount than `covered`: if the path no longer leads to the new
/// mount, flags must not land on whatever it leads to now.
pub fn reopen(root: &RootDir, dest: &str, covered: &OwnedFd) -> Result<OwnedFd, RootfsError> {
    let mounted = root
        .resolve(dest)
        .map_err(mount_err(dest, "resolve the new mount"))?;
    let before = sys::mount_id(covered.as_fd()).map_err(mount_err(dest, "statx"))?;
    let after = sys::mount_id(mounted.as_fd()).map_err(mount_err(dest, "statx"))?;
    if before == after {
        return Err(RootfsError::BadMount {
            destination: dest.to_owned(),
            reason: "the path no longer leads to the new mount".into(),
        });
    }
    Ok(mounted)
}
