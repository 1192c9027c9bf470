//! One worker per pod, level-triggered: every change of the pod and every second it compares the
//! spec with what the CRI runs and does the next step. What it finds running (after a restart of
//! skiffd too) it adopts, never restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tokio::sync::watch as chan;

use super::containers::{self, State};
use super::deadline::{self, Verdict};
use super::eviction;
use super::probes::{self, Probes};
use super::target::{self, Target};
use super::{cgroups, delete, hooks, sandbox, status, Shared, RESYNC};
use crate::cri::sandbox as cri_sandbox;
use crate::node::events::{Throttle, Type};
use crate::node::volumes::downward::Allocatable;
use crate::node::volumes::{self, PodVolumes};
use crate::node::{machine, quantity, NodeContext};

struct Worker {
    ctx: Arc<NodeContext>,
    shared: Arc<Shared>,
    clients: chan::Receiver<kube::Client>,
    uid: String,
    volumes: PodVolumes,
    /// The node's allocatable resources: the limits a container leaves unset.
    allocatable: Allocatable,
    containers: State,
    probes: Probes,
    noted: Throttle,
    reported: Option<Value>,
    /// Set once the node has ended the pod itself (its deadline passed).
    verdict: Option<Verdict>,
    /// When the pod's local storage was last measured against its limits.
    storage_checked: Option<Instant>,
}

