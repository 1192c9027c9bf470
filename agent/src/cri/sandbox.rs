//! Pod sandboxes: pinned namespaces, the pod network through CNI, and the files every container of the
//! pod shares (resolv.conf, hostname, hosts).

use std::path::PathBuf;
use std::sync::Arc;

use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::Daemon;
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
}

impl Record for SandboxRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

pub async fn run(
    _d: &Arc<Daemon>,
    _r: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Status> {
    Err(Status::unimplemented("RunPodSandbox"))
}

pub async fn stop(
    _d: &Arc<Daemon>,
    _r: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, Status> {
    Err(Status::unimplemented("StopPodSandbox"))
}

pub async fn remove(
    _d: &Arc<Daemon>,
    _r: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, Status> {
    Err(Status::unimplemented("RemovePodSandbox"))
}

pub async fn status(
    _d: &Arc<Daemon>,
    _r: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    Err(Status::unimplemented("PodSandboxStatus"))
}

pub async fn list(
    _d: &Arc<Daemon>,
    _r: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, Status> {
    Err(Status::unimplemented("ListPodSandbox"))
}

pub async fn update_resources(
    _d: &Arc<Daemon>,
    _r: cri::UpdatePodSandboxResourcesRequest,
) -> Result<cri::UpdatePodSandboxResourcesResponse, Status> {
    Err(Status::unimplemented("UpdatePodSandboxResources"))
}

/// At start-up: checks every sandbox's pinned namespaces and cleans up what belongs to no record
/// (mounts, network namespaces, IP allocations).
pub async fn recover(_d: &Arc<Daemon>) {}

/// The CRI status of a sandbox, as `PodSandboxStatus` and container events report it.
pub fn sandbox_status(_d: &Daemon, sb: &SandboxRecord) -> cri::PodSandboxStatus {
    cri::PodSandboxStatus {
        id: sb.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: if sb.ready {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        } as i32,
        created_at: sb.created_at,
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.runtime_handler.clone(),
        ..Default::default()
    }
}
