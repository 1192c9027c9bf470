//! The Node's status: capacity and allocatable, conditions from the runtime (in-process CRI
//! `Status`) and from eviction signals, addresses, `nodeInfo`, `daemonEndpoints`. Computed every
//! `nodeStatusUpdateFrequency`, posted when it changed or every `nodeStatusReportFrequency`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use super::machine::{self, Machine};
use super::pressure::{self, Sources};
use super::quantity;
use super::{NodeContext, Settings};

/// Capacity: what the machine has; pods is `maxPods`.
pub fn capacity(m: &Machine, s: &Settings, nodefs_bytes: u64) -> BTreeMap<String, Quantity> {
    let mut c = BTreeMap::new();
    c.insert("cpu".into(), Quantity(quantity::millicores(m.cpus * 1000)));
    c.insert("memory".into(), Quantity(quantity::bytes(m.memory_bytes)));
    c.insert("pods".into(), Quantity(s.max_pods.to_string()));
    c.insert(
        "ephemeral-storage".into(),
        Quantity(quantity::bytes(nodefs_bytes)),
    );
    for (name, bytes) in &m.hugepages {
        c.insert(name.clone(), Quantity(quantity::bytes(*bytes)));
    }
    c
}

/// Allocatable: capacity less systemReserved, kubeReserved and the hard eviction threshold (memory
/// less the huge pages too, which pods request apart), never below zero.
pub fn allocatable(m: &Machine, s: &Settings, nodefs_bytes: u64) -> BTreeMap<String, Quantity> {
    let reserved = |r: &str| s.reserved.get(r).copied().unwrap_or(0.0);
    let threshold = |signal: &str, cap: f64| s.eviction.get(signal).map_or(0.0, |a| a.of(cap));
    let cpu_m = (m.cpus as f64 * 1000.0 - reserved("cpu") * 1000.0).max(0.0) as u64;
    let mem_cap = m.memory_bytes as f64;
    let huge: u64 = m.hugepages.values().sum();
    let mem = (mem_cap - reserved("memory") - threshold("memory.available", mem_cap) - huge as f64)
        .max(0.0);
    let disk_cap = nodefs_bytes as f64;
    let disk = (disk_cap - reserved("ephemeral-storage") - threshold("nodefs.available", disk_cap))
        .max(0.0);
    let mut a = capacity(m, s, nodefs_bytes);
    a.insert("cpu".into(), Quantity(quantity::millicores(cpu_m)));
    a.insert("memory".into(), Quantity(quantity::bytes(mem as u64)));
    a.insert(
        "ephemeral-storage".into(),
        Quantity(quantity::bytes(disk as u64)),
    );
    a
}

