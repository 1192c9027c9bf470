//! `mounts`: the standard kernel file systems, the pod's shared files, the config's bind mounts (with
//! their propagation and read-only modes) and the image's volumes.

use std::path::{Component, Path, PathBuf};

use cri_api::v1 as cri;
use skiff_runtime::mountinfo;
use skiff_runtime::rootfs::resolve::{Kind, RootDir};
use skiff_runtime::spec::{IdMapping, Mount};
use tonic::Status;

use super::{bad, SpecInput};

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: dest.into(),
        kind: Some(kind.into()),
        source: Some(source.into()),
        options: options.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn build(input: &SpecInput) -> Result<Vec<Mount>, Status> {
    let cri_mounts = validated(&input.config.mounts)?;
    let covered = |dest: &str| cri_mounts.iter().any(|m| m.destination == dest);
    let mut out: Vec<Mount> = defaults(input)
        .into_iter()
        .filter(|m| !covered(&m.destination))
        .collect();
    let ro = if input.readonly_rootfs() { "ro" } else { "rw" };
    for name in ["hostname", "hosts", "resolv.conf"] {
        let dest = format!("/etc/{name}");
        let src = input.sandbox.dir.join(name);
        if !covered(&dest) && src.is_file() {
            out.push(mount(
                &dest,
                "bind",
                &src.to_string_lossy(),
                &["rbind", "rprivate", ro],
            ));
        }
    }
    volumes(input, &cri_mounts)?;
    out.extend(cri_mounts);
    Ok(out)
}

/// The kernel file systems every container has; `/sys` and its cgroups writable only when
/// privileged; `/dev/shm` shared by the pod when it has its own IPC namespace.
fn defaults(input: &SpecInput) -> Vec<Mount> {
    let sys_ro = if input.privileged() { "rw" } else { "ro" };
    let shm = input.sandbox.dir.join("shm");
    let shm_mount = if input.sandbox.ipcns.is_some() && shm.is_dir() {
        mount(
            "/dev/shm",
            "bind",
            &shm.to_string_lossy(),
            &["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"],
        )
    } else {
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_ro],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_ro],
        ),
        shm_mount,
    ]
}

/// An absolute container path without `..`, as every mount destination must be.
fn check_container_path(field: &str, p: &str) -> Result<(), Status> {
    if !p.starts_with('/') {
        return Err(bad(field, p, "must be an absolute path"));
    }
    if p.contains('\0') {
        return Err(bad(field, p, "must not contain NUL"));
    }
    if Path::new(p).components().any(|c| c == Component::ParentDir) {
        return Err(bad(field, p, "must not contain .."));
    }
    Ok(())
}

/// The config's mounts as OCI bind mounts, parents before children.
pub fn validated(mounts: &[cri::Mount]) -> Result<Vec<Mount>, Status> {
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        out.push(bind_mount(m)?);
    }
    out.sort_by_key(|m| Path::new(&m.destination).components().count());
    Ok(out)
}

fn bind_mount(m: &cri::Mount) -> Result<Mount, Status> {
    use cri::MountPropagation as P;
    check_container_path("mounts.container_path", &m.container_path)?;
    if m.host_path.is_empty() {
        return Err(bad("mounts.host_path", &m.host_path, "is empty"));
    }
    if !m.host_path.starts_with('/') || m.host_path.contains('\0') {
        return Err(bad(
            "mounts.host_path",
            &m.host_path,
            "must be an absolute path without NUL",
        ));
    }
    let host = std::fs::canonicalize(&m.host_path)
        .map_err(|e| bad("mounts.host_path", &m.host_path, &e.to_string()))?;
    let prop = P::try_from(m.propagation).map_err(|_| {
        bad(
            "mounts.propagation",
            &m.propagation.to_string(),
            "unknown propagation",
        )
    })?;
    let prop_opt = match prop {
        P::PropagationPrivate => "rprivate",
        P::PropagationHostToContainer => {
            require_propagation(&m.host_path, &host, false)?;
            "rslave"
        }
        P::PropagationBidirectional => {
            require_propagation(&m.host_path, &host, true)?;
            "rshared"
        }
    };
    let mut options = vec!["rbind".to_string(), prop_opt.to_string()];
    if m.recursive_read_only {
        if !m.readonly {
            return Err(bad(
                "mounts.recursive_read_only",
                &m.container_path,
                "needs readonly",
            ));
        }
        if prop != P::PropagationPrivate {
            return Err(bad(
                "mounts.recursive_read_only",
                &m.container_path,
                "needs private propagation",
            ));
        }
        options.push("rro".into());
    }
    options.push(if m.readonly { "ro" } else { "rw" }.into());
    let (uid_mappings, gid_mappings) = idmap(m)?;
    Ok(Mount {
        destination: m.container_path.clone(),
        kind: Some("bind".into()),
        source: Some(host.to_string_lossy().into_owned()),
        options,
        uid_mappings,
        gid_mappings,
    })
}

