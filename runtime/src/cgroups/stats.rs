//! Resource usage of a container's cgroups, in the JSON shape of `runc events`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::util::{read_kv, read_trimmed, read_u64};

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    pub periods: u64,
    #[serde(rename = "throttledPeriods", skip_serializing_if = "zero")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime", skip_serializing_if = "zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// `max` (v2) and v1's page-rounded "unlimited" both read as u64::MAX.
fn read_limit(path: &Path) -> u64 {
    match read_trimmed(path).as_deref() {
        Some("max") => u64::MAX,
        Some(s) => s.parse().unwrap_or(0),
        None => 0,
    }
}

fn u(dir: &Path, file: &str) -> u64 {
    read_u64(&dir.join(file)).unwrap_or(0)
}

/// The hierarchies a stats reader may look at.
pub struct Dirs<'a> {
    pub v1: BTreeMap<&'a str, &'a Path>,
    pub unified: Option<&'a Path>,
}

impl Dirs<'_> {
    fn v1(&self, ctrl: &str) -> Option<&Path> {
        self.v1.get(ctrl).copied()
    }
}

pub fn collect(d: &Dirs) -> Stats {
    let mut s = Stats::default();
    let v2 = d.unified;
    match (d.v1("cpuacct"), v2) {
        (Some(dir), _) => cpu_v1(dir, d.v1("cpu"), &mut s.cpu),
        (None, Some(dir)) => cpu_v2(dir, &mut s.cpu),
        _ => {}
    }
    match (d.v1("memory"), v2) {
        (Some(dir), _) => memory_v1(dir, &mut s.memory),
        (None, Some(dir)) if dir.join("memory.current").exists() => memory_v2(dir, &mut s.memory),
        _ => {}
    }
    if let Some(dir) = d
        .v1("pids")
        .or(v2.filter(|p| p.join("pids.current").exists()))
    {
        s.pids.current = u(dir, "pids.current");
        s.pids.limit = read_limit(&dir.join("pids.max"));
    }
    match (d.v1("blkio"), v2) {
        (Some(dir), _) => blkio_v1(dir, &mut s.blkio),
        (None, Some(dir)) => blkio_v2(dir, &mut s.blkio),
        _ => {}
    }
    if let Some(dir) = d.v1("hugetlb") {
        s.hugetlb = hugetlb(dir, "usage_in_bytes", false);
    } else if let Some(dir) = v2 {
        s.hugetlb = hugetlb(dir, "current", true);
    }
    s
}

/// USER_HZ is 100 on every Linux architecture skiff builds for.
const NS_PER_TICK: u64 = 10_000_000;

