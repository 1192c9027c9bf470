//! The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.
//!
//! Called from the container's init process, already in its own mount namespace:
//! [`prepare`] (spec mounts and devices under the new root), [`pivot`], then [`finish`] (sysctls,
//! read-only and masked paths, read-only root).

mod cgroup;
mod devices;
mod mount;
mod mount_steps;
pub mod options;
mod paths;
mod pivot;
pub mod resolve;
pub(crate) mod sys;
mod sysctl;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::mountinfo;
use crate::spec::{propagation_flag, Spec};

pub use options::mount_options;
pub use pivot::pivot;

/// What the caller knows about the container that the spec alone does not say.
#[derive(Debug, Clone, Default)]
pub struct RootfsOptions {
    /// The container has its own user namespace: device nodes cannot be mknod'ed, so the host's
    /// nodes are bind-mounted onto empty files instead, and a `sysfs` or `mqueue` mount that the
    /// kernel refuses falls back to a recursive bind of the host's `/sys` or `/dev/mqueue`.
    pub in_user_ns: bool,
    /// The container has its own cgroup namespace: `cgroup` mounts are fresh cgroup filesystems
    /// (showing the container's cgroup as their root) rather than binds of the host's.
    pub cgroup_ns: bool,
    /// The bundle directory: relative bind-mount sources are relative to it (runtime-spec). Empty
    /// means the current directory.
    pub bundle: PathBuf,
    /// Detached idmapped trees made by the runtime, by index in `spec.mounts`: attached as they are.
    pub idmapped: Vec<(usize, std::os::fd::RawFd)>,
    /// The init is not yet in the container's pid namespace: `proc` mounts, and the mounts under
    /// them, wait for [`mount_deferred`], since a procfs shows the pid namespace of its mounter.
    pub defer_proc: bool,
}

/// Spec mounts left for after pivot_root, by index in `spec.mounts`, with the detached copy of a
/// bind's source made while the host's paths could still be reached.
#[derive(Debug, Default)]
pub struct Deferred {
    entries: Vec<(usize, Option<OwnedFd>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount {destination}: {what}: {source}")]
    Mount {
        destination: String,
        what: String,
        source: io::Error,
    },
    #[error("mount {destination}: option {option:?} is not supported yet")]
    Unsupported { destination: String, option: String },
    #[error("mount {destination}: {reason}")]
    BadMount { destination: String, reason: String },
    #[error("device {path}: {what}: {source}")]
    Device {
        path: String,
        what: String,
        source: io::Error,
    },
    #[error("device {path}: {reason}")]
    BadDevice { path: String, reason: String },
    #[error("{path}: {what}: {source}")]
    Path {
        path: String,
        what: String,
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("sysctl {key}: {what}: {source}")]
    Sysctl {
        key: String,
        what: String,
        source: io::Error,
    },
}

/// `map_err` helper for a failed step of a spec mount.
pub(crate) fn mount_err<'a>(
    destination: &'a str,
    what: &'a str,
) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Mount {
        destination: destination.to_owned(),
        what: what.to_owned(),
        source,
    }
}

/// `map_err` helper for a failed step on a path (root, masked/readonly path, pivot).
pub(crate) fn path_err<'a>(
    path: &'a str,
    what: &'a str,
) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Path {
        path: path.to_owned(),
        what: what.to_owned(),
        source,
    }
}

/// In the new mount namespace, before the createContainer hooks and pivot_root. `rootfs` is
/// absolute (bundle-relative root.path already resolved and canonicalized by the caller).
pub fn prepare(spec: &Spec, rootfs: &Path, opts: &RootfsOptions) -> Result<Deferred, RootfsError> {
    tracing::debug!(rootfs = %rootfs.display(), "preparing root filesystem");
    prepare_root(spec, rootfs)?;
    let shown = rootfs.display().to_string();
    let root = resolve::RootDir::open(rootfs).map_err(path_err(&shown, "open rootfs"))?;
    let mut deferred = Deferred::default();
    let mut procs: Vec<&str> = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let idmapped = opts.idmapped.iter().find(|(j, _)| *j == i);
        let is_proc = m.kind.as_deref() == Some("proc");
        let under_proc = procs
            .iter()
            .any(|p| Path::new(&m.destination).starts_with(p));
        if opts.defer_proc && (is_proc || under_proc) {
            if is_proc {
                procs.push(&m.destination);
            }
            let tree = match idmapped {
                Some((_, fd)) => Some(dup_fd(*fd, &m.destination)?),
                None => mount::detached_bind(m, opts)?,
            };
            deferred.entries.push((i, tree));
            continue;
        }
        match idmapped {
            Some((_, fd)) => mount::attach_tree(&root, m, *fd)?,
            None => mount::mount_entry(&root, m, opts)?,
        }
    }
    devices::create(&root, spec, opts)?;
    Ok(deferred)
}

