//! Lifecycle hooks, and stopping a container as kubelet does: `postStart` right after the
//! container started (when it fails the container is killed: `FailedPostStartHook`), `preStop`
//! before SIGTERM, within the grace period it shares with the stop that follows
//! (`FailedPreStopHook` when it fails). Handlers run commands (exec) or GET a URL (httpGet);
//! the `sleep` handler is newer than the Kubernetes 1.28 API skiff's node speaks.

use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::actions::Target;
use super::sandbox::{self, PodRef};
use super::{target, Shared};
use crate::cri::container;
use crate::node::events::Type;

/// kubelet's floor for what is left of the grace period after preStop.
const MIN_GRACE: i64 = 2;

/// How long an httpGet hook may take: kubelet's hook client has no deadline of its own, but a
/// hook must not hold its pod's worker for ever (preStop is bounded by the grace period anyway).
const HTTP_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The pod as kubelet's messages name it: `name_namespace(uid)`.
pub fn pod_name(pod: &Pod) -> String {
    let r = PodRef::of(pod);
    format!("{}_{}({})", r.name, r.namespace, r.uid)
}

/// Runs the container's postStart hook, if any; on failure the event and the message.
pub async fn post_start(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    id: &str,
    pod_ip: Option<&str>,
) -> Result<(), String> {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
        return Ok(());
    };
    let t = Target {
        container: c,
        id,
        pod_ip,
    };
    let r = run(shared, pod, &t, h).await;
    if let Err(msg) = &r {
        shared.events.pod(
            pod,
            Some(&c.name),
            Type::Warning,
            "FailedPostStartHook",
            msg,
        );
    }
    r
}

/// Stops the container `id` (of spec `c`, when the spec still has it): a `Killing` event saying
/// `why`, its preStop hook within `grace` seconds, then SIGTERM with what is left (at least
/// [`MIN_GRACE`]) before SIGKILL.
pub async fn kill(
    shared: &Shared,
    pod: &Pod,
    c: Option<&Container>,
    id: &str,
    pod_ip: Option<&str>,
    grace: i64,
    why: &str,
) {
    let name = c.map(|c| c.name.as_str());
    shared.events.pod(pod, name, Type::Normal, "Killing", why);
    let mut left = grace;
    let pre_stop = c.and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.as_ref()?)));
    if let (Some((c, h)), true) = (pre_stop, grace > 0) {
        let start = Instant::now();
        let target = Target {
            container: c,
            id,
            pod_ip,
        };
        let budget = Duration::from_secs(grace as u64);
        match tokio::time::timeout(budget, run(shared, pod, &target, h)).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                shared
                    .events
                    .pod(pod, Some(&c.name), Type::Warning, "FailedPreStopHook", msg);
            }
            Err(_) => {
                tracing::info!(pod = %pod_name(pod), container = %c.name, grace, "preStop hook not completed in the grace period");
            }
        }
        left = (grace - start.elapsed().as_secs() as i64).max(MIN_GRACE);
    }
    let req = cri::StopContainerRequest {
        container_id: id.into(),
        timeout: left,
    };
    if let Err(e) = container::stop(shared.actions.daemon(), req).await {
        tracing::warn!(container = %id, error = %e.message(), "stop a container");
    }
}

/// Stops every running container of the pod, each with its preStop hook, as a deletion with
/// `grace` seconds does: the app containers in parallel, then the sidecars (restartable init
/// containers), last started first, which outlive them.
pub async fn stop_pod(shared: &Shared, pod: &Pod, grace: i64) {
    let d = shared.actions.daemon();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut running = Vec::new();
    for sb in sandbox::of_pod(d, &uid).await {
        let ip = sandbox::ips(d, &sb.id).await.into_iter().next();
        for (name, list) in target::instances(d, &sb.id).await {
            for inst in list {
                if inst.state == cri::ContainerState::ContainerRunning as i32 {
                    running.push((name.clone(), inst, ip.clone()));
                }
            }
        }
    }
    let (mut sidecars, apps): (Vec<_>, Vec<_>) = running
        .into_iter()
        .partition(|(_, inst, _)| super::sidecar::labelled(inst));
    sidecars.sort_by_key(|(_, inst, _)| std::cmp::Reverse(inst.created_at));
    let stop = |(name, inst, ip): (String, cri::Container, Option<String>)| {
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned();
        async move {
            let why = format!("Stopping container {name}");
            kill(
                shared,
                pod,
                c.as_ref(),
                &inst.id,
                ip.as_deref(),
                grace,
                &why,
            )
            .await
        }
    };
    futures_util::future::join_all(apps.into_iter().map(stop)).await;
    for s in sidecars {
        stop(s).await;
    }
}

async fn run(
    shared: &Shared,
    pod: &Pod,
    t: &Target<'_>,
    h: &LifecycleHandler,
) -> Result<(), String> {
    let who = format!(
        "for Container {:?} in Pod {:?}",
        t.container.name,
        pod_name(pod)
    );
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let shown = format!("[{}]", cmd.join(" "));
        let joined = cmd.join(" ");
        return match shared.actions.exec_status(t.id, cmd, Duration::ZERO).await {
            Ok((0, _)) => Ok(()),
            Ok((code, out)) => Err(format!(
                "Exec lifecycle hook ({shown}) {who} failed - error: command '{joined}' exited with {code}: {out}, message: {out:?}"
            )),
            Err(e) => Err(format!(
                "Exec lifecycle hook ({shown}) {who} failed - error: {e}, message: \"\""
            )),
        };
    }
    if let Some(g) = &h.http_get {
        let path = g.path.clone().unwrap_or_default();
        return match shared.actions.http_get(t, g, HTTP_HOOK_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "HTTP lifecycle hook ({path}) {who} failed - error: {e}"
            )),
        };
    }
    Err(format!("Cannot run handler {who}: invalid handler"))
}
