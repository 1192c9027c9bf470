//! The `kubepods` cgroup hierarchy as kubelet lays it out: `kubepods` (Guaranteed pods directly
//! below it), `kubepods/burstable`, `kubepods/besteffort`, and `pod<uid>` below those; with the
//! systemd driver the same as slices (`kubepods-burstable-pod<uid>.slice`). The pod cgroup carries the
//! pod's CPU weight from its requests and, when every container declares them, its CPU quota and
//! memory limit; its containers go below it (the sandbox's cgroup parent).
//!
//! The directories are made directly in every mounted hierarchy (cgroup v1 controllers, the cgroup2
//! mount of the hybrid layout, or cgroup v2 alone), as the runtime makes its containers' cgroups.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_runtime::cgroups::hierarchy::{self, Hierarchy};
use skiff_runtime::cgroups::v2::shares_to_weight;

use super::status::qos_class;
use crate::config::CgroupDriver;
use crate::node::quantity;

/// kubelet's CFS period and its least shares.
const PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;
const MIN_QUOTA: i64 = 1000;

/// Where pod cgroups go: the driver the CRI layer uses and the configured root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub driver: CgroupDriver,
    /// `cgroupRoot` (cgroupfs): `/` or a cgroup below which `kubepods` is made.
    pub root: String,
}

/// The QoS class's directory below `kubepods` (`""` for Guaranteed).
fn class_dir(class: &str) -> &'static str {
    match class {
        "BestEffort" => "besteffort",
        "Burstable" => "burstable",
        _ => "",
    }
}

impl Layout {
    /// The pod's cgroup as the sandbox's `cgroup_parent` takes it.
    pub fn parent(&self, class: &str, uid: &str) -> String {
        let qos = class_dir(class);
        match self.driver {
            CgroupDriver::Systemd => {
                // systemd reads `-` in a unit name as nesting: the uid's dashes become `_`.
                let pod = format!("pod{}", uid.replace('-', "_"));
                let parts: Vec<&str> = ["kubepods", qos, &pod]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect();
                format!("{}.slice", parts.join("-"))
            }
            CgroupDriver::Cgroupfs => {
                let mut p = PathBuf::from("/").join(self.root.trim_start_matches('/'));
                p.push("kubepods");
                if !qos.is_empty() {
                    p.push(qos);
                }
                p.push(format!("pod{uid}"));
                p.to_string_lossy().into_owned()
            }
        }
    }

    /// The pod's cgroup as a path below each hierarchy's mount point.
    pub fn relative(&self, class: &str, uid: &str) -> PathBuf {
        let parent = self.parent(class, uid);
        match self.driver {
            CgroupDriver::Systemd => PathBuf::from(skiff_runtime::cgroups::slice_path(&parent)),
            CgroupDriver::Cgroupfs => PathBuf::from(parent.trim_start_matches('/')),
        }
    }

    /// The three directories pod cgroups live in, below each mount point.
    fn class_dirs(&self) -> Vec<PathBuf> {
        ["Guaranteed", "Burstable", "BestEffort"]
            .into_iter()
            .filter_map(|c| self.relative(c, "x").parent().map(Path::to_path_buf))
            .collect()
    }
}

/// The pod-level figures, from its containers' requests and limits as kubelet sums them: the app
/// containers together or the largest init container, whichever is more.
#[derive(Debug, Clone, PartialEq)]
pub struct PodResources {
    pub cpu_shares: i64,
    /// CPU quota per [`PERIOD`], when every container has a CPU limit.
    pub cpu_quota: Option<i64>,
    /// When every container has a memory limit.
    pub memory_limit: Option<i64>,
}

fn amount(c: &Container, limits: bool, key: &str) -> Result<Option<f64>, String> {
    let r = c.resources.as_ref();
    let map = if limits {
        r.and_then(|r| r.limits.as_ref())
    } else {
        r.and_then(|r| r.requests.as_ref())
    };
    map.and_then(|m| m.get(key))
        .map(|q| quantity::parse(&q.0).map_err(|e| format!("container {:?} {key}: {e}", c.name)))
        .transpose()
}

