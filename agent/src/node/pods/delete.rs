//! Ending a pod as kubelet does: its containers get SIGTERM and the grace period (StopContainer's
//! timeout), then SIGKILL; the sandbox is stopped and removed, the pod's directory and its log
//! directory too; then the pod object is deleted with grace 0, which tells the API the node is done
//! with it.

use std::collections::HashSet;
use std::sync::Arc;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};

use super::{sandbox, POD_UID};
use crate::cri::{container, sandbox as cri_sandbox, Daemon};
use crate::node::logs::pod_dirs;
use crate::node::Settings;

/// kubelet's default when the pod names no grace period.
const DEFAULT_GRACE: i64 = 30;

/// The grace period in force: the deletion's, else the spec's.
pub fn grace(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE)
        .max(0)
}

/// Stops every container of the pod in parallel with `grace` seconds each, then stops and removes
/// its sandboxes, its directory and its log directory.
pub async fn teardown(d: &Arc<Daemon>, s: &Settings, uid: &str, grace: i64) {
    for sb in sandbox::of_pod(d, uid).await {
        stop_containers(d, &sb.id, grace).await;
        let id = sb.id.clone();
        if let Err(e) = cri_sandbox::stop(
            d,
            cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            },
        )
        .await
        {
            tracing::warn!(sandbox = %id, error = %e.message(), "stop the sandbox of a pod gone");
        }
        if let Err(e) = cri_sandbox::remove(
            d,
            cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            },
        )
        .await
        {
            tracing::warn!(sandbox = %id, error = %e.message(), "remove the sandbox of a pod gone");
        }
    }
    crate::node::volumes::remove_pod_dir(&crate::node::volumes::pod_dir(&s.root_dir, uid));
    pod_dirs::remove_pod(&s.pod_logs_dir, uid);
}

/// Stops the sandbox's running containers, `grace` seconds each: the app containers in parallel,
/// then the restartable init containers (sidecars), last started first, which outlive them.
pub async fn stop_containers(d: &Arc<Daemon>, sandbox_id: &str, grace: i64) {
    let filter = cri::ContainerFilter {
        pod_sandbox_id: sandbox_id.into(),
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let running = container::list(
        d,
        cri::ListContainersRequest {
            filter: Some(filter),
        },
    )
    .await
    .map(|r| r.containers)
    .unwrap_or_default();
    let (sidecars, apps): (Vec<_>, Vec<_>) =
        running.into_iter().partition(super::sidecar::labelled);
    stop_all(d, apps, grace).await;
    let mut sidecars = sidecars;
    sidecars.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    for c in sidecars {
        stop_all(d, vec![c], grace).await;
    }
}

async fn stop_all(d: &Arc<Daemon>, running: Vec<cri::Container>, grace: i64) {
    let stops = running.into_iter().map(|c| {
        let d = d.clone();
        tokio::spawn(async move {
            let req = cri::StopContainerRequest {
                container_id: c.id.clone(),
                timeout: grace,
            };
            if let Err(e) = container::stop(&d, req).await {
                tracing::warn!(container = %c.id, error = %e.message(), "stop a container");
            }
        })
    });
    for s in stops.collect::<Vec<_>>() {
        let _ = s.await;
    }
}

/// Deletes the pod object for good once its containers are gone (grace 0, this uid only).
pub async fn finish(client: kube::Client, pod: &Pod) -> kube::Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(client, ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tears down sandboxes of pods the API no longer binds to this node (deleted while skiffd was
/// down, or force-deleted), and removes the log directories of pods it does not bind. Sandboxes
/// without kubelet's labels are not the node's: left alone.
pub async fn orphans(d: &Arc<Daemon>, s: &Settings, known: &HashSet<String>) {
    let all = cri_sandbox::list(d, cri::ListPodSandboxRequest { filter: None })
        .await
        .map(|r| r.items)
        .unwrap_or_default();
    let gone: HashSet<String> = all
        .iter()
        .filter_map(|s| s.labels.get(POD_UID))
        .filter(|uid| !known.contains(*uid))
        .cloned()
        .collect();
    for uid in gone {
        tracing::info!(%uid, "tearing down the sandbox of a pod no longer bound here");
        teardown(d, s, &uid, 0).await;
    }
    pod_dirs::remove_unknown(&s.pod_logs_dir, known);
}