/// After pivot_root, in the container's pid namespace: the mounts [`prepare`] left.
pub fn mount_deferred(
    spec: &Spec,
    deferred: Deferred,
    opts: &RootfsOptions,
) -> Result<(), RootfsError> {
    let root = resolve::RootDir::open(Path::new("/")).map_err(path_err("/", "open root"))?;
    for (i, tree) in deferred.entries {
        let m = &spec.mounts[i];
        match tree {
            Some(fd) => mount::attach_tree(&root, m, fd.as_raw_fd())?,
            None if m.kind.as_deref() == Some("proc") => mount::proc_first(&root, m)?,
            None => mount::mount_entry(&root, m, opts)?,
        }
    }
    Ok(())
}

fn dup_fd(fd: RawFd, destination: &str) -> Result<OwnedFd, RootfsError> {
    // SAFETY: the descriptor is borrowed only for the duplication; the caller keeps it open.
    unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(mount_err(destination, "duplicate the idmapped tree"))
}

/// After pivot: sysctls (written to /proc/sys), readonly paths, masked paths, `root.readonly`, and
/// a read-only `/dev` that had to stay writable while its nodes were made. Runs before the user
/// process execs.
pub fn finish(spec: &Spec, _opts: &RootfsOptions) -> Result<(), RootfsError> {
    let linux = spec.linux();
    if let Some(flag) = linux
        .and_then(|l| l.rootfs_propagation.as_deref())
        .and_then(propagation_flag)
    {
        // Only now: applied before pivot_root it would have reached the host's mounts.
        sys::set_propagation(Path::new("/"), flag).map_err(path_err("/", "set propagation"))?;
    }
    if let Some(linux) = linux {
        sysctl::apply(&linux.sysctl)?;
        let root = resolve::RootDir::open(Path::new("/")).map_err(path_err("/", "open root"))?;
        for p in &linux.readonly_paths {
            paths::make_readonly(&root, p)?;
        }
        for p in &linux.masked_paths {
            paths::mask(&root, p)?;
        }
    }
    devices::finish_dev(spec)?;
    if spec.root.as_ref().is_some_and(|r| r.readonly) {
        sys::remount_bind(Path::new("/"), libc::MS_RDONLY)
            .map_err(path_err("/", "remount read-only"))?;
    }
    Ok(())
}

/// Root propagation as the spec asks (rslave by default, so host unmounts reach the container but
/// nothing flows back), the rootfs's parent mount private so pivot_root accepts it, and the rootfs
/// bind-mounted onto itself so it is a mount point.
fn prepare_root(spec: &Spec, rootfs: &Path) -> Result<(), RootfsError> {
    let flag = spec
        .linux()
        .and_then(|l| l.rootfs_propagation.as_deref())
        .and_then(propagation_flag)
        .unwrap_or(libc::MS_SLAVE | libc::MS_REC);
    sys::set_propagation(Path::new("/"), flag).map_err(path_err("/", "set propagation"))?;
    let shown = rootfs.display().to_string();
    make_parent_private(rootfs).map_err(path_err(&shown, "make parent mount private"))?;
    sys::mount(
        Some(rootfs),
        rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(path_err(&shown, "bind-mount rootfs onto itself"))
}

/// pivot_root refuses a new root whose parent mount is shared.
fn make_parent_private(rootfs: &Path) -> io::Result<()> {
    let mounts = mountinfo::read_self()?;
    match mountinfo::containing(&mounts, rootfs) {
        Some(m) if m.is_shared() => sys::set_propagation(&m.mount_point, libc::MS_PRIVATE),
        _ => Ok(()),
    }
}
