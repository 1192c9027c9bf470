//! Resource usage from cgroups: container and pod stats, and the metrics kubelet can list.
//!
//! A container's cgroups are found through the runtime's state of it; a pod's through its cgroup
//! parent, or, when it has none of its own, as the sum of its containers. CPU rates
//! (`usage_nano_cores`) come from the previous sample of the same object, kept in memory.

mod cgroup;
mod disk;
mod metrics;
pub mod net;
mod procs;
mod rate;

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::container::ContainerRecord;
use super::error::{full_id, not_found};
use super::image::usage;
use super::pod::SandboxRecord;
use super::{blocking, Daemon};
use cgroup::{CgroupDirs, Sample};
pub use rate::Rates;

fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

/// Whether `id` names `full`: the whole id or a prefix of it, as crictl abbreviates ids.
fn id_matches(filter: &str, full: &str) -> bool {
    filter.is_empty() || full.starts_with(filter)
}

fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn container_matches(f: &cri::ContainerStatsFilter, c: &ContainerRecord) -> bool {
    id_matches(&f.id, &c.id)
        && id_matches(&f.pod_sandbox_id, &c.sandbox_id)
        && labels_match(&f.label_selector, &c.config.labels)
}

fn sandbox_matches(f: &cri::PodSandboxStatsFilter, sb: &SandboxRecord) -> bool {
    id_matches(&f.id, &sb.id) && labels_match(&f.label_selector, &sb.config.labels)
}

/// A container's cgroup usage now; `None` once its cgroups are gone.
fn container_sample(d: &Daemon, c: &ContainerRecord) -> Option<Sample> {
    CgroupDirs::of_container(&d.config.runtime_root(), &c.id).map(|dirs| dirs.sample())
}

fn cpu_usage(d: &Daemon, now: i64, rate_key: &str, s: &Sample) -> cri::CpuUsage {
    let rate = d.rates.observe(rate_key, now, s.cpu_nanos);
    cri::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: u64v(s.cpu_nanos),
        usage_nano_cores: u64v(rate.unwrap_or(0)),
        psi: None,
    }
}

fn memory_usage(now: i64, s: &Sample) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: now,
        working_set_bytes: u64v(s.working_set),
        available_bytes: u64v(s.available()),
        usage_bytes: u64v(s.memory_usage),
        rss_bytes: u64v(s.rss),
        page_faults: u64v(s.page_faults),
        major_page_faults: u64v(s.major_page_faults),
        psi: None,
    }
}

fn container_stats(d: &Daemon, c: &ContainerRecord, now: i64) -> (cri::ContainerStats, Sample) {
    let sample = container_sample(d, c);
    let layer = usage(&c.bundle);
    let stats = cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: sample.as_ref().map(|s| cpu_usage(d, now, &c.id, s)),
        memory: sample.as_ref().map(|s| memory_usage(now, s)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: c.bundle.to_string_lossy().into_owned(),
            }),
            used_bytes: u64v(layer.bytes),
            inodes_used: u64v(layer.inodes),
        }),
        swap: sample.as_ref().map(|s| cri::SwapUsage {
            timestamp: now,
            swap_available_bytes: u64v(s.swap_available()),
            swap_usage_bytes: u64v(s.swap_usage),
        }),
        io: None,
    };
    (stats, sample.unwrap_or_default())
}

/// Forgets the CPU samples of objects that are gone.
fn forget_gone(d: &Daemon) {
    let containers = d.containers.list();
    let sandboxes = d.sandboxes.list();
    d.rates.retain(|id| {
        let id = id.strip_prefix("pod:").unwrap_or(id);
        containers.iter().any(|c| c.id == id) || sandboxes.iter().any(|s| s.id == id)
    });
}

