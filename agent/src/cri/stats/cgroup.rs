//! Where a container's or a pod's cgroups are, and their usage in the shape the CRI reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skiff_runtime::cgroups::hierarchy::hierarchies;
use skiff_runtime::cgroups::stats::{collect, Dirs, Stats};
use skiff_runtime::cgroups::CgroupState;

use crate::config::CgroupDriver;

/// One directory per mounted hierarchy: v1 controllers by name, and the unified one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupDirs {
    v1: BTreeMap<String, PathBuf>,
    unified: Option<PathBuf>,
}

/// The part of the runtime's `state.json` that says where the container's cgroups are.
#[derive(Deserialize)]
struct StateCgroups {
    cgroup: CgroupState,
}

impl CgroupDirs {
    /// From the runtime's record of a container's cgroups (`cpu,cpuacct` names two controllers).
    pub fn from_state(paths: &BTreeMap<String, PathBuf>) -> CgroupDirs {
        let mut dirs = CgroupDirs::default();
        for (name, dir) in paths {
            if name == "unified" {
                dirs.unified = Some(dir.clone());
            } else {
                for ctrl in name.split(',') {
                    dirs.v1.insert(ctrl.to_string(), dir.clone());
                }
            }
        }
        dirs
    }

    /// The cgroups of container `id` under the runtime state root, read without taking the
    /// container's lock (stats must not wait behind a long exec). `None` once it is deleted.
    pub fn of_container(runtime_root: &Path, id: &str) -> Option<CgroupDirs> {
        let data = std::fs::read(runtime_root.join(id).join("state.json")).ok()?;
        let state: StateCgroups = serde_json::from_slice(&data).ok()?;
        let dirs = Self::from_state(&state.cgroup.paths);
        dirs.exists().then_some(dirs)
    }

    /// A pod's cgroup from its parent as kubelet gave it, in either driver's syntax; `None` when
    /// the pod has none of its own or it does not exist.
    pub fn of_pod(parent: &str, driver: CgroupDriver) -> Option<CgroupDirs> {
        let rel = pod_relative_path(parent, driver)?;
        let mut paths = BTreeMap::new();
        for h in hierarchies() {
            let dir = h.mountpoint.join(&rel);
            if dir.is_dir() {
                paths.insert(h.name, dir);
            }
        }
        let dirs = Self::from_state(&paths);
        dirs.has_accounting().then_some(dirs)
    }

    fn exists(&self) -> bool {
        self.v1
            .values()
            .chain(self.unified.iter())
            .any(|d| d.is_dir())
    }

    /// Whether CPU or memory usage can be read here.
    fn has_accounting(&self) -> bool {
        self.v1.contains_key("cpuacct")
            || self.v1.contains_key("memory")
            || self
                .unified
                .as_ref()
                .is_some_and(|u| u.join("cpu.stat").exists())
    }

    pub fn sample(&self) -> Sample {
        self.sample_of(&self.stats())
    }

    /// Everything the cgroups count, for the metrics that need more than a `Sample`.
    pub fn stats(&self) -> Stats {
        let v1 = self
            .v1
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_path()))
            .collect();
        collect(&Dirs {
            v1,
            unified: self.unified.as_deref(),
        })
    }

    pub fn sample_of(&self, stats: &Stats) -> Sample {
        Sample::from_stats(stats, self.v1.contains_key("memory"))
    }

    /// The CPU settings in force: v1's `cpu.*` files, else v2's `cpu.weight` and `cpu.max`.
    pub fn cpu_spec(&self) -> CpuSpec {
        let read = |dir: &Path, f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let num = |s: Option<String>| s.and_then(|s| s.parse::<i64>().ok());
        if let Some(dir) = self.v1.get("cpu") {
            return CpuSpec {
                shares: num(read(dir, "cpu.shares")).unwrap_or(0) as u64,
                period: num(read(dir, "cpu.cfs_period_us")).unwrap_or(0) as u64,
                quota: num(read(dir, "cpu.cfs_quota_us"))
                    .filter(|q| *q > 0)
                    .map(|q| q as u64),
            };
        }
        let Some(dir) = &self.unified else {
            return CpuSpec::default();
        };
        let weight = num(read(dir, "cpu.weight")).unwrap_or(0) as u64;
        let max = read(dir, "cpu.max").unwrap_or_default();
        let mut f = max.split_whitespace();
        let quota = f.next().and_then(|q| q.parse().ok());
        let period = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        CpuSpec {
            shares: weight_to_shares(weight),
            period,
            quota,
        }
    }

    /// The file listing the cgroup's processes (any hierarchy has them all).
    pub fn procs_file(&self) -> Option<PathBuf> {
        ["pids", "memory", "cpuacct", "cpu"]
            .iter()
            .find_map(|c| self.v1.get(*c))
            .or(self.unified.as_ref())
            .map(|d| d.join("cgroup.procs"))
    }
}

