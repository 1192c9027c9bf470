//! cgroup v1 writers: each controller's part of `linux.resources` in its own hierarchy.

use std::path::Path;

use super::devices::{self, Rule};
use super::util::{cpuset, read_trimmed, write_file};
use super::CgroupError;
use crate::spec::{BlockIo, Cpu, Memory, Resources};

/// Applies what controller `ctrl` governs to its directory `dir`.
pub fn apply(ctrl: &str, dir: &Path, res: &Resources, rules: &[Rule]) -> Result<(), CgroupError> {
    match ctrl {
        "memory" => res.memory.as_ref().map_or(Ok(()), |m| memory(dir, m)),
        "cpu" => res.cpu.as_ref().map_or(Ok(()), |c| cpu(dir, c)),
        "cpuset" => res.cpu.as_ref().map_or(Ok(()), |c| cpuset(dir, c)),
        "pids" => match &res.pids {
            Some(p) if p.limit > 0 => write_file(dir, "pids.max", &p.limit.to_string()),
            Some(_) => write_file(dir, "pids.max", "max"),
            None => Ok(()),
        },
        "blkio" => res.block_io.as_ref().map_or(Ok(()), |b| blkio(dir, b)),
        "hugetlb" => {
            for h in &res.hugepage_limits {
                let file = format!("hugetlb.{}.limit_in_bytes", h.page_size);
                write_file(dir, &file, &h.limit.to_string())?;
            }
            Ok(())
        }
        "net_cls" => match res.network.as_ref().and_then(|n| n.class_id) {
            Some(id) => write_file(dir, "net_cls.classid", &id.to_string()),
            None => Ok(()),
        },
        "net_prio" => {
            for p in res.network.iter().flat_map(|n| &n.priorities) {
                write_file(
                    dir,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name, p.priority),
                )?;
            }
            Ok(())
        }
        "devices" => devices::v1::apply(dir, rules),
        _ => Ok(()),
    }
}

fn limit(v: i64) -> String {
    if v < 0 {
        "-1".into()
    } else {
        v.to_string()
    }
}

fn memory(dir: &Path, m: &Memory) -> Result<(), CgroupError> {
    match (m.limit, m.swap) {
        (Some(l), Some(s)) => set_limit_and_swap(dir, l, s)?,
        (Some(l), None) => write_file(dir, "memory.limit_in_bytes", &limit(l))?,
        (None, Some(s)) => write_file(dir, "memory.memsw.limit_in_bytes", &limit(s))?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation {
        write_file(dir, "memory.soft_limit_in_bytes", &limit(r))?;
    }
    if let Some(k) = m.kernel_tcp {
        write_file(dir, "memory.kmem.tcp.limit_in_bytes", &limit(k))?;
    }
    if m.kernel.is_some() {
        tracing::warn!("memory.kernel is deprecated and not settable on this kernel; ignored");
    }
    if let Some(s) = m.swappiness {
        if s > 100 {
            return Err(CgroupError::BadValue {
                field: "linux.resources.memory.swappiness".into(),
                reason: format!("{s} is above 100"),
            });
        }
        write_file(dir, "memory.swappiness", &s.to_string())?;
    }
    if m.disable_oom_killer == Some(true) {
        write_file(dir, "memory.oom_control", "1")?;
    }
    if let Some(h) = m.use_hierarchy {
        let want = if h { "1" } else { "0" };
        // Kernels since 5.x always use the hierarchy and refuse 0.
        if read_trimmed(&dir.join("memory.use_hierarchy")).as_deref() != Some(want) {
            if let Err(e) = write_file(dir, "memory.use_hierarchy", want) {
                tracing::warn!("{e}");
            }
        }
    }
    Ok(())
}

/// memsw must stay ≥ the memory limit at every step: raise memsw first when growing, the limit
/// first when shrinking.
fn set_limit_and_swap(dir: &Path, l: i64, s: i64) -> Result<(), CgroupError> {
    let cur = read_trimmed(&dir.join("memory.limit_in_bytes"))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(i64::MAX);
    let has_swap = dir.join("memory.memsw.limit_in_bytes").exists();
    let grow = l < 0 || l > cur;
    if grow && has_swap {
        write_file(dir, "memory.memsw.limit_in_bytes", &limit(s))?;
    }
    write_file(dir, "memory.limit_in_bytes", &limit(l))?;
    if !grow && has_swap {
        write_file(dir, "memory.memsw.limit_in_bytes", &limit(s))?;
    }
    if !has_swap && s != l && s >= 0 {
        tracing::warn!("memory.swap is set but the kernel has no swap accounting");
    }
    Ok(())
}

fn cpu(dir: &Path, c: &Cpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares.filter(|s| *s > 0) {
        write_file(dir, "cpu.shares", &s.to_string())?;
    }
    if let Some(p) = c.period.filter(|p| *p > 0) {
        write_file(dir, "cpu.cfs_period_us", &p.to_string())?;
    }
    if let Some(q) = c.quota {
        write_file(
            dir,
            "cpu.cfs_quota_us",
            &(if q > 0 { q } else { -1 }).to_string(),
        )?;
    }
    if let Some(b) = c.burst {
        write_file(dir, "cpu.cfs_burst_us", &b.to_string())?;
    }
    // The period first: runtime must fit in it.
    if let Some(p) = c.realtime_period.filter(|p| *p > 0) {
        write_file(dir, "cpu.rt_period_us", &p.to_string())?;
    }
    if let Some(r) = c.realtime_runtime {
        write_file(dir, "cpu.rt_runtime_us", &r.to_string())?;
    }
    if let Some(i) = c.idle {
        write_file(dir, "cpu.idle", &i.to_string())?;
    }
    Ok(())
}

fn blkio(dir: &Path, b: &BlockIo) -> Result<(), CgroupError> {
    let bfq = dir.join("blkio.bfq.weight").exists();
    let weight_file = if bfq {
        "blkio.bfq.weight"
    } else {
        "blkio.weight"
    };
    if let Some(w) = b.weight {
        write_file(dir, weight_file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight {
        write_file(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    let dev_file = if bfq {
        "blkio.bfq.weight_device"
    } else {
        "blkio.weight_device"
    };
    for d in &b.weight_device {
        if let Some(w) = d.weight {
            write_file(dir, dev_file, &format!("{}:{} {w}", d.major, d.minor))?;
        }
        if let Some(w) = d.leaf_weight {
            let v = format!("{}:{} {w}", d.major, d.minor);
            write_file(dir, "blkio.leaf_weight_device", &v)?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            &b.throttle_read_bps_device,
        ),
        (
            "blkio.throttle.write_bps_device",
            &b.throttle_write_bps_device,
        ),
        (
            "blkio.throttle.read_iops_device",
            &b.throttle_read_iops_device,
        ),
        (
            "blkio.throttle.write_iops_device",
            &b.throttle_write_iops_device,
        ),
    ];
    for (file, list) in throttles {
        for t in list {
            write_file(dir, file, &format!("{}:{} {}", t.major, t.minor, t.rate))?;
        }
    }
    Ok(())
}