/// kubelet's sum: the app containers' total or the largest init container's, whichever is more;
/// `None` if one container lacks the value.
fn pod_total(
    pod: &Pod,
    f: impl Fn(&Container) -> Result<Option<f64>, String>,
) -> Result<Option<f64>, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut apps = 0.0;
    for c in &spec.containers {
        match f(c)? {
            Some(v) => apps += v,
            None => return Ok(None),
        }
    }
    let mut init: f64 = 0.0;
    for c in spec.init_containers.iter().flatten() {
        match f(c)? {
            Some(v) => init = init.max(v),
            None => return Ok(None),
        }
    }
    Ok(Some(apps.max(init)))
}

pub fn resources(pod: &Pod) -> Result<PodResources, String> {
    // A request not given defaults to the limit, as the API server fills it in.
    let request = |c: &Container| -> Result<Option<f64>, String> {
        Ok(Some(
            amount(c, false, "cpu")?
                .or(amount(c, true, "cpu")?)
                .unwrap_or(0.0),
        ))
    };
    let cpu_request = pod_total(pod, request)?.unwrap_or(0.0);
    let cpu_limit = pod_total(pod, |c| amount(c, true, "cpu"))?;
    let memory_limit = pod_total(pod, |c| amount(c, true, "memory"))?;
    let besteffort = qos_class(pod) == "BestEffort";
    Ok(PodResources {
        cpu_shares: if besteffort {
            MIN_SHARES
        } else {
            ((cpu_request * 1024.0) as i64).max(MIN_SHARES)
        },
        cpu_quota: cpu_limit
            .filter(|_| !besteffort)
            .map(|cpu| ((cpu * PERIOD as f64) as i64).max(MIN_QUOTA)),
        memory_limit: memory_limit.filter(|_| !besteffort).map(|m| m as i64),
    })
}

/// The files to write in one hierarchy for `r`: cgroup v1's names in the `cpu` and `memory`
/// controllers' hierarchies, cgroup v2's in the unified one.
pub fn files(h_name: &str, v2: bool, r: &PodResources) -> Vec<(&'static str, String)> {
    let controllers: HashSet<&str> = h_name.split(',').collect();
    let mut out = Vec::new();
    if v2 {
        out.push((
            "cpu.weight",
            shares_to_weight(r.cpu_shares as u64).to_string(),
        ));
        let quota = r.cpu_quota.map_or("max".to_string(), |q| q.to_string());
        out.push(("cpu.max", format!("{quota} {PERIOD}")));
        let mem = r.memory_limit.map_or("max".to_string(), |m| m.to_string());
        out.push(("memory.max", mem));
        return out;
    }
    if controllers.contains("cpu") {
        out.push(("cpu.shares", r.cpu_shares.to_string()));
        out.push(("cpu.cfs_period_us", PERIOD.to_string()));
        out.push(("cpu.cfs_quota_us", r.cpu_quota.unwrap_or(-1).to_string()));
    }
    if controllers.contains("memory") {
        let mem = r.memory_limit.unwrap_or(-1);
        out.push(("memory.limit_in_bytes", mem.to_string()));
    }
    out
}

/// The hierarchies whose directories the runtime makes too (named v1 ones, like systemd's, are not
/// resource controllers).
fn mounted() -> Vec<Hierarchy> {
    hierarchy::hierarchies()
        .into_iter()
        .filter(|h| h.v2 || h.mountpoint.join("cgroup.procs").exists())
        .collect()
}

/// Makes `rel` below `h`, every missing level given what a new cgroup needs: a v1 cpuset its
/// parent's CPUs and memory nodes, a v2 parent its controllers enabled for its children.
fn make(h: &Hierarchy, rel: &Path) -> std::io::Result<PathBuf> {
    let mut dir = h.mountpoint.clone();
    let cpuset = !h.v2 && h.name.split(',').any(|c| c == "cpuset");
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        if !dir.is_dir() {
            if h.v2 {
                enable_controllers(&parent);
            }
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        // Also when the level exists: pods created at once race to make their QoS level, and one
        // that finds it made but not yet given CPUs would copy the emptiness below it.
        if cpuset {
            inherit_cpuset(&parent, &dir)?;
        }
    }
    Ok(dir)
}