/// A health check's outcome, before it becomes a condition with times.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Ready from the runtime's own conditions (`RuntimeReady`, `NetworkReady`), worded as kubelet
/// words them so that tools reading the message keep working.
pub fn ready(runtime: &[cri_api::v1::RuntimeCondition]) -> Check {
    let problems: Vec<String> = ["RuntimeReady", "NetworkReady"]
        .iter()
        .filter_map(|t| {
            let c = runtime.iter().find(|c| c.r#type == *t);
            let what = if *t == "RuntimeReady" {
                "container runtime not ready"
            } else {
                "container runtime network not ready"
            };
            match c {
                Some(c) if c.status => None,
                Some(c) => Some(format!(
                    "{what}: {t}=false reason:{} message:{}",
                    c.reason, c.message
                )),
                None => Some(format!("{what}: {t} is not reported")),
            }
        })
        .collect();
    if problems.is_empty() {
        Check {
            type_: "Ready",
            status: true,
            reason: "KubeletReady",
            message: "skiffd is posting ready status".into(),
        }
    } else {
        Check {
            type_: "Ready",
            status: false,
            reason: "KubeletNotReady",
            message: problems.join(", "),
        }
    }
}

/// MemoryPressure, DiskPressure and PIDPressure from the signals below their thresholds.
pub fn pressures(crossed: &BTreeMap<String, String>) -> Vec<Check> {
    let under = |cond: &str| -> Vec<&String> {
        crossed
            .iter()
            .filter(|(sig, _)| pressure::condition_of(sig) == cond)
            .map(|(_, m)| m)
            .collect()
    };
    let check = |type_, bad_reason, good_reason, good_message: &str| {
        let lines = under(type_);
        if lines.is_empty() {
            Check {
                type_,
                status: false,
                reason: good_reason,
                message: good_message.into(),
            }
        } else {
            Check {
                type_,
                status: true,
                reason: bad_reason,
                message: lines
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        }
    };
    vec![
        check(
            "MemoryPressure",
            "KubeletHasInsufficientMemory",
            "KubeletHasSufficientMemory",
            "skiffd has sufficient memory available",
        ),
        check(
            "DiskPressure",
            "KubeletHasDiskPressure",
            "KubeletHasNoDiskPressure",
            "skiffd has no disk pressure",
        ),
        check(
            "PIDPressure",
            "KubeletHasInsufficientPID",
            "KubeletHasSufficientPID",
            "skiffd has sufficient PID available",
        ),
    ]
}

/// Conditions with times: a transition time moves only when the status does.
pub fn conditions(checks: &[Check], previous: &[NodeCondition], now: Time) -> Vec<NodeCondition> {
    checks
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: c.type_.into(),
                status: status.into(),
                reason: Some(c.reason.into()),
                message: Some(c.message.clone()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(since),
            }
        })
        .collect()
}

fn addresses(s: &Settings) -> Vec<NodeAddress> {
    let mut a: Vec<NodeAddress> = s
        .node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    a.push(NodeAddress {
        type_: "Hostname".into(),
        address: s.hostname.clone(),
    });
    a
}

fn node_info(m: &Machine) -> NodeSystemInfo {
    NodeSystemInfo {
        architecture: m.architecture.clone(),
        boot_id: m.boot_id.clone(),
        container_runtime_version: format!("skiff://{}", env!("CARGO_PKG_VERSION")),
        kernel_version: m.kernel_version.clone(),
        kube_proxy_version: super::kubelet_version(),
        kubelet_version: super::kubelet_version(),
        machine_id: m.machine_id.clone(),
        operating_system: "linux".into(),
        os_image: m.os_image.clone(),
        system_uuid: m.system_uuid.clone(),
    }
}

/// How many images the status lists, the largest first (kubelet's `nodeStatusMaxImages`).
const MAX_IMAGES: usize = 50;

/// The runtime's images as the Node lists them: every tag and digest as a name, with the size.
pub fn images(mut list: Vec<cri_api::v1::Image>) -> Vec<ContainerImage> {
    list.sort_by_key(|i| std::cmp::Reverse(i.size));
    list.into_iter()
        .take(MAX_IMAGES)
        .map(|i| ContainerImage {
            names: Some(i.repo_tags.into_iter().chain(i.repo_digests).collect()),
            size_bytes: Some(i.size as i64),
        })
        .collect()
}

