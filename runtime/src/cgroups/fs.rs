//! The cgroupfs manager: the container's directory in every mounted hierarchy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use super::devices::{self, Rule};
use super::join::SelfJoin;
use super::oom::{MemoryDir, OomWatch};
use super::util::{io_err, read_trimmed};
use super::{hierarchy, stats, v1, v2};
use super::{CgroupError, CgroupManager, CgroupState};
use crate::spec::Resources;

pub struct FsManager {
    state: CgroupState,
    /// Hierarchy name → its mountpoint, known while creating.
    mounts: BTreeMap<String, PathBuf>,
}

impl FsManager {
    /// Plans `rel` under every mounted hierarchy.
    pub fn new(rel: &Path) -> Result<FsManager, CgroupError> {
        let hs = hierarchy::hierarchies();
        if hs.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let mut state = CgroupState::default();
        let mut mounts = BTreeMap::new();
        for h in hs {
            state.paths.insert(h.name.clone(), h.mountpoint.join(rel));
            mounts.insert(h.name, h.mountpoint);
        }
        Ok(FsManager { state, mounts })
    }

    /// Marks the state as a systemd scope's, so that later commands pick the systemd manager.
    pub fn set_systemd_unit(&mut self, unit: &str) {
        self.state.systemd_unit = Some(unit.to_owned());
    }

    pub fn from_state(state: CgroupState) -> FsManager {
        FsManager {
            state,
            mounts: BTreeMap::new(),
        }
    }

    /// The v1 hierarchy directory holding controller `ctrl`.
    fn v1_dir(&self, ctrl: &str) -> Option<&PathBuf> {
        self.state
            .paths
            .iter()
            .find(|(name, _)| name.split(',').any(|c| c == ctrl))
            .map(|(_, d)| d)
    }

    /// Whether some hierarchy of the container offers `ctrl`.
    fn has_controller(&self, ctrl: &str) -> bool {
        self.v1_dir(ctrl).is_some()
            || self
                .state
                .paths
                .get("unified")
                .is_some_and(|d| v2::controllers(d).contains(ctrl))
    }

    /// Limits the host cannot enforce are reported, not silently dropped.
    fn warn_missing(&self, r: &Resources) {
        let wanted = [
            ("memory", r.memory.is_some()),
            (
                "cpu",
                r.cpu
                    .as_ref()
                    .is_some_and(|c| c.shares.is_some() || c.quota.is_some()),
            ),
            (
                "cpuset",
                r.cpu
                    .as_ref()
                    .is_some_and(|c| c.cpus.is_some() || c.mems.is_some()),
            ),
            ("pids", r.pids.is_some()),
            ("hugetlb", !r.hugepage_limits.is_empty()),
        ];
        for (ctrl, asked) in wanted {
            if asked && !self.has_controller(ctrl) {
                tracing::warn!(
                    "linux.resources asks for {ctrl} limits but no {ctrl} controller is available"
                );
            }
        }
    }

    fn memory_dir(&self) -> Option<MemoryDir> {
        if let Some(d) = self.v1_dir("memory") {
            return Some(MemoryDir::V1(d.clone()));
        }
        let d = self.state.paths.get("unified")?;
        d.join("memory.events")
            .exists()
            .then(|| MemoryDir::V2(d.clone()))
    }

    fn dirs(&self) -> impl Iterator<Item = (&String, &PathBuf)> {
        self.state.paths.iter()
    }

    /// The directory that lists the container's processes: one tracking every task.
    fn primary(&self) -> Option<&PathBuf> {
        ["unified", "pids", "memory", "systemd"]
            .iter()
            .find_map(|k| self.state.paths.get(*k).filter(|p| p.exists()))
            .or_else(|| self.state.paths.values().find(|p| p.exists()))
    }

    pub fn is_frozen(&self) -> bool {
        if let Some(dir) = self.v1_dir("freezer") {
            if let Ok(s) = std::fs::read_to_string(dir.join("freezer.state")) {
                return s.trim() == "FROZEN";
            }
        }
        if let Some(dir) = self.state.paths.get("unified") {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.freeze")) {
                return s.trim() == "1";
            }
        }
        false
    }
}

