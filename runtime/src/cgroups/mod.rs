//! Control groups: where a container's processes live and what limits them.
//!
//! One [`CgroupManager`] seam. The cgroupfs manager in [`fs`] places a container in every hierarchy
//! the host mounts (unified, hybrid or legacy) and hands each directory to the writer for its
//! version: [`v1`] per controller, [`v2`] for the unified hierarchy (all controllers on a unified
//! host, whatever the host enabled there on a hybrid one). [`devices`] turns device rules into v1
//! lines or a v2 eBPF program, [`stats`] reads usage in `runc events` form, [`oom`] counts and watches
//! OOM kills.

pub mod dbus;
pub mod devices;
pub mod fs;
pub mod hierarchy;
pub mod join;
pub mod oom;
pub mod stats;
pub mod systemd;
mod util;
pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::{Resources, Spec};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("linux.cgroupsPath {0:?} is invalid: {1}")]
    BadPath(String, &'static str),
    #[error("no cgroup hierarchy is mounted on this host")]
    NoHierarchy,
    #[error("cgroup {path} still has processes after kill")]
    Busy { path: PathBuf },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("{field}: {reason}")]
    BadValue { field: String, reason: String },
    #[error("systemd unit {unit}: {message}")]
    Systemd { unit: String, message: String },
    #[error("cgroup {path}: {what}: {source}")]
    Bpf {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
}

/// What a later command needs to find the container's cgroups again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupState {
    /// Hierarchy name (`memory`, `cpu`, `systemd`, `unified`, ...) → the container's directory in it.
    pub paths: BTreeMap<String, PathBuf>,
    /// Directories this container created, and so may remove.
    #[serde(default)]
    pub owned: Vec<PathBuf>,
    /// The transient scope systemd made for the container, when the systemd manager is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
}

pub trait CgroupManager {
    /// Creates the container's cgroup directories.
    fn create(&mut self) -> Result<(), CgroupError>;
    /// Moves a process (and so its future children) into the container's cgroups.
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    /// What a forked child needs to join the container's cgroups by itself, which costs the host far
    /// less than [`add_process`](Self::add_process); `None` where only `add_process` can place it.
    fn self_join(&self) -> Result<Option<join::SelfJoin>, CgroupError> {
        Ok(None)
    }
    /// Applies `linux.resources` and, when `devices` is not empty, replaces the device rules.
    fn apply(&self, resources: &Resources, devices: &[devices::Rule]) -> Result<(), CgroupError>;
    /// Current usage, in the shape of `runc events --stats`.
    fn stats(&self) -> stats::Stats;
    /// OOM kills in the container's cgroup so far.
    fn oom_kills(&self) -> u64;
    /// A pollable OOM notification, where a memory controller is present.
    fn oom_watch(&self) -> Result<Option<oom::OomWatch>, CgroupError>;
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    fn kill_all(&self, signal: i32) -> Result<(), CgroupError>;
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError>;
    /// Removes what `create` made, killing stragglers first.
    fn destroy(&self) -> Result<(), CgroupError>;
    fn state(&self) -> CgroupState;
}

/// The cgroup path for a container: `linux.cgroupsPath`, or `/skiff/<id>` by default.
pub fn container_path(spec: &Spec, id: &str) -> Result<PathBuf, CgroupError> {
    let raw = spec.linux().and_then(|l| l.cgroups_path.clone());
    let raw = match raw {
        Some(p) if !p.is_empty() => p,
        _ => return Ok(PathBuf::from(format!("skiff/{id}"))),
    };
    if raw.contains(':') {
        // The systemd form `slice:prefix:name`, laid out as systemd would on cgroupfs.
        let parts: Vec<&str> = raw.split(':').collect();
        if parts.len() != 3 || parts[2].is_empty() {
            return Err(CgroupError::BadPath(raw, "expected slice:prefix:name"));
        }
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        let scope = if parts[1].is_empty() {
            format!("{}.scope", parts[2])
        } else {
            format!("{}-{}.scope", parts[1], parts[2])
        };
        return Ok(PathBuf::from(slice_path(slice)).join(scope));
    }
    let path = PathBuf::from(raw.trim_start_matches('/'));
    if path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
        || path.as_os_str().is_empty()
    {
        return Err(CgroupError::BadPath(
            raw,
            "must be a plain path without '..'",
        ));
    }
    Ok(path)
}

