//! Thin wrappers over the mount syscalls, all in terms of `io::Result`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use libc::c_ulong;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;

/// The magic-link path through which the kernel reaches exactly the inode `fd` holds.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    nix::mount::mount(
        source,
        target,
        fstype,
        MsFlags::from_bits_retain(flags),
        data,
    )
    .map_err(io::Error::from)
}

/// Changes the propagation type of the mount at `target`.
pub fn set_propagation(target: &Path, flag: c_ulong) -> io::Result<()> {
    mount(None, target, None, flag, None)
}

/// Remounts a bind mount with `flags`. A mount in a user namespace may carry flags the namespace
/// cannot clear (locked nosuid/nodev/noexec/atime from the host): when the kernel says EPERM, the
/// remount is retried with those kept.
pub fn remount_bind(target: &Path, flags: c_ulong) -> io::Result<()> {
    let base = libc::MS_BIND | libc::MS_REMOUNT;
    match mount(None, target, None, base | flags, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let kept = locked_flags(target)?;
            mount(None, target, None, base | flags | kept, None)
        }
        other => other,
    }
}

/// The flags of the mount at `target` that a user namespace may not drop.
fn locked_flags(target: &Path) -> io::Result<c_ulong> {
    let st = nix::sys::statvfs::statvfs(target).map_err(io::Error::from)?;
    let f = st.flags();
    let map = [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
    ];
    Ok(map
        .iter()
        .filter(|(st, _)| f.contains(*st))
        .fold(0, |acc, (_, ms)| acc | ms))
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Applies mount attributes to the mount `fd` is on and every mount below it.
pub fn mount_setattr_recursive(fd: impl AsFd, set: u64, clr: u64) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: the path is a NUL-terminated empty string, `attr` is a live, correctly laid out
    // `struct mount_attr` and its size is passed, as mount_setattr(2) requires.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
