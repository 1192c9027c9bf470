//! Containers: from a CRI `ContainerConfig` and its image to a container run by the library runtime under
//! a monitor process, and back to CRI statuses.
//!
//! Each container has a directory under `state_dir/containers/<id>/` beside its record: the OCI bundle
//! (config.json, the overlay root and its upper/work dirs) and the monitor's files (exit record, log
//! reopen count, the monitor's own diagnostics).

mod exec_sync;
mod image_volume;
mod launch;
mod lifecycle;
mod monitor_alive;
mod rootfs;
mod status;
mod update;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::error::{full_id, not_found};
use super::Daemon;
use crate::store::{proto_b64, Record};

pub(crate) use exec_sync::result_path;
pub use exec_sync::OutputBudget;
pub use launch::Creating;
pub use status::container_status;
pub use watch::ExitsSeen;

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

impl ContainerRecord {
    /// Whether the container runs from image `id` or mounts it as a volume.
    pub fn uses_image(&self, id: &str) -> bool {
        self.image_id == id
            || self
                .config
                .mounts
                .iter()
                .any(|m| m.image.as_ref().is_some_and(|i| i.image_ref == id))
    }

    /// Where the monitor records how the container ended.
    pub fn exit_file(&self) -> PathBuf {
        exit_file(&self.bundle)
    }
}

/// Unmounts a container's root and image volumes and deletes its directory.
fn remove_bundle(dir: &Path) {
    image_volume::unmount_all(dir);
    skiff_runtime::image::bundle::remove_bundle(dir);
}

fn exit_file(bundle: &Path) -> PathBuf {
    bundle.join("exit.json")
}

fn reopen_file(bundle: &Path) -> PathBuf {
    bundle.join("log-reopens")
}

/// The directory of container `id`: bundle and monitor files.
fn container_dir(d: &Daemon, id: &str) -> PathBuf {
    d.config.state_dir.join("containers").join(id)
}

/// The record of a container the client named by its id or a unique prefix of it.
fn lookup(d: &Daemon, id: &str) -> Result<ContainerRecord, Status> {
    let full = full_id(&d.containers, "container", id)?;
    d.containers
        .get(&full)
        .ok_or_else(|| not_found("container", id))
}

pub async fn create(
    d: &Arc<Daemon>,
    r: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Status> {
    launch::create(d, r).await
}

pub async fn start(
    d: &Arc<Daemon>,
    r: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, Status> {
    lifecycle::start(d, &r.container_id).await?;
    Ok(cri::StartContainerResponse {})
}

pub async fn stop(
    d: &Arc<Daemon>,
    r: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, Status> {
    // As for sandboxes, and as critest checks: a container that is gone is stopped already.
    let id = full_id(&d.containers, "container", &r.container_id)?;
    if let Some(c) = d.containers.get(&id) {
        lifecycle::stop(d, &c, r.timeout).await?;
    }
    Ok(cri::StopContainerResponse {})
}

pub async fn remove(
    d: &Arc<Daemon>,
    r: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, Status> {
    let id = full_id(&d.containers, "container", &r.container_id)?;
    if let Some(c) = d.containers.get(&id) {
        lifecycle::remove(d, &c).await?;
    }
    Ok(cri::RemoveContainerResponse {})
}

pub async fn list(
    d: &Arc<Daemon>,
    r: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse, Status> {
    Ok(cri::ListContainersResponse {
        containers: status::list(d, r.filter.as_ref()),
    })
}

pub async fn status(
    d: &Arc<Daemon>,
    r: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, Status> {
    let c = lookup(d, &r.container_id)?;
    let info = if r.verbose {
        status::verbose_info(d, &c)
    } else {
        Default::default()
    };
    Ok(cri::ContainerStatusResponse {
        status: Some(container_status(d, &c)),
        info,
    })
}

pub async fn update_resources(
    d: &Arc<Daemon>,
    r: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    update::update(d, r).await
}

pub async fn reopen_log(
    d: &Arc<Daemon>,
    r: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, Status> {
    let c = lookup(d, &r.container_id)?;
    lifecycle::reopen_log(d, &c).await?;
    Ok(cri::ReopenContainerLogResponse {})
}

pub async fn exec_sync(
    d: &Arc<Daemon>,
    r: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    exec_sync::run(d, r).await
}

/// Stops every container of a sandbox (for `StopPodSandbox`); stopping stopped ones is not an error.
pub async fn stop_in_sandbox(d: &Arc<Daemon>, sandbox_id: &str) -> Result<(), Status> {
    for c in d.containers.list() {
        if c.sandbox_id == sandbox_id {
            lifecycle::stop(d, &c, 0).await?;
        }
    }
    Ok(())
}

/// Removes every container of a sandbox (for `RemovePodSandbox`).
pub async fn remove_in_sandbox(d: &Arc<Daemon>, sandbox_id: &str) -> Result<(), Status> {
    for c in d.containers.list() {
        if c.sandbox_id == sandbox_id {
            lifecycle::remove(d, &c).await?;
        }
    }
    Ok(())
}

/// At start-up: picks up exits that happened while skiffd was down, re-arms exit watchers, and cleans
/// up what belongs to no record.
pub async fn recover(d: &Arc<Daemon>) {
    watch::recover(d).await;
}
