//! `UpdatePodSandboxResources`: the pod-level resources kubelet reports (its own pod cgroup is made by
//! kubelet); skiff records them and applies the CPU and memory figures to the pod cgroup when it exists.

use std::path::{Path, PathBuf};

use cri_api::v1 as cri;
use tonic::Status;

use super::SandboxRecord;
use crate::config::CgroupDriver;
use crate::cri::error::invalid;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn check(field: &str, r: &cri::LinuxContainerResources) -> Result<(), Status> {
    let bad = |what: &str, v: i64| Err(invalid(format!("{field}.{what}: {v} is out of range")));
    if r.cpu_period < 0 {
        return bad("cpu_period", r.cpu_period);
    }
    if r.cpu_quota < -1 {
        return bad("cpu_quota", r.cpu_quota);
    }
    if r.cpu_shares < 0 {
        return bad("cpu_shares", r.cpu_shares);
    }
    if r.memory_limit_in_bytes < 0 {
        return bad("memory_limit_in_bytes", r.memory_limit_in_bytes);
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return bad("oom_score_adj", r.oom_score_adj);
    }
    for (what, v) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if !v
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
        {
            return Err(invalid(format!("{field}.{what}: {v:?} is not a CPU list")));
        }
    }
    Ok(())
}

/// `/kubepods/burstable/pod1` (cgroupfs) or `kubepods-burstable-pod1.slice` (systemd) as a path
/// below each hierarchy's mount point; `None` for no parent or one that is not a plain path.
pub fn pod_relative_path(parent: &str, driver: CgroupDriver) -> Option<PathBuf> {
    let parent = parent.trim();
    if parent.is_empty() || parent == "/" {
        return None;
    }
    let rel = match driver {
        CgroupDriver::Systemd if parent.ends_with(".slice") && !parent.contains('/') => {
            skiff_runtime::cgroups::slice_path(parent)
        }
        _ => parent.trim_start_matches('/').to_string(),
    };
    let path = PathBuf::from(rel);
    let clean = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    clean.then_some(path)
}

/// Writes what applies to the existing pod cgroup (v1 per-controller or unified); never fails the RPC.
pub fn apply(driver: CgroupDriver, rec: &SandboxRecord) {
    let Some(rel) = pod_relative_path(&rec.cgroup_parent, driver) else {
        return;
    };
    let Some(res) = rec.config.linux.as_ref().and_then(|l| l.resources.clone()) else {
        return;
    };
    let overhead = rec
        .config
        .linux
        .as_ref()
        .and_then(|l| l.overhead.clone())
        .unwrap_or_default();
    let root = Path::new(CGROUP_ROOT);
    let mut writes: Vec<(PathBuf, String)> = Vec::new();
    if res.memory_limit_in_bytes > 0 {
        let mem = (res.memory_limit_in_bytes + overhead.memory_limit_in_bytes).to_string();
        writes.push((
            root.join("memory").join(&rel).join("memory.limit_in_bytes"),
            mem.clone(),
        ));
        writes.push((root.join(&rel).join("memory.max"), mem));
    }
    if res.cpu_shares > 0 {
        let shares = (res.cpu_shares + overhead.cpu_shares).to_string();
        writes.push((root.join("cpu").join(&rel).join("cpu.shares"), shares));
    }
    if res.cpu_period > 0 {
        let dir = root.join("cpu").join(&rel);
        writes.push((dir.join("cpu.cfs_period_us"), res.cpu_period.to_string()));
        writes.push((dir.join("cpu.cfs_quota_us"), res.cpu_quota.to_string()));
    }
    for (file, value) in writes {
        if !file.parent().is_some_and(Path::is_dir) || !file.exists() {
            continue;
        }
        if let Err(e) = std::fs::write(&file, &value) {
            tracing::warn!(sandbox = %rec.id, "write {value} to {}: {e}", file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroups_of_both_drivers() {
        assert_eq!(
            pod_relative_path("kubepods-burstable-pod1.slice", CgroupDriver::Systemd).unwrap(),
            Path::new("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice")
        );
        assert_eq!(
            pod_relative_path("/kubepods/burstable/pod1", CgroupDriver::Cgroupfs).unwrap(),
            Path::new("kubepods/burstable/pod1")
        );
        assert_eq!(
            pod_relative_path("/kubepods/../etc", CgroupDriver::Cgroupfs),
            None
        );
        assert_eq!(pod_relative_path("", CgroupDriver::Cgroupfs), None);
    }

    #[test]
    fn negative_figures_are_refused() {
        let r = cri::LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        };
        let e = check("resources", &r).unwrap_err();
        assert!(e.message().contains("resources.memory_limit_in_bytes"));
    }
}