/// CPU shares, CFS period and quota (microseconds); `quota` is `None` when unlimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuSpec {
    pub shares: u64,
    pub period: u64,
    pub quota: Option<u64>,
}

/// v2's `cpu.weight` (1-10000) back to the v1 shares (2-262144) it was converted from.
fn weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    2 + (weight - 1) * 262142 / 9999
}

pub use crate::cri::sandbox::resources::pod_relative_path;

/// Usage at one instant, in bytes and nanoseconds, whichever cgroup version it came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub cpu_nanos: u64,
    pub cpu_user_nanos: u64,
    pub cpu_system_nanos: u64,
    pub memory_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub swap_usage: u64,
    pub swap_limit: Option<u64>,
    pub oom_kills: u64,
    pub pids: u64,
}

/// v1 reads "unlimited" as the largest page-aligned i64, v2 as `max`.
pub fn limit(v: u64) -> Option<u64> {
    (v != 0 && v < 1 << 60).then_some(v)
}

impl Sample {
    pub fn from_stats(s: &Stats, v1_memory: bool) -> Sample {
        let raw = &s.memory.raw;
        // v1's memory.stat has the hierarchical `total_*` beside the cgroup's own values.
        let get = |k: &str| {
            raw.get(&format!("total_{k}"))
                .or_else(|| raw.get(k))
                .copied()
                .unwrap_or(0)
        };
        let usage = s.memory.usage.usage;
        let (rss, swap_usage, swap_limit) = if v1_memory {
            let memsw = &s.memory.swap;
            let swap_limit = limit(memsw.limit)
                .zip(limit(s.memory.usage.limit))
                .map(|(sw, mem)| sw.saturating_sub(mem));
            (get("rss"), memsw.usage.saturating_sub(usage), swap_limit)
        } else {
            (get("anon"), s.memory.swap.usage, limit(s.memory.swap.limit))
        };
        Sample {
            cpu_nanos: s.cpu.usage.total,
            cpu_user_nanos: s.cpu.usage.user,
            cpu_system_nanos: s.cpu.usage.kernel,
            memory_usage: usage,
            working_set: usage.saturating_sub(get("inactive_file")),
            rss,
            cache: s.memory.cache,
            page_faults: get("pgfault"),
            major_page_faults: get("pgmajfault"),
            memory_limit: limit(s.memory.usage.limit),
            swap_usage,
            swap_limit,
            oom_kills: raw.get("oom_kill").copied().unwrap_or(0),
            pids: s.pids.current,
        }
    }

    /// What a pod without a cgroup of its own uses: the sum of its containers.
    pub fn add(&mut self, o: &Sample) {
        self.cpu_nanos += o.cpu_nanos;
        self.cpu_user_nanos += o.cpu_user_nanos;
        self.cpu_system_nanos += o.cpu_system_nanos;
        self.memory_usage += o.memory_usage;
        self.working_set += o.working_set;
        self.rss += o.rss;
        self.cache += o.cache;
        self.page_faults += o.page_faults;
        self.major_page_faults += o.major_page_faults;
        self.swap_usage += o.swap_usage;
        self.oom_kills += o.oom_kills;
        self.pids += o.pids;
        self.memory_limit = None;
        self.swap_limit = None;
    }

    /// Bytes the container may still use before it hits its limit; 0 when unlimited, as kubelet
    /// reads it.
    pub fn available(&self) -> u64 {
        self.memory_limit
            .map_or(0, |l| l.saturating_sub(self.working_set))
    }

