//! What a pod sandbox is, as its containers and the sandbox calls both read it: its record, its user
//! namespace and the checks of its config. It sits below `cri::sandbox` (the RPCs that make and end
//! sandboxes, and stop their containers) and `cri::container` (whose containers live in one).

pub mod userns;
pub mod validate;

use std::path::PathBuf;

use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};

use crate::store::{proto_b64, Record};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    #[serde(with = "proto_b64")]
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub ready: bool,
    /// Pinned namespace files; `None` where the pod uses the host's.
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The pod's PID namespace, held by an infra process, when its containers share one.
    pub pidns: Option<PathBuf>,
    pub infra_pid: Option<i32>,
    /// Pod IPs, the primary first.
    pub ips: Vec<String>,
    /// The cgroup parent of the pod's containers, in the daemon's driver's syntax.
    pub cgroup_parent: String,
    /// The pod's own directory: resolv.conf, hostname, hosts, shm.
    pub dir: PathBuf,
    /// Start time (clock ticks since boot) of the infra process, so a reused pid is never taken for it.
    #[serde(default)]
    pub infra_start: u64,
    /// The pod's /dev/shm (a tmpfs of `SHM_SIZE`) when it has its own IPC namespace.
    #[serde(default)]
    pub shm: Option<PathBuf>,
    /// The CNI network the pod is attached to, until DEL succeeded.
    #[serde(default)]
    pub cni_network: Option<String>,
    /// The CNI ADD result.
    #[serde(default)]
    pub cni_result: Option<serde_json::Value>,
    /// The infra process's own cgroup below the pod's, until it is removed.
    #[serde(default)]
    pub infra_cgroup: Option<skiff_runtime::cgroups::CgroupState>,
    /// The pod's pinned user namespace (POD mode), which owns its other namespaces.
    #[serde(default)]
    pub userns: Option<PathBuf>,
}

impl Record for SandboxRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The host's own name, for host-network pods.
pub fn host_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
