//! One `spec.mounts` entry, mounted inside the rootfs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::mount_steps::{after_mount, bind, set_bind_flags};
use super::options::{self, MountOptions};
use super::resolve::{self, Kind, RootDir};
use super::sys::{self, fd_path};
use super::{cgroup, mount_err, RootfsError, RootfsOptions};
use crate::spec::Mount;

/// Mounts `m` at its destination inside `root`.
pub fn mount_entry(root: &RootDir, m: &Mount, opts: &RootfsOptions) -> Result<(), RootfsError> {
    let dest = m.destination.as_str();
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(RootfsError::Unsupported {
            destination: dest.to_owned(),
            option: "uidMappings/gidMappings (idmapped mounts)".into(),
        });
    }
    let mut parsed = options::parse(&m.options).map_err(|u| RootfsError::Unsupported {
        destination: dest.to_owned(),
        option: u.0,
    })?;
    let fstype = m.kind.as_deref().unwrap_or("");
    tracing::debug!(destination = dest, fstype, "mounting");
    if parsed.bind.is_some() || fstype == "bind" || fstype == "rbind" {
        let recursive = parsed.bind.unwrap_or(fstype == "rbind");
        parsed.bind = Some(recursive);
        let source = m.source.as_deref().ok_or_else(|| RootfsError::BadMount {
            destination: dest.to_owned(),
            reason: "a bind mount needs a source".into(),
        })?;
        return bind(root, dest, &opts.bundle.join(source), &parsed);
    }
    match fstype {
        "cgroup" => cgroup::mount(root, dest, &parsed, opts),
        "devpts" => {
            add_default(&mut parsed, "newinstance", "newinstance");
            add_default(&mut parsed, "ptmxmode=", "ptmxmode=0666");
            fresh(root, m, "devpts", &parsed)
        }
        // In a user namespace the kernel refuses sysfs without an owned network namespace and
        // mqueue without an owned IPC namespace: the host's instance is bound instead.
        "sysfs" | "mqueue" => fresh(root, m, fstype, &parsed).or_else(|e| {
            if opts.in_user_ns && is_eperm(&e) {
                let host = if fstype == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                tracing::info!(
                    destination = dest,
                    host,
                    "{fstype} refused; binding the host's"
                );
                parsed.bind = Some(true);
                bind(root, dest, Path::new(host), &parsed)
            } else {
                Err(e)
            }
        }),
        "" | "none" => Err(RootfsError::BadMount {
            destination: dest.to_owned(),
            reason: "no filesystem type and no bind option".into(),
        }),
        other => fresh(root, m, other, &parsed),
    }
}

fn is_eperm(e: &RootfsError) -> bool {
    matches!(e, RootfsError::Mount { source, .. } if source.raw_os_error() == Some(libc::EPERM))
}

fn add_default(o: &mut MountOptions, prefix: &str, value: &str) {
    if !o.data.iter().any(|d| d.starts_with(prefix)) {
        o.data.push(value.to_owned());
    }
}

/// A new instance of a filesystem (proc, tmpfs, mqueue, devpts, sysfs, anything else by name).
fn fresh(root: &RootDir, m: &Mount, fstype: &str, o: &MountOptions) -> Result<(), RootfsError> {
    let dest = m.destination.as_str();
    let target = root
        .create(dest, Kind::Dir)
        .map_err(mount_err(dest, "create mount point"))?;
    let mut flags = o.flags;
    if resolve::same_path(dest, "/dev") {
        // Device nodes still have to be made in it; finish() applies ro.
        flags &= !libc::MS_RDONLY;
    }
    let source = PathBuf::from(m.source.as_deref().unwrap_or(fstype));
    let data = o.data_string();
    sys::mount(
        Some(&source),
        &fd_path(target.as_fd()),
        Some(fstype),
        flags,
        data.as_deref(),
    )
    .map_err(mount_err(dest, &format!("mount {fstype}")))?;
    after_mount(root, dest, o, &target)
}

/// A `proc` mount made while no procfs is mounted in the container's root yet, so that the
/// destination cannot be named through `/proc/self/fd`: it is mounted on the working directory.
pub fn proc_first(root: &RootDir, m: &Mount) -> Result<(), RootfsError> {
    let dest = m.destination.as_str();
    let o = options::parse(&m.options).map_err(|u| RootfsError::Unsupported {
        destination: dest.to_owned(),
        option: u.0,
    })?;
    let target = root
        .create(dest, Kind::Dir)
        .map_err(mount_err(dest, "create mount point"))?;
    nix::unistd::fchdir(&target).map_err(|e| mount_err(dest, "chdir")(e.into()))?;
    let source = PathBuf::from(m.source.as_deref().unwrap_or("proc"));
    let data = o.data_string();
    let mounted = sys::mount(
        Some(&source),
        Path::new("."),
        Some("proc"),
        o.flags,
        data.as_deref(),
    );
    let back = nix::unistd::chdir("/");
    mounted.map_err(mount_err(dest, "mount proc"))?;
    back.map_err(|e| mount_err(dest, "chdir")(e.into()))?;
    after_mount(root, dest, &o, &target)
}

/// For a bind mount, a detached copy of its source, to be attached by [`attach_tree`] once the
/// source's path can no longer be reached (after pivot_root); `None` for any other mount.
pub fn detached_bind(m: &Mount, opts: &RootfsOptions) -> Result<Option<OwnedFd>, RootfsError> {
    let dest = m.destination.as_str();
    let parsed = options::parse(&m.options).map_err(|u| RootfsError::Unsupported {
        destination: dest.to_owned(),
        option: u.0,
    })?;
    let fstype = m.kind.as_deref().unwrap_or("");
    if parsed.bind.is_none() && fstype != "bind" && fstype != "rbind" {
        return Ok(None);
    }
    let recursive = parsed.bind.unwrap_or(fstype == "rbind");
    let source = m.source.as_deref().ok_or_else(|| RootfsError::BadMount {
        destination: dest.to_owned(),
        reason: "a bind mount needs a source".into(),
    })?;
    let source = opts.bundle.join(source);
    let what = format!("clone mount tree of {}", source.display());
    sys::open_tree_clone(&source, recursive)
        .map(Some)
        .map_err(mount_err(dest, &what))
}

/// Attaches a detached tree prepared beforehand (an idmapped bind, or a bind copied before
/// pivot_root) at the mount's destination, with the mount's other options.
pub fn attach_tree(root: &RootDir, m: &Mount, fd: std::os::fd::RawFd) -> Result<(), RootfsError> {
    let dest = m.destination.as_str();
    // SAFETY: the init owns this descriptor for as long as the rootfs is being prepared.
    let tree = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let opts: Vec<String> = m
        .options
        .iter()
        .filter(|o| *o != "idmap" && *o != "ridmap")
        .cloned()
        .collect();
    let o = options::parse(&opts).map_err(|u| RootfsError::Unsupported {
        destination: dest.to_owned(),
        option: u.0,
    })?;
    let meta =
        std::fs::metadata(fd_path(tree)).map_err(mount_err(dest, "stat the prepared tree"))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let target = root
        .create(dest, kind)
        .map_err(mount_err(dest, "create mount point"))?;
    set_bind_flags(tree, o.remount_flags()).map_err(mount_err(dest, "set bind flags"))?;
    sys::move_mount_onto(tree, target.as_fd())
        .map_err(mount_err(dest, "attach the prepared tree"))?;
    for &flag in &o.propagation {
        sys::set_propagation(&fd_path(tree), flag).map_err(mount_err(dest, "set propagation"))?;
    }
    Ok(())
}
