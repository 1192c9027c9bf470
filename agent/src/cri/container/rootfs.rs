//! A container's root file system: an overlay of the image's layers with the container's writable
//! layer. In a pod with its own user namespace each layer is first idmapped onto that namespace, so
//! what the image's root owns is owned by the pod's root; the writable layer belongs to the pod's root
//! on the host. The layers stay shared with every other container on disk.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tonic::Status;

use super::super::error::internal;
use super::super::Daemon;
use crate::cri::pod::{userns, SandboxRecord};

/// In a pod with its own user namespace, lets the pod's root search the private directories on the
/// way to the container's root file system and to the pod's files: the container's init mounts
/// them as that user. `shared` (the state and run directories, `containers`) let through the roots
/// of all pods with a user namespace, `own` (the container's directory) this pod's alone. Roots of
/// pods gone are dropped here, at the next such container; until then they can look up names only.
pub fn let_pod_root_through(
    d: &Daemon,
    shared: &[&Path],
    own: &Path,
    sb: &SandboxRecord,
) -> Result<(), Status> {
    if sb.userns.is_none() {
        return Ok(());
    }
    let (uid, _) = pod_ids(sb)?.root_owner();
    let mut roots: Vec<u32> = d
        .sandboxes
        .list()
        .iter()
        .filter(|s| s.userns.is_some())
        .filter_map(|s| userns::of_config(&s.config))
        .map(|ids| ids.root_owner().0)
        .collect();
    roots.push(uid);
    let allow = |dir: &Path, uids: &[u32]| {
        skiff_runtime::private_dir::allow_traverse(dir, uids).map_err(|e| {
            internal(format!(
                "let the roots of user-namespaced pods (uids {uids:?}) search {}: {e}",
                dir.display()
            ))
        })
    };
    for dir in shared {
        allow(dir, &roots)?;
    }
    allow(own, &[uid])
}

fn pod_ids(sb: &SandboxRecord) -> Result<userns::PodUserNs, Status> {
    userns::of_config(&sb.config).ok_or_else(|| {
        internal(format!(
            "sandbox {} has a user namespace but no mappings",
            sb.id
        ))
    })
}

/// Mounts `dir/rootfs` over `lowers` (lowest first) with `dir/upper` and `dir/work`, which exist.
pub fn mount(dir: &Path, lowers: &[PathBuf], sb: &SandboxRecord) -> Result<(), Status> {
    let overlay = |lowers: &[PathBuf]| {
        skiff_runtime::image::bundle::mount_overlay(dir, lowers).map_err(internal)
    };
    let Some(pin) = &sb.userns else {
        return overlay(lowers);
    };
    let ids = pod_ids(sb)?;
    let ns =
        std::fs::File::open(pin).map_err(|e| internal(format!("open {}: {e}", pin.display())))?;
    let mut attached = Vec::new();
    let result = idmap_layers(dir, lowers, &ns, &mut attached).and_then(|idmapped| {
        chown(&dir.join("upper"), ids.root_owner())?;
        overlay(&idmapped)
    });
    // The overlay holds its own references to the layers: their mounts are not needed any more.
    for t in &attached {
        detach(t);
    }
    result
}

/// Each layer idmapped at `dir/lower/<i>`; `attached` lists those mounted so far.
fn idmap_layers(
    dir: &Path,
    lowers: &[PathBuf],
    ns: &std::fs::File,
    attached: &mut Vec<PathBuf>,
) -> Result<Vec<PathBuf>, Status> {
    for (i, layer) in lowers.iter().enumerate() {
        let target = dir.join("lower").join(i.to_string());
        std::fs::create_dir_all(&target)
            .map_err(|e| internal(format!("create {}: {e}", target.display())))?;
        skiff_runtime::security::idmap::bind_idmapped(layer, &target, ns.as_fd()).map_err(|e| {
            Status::failed_precondition(format!(
                "idmap image layer {} for the pod's user namespace: {e} (the kernel or the \
                 file system of the image store cannot idmap mounts)",
                layer.display()
            ))
        })?;
        attached.push(target);
    }
    Ok(attached.clone())
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), Status> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| internal(format!("chown {}: {e}", path.display())))
}

fn detach(target: &Path) {
    let Ok(c) = CString::new(target.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: c is a valid NUL-terminated path; a detached unmount touches no memory of ours.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        tracing::warn!(
            "unmount {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
}
