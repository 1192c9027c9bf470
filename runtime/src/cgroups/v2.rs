//! cgroup v2 (unified) writers: `linux.resources` as interface files of one directory.

use std::collections::BTreeSet;
use std::path::Path;

use super::util::{cpuset, read_trimmed, write_file};
use super::CgroupError;
use crate::spec::{BlockIo, Cpu, Memory, Resources};

/// Controllers enabled for `dir`, from its `cgroup.controllers`.
pub fn controllers(dir: &Path) -> BTreeSet<String> {
    read_trimmed(&dir.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Enables every controller the mount root offers down to (not including) `dir`, so that its
/// interface files exist. The leaf itself keeps no `subtree_control`: it holds processes.
pub fn enable_controllers(mount: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut cur = mount.to_owned();
    let parts: Vec<_> = rel.components().collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        enable_in(&cur);
        cur.push(part);
    }
    enable_in(&cur);
    Ok(())
}

fn enable_in(dir: &Path) {
    let have = controllers(dir);
    let on: BTreeSet<String> = read_trimmed(&dir.join("cgroup.subtree_control"))
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let file = dir.join("cgroup.subtree_control");
    for c in have.difference(&on) {
        // One at a time: a controller the kernel refuses here (cpu with realtime tasks, say)
        // must not keep the others off.
        if let Err(e) = std::fs::write(&file, format!("+{c}")) {
            tracing::debug!("enable {c} in {}: {e}", dir.display());
        }
    }
}

/// runc's mapping of cgroup v1 cpu.shares [2, 262144] onto cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio.weight [10, 1000] onto io.weight [1, 10000].
pub fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Applies `res` to `dir`, touching only controllers in `enabled` (on a hybrid host the unified
/// hierarchy may carry just one of them).
pub fn apply(dir: &Path, res: &Resources, enabled: &BTreeSet<String>) -> Result<(), CgroupError> {
    let on = |c: &str| enabled.contains(c);
    if let (Some(m), true) = (&res.memory, on("memory")) {
        memory(dir, m)?;
    }
    if let Some(c) = &res.cpu {
        if on("cpu") {
            cpu(dir, c)?;
        }
        if on("cpuset") {
            cpuset(dir, c)?;
        }
    }
    if let (Some(p), true) = (&res.pids, on("pids")) {
        write_file(
            dir,
            "pids.max",
            &limit(if p.limit > 0 { p.limit } else { -1 }),
        )?;
    }
    if let (Some(b), true) = (&res.block_io, on("io")) {
        io(dir, b)?;
    }
    if on("hugetlb") {
        for h in &res.hugepage_limits {
            write_file(
                dir,
                &format!("hugetlb.{}.max", h.page_size),
                &h.limit.to_string(),
            )?;
        }
    }
    if on("rdma") {
        for (dev, r) in &res.rdma {
            let mut v = dev.clone();
            if let Some(h) = r.hca_handles {
                v.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = r.hca_objects {
                v.push_str(&format!(" hca_object={o}"));
            }
            write_file(dir, "rdma.max", &v)?;
        }
    }
    unified(dir, res)
}

fn memory(dir: &Path, m: &Memory) -> Result<(), CgroupError> {
    if let Some(r) = m.reservation {
        write_file(dir, "memory.low", &limit(r))?;
    }
    if let Some(swap) = m.swap {
        // OCI's swap is memory+swap (v1 memsw); v2 limits swap alone.
        let v = match (swap, m.limit) {
            (s, _) if s < 0 => "max".to_string(),
            (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
            (s, _) => s.to_string(),
        };
        if dir.join("memory.swap.max").exists() {
            write_file(dir, "memory.swap.max", &v)?;
        } else if v != "0" && v != "max" {
            tracing::warn!("memory.swap is set but the kernel has no swap accounting");
        }
    }
    if let Some(l) = m.limit {
        write_file(dir, "memory.max", &limit(l))?;
    }
    if m.disable_oom_killer == Some(true) {
        tracing::warn!("memory.disableOOMKiller has no cgroup v2 equivalent; ignored");
    }
    if let Some(s) = m.swappiness {
        tracing::warn!("memory.swappiness {s} has no cgroup v2 equivalent; ignored");
    }
    Ok(())
}

fn cpu(dir: &Path, c: &Cpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares.filter(|s| *s > 0) {
        write_file(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
    }
    if c.quota.is_some() || c.period.is_some() {
        let quota = match c.quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => read_trimmed(&dir.join("cpu.max"))
                .and_then(|s| s.split_whitespace().next().map(str::to_owned))
                .unwrap_or_else(|| "max".into()),
        };
        let period = c.period.filter(|p| *p > 0).unwrap_or(100_000);
        write_file(dir, "cpu.max", &format!("{quota} {period}"))?;
    }
    if let Some(b) = c.burst {
        write_file(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle {
        write_file(dir, "cpu.idle", &i.to_string())?;
    }
    if c.realtime_runtime.is_some() || c.realtime_period.is_some() {
        tracing::warn!("cpu.realtimeRuntime/realtimePeriod have no cgroup v2 equivalent; ignored");
    }
    Ok(())
}

fn io(dir: &Path, b: &BlockIo) -> Result<(), CgroupError> {
    // BFQ takes blkio's scale as is; the generic io.weight has its own.
    let bfq = dir.join("io.bfq.weight").exists();
    if let Some(w) = b.weight {
        if bfq {
            write_file(dir, "io.bfq.weight", &w.to_string())?;
        } else {
            write_file(
                dir,
                "io.weight",
                &format!("default {}", blkio_to_io_weight(w)),
            )?;
        }
    }
    for d in &b.weight_device {
        let Some(w) = d.weight else { continue };
        let (file, v) = if bfq {
            ("io.bfq.weight", u64::from(w))
        } else {
            ("io.weight", blkio_to_io_weight(w))
        };
        write_file(dir, file, &format!("{}:{} {v}", d.major, d.minor))?;
    }
    let throttles = [
        ("rbps", &b.throttle_read_bps_device),
        ("wbps", &b.throttle_write_bps_device),
        ("riops", &b.throttle_read_iops_device),
        ("wiops", &b.throttle_write_iops_device),
    ];
    for (key, list) in throttles {
        for t in list {
            let rate = if t.rate == 0 {
                "max".to_string()
            } else {
                t.rate.to_string()
            };
            write_file(
                dir,
                "io.max",
                &format!("{}:{} {key}={rate}", t.major, t.minor),
            )?;
        }
    }
    Ok(())
}

/// `linux.resources.unified`: raw interface files, each named plainly inside `dir`.
fn unified(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
    for (key, value) in &res.unified {
        let plain = !key.is_empty()
            && !key.contains('/')
            && key != "."
            && key != ".."
            && !key.starts_with("cgroup.")
            || key == "cgroup.freeze"
            || key == "cgroup.max.depth"
            || key == "cgroup.max.descendants";
        if !plain {
            return Err(CgroupError::BadValue {
                field: format!("linux.resources.unified[{key:?}]"),
                reason: "not a writable cgroup interface file name".into(),
            });
        }
        if !dir.join(key).exists() {
            return Err(CgroupError::BadValue {
                field: format!("linux.resources.unified[{key:?}]"),
                reason: format!(
                    "{} has no such file (controller not enabled?)",
                    dir.display()
                ),
            });
        }
        write_file(dir, key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }
}