    pub fn swap_available(&self) -> u64 {
        self.swap_limit
            .map_or(0, |l| l.saturating_sub(self.swap_usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::cgroups::stats::{Memory, MemoryEntry};

    #[test]
    fn v1_memory_working_set_and_swap() {
        let mut s = Stats::default();
        s.cpu.usage.total = 42;
        s.memory = Memory {
            usage: MemoryEntry {
                limit: 100 << 20,
                usage: 60 << 20,
                ..Default::default()
            },
            swap: MemoryEntry {
                limit: 150 << 20,
                usage: 70 << 20,
                ..Default::default()
            },
            raw: [
                ("inactive_file".to_string(), 1),
                ("total_inactive_file".to_string(), 10 << 20),
                ("total_rss".to_string(), 40 << 20),
                ("total_pgfault".to_string(), 7),
                ("total_pgmajfault".to_string(), 2),
            ]
            .into(),
            ..Default::default()
        };
        let x = Sample::from_stats(&s, true);
        assert_eq!(x.cpu_nanos, 42);
        assert_eq!(x.working_set, 50 << 20);
        assert_eq!(x.rss, 40 << 20);
        assert_eq!(x.available(), 50 << 20);
        assert_eq!(x.swap_usage, 10 << 20);
        assert_eq!(x.swap_limit, Some(50 << 20));
        assert_eq!((x.page_faults, x.major_page_faults), (7, 2));
    }

    #[test]
    fn v2_memory_and_unlimited() {
        let mut s = Stats::default();
        s.memory.usage = MemoryEntry {
            limit: u64::MAX,
            usage: 5000,
            ..Default::default()
        };
        s.memory.swap.usage = 300;
        s.memory.swap.limit = u64::MAX;
        s.memory.raw = [
            ("inactive_file".to_string(), 1000),
            ("anon".to_string(), 3000),
        ]
        .into();
        let x = Sample::from_stats(&s, false);
        assert_eq!(x.working_set, 4000);
        assert_eq!(x.rss, 3000);
        assert_eq!(x.memory_limit, None);
        assert_eq!(x.available(), 0);
        assert_eq!(x.swap_usage, 300);
        // v1's "unlimited".
        assert_eq!(limit(9223372036854771712), None);
        let mut sum = x;
        sum.add(&x);
        assert_eq!(sum.working_set, 8000);
    }

    #[test]
    fn pod_parents_in_both_syntaxes() {
        let fs = CgroupDriver::Cgroupfs;
        let sd = CgroupDriver::Systemd;
        assert_eq!(
            pod_relative_path("/kubepods/burstable/pod1", fs),
            Some(PathBuf::from("kubepods/burstable/pod1"))
        );
        assert_eq!(
            pod_relative_path("kubepods-burstable-pod1.slice", sd),
            Some(PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
            ))
        );
        assert_eq!(pod_relative_path("", fs), None);
        assert_eq!(pod_relative_path("/", fs), None);
        assert_eq!(pod_relative_path("/kubepods/../etc", fs), None);
    }

    #[test]
    fn state_names_split_into_controllers() {
        let paths: BTreeMap<String, PathBuf> = [
            ("cpu,cpuacct".to_string(), PathBuf::from("/c/x")),
            ("memory".to_string(), PathBuf::from("/m/x")),
            ("unified".to_string(), PathBuf::from("/u/x")),
        ]
        .into();
        let d = CgroupDirs::from_state(&paths);
        assert_eq!(d.v1["cpuacct"], Path::new("/c/x"));
        assert_eq!(d.v1["cpu"], Path::new("/c/x"));
        assert_eq!(d.unified.as_deref(), Some(Path::new("/u/x")));
        assert!(d.has_accounting());
    }

    /// A real process in real v1/v2 cgroups made for the test, found through a runtime state
    /// file as skiffd finds a container's: its CPU time and its shared memory show up.
    #[test]
    fn real_cgroup_through_a_state_file() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating cgroups needs root");
            return;
        }
        let name = format!("skiff-stats-test-{}", std::process::id());
        let mut paths = BTreeMap::new();
        for h in hierarchies() {
            let wanted = h.name.split(',').any(|c| c == "cpuacct" || c == "memory");
            if wanted || (h.v2 && h.mountpoint == Path::new("/sys/fs/cgroup")) {
                let dir = h.mountpoint.join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                paths.insert(h.name.clone(), dir);
            }
        }
        assert!(!paths.is_empty(), "no cpu or memory hierarchy");
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("c1")).unwrap();
        let state = serde_json::json!({"cgroup": {"paths": paths}, "other": 1});
        std::fs::write(root.path().join("c1/state.json"), state.to_string()).unwrap();

        let shm = format!("/dev/shm/{name}");
        let script = format!(
            "read go; dd if=/dev/zero of={shm} bs=1M count=24 2>/dev/null; \
             i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        for dir in paths.values() {
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        }
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let status = child.wait().unwrap();

        let dirs = CgroupDirs::of_container(root.path(), "c1").expect("found");
        let s = dirs.sample();
        let _ = std::fs::remove_file(&shm);
        for dir in paths.values() {
            let _ = std::fs::remove_dir(dir);
        }
        assert!(status.success());
        assert!(s.cpu_nanos > 10_000_000, "{s:?}");
        assert!(s.working_set >= 20 << 20, "{s:?}");
        assert!(s.memory_usage >= s.working_set, "{s:?}");
        assert!(CgroupDirs::of_container(root.path(), "c2").is_none());
    }
}
