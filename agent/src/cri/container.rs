//! Containers: from a CRI `ContainerConfig` and its image to a container run by the library runtime under
//! a monitor process, and back to CRI statuses.

use std::path::PathBuf;
use std::sync::Arc;

use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::Daemon;
use crate::store::{proto_b64, Record};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    #[serde(with = "proto_b64")]
    pub config: cri::ContainerConfig,
    /// The image as the client named it, and the image id (`sha256:...`) it resolved to.
    pub image_name: String,
    pub image_id: String,
    /// Nanoseconds since the epoch; 0 until it happens.
    pub created_at: i64,
    pub started_at: i64,
    /// The OCI bundle: config.json and the overlay root.
    pub bundle: PathBuf,
    /// Absolute path of the CRI log file (sandbox log_directory + config log_path), if any.
    pub log_path: Option<PathBuf>,
    /// The monitor that owns the container's stdio and records its exit.
    pub monitor_pid: i32,
    pub pid: i32,
}

impl Record for ContainerRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

pub async fn create(
    _d: &Arc<Daemon>,
    _r: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Status> {
    Err(Status::unimplemented("CreateContainer"))
}

pub async fn start(
    _d: &Arc<Daemon>,
    _r: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, Status> {
    Err(Status::unimplemented("StartContainer"))
}

pub async fn stop(
    _d: &Arc<Daemon>,
    _r: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, Status> {
    Err(Status::unimplemented("StopContainer"))
}

pub async fn remove(
    _d: &Arc<Daemon>,
    _r: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, Status> {
    Err(Status::unimplemented("RemoveContainer"))
}

pub async fn list(
    _d: &Arc<Daemon>,
    _r: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse, Status> {
    Err(Status::unimplemented("ListContainers"))
}

pub async fn status(
    _d: &Arc<Daemon>,
    _r: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, Status> {
    Err(Status::unimplemented("ContainerStatus"))
}

pub async fn update_resources(
    d: &Arc<Daemon>,
    r: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    super::spec::resources::update(d, r).await
}

pub async fn reopen_log(
    _d: &Arc<Daemon>,
    _r: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, Status> {
    Err(Status::unimplemented("ReopenContainerLog"))
}

pub async fn exec_sync(
    d: &Arc<Daemon>,
    r: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    crate::execsync::run(d, r).await
}

/// Stops every container of a sandbox (for `StopPodSandbox`); stopping stopped ones is not an error.
pub async fn stop_in_sandbox(_d: &Arc<Daemon>, _sandbox_id: &str) -> Result<(), Status> {
    Ok(())
}

/// Removes every container of a sandbox (for `RemovePodSandbox`).
pub async fn remove_in_sandbox(_d: &Arc<Daemon>, _sandbox_id: &str) -> Result<(), Status> {
    Ok(())
}

/// At start-up: picks up exits that happened while skiffd was down, re-arms exit watchers, and cleans
/// up what belongs to no record.
pub async fn recover(_d: &Arc<Daemon>) {}

/// The CRI status of a container, as `ContainerStatus` and container events report it.
pub fn container_status(_d: &Daemon, c: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        created_at: c.created_at,
        started_at: c.started_at,
        image_ref: c.image_id.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        ..Default::default()
    }
}
