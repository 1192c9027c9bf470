//! `linux.namespaces`: the pod's pinned user, network, IPC and UTS namespaces, the PID namespace the
//! config asks for, and the container's own mount (and, on cgroup v2, cgroup) namespace.

use std::path::Path;

use cri_api::v1 as cri;
use skiff_runtime::spec::{Namespace, NamespaceKind};
use tonic::Status;

use super::{bad, SpecInput};

fn joined(kind: NamespaceKind, path: &Path) -> Namespace {
    Namespace {
        kind,
        path: Some(path.to_string_lossy().into_owned()),
    }
}

fn new(kind: NamespaceKind) -> Namespace {
    Namespace { kind, path: None }
}

pub fn build(input: &SpecInput) -> Result<Vec<Namespace>, Status> {
    let sb = input.sandbox;
    let mut out = vec![new(NamespaceKind::Mount)];
    // A pod without a pinned namespace of a kind uses the host's: nothing to join or create.
    for (kind, ns) in [
        (NamespaceKind::User, &sb.userns),
        (NamespaceKind::Network, &sb.netns),
        (NamespaceKind::Ipc, &sb.ipcns),
        (NamespaceKind::Uts, &sb.utsns),
    ] {
        if let Some(p) = ns {
            out.push(joined(kind, p));
        }
    }
    if let Some(pid) = pid(input)? {
        out.push(pid);
    }
    if cgroup2_only() {
        out.push(new(NamespaceKind::Cgroup));
    }
    Ok(out)
}

/// The PID namespace by `namespace_options.pid`.
fn pid(input: &SpecInput) -> Result<Option<Namespace>, Status> {
    use cri::NamespaceMode as M;
    let opts = input
        .security()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mode = M::try_from(opts.pid).map_err(|_| {
        bad(
            "namespace_options.pid",
            &opts.pid.to_string(),
            "unknown mode",
        )
    })?;
    Ok(match mode {
        M::Container => Some(new(NamespaceKind::Pid)),
        M::Node => None,
        // A pod without its own shared PID namespace (e.g. made before) gives each container one.
        M::Pod => Some(match &input.sandbox.pidns {
            Some(p) => joined(NamespaceKind::Pid, p),
            None => new(NamespaceKind::Pid),
        }),
        M::Target => Some(joined(
            NamespaceKind::Pid,
            &target_pidns(input, &opts.target_id)?,
        )),
    })
}

/// The PID namespace of another running container of the same pod.
fn target_pidns(input: &SpecInput, target: &str) -> Result<std::path::PathBuf, Status> {
    let field = "namespace_options.target_id";
    super::super::error::check_id("target container", target)?;
    let rec = input
        .daemon
        .containers
        .get(target)
        .ok_or_else(|| bad(field, target, "no such container"))?;
    if rec.sandbox_id != input.sandbox.id {
        return Err(bad(field, target, "is in another pod"));
    }
    let st = input
        .daemon
        .oci
        .state(target)
        .map_err(|e| bad(field, target, &format!("not running: {e}")))?;
    if st.pid <= 0 || st.status != skiff_runtime::state::Status::Running {
        return Err(bad(field, target, "is not running"));
    }
    Ok(format!("/proc/{}/ns/pid", st.pid).into())
}

/// True on a unified (cgroup v2 only) host, where containers get their own cgroup namespace.
pub fn cgroup2_only() -> bool {
    statfs_magic("/sys/fs/cgroup") == Some(CGROUP2_SUPER_MAGIC)
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn statfs_magic(path: &str) -> Option<i64> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: statfs only writes into the zeroed struct we own; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    (r == 0).then_some(buf.f_type as i64)
}