/// The whole status as of now.
pub async fn compute(ctx: &NodeContext, previous: &[NodeCondition]) -> NodeStatus {
    let s = &ctx.settings;
    let m = &ctx.machine;
    let runtime = crate::cri::daemon_status::status(&ctx.daemon, Default::default())
        .await
        .ok()
        .and_then(|r| r.status)
        .map(|st| st.conditions)
        .unwrap_or_default();
    let sources = Sources {
        nodefs: s.root_dir.clone(),
        imagefs: ctx.daemon.config.image_root.clone(),
    };
    let signals = tokio::task::spawn_blocking(move || pressure::measure(&sources))
        .await
        .unwrap_or_default();
    let nodefs = machine::fs_usage(machine::existing_ancestor(&s.root_dir)).map_or(0, |u| u.bytes);
    let listed = crate::cri::image::list(&ctx.daemon, Default::default())
        .await
        .map(|r| r.images)
        .unwrap_or_default();
    let network = ctx.network.report();
    let mut checks = vec![ready(&runtime)];
    if let (false, Some(note)) = (checks[0].status, network.not_ready_note()) {
        checks[0].message = format!("{}; {note}", checks[0].message);
    }
    checks.extend(pressures(&pressure::crossed(&signals, &s.eviction)));
    checks.extend(network.checks());
    NodeStatus {
        capacity: Some(capacity(m, s, nodefs)),
        allocatable: Some(allocatable(m, s, nodefs)),
        conditions: Some(conditions(&checks, previous, Time(Utc::now()))),
        addresses: Some(addresses(s)),
        node_info: Some(node_info(m)),
        images: Some(images(listed)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(s.kubelet_port),
            }),
        }),
        ..Default::default()
    }
}

/// The status without its heartbeat times: what "changed" means.
fn comparable(st: &NodeStatus) -> serde_json::Value {
    let mut st = st.clone();
    for c in st.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
    }
    serde_json::to_value(st).unwrap_or_default()
}

/// A strategic merge patch of the status. Addresses merge by `type`, so two InternalIPs (a
/// dual-stack node) would collide: the list replaces the stored one instead.
fn status_patch(status: &NodeStatus) -> serde_json::Value {
    let mut patch = serde_json::json!({ "status": status });
    if let Some(list) = patch["status"]["addresses"].as_array_mut() {
        list.insert(0, serde_json::json!({ "$patch": "replace" }));
    }
    patch
}

/// Posts the status for as long as skiffd runs.
pub async fn run(ctx: Arc<NodeContext>, registered: Node, clients: watch::Receiver<kube::Client>) {
    let s = &ctx.settings;
    let mut previous = registered
        .status
        .and_then(|st| st.conditions)
        .unwrap_or_default();
    let mut last: Option<(serde_json::Value, Instant)> = None;
    loop {
        let status = compute(&ctx, &previous).await;
        let key = comparable(&status);
        let due = match &last {
            None => true,
            Some((k, at)) => *k != key || at.elapsed() >= s.status_report,
        };
        previous = status.conditions.clone().unwrap_or_default();
        if due {
            let api: Api<Node> = Api::all(clients.borrow().clone());
            let patch = status_patch(&status);
            match api
                .patch_status(
                    &s.node_name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {
                    log_ready(&status, last.is_none());
                    last = Some((key, Instant::now()));
                }
                Err(e) => tracing::warn!(error = %e, "update node status"),
            }
        }
        tokio::time::sleep(s.status_update).await;
    }
}

