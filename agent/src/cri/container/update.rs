//! `UpdateContainerResources`: the new limits written to the running container's cgroup (through
//! the runtime's `update`) and kept in its record.

use std::sync::Arc;

use cri_api::v1 as cri;
use skiff_runtime::container::{ContainerError, Runtime};
use skiff_runtime::spec::Resources;
use skiff_runtime::state::StateError;
use tonic::Status;

use crate::cri::error::{full_id, internal, not_found};
use crate::cri::spec::resources::from_cri;
use crate::cri::{blocking, Daemon};

/// `UpdateContainerResources`: validated, written to the container's cgroup when it runs, and kept
/// in the runtime's state and the container's record for restarts and later updates.
pub async fn update(
    d: &Arc<Daemon>,
    mut r: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    r.container_id = full_id(&d.containers, "container", &r.container_id)?;
    let Some(linux) = r.linux else {
        return Ok(cri::UpdateContainerResourcesResponse {});
    };
    let new = from_cri(Some(&linux))?;
    let id = r.container_id.clone();
    let _guard = d.containers.lock(&id).await;
    if d.containers.get(&id).is_none() {
        return Err(not_found("container", &id));
    }
    let d2 = Arc::clone(d);
    let cg_id = id.clone();
    blocking(move || apply(&d2.oci, &cg_id, new)).await?;
    d.containers.update(&id, |c| {
        let l = c.config.linux.get_or_insert_with(Default::default);
        let old = l.resources.get_or_insert_with(Default::default);
        merge_cri(old, &linux);
    })?;
    Ok(cri::UpdateContainerResourcesResponse {})
}

/// Writes the merged limits to a live container's cgroup and state; a container that is not
/// running has nothing to update but its record.
fn apply(rt: &Runtime, id: &str, new: Resources) -> Result<(), Status> {
    match rt.update(id, new) {
        Ok(()) => Ok(()),
        Err(ContainerError::State(StateError::NotFound(_)) | ContainerError::WrongState { .. }) => {
            Ok(())
        }
        Err(ContainerError::Cgroup(e)) => {
            Err(Status::internal(format!("update cgroup of {id}: {e}")))
        }
        Err(e) => Err(internal(e)),
    }
}

/// The same merge on the CRI message kept in the container's record.
fn merge_cri(old: &mut cri::LinuxContainerResources, new: &cri::LinuxContainerResources) {
    let pick = |o: &mut i64, n: i64| {
        if n != 0 {
            *o = n
        }
    };
    pick(&mut old.cpu_period, new.cpu_period);
    pick(&mut old.cpu_quota, new.cpu_quota);
    pick(&mut old.cpu_shares, new.cpu_shares);
    pick(&mut old.memory_limit_in_bytes, new.memory_limit_in_bytes);
    pick(
        &mut old.memory_swap_limit_in_bytes,
        new.memory_swap_limit_in_bytes,
    );
    pick(&mut old.oom_score_adj, new.oom_score_adj);
    if !new.cpuset_cpus.is_empty() {
        old.cpuset_cpus = new.cpuset_cpus.clone();
    }
    if !new.cpuset_mems.is_empty() {
        old.cpuset_mems = new.cpuset_mems.clone();
    }
    if !new.hugepage_limits.is_empty() {
        old.hugepage_limits = new.hugepage_limits.clone();
    }
    old.unified.extend(new.unified.clone());
}
