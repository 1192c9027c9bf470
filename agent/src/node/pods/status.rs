//! The pod's status as the control plane and kubectl read it, computed from the CRI's state and
//! patched into `pods/status` when it changed.

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use super::containers::{self, Waiting};
use crate::cri::Daemon;

/// What the worker saw of the pod in one sync.
pub struct Observed<'a> {
    pub pod: &'a Pod,
    /// The running sandbox, if any, and its IPs.
    pub sandbox_ready: bool,
    pub pod_ips: &'a [String],
    pub host_ip: &'a str,
    pub instances: &'a HashMap<String, Vec<cri::Container>>,
    pub waiting: &'a HashMap<String, Waiting>,
    /// Readiness of the running containers by id (absent: ready when running).
    pub ready: &'a HashMap<String, bool>,
    /// Whether the running containers have started (startup probe passed) by id (absent: yes).
    pub started: &'a HashMap<String, bool>,
}

fn time(nanos: i64) -> Value {
    let t = DateTime::<Utc>::from_timestamp_nanos(nanos);
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

fn now() -> Value {
    serde_json::to_value(Time(Utc::now())).unwrap_or(Value::Null)
}

/// One container's status: its newest instance for `state`, the one before for `lastState`.
async fn container_status(d: &Arc<Daemon>, o: &Observed<'_>, c: &Container) -> Value {
    let list = o.instances.get(&c.name).cloned().unwrap_or_default();
    let latest = match list.first() {
        Some(l) => containers::status(d, &l.id).await,
        None => None,
    };
    let previous = match list.get(1) {
        Some(p) => containers::status(d, &p.id).await,
        None => None,
    };
    let restarts = list.first().map_or(0, containers::restart_count);
    let image = c.image.clone().unwrap_or_default();
    let mut v = json!({
        "name": c.name,
        "image": image,
        "imageID": "",
        "restartCount": restarts,
        "ready": false,
        "started": false,
        "state": {"waiting": {"reason": "ContainerCreating"}},
        "lastState": {},
    });
    if let Some(p) = &previous {
        v["lastState"] = state(p);
    }
    if let Some(s) = &latest {
        let running = s.state == cri::ContainerState::ContainerRunning as i32;
        v["containerID"] = json!(format!("skiff://{}", s.id));
        v["imageID"] = json!(s.image_ref);
        v["ready"] = json!(running && o.ready.get(&s.id).copied().unwrap_or(true));
        v["started"] = json!(running && o.started.get(&s.id).copied().unwrap_or(true));
        v["state"] = state(s);
    }
    if let Some(w) = o.waiting.get(&c.name) {
        if latest
            .as_ref()
            .is_none_or(|s| s.state != cri::ContainerState::ContainerRunning as i32)
        {
            if let Some(s) = &latest {
                v["lastState"] = state(s);
            }
            v["state"] = json!({"waiting": {"reason": w.reason, "message": w.message}});
        }
    }
    v
}

fn state(s: &cri::ContainerStatus) -> Value {
    match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerRunning) => {
            json!({"running": {"startedAt": time(s.started_at)}})
        }
        Ok(cri::ContainerState::ContainerExited) => {
            let reason = if !s.reason.is_empty() {
                s.reason.clone()
            } else if s.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            let mut t = json!({
                "exitCode": s.exit_code,
                "reason": reason,
                "startedAt": time(s.started_at),
                "finishedAt": time(s.finished_at),
                "containerID": format!("skiff://{}", s.id),
            });
            if !s.message.is_empty() {
                t["message"] = json!(s.message);
            }
            json!({ "terminated": t })
        }
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    }
}

fn is(v: &Value, state: &str) -> bool {
    v["state"].get(state).is_some()
}

fn exit(v: &Value) -> Option<i64> {
    v["state"]["terminated"]["exitCode"].as_i64()
}

/// kubelet's phase rules, for the containers' statuses as computed.
fn phase(policy: &str, init: &[Value], apps: &[Value]) -> &'static str {
    for i in init {
        match exit(i) {
            Some(0) => {}
            Some(_) if policy == "Never" => return "Failed",
            _ => return "Pending",
        }
    }
    let running = apps.iter().filter(|a| is(a, "running")).count();
    let exited: Vec<i64> = apps.iter().filter_map(exit).collect();
    let waiting_fresh = apps
        .iter()
        .filter(|a| is(a, "waiting") && a["lastState"].get("terminated").is_none())
        .count();
    if waiting_fresh > 0 && running == 0 {
        return "Pending";
    }
    if running > 0 || exited.len() < apps.len() {
        return "Running";
    }
    match policy {
        "Always" => "Running",
        "OnFailure" if exited.iter().any(|c| *c != 0) => "Running",
        _ if exited.iter().any(|c| *c != 0) => "Failed",
        _ => "Succeeded",
    }
}