fn cpu_v1(acct: &Path, cpu: Option<&Path>, out: &mut Cpu) {
    out.usage.total = u(acct, "cpuacct.usage");
    out.usage.percpu = read_trimmed(&acct.join("cpuacct.usage_percpu"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let st = read_kv(&acct.join("cpuacct.stat"));
    out.usage.user = st.get("user").copied().unwrap_or(0) * NS_PER_TICK;
    out.usage.kernel = st.get("system").copied().unwrap_or(0) * NS_PER_TICK;
    if let Some(cpu) = cpu {
        let st = read_kv(&cpu.join("cpu.stat"));
        out.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
        out.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
        out.throttling.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
    }
}

fn cpu_v2(dir: &Path, out: &mut Cpu) {
    let st = read_kv(&dir.join("cpu.stat"));
    let g = |k: &str| st.get(k).copied().unwrap_or(0);
    out.usage.total = g("usage_usec") * 1000;
    out.usage.user = g("user_usec") * 1000;
    out.usage.kernel = g("system_usec") * 1000;
    out.throttling.periods = g("nr_periods");
    out.throttling.throttled_periods = g("nr_throttled");
    out.throttling.throttled_time = g("throttled_usec") * 1000;
}

fn entry_v1(dir: &Path, prefix: &str) -> MemoryEntry {
    MemoryEntry {
        limit: read_limit(&dir.join(format!("{prefix}.limit_in_bytes"))),
        usage: u(dir, &format!("{prefix}.usage_in_bytes")),
        max: u(dir, &format!("{prefix}.max_usage_in_bytes")),
        failcnt: u(dir, &format!("{prefix}.failcnt")),
    }
}

fn memory_v1(dir: &Path, out: &mut Memory) {
    out.usage = entry_v1(dir, "memory");
    out.swap = entry_v1(dir, "memory.memsw");
    out.kernel = entry_v1(dir, "memory.kmem");
    out.kernel_tcp = entry_v1(dir, "memory.kmem.tcp");
    out.raw = read_kv(&dir.join("memory.stat"));
    out.cache = out
        .raw
        .get("total_cache")
        .or(out.raw.get("cache"))
        .copied()
        .unwrap_or(0);
    if let Some(n) = read_kv(&dir.join("memory.oom_control")).get("oom_kill") {
        out.raw.insert("oom_kill".into(), *n);
    }
}

fn memory_v2(dir: &Path, out: &mut Memory) {
    let events = read_kv(&dir.join("memory.events"));
    out.usage = MemoryEntry {
        limit: read_limit(&dir.join("memory.max")),
        usage: u(dir, "memory.current"),
        max: u(dir, "memory.peak"),
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    out.swap = MemoryEntry {
        limit: read_limit(&dir.join("memory.swap.max")),
        usage: u(dir, "memory.swap.current"),
        max: u(dir, "memory.swap.peak"),
        failcnt: 0,
    };
    out.raw = read_kv(&dir.join("memory.stat"));
    out.cache = out.raw.get("file").copied().unwrap_or(0);
    for k in ["oom", "oom_kill"] {
        if let Some(v) = events.get(k) {
            out.raw.insert(k.into(), *v);
        }
    }
}

fn blkio_v1(dir: &Path, out: &mut Blkio) {
    let parse = |file: &str| -> Vec<BlkioEntry> {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (maj, min) = f.next()?.split_once(':')?;
                let op = f.next()?.to_owned();
                let value = f.next()?.parse().ok()?;
                Some(BlkioEntry {
                    major: maj.parse().ok()?,
                    minor: min.parse().ok()?,
                    op,
                    value,
                })
            })
            .collect()
    };
    out.io_service_bytes_recursive = parse("blkio.throttle.io_service_bytes_recursive");
    out.io_serviced_recursive = parse("blkio.throttle.io_serviced_recursive");
}

fn blkio_v2(dir: &Path, out: &mut Blkio) {
    let text = std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((maj, min)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let value = v.parse().unwrap_or(0);
            let (list, op) = match k {
                "rbytes" => (&mut out.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut out.io_service_bytes_recursive, "Write"),
                "rios" => (&mut out.io_serviced_recursive, "Read"),
                "wios" => (&mut out.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
}

fn hugetlb(dir: &Path, usage_suffix: &str, v2: bool) -> BTreeMap<String, Hugetlb> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(size) = name
            .strip_prefix("hugetlb.")
            .and_then(|r| r.strip_suffix(&format!(".{usage_suffix}")))
        else {
            continue;
        };
        if size.contains('.') {
            continue;
        }
        let h = if v2 {
            Hugetlb {
                usage: u(dir, &name),
                max: read_limit(&dir.join(format!("hugetlb.{size}.max"))),
                failcnt: read_kv(&dir.join(format!("hugetlb.{size}.events")))
                    .get("max")
                    .copied()
                    .unwrap_or(0),
            }
        } else {
            Hugetlb {
                usage: u(dir, &name),
                max: u(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                failcnt: u(dir, &format!("hugetlb.{size}.failcnt")),
            }
        };
        out.insert(size.to_owned(), h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_v2() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("io.stat"),
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        )
        .unwrap();
        let mut b = Blkio::default();
        blkio_v2(dir.path(), &mut b);
        assert_eq!(b.io_service_bytes_recursive.len(), 2);
        assert_eq!(b.io_service_bytes_recursive[1].value, 8192);
        assert_eq!(b.io_serviced_recursive[0].op, "Read");
    }
}