/// A v1 cpuset group without CPUs or memory nodes (as it is made) gets its parent's.
fn inherit_cpuset(parent: &Path, dir: &Path) -> std::io::Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if std::fs::read_to_string(dir.join(f))?.trim().is_empty() {
            let v = std::fs::read_to_string(parent.join(f))?;
            std::fs::write(dir.join(f), v.trim())?;
        }
    }
    Ok(())
}

/// A cgroup2 parent hands its children the controllers it has (those it can; others stay off).
fn enable_controllers(dir: &Path) {
    let Ok(have) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    for c in have.split_whitespace() {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

/// Makes the pod's cgroup in every hierarchy and writes its figures; returns the sandbox's cgroup
/// parent. A figure a hierarchy lacks the file for (a controller not there) is skipped.
pub fn prepare(layout: &Layout, pod: &Pod) -> Result<String, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let class = qos_class(pod);
    let r = resources(pod)?;
    let rel = layout.relative(class, uid);
    for h in mounted() {
        let dir = make(&h, &rel).map_err(|e| {
            format!(
                "make the pod cgroup {} in {}: {e}",
                rel.display(),
                h.mountpoint.display()
            )
        })?;
        for (file, value) in files(&h.name, h.v2, &r) {
            let path = dir.join(file);
            if !path.exists() {
                continue;
            }
            std::fs::write(&path, &value)
                .map_err(|e| format!("write {value} to {}: {e}", path.display()))?;
        }
    }
    Ok(layout.parent(class, uid))
}

/// Removes the pod cgroups of pods not in `known` (by uid) from every hierarchy. A cgroup that
/// still has processes stays (rmdir refuses it) and goes on a later sweep.
pub fn sweep(layout: &Layout, known: &HashSet<String>) {
    for h in mounted() {
        for class in layout.class_dirs() {
            let Ok(entries) = std::fs::read_dir(h.mountpoint.join(&class)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(uid) = pod_uid(&name, layout.driver) else {
                    continue;
                };
                if !known.contains(&uid) && e.path().is_dir() {
                    remove_tree(&e.path());
                }
            }
        }
    }
}

/// The uid in a pod cgroup's directory name.
fn pod_uid(name: &str, driver: CgroupDriver) -> Option<String> {
    match driver {
        CgroupDriver::Cgroupfs => name.strip_prefix("pod").map(String::from),
        CgroupDriver::Systemd => {
            let stem = name.strip_suffix(".slice")?;
            let pod = stem.rsplit('-').next()?;
            pod.strip_prefix("pod").map(|u| u.replace('_', "-"))
        }
    }
}

/// rmdir, deepest first: a cgroup directory holds only cgroup files, which go with it.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "pod cgroup not removed yet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpuset_level_made_but_not_filled_yet_is_filled() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(root.join("cpuset.mems"), "0\n").unwrap();
        // Another pod's worker has made the QoS level and not yet written its CPUs.
        let qos = root.join("besteffort");
        std::fs::create_dir(&qos).unwrap();
        std::fs::write(qos.join("cpuset.cpus"), "").unwrap();
        std::fs::write(qos.join("cpuset.mems"), "").unwrap();
        let h = Hierarchy {
            name: "cpuset".into(),
            mountpoint: root.to_path_buf(),
            v2: false,
        };
        std::fs::create_dir(root.join("besteffort/pod1")).unwrap();
        std::fs::write(root.join("besteffort/pod1/cpuset.cpus"), "").unwrap();
        std::fs::write(root.join("besteffort/pod1/cpuset.mems"), "").unwrap();
        let dir = make(&h, Path::new("besteffort/pod1")).unwrap();
        for d in [&qos, &dir] {
            assert_eq!(
                std::fs::read_to_string(d.join("cpuset.cpus")).unwrap(),
                "0-1"
            );
            assert_eq!(std::fs::read_to_string(d.join("cpuset.mems")).unwrap(), "0");
        }
    }
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                uid: Some("1-2".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parents_for_both_drivers_and_every_class() {
        let fs = Layout {
            driver: CgroupDriver::Cgroupfs,
            root: "/".into(),
        };
        assert_eq!(fs.parent("Guaranteed", "1-2"), "/kubepods/pod1-2");
        assert_eq!(fs.parent("Burstable", "1-2"), "/kubepods/burstable/pod1-2");
        let rooted = Layout {
            root: "/test-root".into(),
            ..fs.clone()
        };
        assert_eq!(
            rooted.parent("BestEffort", "1-2"),
            "/test-root/kubepods/besteffort/pod1-2"
        );
        let sd = Layout {
            driver: CgroupDriver::Systemd,
            root: "/".into(),
        };
        assert_eq!(sd.parent("Guaranteed", "1-2"), "kubepods-pod1_2.slice");
        assert_eq!(
            sd.parent("Burstable", "1-2"),
            "kubepods-burstable-pod1_2.slice"
        );
        assert_eq!(
            sd.relative("BestEffort", "1-2"),
            Path::new("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice")
        );
        assert_eq!(
            pod_uid("kubepods-burstable-pod1_2.slice", CgroupDriver::Systemd).unwrap(),
            "1-2"
        );
        assert_eq!(pod_uid("pod1-2", CgroupDriver::Cgroupfs).unwrap(), "1-2");
        assert!(pod_uid("burstable", CgroupDriver::Cgroupfs).is_none());
    }

    #[test]
    fn pod_figures_per_qos_class() {
        let g = pod(vec![
            container(&[], &[("cpu", "500m"), ("memory", "64Mi")]),
            container(&[], &[("cpu", "250m"), ("memory", "32Mi")]),
        ]);
        assert_eq!(qos_class(&g), "Guaranteed");
        let r = resources(&g).unwrap();
        assert_eq!(r.cpu_shares, 768);
        assert_eq!(r.cpu_quota, Some(75_000));
        assert_eq!(r.memory_limit, Some(96 << 20));
        // One container without limits: no pod-level limit.
        let b = pod(vec![
            container(&[("cpu", "100m")], &[("memory", "64Mi")]),
            container(&[("cpu", "200m")], &[]),
        ]);
        let r = resources(&b).unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit),
            (307, None, None)
        );
        let be = pod(vec![container(&[], &[])]);
        let r = resources(&be).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit), (2, None, None));
        let bad = pod(vec![container(&[("cpu", "lots")], &[])]);
        assert!(resources(&bad).unwrap_err().contains("cpu"));
    }

    #[test]
    fn files_for_cgroup_v1_and_v2() {
        let r = PodResources {
            cpu_shares: 768,
            cpu_quota: Some(75_000),
            memory_limit: Some(96 << 20),
        };
        let v2 = files("unified", true, &r);
        assert_eq!(
            v2,
            [
                ("cpu.weight", "30".to_string()),
                ("cpu.max", "75000 100000".to_string()),
                ("memory.max", (96u64 << 20).to_string()),
            ]
        );
        let none = PodResources {
            cpu_shares: 2,
            cpu_quota: None,
            memory_limit: None,
        };
        assert_eq!(
            files("unified", true, &none),
            [
                ("cpu.weight", "1".to_string()),
                ("cpu.max", "max 100000".to_string()),
                ("memory.max", "max".to_string()),
            ]
        );
        let cpu = files("cpu,cpuacct", false, &r);
        assert!(cpu.contains(&("cpu.shares", "768".to_string())));
        assert!(cpu.contains(&("cpu.cfs_quota_us", "75000".to_string())));
        assert_eq!(
            files("memory", false, &r),
            [("memory.limit_in_bytes", (96u64 << 20).to_string())]
        );
        assert!(files("pids", false, &r).is_empty());
    }
}