/// Polls `done` for up to a second: freezing is asynchronous in the kernel.
fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut nap = Duration::from_micros(200);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// A new v1 cpuset group starts with no cpus and no memory nodes, and no task can join it until it has
/// some: inherit the parent's.
fn init_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = match dir.parent() {
        Some(p) => p,
        None => return Ok(()),
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let cur = std::fs::read_to_string(&own).map_err(io_err(&own))?;
        if cur.trim().is_empty() {
            let src = parent.join(file);
            let val = std::fs::read_to_string(&src).map_err(io_err(&src))?;
            std::fs::write(&own, val.trim()).map_err(io_err(&own))?;
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, returning whether `dir` itself is new.
fn make_dir(dir: &Path, cpuset: bool) -> Result<bool, CgroupError> {
    if dir.is_dir() {
        return Ok(false);
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_owned());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(d)(e)),
        }
        if cpuset {
            init_cpuset(d)?;
        }
    }
    Ok(true)
}

impl CgroupManager for FsManager {
    fn create(&mut self) -> Result<(), CgroupError> {
        let mut owned = Vec::new();
        for (name, dir) in &self.state.paths {
            let cpuset = name.split(',').any(|c| c == "cpuset");
            if make_dir(dir, cpuset)? {
                owned.push(dir.clone());
            } else if cpuset {
                // A group made by someone else may still lack cpus and memory nodes.
                init_cpuset(dir)?;
            }
            if name == "unified" {
                if let Some(mount) = self.mounts.get(name) {
                    v2::enable_controllers(mount, dir)?;
                }
            }
        }
        self.state.owned = owned;
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for (_, dir) in self.dirs() {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, &pid).map_err(io_err(&procs))?;
        }
        Ok(())
    }

    fn self_join(&self) -> Result<Option<SelfJoin>, CgroupError> {
        SelfJoin::open(self.dirs()).map(Some)
    }

    fn apply(&self, resources: &Resources, rules: &[Rule]) -> Result<(), CgroupError> {
        self.warn_missing(resources);
        let v1_devices = self.v1_dir("devices").is_some();
        for (name, dir) in self.dirs() {
            if name == "unified" {
                v2::apply(dir, resources, &v2::controllers(dir))?;
                if !v1_devices {
                    devices::ebpf::apply(dir, rules)?;
                }
                continue;
            }
            for ctrl in name.split(',') {
                v1::apply(ctrl, dir, resources, rules)?;
            }
        }
        Ok(())
    }

    fn stats(&self) -> stats::Stats {
        let mut v1 = BTreeMap::new();
        let mut unified = None;
        for (name, dir) in self.dirs() {
            if name == "unified" {
                unified = Some(dir.as_path());
            } else {
                for c in name.split(',') {
                    v1.insert(c, dir.as_path());
                }
            }
        }
        stats::collect(&stats::Dirs { v1, unified })
    }

    fn oom_kills(&self) -> u64 {
        self.memory_dir().map_or(0, |m| m.oom_kills())
    }

    fn oom_watch(&self) -> Result<Option<OomWatch>, CgroupError> {
        self.memory_dir().map(OomWatch::new).transpose()
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = match self.primary() {
            Some(d) => d,
            None => return Ok(Vec::new()),
        };
        let procs = dir.join("cgroup.procs");
        let text = std::fs::read_to_string(&procs).map_err(io_err(&procs))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        if signal == libc::SIGKILL {
            // The container sits in the cgroup2 hierarchy on hybrid hosts too, where that
            // directory tracks every one of its tasks just as well.
            if let Some(dir) = self.state.paths.get("unified") {
                if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                    return Ok(());
                }
            }
        }
        for pid in self.pids()? {
            // SAFETY: kill has no memory effects; a pid that has gone away just returns ESRCH.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        if let Some(dir) = self.v1_dir("freezer") {
            let f = dir.join("freezer.state");
            let v = if frozen { "FROZEN" } else { "THAWED" };
            std::fs::write(&f, v).map_err(io_err(&f))?;
            // FREEZING means some task has not stopped yet.
            wait_for(|| read_trimmed(&f).as_deref() == Some(v));
            return Ok(());
        }
        if let Some(dir) = self.state.paths.get("unified") {
            let f = dir.join("cgroup.freeze");
            std::fs::write(&f, if frozen { "1" } else { "0" }).map_err(io_err(&f))?;
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            let events = dir.join("cgroup.events");
            wait_for(|| {
                std::fs::read_to_string(&events).is_ok_and(|s| s.lines().any(|l| l == want))
            });
            return Ok(());
        }
        Err(CgroupError::NoHierarchy)
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in &self.state.owned {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        if Instant::now() > deadline {
                            return Err(CgroupError::Busy { path: dir.clone() });
                        }
                        // Thaw first: a frozen task cannot die.
                        let _ = self.freeze(false);
                        let _ = self.kill_all(libc::SIGKILL);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(io_err(dir)(e)),
                }
            }
        }
        Ok(())
    }

    fn state(&self) -> CgroupState {
        self.state.clone()
    }
}
