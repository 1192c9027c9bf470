//! pivot_root into the rootfs, or MS_MOVE + chroot where the old root cannot be pivoted away from.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::statfs::{FsType, TMPFS_MAGIC};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use super::sys;
use super::{path_err, RootfsError};

/// pivot_root into `rootfs`, detaching the old root; falls back to MS_MOVE + chroot when the old
/// root is an initramfs/ramfs (pivot_root fails with EINVAL there). The cwd is "/" afterwards.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let shown = rootfs.display().to_string();
    let old = open_dir(Path::new("/")).map_err(path_err("/", "open old root"))?;
    let new = open_dir(rootfs).map_err(path_err(&shown, "open new root"))?;
    fchdir(&new).map_err(|e| path_err(&shown, "chdir")(e.into()))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; it is then unmounted from
    // under us, which needs no directory inside the new root to park it in.
    match pivot_root(".", ".") {
        Ok(()) => detach_old_root(&old),
        Err(e) => {
            let magic = nix::sys::statfs::statfs("/")
                .map(|s| s.filesystem_type())
                .unwrap_or(FsType(0));
            if use_move_fallback(e, magic) {
                tracing::info!(rootfs = %shown, "pivot_root refused on a ramfs root; moving instead");
                move_root(&shown)
            } else {
                Err(path_err(&shown, "pivot_root")(e.into()))
            }
        }
    }
}

/// `RAMFS_MAGIC` from linux/magic.h (nix has no constant for it).
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// pivot_root answers EINVAL when the current root is the initial ramfs/tmpfs "rootfs", which can
/// never be unmounted; only then is MS_MOVE + chroot the way in.
pub(crate) fn use_move_fallback(err: Errno, root_fs: FsType) -> bool {
    let ramfs = u32::try_from(root_fs.0).is_ok_and(|m| m == RAMFS_MAGIC);
    err == Errno::EINVAL && (ramfs || root_fs == TMPFS_MAGIC)
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

fn detach_old_root(old: &OwnedFd) -> Result<(), RootfsError> {
    fchdir(old).map_err(|e| path_err("/", "chdir to old root")(e.into()))?;
    // Keep the unmount from propagating to the host.
    sys::set_propagation(Path::new("."), libc::MS_SLAVE | libc::MS_REC)
        .map_err(path_err("/", "make old root a slave"))?;
    sys::umount_detach(Path::new(".")).map_err(path_err("/", "detach old root"))?;
    chdir("/").map_err(|e| path_err("/", "chdir")(e.into()))
}

/// The cwd is the new root: move its mount over "/" and chroot into it.
fn move_root(shown: &str) -> Result<(), RootfsError> {
    sys::mount(
        Some(Path::new(".")),
        Path::new("/"),
        None,
        libc::MS_MOVE,
        None,
    )
    .map_err(path_err(shown, "move rootfs onto /"))?;
    chroot(".").map_err(|e| path_err(shown, "chroot")(e.into()))?;
    chdir("/").map_err(|e| path_err("/", "chdir")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_only_for_einval_on_ramfs_or_tmpfs() {
        let ramfs = FsType(RAMFS_MAGIC.into());
        let tmpfs = TMPFS_MAGIC;
        let ext4 = nix::sys::statfs::EXT4_SUPER_MAGIC;
        assert!(use_move_fallback(Errno::EINVAL, ramfs));
        assert!(use_move_fallback(Errno::EINVAL, tmpfs));
        assert!(!use_move_fallback(Errno::EINVAL, ext4));
        assert!(!use_move_fallback(Errno::EPERM, ramfs));
        assert!(!use_move_fallback(Errno::EBUSY, tmpfs));
    }
}