fn log_ready(status: &NodeStatus, first: bool) {
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
    {
        let msg = c.message.clone().unwrap_or_default();
        if first || c.status != "True" {
            tracing::info!(ready = %c.status, message = %msg, "node status posted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::RuntimeCondition;

    #[test]
    fn addresses_replace_the_stored_list() {
        let ip = |a: &str| NodeAddress {
            type_: "InternalIP".into(),
            address: a.into(),
        };
        let st = NodeStatus {
            addresses: Some(vec![ip("10.0.0.1"), ip("fd00::1")]),
            ..Default::default()
        };
        let p = status_patch(&st);
        let list = p["status"]["addresses"].as_array().unwrap();
        assert_eq!(list[0], serde_json::json!({ "$patch": "replace" }));
        assert_eq!(list[2]["address"], "fd00::1");
    }

    fn rc(t: &str, ok: bool) -> RuntimeCondition {
        RuntimeCondition {
            r#type: t.into(),
            status: ok,
            reason: if ok {
                String::new()
            } else {
                "NetworkPluginNotReady".into()
            },
            message: if ok {
                String::new()
            } else {
                "cni plugin not initialized".into()
            },
        }
    }

    #[test]
    fn ready_follows_runtime_and_network() {
        let r = ready(&[rc("RuntimeReady", true), rc("NetworkReady", true)]);
        assert!(r.status);
        assert_eq!(r.reason, "KubeletReady");
        let r = ready(&[rc("RuntimeReady", true), rc("NetworkReady", false)]);
        assert!(!r.status);
        assert_eq!(r.reason, "KubeletNotReady");
        assert_eq!(
            r.message,
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"
        );
        assert!(!ready(&[]).status);
    }

    #[test]
    fn pressure_conditions() {
        let mut crossed = BTreeMap::new();
        crossed.insert(
            "nodefs.available".to_string(),
            "nodefs.available is 1, below the threshold 2".to_string(),
        );
        let p = pressures(&crossed);
        let disk = p.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert!(disk.status);
        assert_eq!(disk.reason, "KubeletHasDiskPressure");
        let mem = p.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert!(!mem.status);
        assert_eq!(mem.reason, "KubeletHasSufficientMemory");
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let t0 = Time(Utc::now() - k8s_openapi::chrono::Duration::seconds(60));
        let t1 = Time(Utc::now());
        let ok = ready(&[rc("RuntimeReady", true), rc("NetworkReady", true)]);
        let first = conditions(std::slice::from_ref(&ok), &[], t0.clone());
        let second = conditions(&[ok], &first, t1.clone());
        assert_eq!(second[0].last_transition_time, Some(t0));
        assert_eq!(second[0].last_heartbeat_time, Some(t1.clone()));
        let bad = ready(&[rc("RuntimeReady", true), rc("NetworkReady", false)]);
        let third = conditions(&[bad], &second, t1.clone());
        assert_eq!(third[0].last_transition_time, Some(t1));
    }

    #[test]
    fn images_largest_first_with_all_names() {
        let img = |tag: &str, size| cri_api::v1::Image {
            repo_tags: vec![tag.into()],
            repo_digests: vec![format!("{tag}@sha256:00")],
            size,
            ..Default::default()
        };
        let list = images(vec![img("small:1", 10), img("big:1", 1000)]);
        assert_eq!(list[0].size_bytes, Some(1000));
        assert_eq!(
            list[0].names.as_deref().unwrap(),
            ["big:1".to_string(), "big:1@sha256:00".to_string()]
        );
        let many = (0..60).map(|n| img(&format!("i:{n}"), n)).collect();
        assert_eq!(images(many).len(), MAX_IMAGES);
    }

    #[test]
    fn allocatable_subtracts_reservations_and_thresholds() {
        let m = Machine {
            cpus: 4,
            memory_bytes: 8 << 30,
            hugepages: [("hugepages-2Mi".to_string(), 1u64 << 30)].into(),
            ..Default::default()
        };
        let mut s = Settings::for_tests();
        s.reserved = [
            ("cpu".to_string(), 0.5),
            ("memory".to_string(), (1u64 << 30) as f64),
        ]
        .into();
        s.eviction = [
            (
                "memory.available".to_string(),
                quantity::Amount::Absolute((100u64 << 20) as f64),
            ),
            ("nodefs.available".to_string(), quantity::Amount::Share(0.1)),
        ]
        .into();
        let cap = capacity(&m, &s, 100 << 30);
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8388608Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["hugepages-2Mi"].0, "1048576Ki");
        let a = allocatable(&m, &s, 100 << 30);
        assert_eq!(a["cpu"].0, "3500m");
        // 8 Gi - 1 Gi reserved - 100 Mi threshold - 1 Gi huge pages.
        assert_eq!(
            a["memory"].0,
            format!("{}Ki", ((6u64 << 30) - (100 << 20)) / 1024)
        );
        assert_eq!(
            a["ephemeral-storage"].0,
            format!("{}Ki", (90u64 << 30) / 1024)
        );
        assert_eq!(a["hugepages-2Mi"].0, "1048576Ki");
    }
}