pub async fn container(
    d: &Arc<Daemon>,
    r: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Status> {
    let id = full_id(&d.containers, "container", &r.container_id)?;
    let c = d
        .containers
        .get(&id)
        .ok_or_else(|| not_found("container", &r.container_id))?;
    let d = d.clone();
    blocking(move || {
        let (stats, _) = container_stats(&d, &c, crate::now_ns());
        Ok(cri::ContainerStatsResponse { stats: Some(stats) })
    })
    .await
}

pub async fn list_containers(
    d: &Arc<Daemon>,
    r: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, Status> {
    let filter = r.filter.unwrap_or_default();
    let d = d.clone();
    blocking(move || {
        let now = crate::now_ns();
        let stats = d
            .containers
            .list()
            .iter()
            .filter(|c| container_matches(&filter, c))
            .map(|c| container_stats(&d, c, now).0)
            .collect();
        forget_gone(&d);
        Ok(cri::ListContainerStatsResponse { stats })
    })
    .await
}

/// The pod's own cgroup when it has one, else the sum of its containers.
fn pod_sample(d: &Daemon, sb: &SandboxRecord, containers: &[Sample]) -> Sample {
    if let Some(dirs) = CgroupDirs::of_pod(&sb.cgroup_parent, d.cgroup_driver) {
        return dirs.sample();
    }
    let mut sum = Sample::default();
    for s in containers {
        sum.add(s);
    }
    sum
}

fn network_usage(now: i64, sb: &SandboxRecord) -> Option<cri::NetworkUsage> {
    let ifs = net::interfaces(sb.netns.as_deref()?)?;
    let to_cri = |i: &net::Interface| cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: u64v(i.rx_bytes),
        rx_errors: u64v(i.rx_errors),
        tx_bytes: u64v(i.tx_bytes),
        tx_errors: u64v(i.tx_errors),
    };
    Some(cri::NetworkUsage {
        timestamp: now,
        default_interface: net::default_interface(&ifs).map(to_cri),
        interfaces: ifs.iter().map(to_cri).collect(),
    })
}

fn sandbox_stats(d: &Daemon, sb: &SandboxRecord, now: i64) -> cri::PodSandboxStats {
    let mut containers = Vec::new();
    let mut samples = Vec::new();
    for c in d.containers.list().iter().filter(|c| c.sandbox_id == sb.id) {
        let (stats, sample) = container_stats(d, c, now);
        containers.push(stats);
        samples.push(sample);
    }
    let pod = pod_sample(d, sb, &samples);
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sb.id.clone(),
            metadata: sb.config.metadata.clone(),
            labels: sb.config.labels.clone(),
            annotations: sb.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu_usage(d, now, &format!("pod:{}", sb.id), &pod)),
            memory: Some(memory_usage(now, &pod)),
            network: network_usage(now, sb),
            process: Some(cri::ProcessUsage {
                timestamp: now,
                process_count: u64v(pod.pids),
            }),
            containers,
            io: None,
        }),
        windows: None,
    }
}

pub async fn sandbox(
    d: &Arc<Daemon>,
    r: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    let id = full_id(&d.sandboxes, "sandbox", &r.pod_sandbox_id)?;
    let sb = d
        .sandboxes
        .get(&id)
        .ok_or_else(|| not_found("sandbox", &r.pod_sandbox_id))?;
    let d = d.clone();
    blocking(move || {
        Ok(cri::PodSandboxStatsResponse {
            stats: Some(sandbox_stats(&d, &sb, crate::now_ns())),
        })
    })
    .await
}

pub async fn list_sandboxes(
    d: &Arc<Daemon>,
    r: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let filter = r.filter.unwrap_or_default();
    let d = d.clone();
    blocking(move || {
        let now = crate::now_ns();
        // Stopped pods have nothing left to measure, as kubelet expects.
        let stats = d
            .sandboxes
            .list()
            .iter()
            .filter(|sb| sb.ready && sandbox_matches(&filter, sb))
            .map(|sb| sandbox_stats(&d, sb, now))
            .collect();
        forget_gone(&d);
        Ok(cri::ListPodSandboxStatsResponse { stats })
    })
    .await
}

pub async fn metric_descriptors(
    _d: &Arc<Daemon>,
    _r: cri::ListMetricDescriptorsRequest,
) -> Result<cri::ListMetricDescriptorsResponse, Status> {
    Ok(cri::ListMetricDescriptorsResponse {
        descriptors: metrics::descriptors(),
    })
}

/// One container's metric inputs: its cgroups, processes and disk; `None` once its cgroups are gone.
fn container_reading(d: &Daemon, c: &ContainerRecord, now: i64) -> Option<metrics::Reading> {
    let dirs = CgroupDirs::of_container(&d.config.runtime_root(), &c.id)?;
    let stats = dirs.stats();
    let usage = d.fs_info.container(&c.id).map_or(0, |u| u.bytes);
    let start = if c.started_at > 0 {
        c.started_at
    } else {
        c.created_at
    };
    Some(metrics::Reading {
        sample: dirs.sample_of(&stats),
        stats,
        cpu: dirs.cpu_spec(),
        procs: dirs
            .procs_file()
            .map(|f| procs::count(&f))
            .unwrap_or_default(),
        disk: disk::of(&c.bundle, usage),
        start_secs: (start.max(0) as u64) / 1_000_000_000,
        now_secs: (now.max(0) as u64) / 1_000_000_000,
    })
}