/// Runs the pod `rx` carries until it is gone (`None`) or deleted.
pub async fn run(
    ctx: Arc<NodeContext>,
    shared: Arc<Shared>,
    clients: chan::Receiver<kube::Client>,
    mut rx: chan::Receiver<Option<Pod>>,
) {
    let Some(first) = rx.borrow().clone() else {
        return;
    };
    let uid = first.metadata.uid.clone().unwrap_or_default();
    let mut w = Worker {
        volumes: PodVolumes::new(&ctx.settings.root_dir, &uid),
        allocatable: allocatable(&ctx),
        ctx,
        shared,
        clients,
        uid,
        containers: State::default(),
        probes: Probes::new(),
        noted: Throttle::default(),
        reported: None,
        verdict: None,
        storage_checked: None,
    };
    let probed = w.probes.changed();
    let mut last = first;
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            None => {
                hooks::stop_pod(&w.shared, &last, delete::grace(&last)).await;
                let grace = delete::grace(&last);
                delete::teardown(&w.ctx.daemon, &w.ctx.settings, &w.uid, grace).await;
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                if w.terminate(&pod).await {
                    return;
                }
                last = pod;
            }
            Some(pod) => {
                w.sync(&pod).await;
                last = pod;
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = probed.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

impl Worker {
    fn client(&self) -> kube::Client {
        self.clients.borrow().clone()
    }

    fn host_ip(&self) -> String {
        self.ctx
            .settings
            .node_ips
            .first()
            .map(|i| i.to_string())
            .unwrap_or_default()
    }

    /// A pod is finished when its phase is terminal (or the node has ended it): nothing is started
    /// for it any more.
    fn finished(&self, pod: &Pod) -> bool {
        self.verdict.is_some()
            || matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
    }

    /// Past `activeDeadlineSeconds`: every container is killed with the pod's grace period, the
    /// sandbox kept for the final status.
    async fn enforce_deadline(&mut self, pod: &Pod) {
        if self.finished(pod) {
            return;
        }
        if let Some(v) = deadline::check(pod, k8s_openapi::chrono::Utc::now()) {
            tracing::info!(pod = ?pod.metadata.name, "active deadline exceeded: killing the pod's containers");
            self.end(pod, v).await;
        }
    }

    /// Evicts the pod whose disk-backed emptyDir has outgrown its `sizeLimit`.
    async fn enforce_storage(&mut self, pod: &Pod) {
        let due = self
            .storage_checked
            .is_none_or(|at| at.elapsed() >= eviction::PERIOD);
        if self.finished(pod) || !due {
            return;
        }
        self.storage_checked = Some(Instant::now());
        let volumes =
            crate::node::volumes::pod_dir(&self.ctx.settings.root_dir, &self.uid).join("volumes");
        if let Some(v) = eviction::check(pod, &volumes) {
            tracing::info!(pod = ?pod.metadata.name, message = %v.message, "evicting the pod");
            let events = &self.shared.events;
            events.pod(
                pod,
                None,
                Type::Warning,
                eviction::REASON,
                v.message.clone(),
            );
            self.end(pod, v).await;
        }
    }

    /// Ends the pod on the node's own account: its containers killed, `v` its final status.
    async fn end(&mut self, pod: &Pod, v: Verdict) {
        for sb in sandbox::of_pod(&self.ctx.daemon, &self.uid).await {
            delete::stop_containers(&self.ctx.daemon, &sb.id, delete::grace(pod)).await;
        }
        self.verdict = Some(v);
    }

    async fn sync(&mut self, pod: &Pod) {
        self.enforce_deadline(pod).await;
        self.enforce_storage(pod).await;
        let mounts = match self
            .volumes
            .sync(&self.client(), pod, &self.allocatable)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, reason = "FailedMount", error = %e, "volumes not ready");
                if self.noted.allow("FailedMount") {
                    let events = &self.shared.events;
                    events.pod(pod, None, Type::Warning, "FailedMount", e.to_string());
                }
                self.mount_failed(pod, &e);
                let none = probes::View::default();
                self.report(pod, false, &[], &HashMap::new(), &none).await;
                return;
            }
        };
        let d = self.ctx.daemon.clone();
        let config = sandbox::config(&self.ctx.settings, pod, 0);
        let existing = sandbox::of_pod(&d, &self.uid).await;
        let ready = existing
            .iter()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .cloned();
        let sandbox_id = match ready {
            Some(s) => s.id,
            None if self.finished(pod) => return,
            None => match self.start_sandbox(pod, existing.len() as u32).await {
                Some(id) => id,
                None => return,
            },
        };
        let host_ip = self.host_ip();
        // A pod on the node's network has the node's addresses, as kubelet reports them.
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let node_ips = &self.ctx.settings.node_ips;
        let ips = if host_network {
            node_ips.iter().map(ToString::to_string).collect()
        } else {
            let v4_first = node_ips.first().is_none_or(std::net::IpAddr::is_ipv4);
            sandbox::by_family(&sandbox::ips(&d, &sandbox_id).await, v4_first)
        };
        if !self.finished(pod) {
            let client = self.client();
            let target = Target {
                shared: &self.shared,
                client: &client,
                d: &d,
                pod,
                sandbox_id: &sandbox_id,
                sandbox: &config,
                pod_ips: &ips,
                node_name: &self.ctx.settings.node_name,
                host_ip: &host_ip,
                mounts: &mounts,
                pod_dir: &volumes::pod_dir(&self.ctx.settings.root_dir, &self.uid),
                allocatable: &self.allocatable,
                settings: &self.ctx.settings,
            };
            containers::step(&target, &mut self.containers).await;
        }
        let instances = target::instances(&d, &sandbox_id).await;
        let ip = ips.first().map(String::as_str);
        let view = self.probes.sync(&self.shared, pod, ip, &instances).await;
        self.restart_unhealthy(pod, ip, &view).await;
        self.report(pod, true, &ips, &instances, &view).await;
    }

    /// Kills the containers whose liveness or startup probe failed; the next sync restarts them
    /// per restartPolicy, as any exited container.
    async fn restart_unhealthy(&mut self, pod: &Pod, ip: Option<&str>, view: &probes::View) {
        let spec = pod.spec.clone().unwrap_or_default();
        for (name, id, kind) in &view.failed {
            let c = spec.containers.iter().find(|c| &c.name == name);
            let why = format!(
                "Container {name} failed {} probe, will be restarted",
                kind.name().to_lowercase()
            );
            tracing::info!(pod = ?pod.metadata.name, container = %name, %id, "{why}");
            let grace = probes::kill_grace(pod, c, *kind);
            hooks::kill(&self.shared, pod, c, id, ip, grace, &why).await;
        }
    }

    /// Every container waits on the volume that cannot be set up, and says why.
    fn mount_failed(&mut self, pod: &Pod, e: &volumes::Error) {
        let spec = pod.spec.clone().unwrap_or_default();
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        for c in all {
            self.containers.waiting.insert(
                c.name.clone(),
                containers::Waiting {
                    reason: "ContainerCreating".into(),
                    message: format!("MountVolume.SetUp failed: {e}"),
                },
            );
        }
    }

    async fn start_sandbox(&mut self, pod: &Pod, attempt: u32) -> Option<String> {
        let mut config = sandbox::config(&self.ctx.settings, pod, attempt);
        if let Some(layout) = super::cgroup_layout(&self.ctx) {
            match cgroups::prepare(&layout, pod) {
                Ok(parent) => {
                    if let Some(l) = config.linux.as_mut() {
                        l.cgroup_parent = parent;
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = ?pod.metadata.name, error = %e, "pod cgroup not made");
                    return None;
                }
            }
        }
        if let Err(e) = std::fs::create_dir_all(&config.log_directory) {
            tracing::warn!(dir = %config.log_directory, error = %e, "create the pod's log directory");
        }
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: pod
                .spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.clone())
                .unwrap_or_default(),
        };
        match cri_sandbox::run(&self.ctx.daemon, req).await {
            Ok(r) => {
                tracing::info!(pod = ?pod.metadata.name, sandbox = %r.pod_sandbox_id, "sandbox started");
                Some(r.pod_sandbox_id)
            }
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, error = %e.message(), "sandbox not started");
                None
            }
        }
    }

    async fn report(
        &mut self,
        pod: &Pod,
        sandbox_ready: bool,
        ips: &[String],
        instances: &HashMap<String, Vec<cri::Container>>,
        view: &probes::View,
    ) {
        let host_ip = self.host_ip();
        let observed = status::Observed {
            ready: &view.ready,
            started: &view.started,
            pod,
            sandbox_ready,
            pod_ips: ips,
            host_ip: &host_ip,
            instances,
            waiting: &self.containers.waiting,
        };
        let mut st = status::compute(&self.ctx.daemon, &observed).await;
        deadline::hold(pod, self.verdict.as_ref(), &mut st);
        if self.reported.as_ref() == Some(&st) {
            return;
        }
        match status::patch(self.client(), pod, &st).await {
            Ok(_) => self.reported = Some(st),
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, error = %e, "patch the pod's status")
            }
        }
    }

    /// Graceful deletion; true once the pod object is gone.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        hooks::stop_pod(&self.shared, pod, delete::grace(pod)).await;
        let grace = delete::grace(pod);
        delete::teardown(&self.ctx.daemon, &self.ctx.settings, &self.uid, grace).await;
        match delete::finish(self.client(), pod).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, error = %e, "delete the pod object");
                false
            }
        }
    }
}

/// The node's allocatable resources in base units, as its status reports them.
fn allocatable(ctx: &NodeContext) -> Allocatable {
    let s = &ctx.settings;
    let nodefs = machine::fs_usage(machine::existing_ancestor(&s.root_dir)).map_or(0, |u| u.bytes);
    crate::node::status::allocatable(&ctx.machine, s, nodefs)
        .into_iter()
        .filter_map(|(k, q)| quantity::parse(&q.0).ok().map(|v| (k, v)))
        .collect()
}
