//! `subPath` and `subPathExpr`: one file or directory inside a volume, mounted in place of the
//! whole volume. The volume's contents are the pod's to change, so the path is resolved by the
//! kernel with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), which refuses `..` and any symlink
//! that leads out of the volume, and the resulting fd (not the path) is bind-mounted through
//! `/proc/self/fd/N` onto a directory of the pod's that no container can reach; a symlink swapped
//! in between the check and the mount changes nothing, the fd already names the inode.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mkdirat, Mode};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("subPath {0:?} must be a relative path without '..'")]
    Invalid(String),
    #[error("subPath {0:?} leads outside the volume")]
    Escapes(String),
    #[error("subPath {0:?}: {1}")]
    Io(String, String),
}

/// Where the subPath of volume mount `index` of `container` is bind-mounted on the host.
pub fn target(pod_dir: &Path, volume: &str, container: &str, index: usize) -> PathBuf {
    pod_dir
        .join("volume-subpaths")
        .join(volume)
        .join(container)
        .join(index.to_string())
}

/// The components of `sub`, refused if it is absolute or climbs.
fn components(sub: &str) -> Result<Vec<&str>, Error> {
    let invalid = || Error::Invalid(sub.into());
    if sub.starts_with('/') || sub.contains('\0') {
        return Err(invalid());
    }
    let mut out = Vec::new();
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(n) => out.push(n.to_str().ok_or_else(invalid)?),
            Component::CurDir => {}
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

/// Resolves `sub` inside `volume` (creating missing directories, as kubelet does) and bind-mounts
/// it on `target`, replacing what an earlier start of the container had mounted there.
pub fn mount_at(volume: &Path, sub: &str, target: &Path) -> Result<(), Error> {
    let io = |what: &str, e: &dyn std::fmt::Display| Error::Io(sub.into(), format!("{what}: {e}"));
    let parts = components(sub)?;
    let root = nix::fcntl::open(
        volume,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open the volume", &e))?;
    let fd = resolve(&root, &parts).map_err(|e| match e {
        Errno::EXDEV | Errno::ELOOP => Error::Escapes(sub.into()),
        e => io("resolve", &e),
    })?;
    let is_dir = skiff_runtime::rootfs::resolve::is_dir(&fd).map_err(|e| io("stat", &e))?;
    prepare_target(target, is_dir).map_err(|e| io("prepare the mount point", &e))?;
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| io("bind mount", &e))
}

/// Opens `parts` beneath `root`; a missing directory is made with mkdirat in its already-opened
/// parent, then opened again beneath the root and given the volume's own mode (as kubelet does, so
/// that the pod's fsGroup and users can use it).
fn resolve(root: &OwnedFd, parts: &[&str]) -> Result<OwnedFd, Errno> {
    match open_beneath(root, &parts.join("/")) {
        Err(Errno::ENOENT) => {}
        other => return other,
    }
    let mode = nix::sys::stat::fstat(root.as_fd())?.st_mode & 0o7777;
    let mut parent = open_beneath(root, ".")?;
    for i in 0..parts.len() {
        let here = parts[..=i].join("/");
        let fd = match open_beneath(root, &here) {
            Err(Errno::ENOENT) => {
                let created = match mkdirat(&parent, parts[i], Mode::from_bits_truncate(mode)) {
                    Ok(()) => true,
                    Err(Errno::EEXIST) => false,
                    Err(e) => return Err(e),
                };
                let fd = open_beneath(root, &here)?;
                if created {
                    chmod(&fd, mode)?;
                }
                fd
            }
            other => other?,
        };
        parent = fd;
    }
    Ok(parent)
}

/// chmod through the fd's magic link: the umask does not apply, and the inode is the one opened.
fn chmod(fd: &OwnedFd, mode: u32) -> Result<(), Errno> {
    use std::os::unix::fs::PermissionsExt;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn open_beneath(root: &OwnedFd, rel: &str) -> Result<OwnedFd, Errno> {
    let path = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut tries = 0;
    loop {
        // EAGAIN: a rename raced with the lookup; the kernel asks for a retry.
        match openat2(root.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// An empty file or directory at `target` for the bind mount, with any earlier mount detached.
fn prepare_target(target: &Path, dir: bool) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Detached, not unmounted: a running container of an earlier start keeps its own copy.
    while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == dir => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir(target)?,
        Ok(_) => std::fs::remove_file(target)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if dir {
        std::fs::create_dir(target)
    } else {
        std::fs::File::create(target).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbing_or_absolute_paths_are_invalid() {
        for bad in ["../x", "/etc", "a/../../b", "a/.."] {
            assert!(matches!(components(bad), Err(Error::Invalid(_))), "{bad}");
        }
        assert_eq!(components("a/./b/").unwrap(), ["a", "b"]);
    }

    #[test]
    fn symlinks_out_of_the_volume_are_refused_and_missing_dirs_made() {
        let t = tempfile::tempdir().unwrap();
        let vol = t.path().join("vol");
        std::fs::create_dir_all(vol.join("in")).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("up")).unwrap();
        std::os::unix::fs::symlink("in", vol.join("inside")).unwrap();
        let root = nix::fcntl::open(&vol, OFlag::O_PATH, Mode::empty()).unwrap();
        for bad in [&["abs"][..], &["up"], &["up", "etc"], &["abs", "passwd"]] {
            assert_eq!(resolve(&root, bad).err(), Some(Errno::EXDEV), "{bad:?}");
        }
        assert!(resolve(&root, &["inside"]).is_ok());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        resolve(&root, &["new", "deeper"]).unwrap();
        let made = std::fs::metadata(vol.join("new/deeper")).unwrap();
        assert!(made.is_dir());
        assert_eq!(made.permissions().mode() & 0o7777, 0o777);
    }
}