/// kubelet's QoS classes from requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let (mut any, mut guaranteed) = (false, true);
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let (req, lim) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
        any |= !req.is_empty() || !lim.is_empty();
        for k in ["cpu", "memory"] {
            let l = lim.get(k);
            guaranteed &= l.is_some() && req.get(k).is_none_or(|q| Some(q) == l);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}

fn condition(pod: &Pod, t: &str, ok: bool, reason: Option<&str>) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == t));
    let since = match old {
        Some(c) if c.status == status => c
            .last_transition_time
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_else(now),
        _ => now(),
    };
    let mut c =
        json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let (false, Some(r)) = (ok, reason) {
        c["reason"] = json!(r);
    }
    c
}

/// The status the pod has now.
pub async fn compute(d: &Arc<Daemon>, o: &Observed<'_>) -> Value {
    let pod = o.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut init = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        init.push(container_status(d, o, c).await);
    }
    let mut apps = Vec::new();
    for c in &spec.containers {
        apps.push(container_status(d, o, c).await);
    }
    let settled: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .zip(&init)
        .map(|(c, v)| super::sidecar::settled(c, v))
        .collect();
    let phase = phase(policy, &settled, &apps);
    let initialized = settled.iter().all(|i| exit(i) == Some(0));
    let ready = initialized && apps.iter().all(|a| a["ready"] == true);
    let not_ready = if initialized {
        "ContainersNotReady"
    } else {
        "PodInitializing"
    };
    let conditions = vec![
        condition(pod, "PodReadyToStartContainers", o.sandbox_ready, None),
        condition(
            pod,
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
        ),
        condition(pod, "Ready", ready, Some(not_ready)),
        condition(pod, "ContainersReady", ready, Some(not_ready)),
        condition(pod, "PodScheduled", true, None),
    ];
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(now);
    let mut st = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": o.host_ip,
        "hostIPs": [{"ip": o.host_ip}],
        "startTime": start,
        "qosClass": qos_class(pod),
        "containerStatuses": apps,
    });
    if !init.is_empty() {
        st["initContainerStatuses"] = json!(init);
    }
    if let Some(ip) = o.pod_ips.first() {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!(o
            .pod_ips
            .iter()
            .map(|i| json!({"ip": i}))
            .collect::<Vec<_>>());
    }
    st
}

/// Patches `status` into the pod; a merge patch, so the lists are replaced whole.
pub async fn patch(client: kube::Client, pod: &Pod, status: &Value) -> kube::Result<Pod> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(client, ns);
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
}

/// Whether two computed statuses differ in more than the times conditions were last probed.
pub fn differs(a: &Value, b: &Value) -> bool {
    a != b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: Value) -> Value {
        json!({"state": state, "lastState": {}})
    }

    #[test]
    fn phases_follow_kubelet() {
        let run = c(json!({"running": {}}));
        let ok = c(json!({"terminated": {"exitCode": 0}}));
        let bad = c(json!({"terminated": {"exitCode": 1}}));
        let fresh = c(json!({"waiting": {"reason": "ContainerCreating"}}));
        assert_eq!(
            phase("Always", &[], std::slice::from_ref(&fresh)),
            "Pending"
        );
        assert_eq!(phase("Always", &[], std::slice::from_ref(&run)), "Running");
        assert_eq!(
            phase(
                "Always",
                std::slice::from_ref(&run),
                std::slice::from_ref(&fresh)
            ),
            "Pending"
        );
        assert_eq!(phase("Never", &[], std::slice::from_ref(&ok)), "Succeeded");
        assert_eq!(phase("Never", &[], &[ok.clone(), bad.clone()]), "Failed");
        assert_eq!(
            phase("OnFailure", &[], std::slice::from_ref(&bad)),
            "Running"
        );
        assert_eq!(
            phase("Never", std::slice::from_ref(&bad), &[fresh]),
            "Failed"
        );
    }
}