/// `uid_mappings`/`gid_mappings`: the mount is idmapped through them (the runtime makes the idmapped
/// mount on the host side), so what id 0 owns on disk is owned by the container's root.
fn idmap(m: &cri::Mount) -> Result<(Vec<IdMapping>, Vec<IdMapping>), Status> {
    let conv = |v: &[cri::IdMapping]| -> Vec<IdMapping> {
        v.iter()
            .map(|x| IdMapping {
                container_id: x.container_id,
                host_id: x.host_id,
                size: x.length,
            })
            .collect()
    };
    let (u, g) = (conv(&m.uid_mappings), conv(&m.gid_mappings));
    if u.is_empty() != g.is_empty() {
        return Err(bad(
            "mounts.uid_mappings",
            &m.container_path,
            "an idmapped mount needs both uid_mappings and gid_mappings",
        ));
    }
    if u.iter().chain(&g).any(|x| x.size == 0) {
        return Err(bad(
            "mounts.uid_mappings",
            &m.container_path,
            "a mapping has length 0",
        ));
    }
    Ok((u, g))
}

/// Propagation from the host only works if the host's mount propagates: shared for
/// bidirectional, shared or a slave for host-to-container.
fn require_propagation(given: &str, host: &Path, shared: bool) -> Result<(), Status> {
    let mounts = mountinfo::read_self()
        .map_err(|e| Status::internal(format!("read /proc/self/mountinfo: {e}")))?;
    let Some(mi) = mountinfo::containing(&mounts, host) else {
        return Err(bad("mounts.host_path", given, "is on no mount"));
    };
    let slave = mi.optional.iter().any(|o| o.starts_with("master:"));
    if mi.is_shared() || (!shared && slave) {
        return Ok(());
    }
    let need = if shared { "shared" } else { "shared or slave" };
    Err(bad(
        "mounts.host_path",
        given,
        &format!(
            "its mount {} is not {need}, as the propagation requires",
            mi.mount_point.display()
        ),
    ))
}

/// The root's propagation: shared when a mount propagates both ways, a slave when one receives.
pub fn rootfs_propagation(config: &cri::ContainerConfig) -> Option<String> {
    use cri::MountPropagation as P;
    let has = |p: P| config.mounts.iter().any(|m| m.propagation == p as i32);
    if has(P::PropagationBidirectional) {
        Some("rshared".into())
    } else if has(P::PropagationHostToContainer) {
        Some("rslave".into())
    } else {
        None
    }
}

/// The image's declared volumes become empty directories in the container's root (unless the
/// config mounts something there), created without following the image's symlinks out of it.
fn volumes(input: &SpecInput, cri_mounts: &[Mount]) -> Result<(), Status> {
    if input.image.volumes.is_empty() {
        return Ok(());
    }
    let root = RootDir::open(&input.rootfs)
        .map_err(|e| Status::internal(format!("open rootfs {}: {e}", input.rootfs.display())))?;
    for v in &input.image.volumes {
        check_container_path("image volume", v)?;
        let clean: PathBuf = Path::new(v).components().collect();
        if cri_mounts
            .iter()
            .any(|m| Path::new(&m.destination) == clean)
        {
            continue;
        }
        root.create(&clean.to_string_lossy(), Kind::Dir)
            .map_err(|e| Status::internal(format!("image volume {v}: {e}")))?;
    }
    Ok(())
}
