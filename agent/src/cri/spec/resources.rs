//! `linux.resources` from the CRI's container resources.

use cri_api::v1 as cri;
use skiff_runtime::spec::{Cpu, HugepageLimit, Memory, Resources};
use tonic::Status;

use super::bad;

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
