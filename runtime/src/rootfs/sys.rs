//! Thin wrappers over the mount syscalls, all in terms of `io::Result`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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

/// Applies mount attributes to the mount `fd` is on and, when `recursive`, to every mount below.
pub fn mount_setattr(fd: impl AsFd, recursive: bool, set: u64, clr: u64) -> io::Result<()> {
    setattr(fd.as_fd(), recursive, set, clr, 0)
}

/// Idmaps the mount `fd` is on (and every mount below when `recursive`) through `userns`.
pub fn mount_setattr_idmap(
    fd: impl AsFd,
    recursive: bool,
    userns: BorrowedFd<'_>,
) -> io::Result<()> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    setattr(
        fd.as_fd(),
        recursive,
        MOUNT_ATTR_IDMAP,
        0,
        userns.as_raw_fd() as u64,
    )
}

fn setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clr: u64,
    userns_fd: u64,
) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd,
    };
    let rec = if recursive { libc::AT_RECURSIVE } else { 0 };
    let flags = (libc::AT_EMPTY_PATH | rec) as libc::c_uint;
    // SAFETY: the path is a NUL-terminated empty string, `attr` is a live, correctly laid out
    // `struct mount_attr` and its size is passed, as mount_setattr(2) requires.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
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

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// A detached copy of the mount tree at `source` (one mount, or all below it when `recursive`).
pub fn open_tree_clone(source: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let path = CString::new(source.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let rec = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open_tree(2) takes no
    // other pointers.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached tree `from` onto the inode `to` was opened on.
pub fn move_mount_onto(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both paths are NUL-terminated empty strings; the fds are valid for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The id of the mount `fd` is on.
pub fn mount_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the path is a NUL-terminated empty string and `stx` is a writable statx buffer.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so it filled the buffer (which started zeroed anyway).
    let stx = unsafe { stx.assume_init() };
    Ok(stx.stx_mnt_id)
}
