//! Idmapped bind mounts (`idmap`/`ridmap` options, per-mount `uidMappings`/`gidMappings`).
//!
//! Attaching an id mapping to a mount needs CAP_SYS_ADMIN over the filesystem's own user namespace,
//! which for a host filesystem is the initial one: a container init inside a user namespace cannot
//! do it. So the runtime makes each such mount on the host side, as a detached tree carrying its
//! mapping, and hands the tree's descriptor to the init, which only attaches it inside the rootfs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::rootfs::sys as rootfs_sys;
use crate::spec::{IdMapping, Mount, Spec};

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("mount {destination}: {reason}")]
    Bad { destination: String, reason: String },
    #[error("mount {destination}: {what}: {source}")]
    Sys {
        destination: String,
        what: String,
        source: io::Error,
    },
}

/// Whether the mount asks to be idmapped, and if so whether recursively.
pub fn wanted(m: &Mount) -> Option<bool> {
    let opt = m
        .options
        .iter()
        .find(|o| *o == "idmap" || *o == "ridmap")
        .map(String::as_str);
    if opt.is_none() && m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return None;
    }
    let rbind = m.options.iter().any(|o| o == "rbind") || m.kind.as_deref() == Some("rbind");
    Some(opt == Some("ridmap") || rbind)
}

/// Whether the running kernel has `mount_setattr(2)`, for `skiff features`.
pub fn supported() -> bool {
    // SAFETY: invalid arguments only: the kernel fails the call without side effects.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, 0usize, 0, 0usize, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// The detached, idmapped trees for every mount of the spec that wants one, by mount index.
pub fn trees(spec: &Spec, bundle: &Path) -> Result<Vec<(usize, OwnedFd)>, IdmapError> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let Some(recursive) = wanted(m) else { continue };
        out.push((i, tree(spec, m, bundle, recursive)?));
    }
    Ok(out)
}

fn tree(spec: &Spec, m: &Mount, bundle: &Path, recursive: bool) -> Result<OwnedFd, IdmapError> {
    let dest = m.destination.clone();
    let bad = |reason: &str| IdmapError::Bad {
        destination: dest.clone(),
        reason: reason.into(),
    };
    let is_bind = matches!(m.kind.as_deref(), Some("bind") | Some("rbind"))
        || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind {
        return Err(bad("idmapped mounts are only supported for bind mounts"));
    }
    let source = m
        .source
        .as_deref()
        .ok_or_else(|| bad("a bind mount needs a source"))?;
    let linux = spec.linux();
    let pick = |own: &[IdMapping], theirs: Option<&Vec<IdMapping>>| -> Vec<IdMapping> {
        if own.is_empty() {
            theirs.cloned().unwrap_or_default()
        } else {
            own.to_vec()
        }
    };
    let uids = pick(&m.uid_mappings, linux.map(|l| &l.uid_mappings));
    let gids = pick(&m.gid_mappings, linux.map(|l| &l.gid_mappings));
    if uids.is_empty() || gids.is_empty() {
        return Err(bad(
            "idmap needs uidMappings and gidMappings (on the mount or in linux)",
        ));
    }
    let sys = |what: &str| {
        let destination = dest.clone();
        let what = what.to_owned();
        move |source| IdmapError::Sys {
            destination,
            what,
            source,
        }
    };
    let userns = userns_with(&uids, &gids).map_err(sys("user namespace for the mapping"))?;
    let path = bundle.join(source);
    let tree = rootfs_sys::open_tree_clone(&path, recursive)
        .map_err(sys(&format!("clone {}", path.display())))?;
    rootfs_sys::mount_setattr_idmap(&tree, recursive, userns.as_fd()).map_err(sys(
        "mount_setattr MOUNT_ATTR_IDMAP (EINVAL: this file system or kernel cannot idmap mounts)",
    ))?;
    Ok(tree)
}

/// A user namespace with the given mappings, held by a short-lived child that is gone on return.
fn userns_with(uids: &[IdMapping], gids: &[IdMapping]) -> io::Result<OwnedFd> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only reads a pipe and exits, both async-signal-safe.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: drops the child's copy of the write end, then blocks until the parent closes its
        // own; then the child leaves.
        unsafe {
            libc::close(wr.as_raw_fd());
            libc::read(rd.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let pid = pid as libc::pid_t;
    let fmt = |m: &[IdMapping]| -> String {
        m.iter()
            .map(|x| format!("{} {} {}\n", x.container_id, x.host_id, x.size))
            .collect()
    };
    let result = std::fs::write(format!("/proc/{pid}/uid_map"), fmt(uids))
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), fmt(gids)))
        .and_then(|()| std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from));
    drop(wr);
    drop(rd);
    // SAFETY: reaping the child we just made.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

/// Attaches at the directory `target` a clone of the directory `source` (that one mount, without what
/// is mounted below it) idmapped through the user namespace `userns`: files owned by id N on disk
/// show as the id N maps to there.
pub fn bind_idmapped(source: &Path, target: &Path, userns: BorrowedFd<'_>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tree = rootfs_sys::open_tree_clone(source, false)?;
    rootfs_sys::mount_setattr_idmap(&tree, false, userns)?;
    let dir = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(target)?;
    rootfs_sys::move_mount_onto(tree.as_fd(), dir.as_fd())
}