/// `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`.
pub fn slice_path(slice: &str) -> String {
    let name = slice.trim_end_matches(".slice");
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in name.split('-') {
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(part);
        out.push(format!("{acc}.slice"));
    }
    out.join("/")
}

/// Applies a container's `linux.resources` and its device rules (configured, default and those of
/// `linux.devices`).
pub fn apply_spec(cg: &dyn CgroupManager, spec: &Spec) -> Result<(), CgroupError> {
    let res = spec
        .linux()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let rules = devices::rules_for(spec, &res.devices)?;
    cg.apply(&res, &rules)
}

/// Whether systemd is asked for: by `prefer_systemd` (`--systemd-cgroup`, skiffd's
/// `cgroup_driver = "systemd"`) or by a `slice:prefix:name` cgroups path.
fn asks_for_systemd(spec: &Spec, prefer_systemd: bool) -> bool {
    prefer_systemd
        || spec
            .linux()
            .and_then(|l| l.cgroups_path.as_deref())
            .is_some_and(|p| p.contains(':'))
}

/// Which manager a new container gets: systemd when it runs here and is asked for; cgroupfs otherwise
/// (a `slice:prefix:name` path is then laid out on cgroupfs as systemd would).
fn wants_systemd(spec: &Spec, prefer_systemd: bool) -> bool {
    let asked = asks_for_systemd(spec, prefer_systemd);
    if asked && !systemd::running() {
        tracing::debug!("systemd is not running: cgroups are managed on cgroupfs");
    }
    asked && systemd::running()
}

/// The manager for a new container; `prefer_systemd` is the caller's `--systemd-cgroup`.
pub fn new_manager(
    spec: &Spec,
    id: &str,
    prefer_systemd: bool,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let mut rel = container_path(spec, id)?;
    if wants_systemd(spec, prefer_systemd) {
        if rel.extension().is_none_or(|e| e != "scope") {
            rel = PathBuf::from("system.slice").join(format!("skiff-{id}.scope"));
        }
        return Ok(Box::new(systemd::SystemdManager::new(&rel)?));
    }
    Ok(Box::new(fs::FsManager::new(&rel)?))
}

/// The manager for an existing container, from its recorded state.
pub fn from_state(state: &CgroupState) -> Box<dyn CgroupManager> {
    if state.systemd_unit.is_some() {
        return Box::new(systemd::SystemdManager::from_state(state.clone()));
    }
    Box::new(fs::FsManager::from_state(state.clone()))
}

/// Whether the container's cgroup is frozen (paused).
pub fn is_frozen(state: &CgroupState) -> bool {
    fs::FsManager::from_state(state.clone()).is_frozen()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(path: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        spec.linux = Some(crate::spec::Linux {
            cgroups_path: path.map(str::to_owned),
            ..Default::default()
        });
        spec
    }

    #[test]
    fn paths() {
        let p = |s| container_path(&spec_with(s), "c1");
        assert_eq!(p(None).unwrap(), PathBuf::from("skiff/c1"));
        assert_eq!(p(Some("/a/b")).unwrap(), PathBuf::from("a/b"));
        assert_eq!(
            p(Some("kubepods-besteffort.slice:cri:abc")).unwrap(),
            PathBuf::from("kubepods.slice/kubepods-besteffort.slice/cri-abc.scope")
        );
        assert!(p(Some("/a/../../etc")).is_err());
        assert!(p(Some("a:b")).is_err());
    }

    /// `--systemd-cgroup` belongs to each runtime value, not to the process: two runtimes in one
    /// process (skiffd's and a monitor's, or two test daemons) keep their own.
    #[test]
    fn systemd_preference_is_per_runtime() {
        let systemd = crate::container::Runtime::new("/a").with_systemd_cgroup(true);
        let cgroupfs = crate::container::Runtime::new("/b");
        let plain = spec_with(Some("/a/b"));
        assert!(asks_for_systemd(&plain, systemd.systemd_cgroup()));
        assert!(!asks_for_systemd(&plain, cgroupfs.systemd_cgroup()));
        let _again = crate::container::Runtime::new("/c").with_systemd_cgroup(true);
        assert!(!asks_for_systemd(&plain, cgroupfs.systemd_cgroup()));
        let slice = spec_with(Some("kubepods.slice:cri:abc"));
        assert!(asks_for_systemd(&slice, cgroupfs.systemd_cgroup()));
    }
}