fn sandbox_metrics_of(d: &Daemon, sb: &SandboxRecord, now: i64) -> cri::PodSandboxMetrics {
    let pod_name = sb
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    let pod = metrics::Subject {
        id: &sb.id,
        name: pod_name,
        image: "",
    };
    let metrics = sb
        .netns
        .as_deref()
        .and_then(net::interfaces)
        .map(|ifs| metrics::network_metrics(now, &pod, &ifs))
        .unwrap_or_default();
    let container_metrics = d
        .containers
        .list()
        .iter()
        .filter(|c| c.sandbox_id == sb.id)
        .filter_map(|c| {
            let reading = container_reading(d, c, now)?;
            let name = c.config.metadata.as_ref().map(|m| m.name.as_str());
            let who = metrics::Subject {
                id: &c.id,
                name: name.unwrap_or_default(),
                image: &c.image_name,
            };
            Some(cri::ContainerMetrics {
                container_id: c.id.clone(),
                metrics: metrics::container_metrics(now, &who, &reading),
            })
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: sb.id.clone(),
        metrics,
        container_metrics,
    }
}

pub async fn sandbox_metrics(
    d: &Arc<Daemon>,
    _r: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    // The writable layers' usage comes from the walk `ImageFsInfo` keeps, never a walk per call.
    super::image::fs_info_now(d).await;
    let d = d.clone();
    blocking(move || {
        let now = crate::now_ns();
        let pod_metrics = d
            .sandboxes
            .list()
            .iter()
            .filter(|sb| sb.ready)
            .map(|sb| sandbox_metrics_of(&d, sb, now))
            .collect();
        Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, sandbox: &str, labels: &[(&str, &str)]) -> ContainerRecord {
        let mut c = crate::cri::testing::record(id, sandbox);
        c.config.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c
    }

    #[test]
    fn container_filters() {
        let c = record("abcdef", "pod123", &[("app", "web"), ("tier", "1")]);
        let f = |id: &str, pod: &str, sel: &[(&str, &str)]| cri::ContainerStatsFilter {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            label_selector: sel
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(container_matches(&f("", "", &[]), &c));
        assert!(container_matches(&f("abcdef", "", &[]), &c));
        assert!(container_matches(&f("abc", "pod1", &[("app", "web")]), &c));
        assert!(!container_matches(&f("abd", "", &[]), &c));
        assert!(!container_matches(&f("", "pod2", &[]), &c));
        assert!(!container_matches(&f("", "", &[("app", "db")]), &c));
        assert!(!container_matches(&f("", "", &[("missing", "")]), &c));
        assert!(container_matches(
            &f("", "", &[("app", "web"), ("tier", "1")]),
            &c
        ));
    }

    #[test]
    fn a_container_without_cgroups_has_attributes_and_no_usage() {
        let c = record("gone", "pod", &[]);
        let dirs = CgroupDirs::of_container(std::path::Path::new("/nonexistent"), &c.id);
        assert!(dirs.is_none());
    }

    /// CPU rates come from the previous sample kept by the same daemon: a second daemon in the
    /// process starts from nothing.
    #[test]
    fn two_daemons_keep_their_own_cpu_samples() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            crate::cri::testing::daemon(&tmp.path().join("a")),
            crate::cri::testing::daemon(&tmp.path().join("b")),
        );
        let at = |cpu_nanos| Sample {
            cpu_nanos,
            ..Default::default()
        };
        let rate = |d: &Daemon, now, cpu| cpu_usage(d, now, "c1", &at(cpu)).usage_nano_cores;
        assert_eq!(rate(&a, 1_000_000_000, 0), u64v(0));
        assert_eq!(rate(&a, 2_000_000_000, 500_000_000), u64v(500_000_000));
        assert_eq!(
            rate(&b, 2_000_000_000, 500_000_000),
            u64v(0),
            "b saw no sample"
        );
    }
}
