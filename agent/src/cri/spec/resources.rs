//! `linux.resources` from the CRI's container resources, and `UpdateContainerResources`: the new
//! limits written to the running container's cgroup and kept in its records.

use std::sync::Arc;

use cri_api::v1 as cri;
use skiff_runtime::container::{ContainerError, Runtime};
use skiff_runtime::spec::{Cpu, HugepageLimit, Memory, Resources};
use skiff_runtime::state::StateError;
use tonic::Status;

use super::bad;
use crate::cri::error::{full_id, internal, not_found};
use crate::cri::{blocking, Daemon};

/// The CRI limits as OCI resources; zero means "not set", negative values are refused.
pub fn from_cri(r: Option<&cri::LinuxContainerResources>) -> Result<Resources, Status> {
    let Some(r) = r else {
        return Ok(Resources::default());
    };
    let non_negative = |field: &str, v: i64| -> Result<Option<i64>, Status> {
        match v {
            0 => Ok(None),
            v if v < 0 => Err(bad(field, &v.to_string(), "must not be negative")),
            v => Ok(Some(v)),
        }
    };
    let quota = match r.cpu_quota {
        0 => None,
        v if v < -1 => return Err(bad("cpu_quota", &v.to_string(), "must be -1 or more")),
        v => Some(v),
    };
    let cpu = Cpu {
        period: non_negative("cpu_period", r.cpu_period)?.map(|v| v as u64),
        quota,
        shares: non_negative("cpu_shares", r.cpu_shares)?.map(|v| v as u64),
        cpus: Some(r.cpuset_cpus.clone()).filter(|s| !s.is_empty()),
        mems: Some(r.cpuset_mems.clone()).filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let limit = non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)?;
    let swap = match r.memory_swap_limit_in_bytes {
        0 => None,
        -1 => Some(-1),
        v if v < 0 => {
            return Err(bad(
                "memory_swap_limit_in_bytes",
                &v.to_string(),
                "must be -1 or more",
            ))
        }
        v => Some(v),
    };
    let mut hugepages = Vec::new();
    for h in &r.hugepage_limits {
        check_page_size(&h.page_size)?;
        hugepages.push(HugepageLimit {
            page_size: h.page_size.clone(),
            limit: h.limit,
        });
    }
    let has_cpu = cpu.period.is_some()
        || cpu.quota.is_some()
        || cpu.shares.is_some()
        || cpu.cpus.is_some()
        || cpu.mems.is_some();
    Ok(Resources {
        cpu: has_cpu.then_some(cpu),
        memory: (limit.is_some() || swap.is_some()).then_some(Memory {
            limit,
            swap,
            ..Default::default()
        }),
        hugepage_limits: hugepages,
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    })
}

/// `2MB`, `1GB`, `64KB`: what kubelet sends (the cgroup file's own spelling).
fn check_page_size(s: &str) -> Result<(), Status> {
    let num = s
        .strip_suffix("KB")
        .or_else(|| s.strip_suffix("MB"))
        .or_else(|| s.strip_suffix("GB"));
    match num.and_then(|n| n.parse::<u64>().ok()) {
        Some(n) if n > 0 => Ok(()),
        _ => Err(bad(
            "hugepage_limits.page_size",
            s,
            "expected e.g. 2MB or 1GB",
        )),
    }
}

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
    blocking(move || apply(&d2.runtime, &cg_id, new)).await?;
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
