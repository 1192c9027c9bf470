//! Pod sandboxes: pinned namespaces, the pod network through CNI, and the files every container of the
//! pod shares (resolv.conf, hostname, hosts).
//!
//! A sandbox is no container (DESIGN.md decision 5): its net, IPC and UTS namespaces are bind-mounted
//! nsfs files under `run_dir/sandboxes/<id>/ns/`, and a PID namespace shared by the pod's containers is
//! held by an infra process.

mod files;
mod network;
pub mod resources;
mod setup;

/// The mount points below a directory, deepest first: what must come off before it goes.
pub use setup::mounts_below;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cri_api::v1 as cri;
use serde_json::json;
use tonic::Status;

use super::error::{full_id, internal, invalid, not_found};
use super::{blocking, container, Daemon};

use super::pod::validate;
pub use super::pod::validate::check_log_directory;
pub use super::pod::{userns, SandboxRecord};
pub use setup::SHM_SIZE;

/// The sandbox named by its full id or a prefix of exactly one id (as crictl users type them);
/// `InvalidArgument` for a malformed id or a prefix of several.
pub fn find(d: &Daemon, id: &str) -> Result<Option<SandboxRecord>, Status> {
    let full = full_id(&d.sandboxes, "pod sandbox", id)?;
    Ok(d.sandboxes.get(&full))
}

fn new_id() -> Result<String, Status> {
    skiff_sys::id::new_id().map_err(|e| internal(format!("random id: {e}")))
}

fn same_pod(a: &cri::PodSandboxMetadata, b: &cri::PodSandboxMetadata) -> bool {
    (&a.name, &a.namespace, &a.uid, a.attempt) == (&b.name, &b.namespace, &b.uid, b.attempt)
}

pub async fn run(
    d: &Arc<Daemon>,
    r: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Status> {
    let config = r.config.ok_or_else(|| invalid("config is missing"))?;
    let plan = validate::check(&config, &r.runtime_handler)?;
    let meta = config.metadata.clone().unwrap_or_default();
    if let Some(other) = d.sandboxes.list().into_iter().find(|s| {
        s.config
            .metadata
            .as_ref()
            .is_some_and(|m| same_pod(m, &meta))
    }) {
        return Err(Status::already_exists(format!(
            "pod {}/{} (uid {}, attempt {}) already has sandbox {}",
            meta.namespace, meta.name, meta.uid, meta.attempt, other.id
        )));
    }
    let id = new_id()?;
    let dd = d.clone();
    let handler = r.runtime_handler;
    let rec = blocking(move || {
        let mut rec = setup::create(&dd, id, config, handler, &plan)?;
        rec.ready = true;
        if let Err(e) = dd.sandboxes.put(&rec) {
            let _ = setup::release(&dd, &mut rec);
            setup::remove_dir(&rec.dir);
            return Err(e.into());
        }
        Ok(rec)
    })
    .await?;
    tracing::info!(sandbox = %rec.id, ips = ?rec.ips, "pod sandbox ready");
    d.emit(
        &rec.id,
        &rec.id,
        cri::ContainerEventType::ContainerCreatedEvent,
    );
    d.emit(
        &rec.id,
        &rec.id,
        cri::ContainerEventType::ContainerStartedEvent,
    );
    Ok(cri::RunPodSandboxResponse {
        pod_sandbox_id: rec.id,
    })
}

pub async fn stop(
    d: &Arc<Daemon>,
    r: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, Status> {
    // kubelet stops sandboxes it only believes exist: an unknown one is stopped already.
    let Some(rec) = find(d, &r.pod_sandbox_id)? else {
        return Ok(cri::StopPodSandboxResponse {});
    };
    let _guard = d.sandboxes.lock(&rec.id).await;
    stop_locked(d, &rec.id).await?;
    Ok(cri::StopPodSandboxResponse {})
}

/// Stops the pod's containers, then its network and infra process; the caller holds the lock.
async fn stop_locked(d: &Arc<Daemon>, id: &str) -> Result<(), Status> {
    let was_ready = mark_stopping(d, id).await?;
    container::stop_in_sandbox(d, id).await?;
    let Some(rec) = d.sandboxes.get(id) else {
        return Ok(());
    };
    let dd = d.clone();
    blocking(move || {
        let mut rec = rec;
        // Saved even when DEL failed: what was released stays released, and the retry redoes the rest.
        let released = setup::release(&dd, &mut rec);
        rec.ready = false;
        dd.sandboxes.put(&rec)?;
        released
    })
    .await?;
    if was_ready {
        tracing::info!(sandbox = %id, "pod sandbox stopped");
        d.emit(id, id, cri::ContainerEventType::ContainerStoppedEvent);
    }
    Ok(())
}

/// Records that the sandbox is no longer ready before anything of it is torn down, so a stop cut off
/// half-way (a crash of skiffd) leaves a sandbox that reports NOTREADY, and the next StopPodSandbox
/// redoes the rest (each step is idempotent). Whether it was ready.
async fn mark_stopping(d: &Arc<Daemon>, id: &str) -> Result<bool, Status> {
    let Some(rec) = d.sandboxes.get(id) else {
        return Ok(false);
    };
    if !rec.ready {
        return Ok(false);
    }
    let (dd, id) = (d.clone(), id.to_owned());
    blocking(move || {
        dd.sandboxes.update(&id, |s| s.ready = false)?;
        Ok(())
    })
    .await?;
    Ok(true)
}

pub async fn remove(
    d: &Arc<Daemon>,
    r: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, Status> {
    let Some(rec) = find(d, &r.pod_sandbox_id)? else {
        return Ok(cri::RemovePodSandboxResponse {});
    };
    let _guard = d.sandboxes.lock(&rec.id).await;
    if d.sandboxes.get(&rec.id).is_none() {
        // Removed by a concurrent call while this one waited for the lock.
        return Ok(cri::RemovePodSandboxResponse {});
    }
    container::remove_in_sandbox(d, &rec.id).await?;
    stop_locked(d, &rec.id).await?;
    let dir = rec.dir.clone();
    blocking(move || {
        setup::remove_dir(&dir);
        Ok(())
    })
    .await?;
    d.emit(
        &rec.id,
        &rec.id,
        cri::ContainerEventType::ContainerDeletedEvent,
    );
    d.sandboxes.remove(&rec.id)?;
    tracing::info!(sandbox = %rec.id, "pod sandbox removed");
    Ok(cri::RemovePodSandboxResponse {})
}

pub async fn status(
    d: &Arc<Daemon>,
    r: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    let rec =
        find(d, &r.pod_sandbox_id)?.ok_or_else(|| not_found("pod sandbox", &r.pod_sandbox_id))?;
    let mut info = HashMap::new();
    if r.verbose {
        info.insert("info".to_string(), verbose_info(&rec).to_string());
    }
    let containers_statuses = d
        .containers
        .list()
        .iter()
        .filter(|c| c.sandbox_id == rec.id)
        .map(|c| container::container_status(d, c))
        .collect();
    Ok(cri::PodSandboxStatusResponse {
        status: Some(sandbox_status(d, &rec)),
        info,
        containers_statuses,
        timestamp: crate::now_ns(),
    })
}

fn verbose_info(rec: &SandboxRecord) -> serde_json::Value {
    json!({
        "record": rec,
        "pinnedNamespaces": {
            "network": rec.netns,
            "ipc": rec.ipcns,
            "uts": rec.utsns,
            "pid": rec.pidns,
        },
        "infraPid": rec.infra_pid,
        "cniNetwork": rec.cni_network,
        "cniResult": rec.cni_result,
        "cgroupParent": rec.cgroup_parent,
        "hostname": std::fs::read_to_string(rec.dir.join("hostname")).unwrap_or_default().trim(),
        "resolvConf": rec.dir.join("resolv.conf"),
        "hosts": rec.dir.join("hosts"),
        "shm": rec.shm,
        "overhead": resources_json(rec.config.linux.as_ref().and_then(|l| l.overhead.as_ref())),
        "resources": resources_json(rec.config.linux.as_ref().and_then(|l| l.resources.as_ref())),
    })
}

fn resources_json(r: Option<&cri::LinuxContainerResources>) -> serde_json::Value {
    r.map_or(serde_json::Value::Null, |r| {
        json!({
            "cpuPeriod": r.cpu_period,
            "cpuQuota": r.cpu_quota,
            "cpuShares": r.cpu_shares,
            "memoryLimitInBytes": r.memory_limit_in_bytes,
            "cpusetCpus": r.cpuset_cpus,
            "cpusetMems": r.cpuset_mems,
        })
    })
}

pub async fn list(
    d: &Arc<Daemon>,
    r: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, Status> {
    let f = r.filter.unwrap_or_default();
    let state = f.state.map(|s| s.state);
    let items = d
        .sandboxes
        .list()
        .into_iter()
        .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
        .map(|s| (sandbox_status(d, &s), s))
        .filter(|(st, _)| state.is_none_or(|want| st.state == want))
        .filter(|(st, _)| {
            f.label_selector
                .iter()
                .all(|(k, v)| st.labels.get(k) == Some(v))
        })
        .map(|(st, s)| cri::PodSandbox {
            id: st.id,
            metadata: st.metadata,
            state: st.state,
            created_at: st.created_at,
            labels: st.labels,
            annotations: st.annotations,
            runtime_handler: s.runtime_handler,
        })
        .collect();
    Ok(cri::ListPodSandboxResponse { items })
}

pub async fn update_resources(
    d: &Arc<Daemon>,
    r: cri::UpdatePodSandboxResourcesRequest,
) -> Result<cri::UpdatePodSandboxResourcesResponse, Status> {
    let rec =
        find(d, &r.pod_sandbox_id)?.ok_or_else(|| not_found("pod sandbox", &r.pod_sandbox_id))?;
    for (field, res) in [("overhead", &r.overhead), ("resources", &r.resources)] {
        if let Some(res) = res {
            resources::check(field, res)?;
        }
    }
    let _guard = d.sandboxes.lock(&rec.id).await;
    let dd = d.clone();
    blocking(move || {
        let rec = dd
            .sandboxes
            .update(&rec.id, |s| {
                let linux = s.config.linux.get_or_insert_with(Default::default);
                if r.overhead.is_some() {
                    linux.overhead = r.overhead.clone();
                }
                if r.resources.is_some() {
                    linux.resources = r.resources.clone();
                }
            })?
            .ok_or_else(|| not_found("pod sandbox", &r.pod_sandbox_id))?;
        resources::apply(dd.cgroup_driver, &rec);
        Ok(())
    })
    .await?;
    Ok(cri::UpdatePodSandboxResourcesResponse {})
}

/// At start-up: checks every sandbox's pinned namespaces and cleans up what belongs to no record
/// (mounts, network namespaces, IP allocations).
pub async fn recover(d: &Arc<Daemon>) {
    let dd = d.clone();
    let done = blocking(move || {
        recover_blocking(&dd);
        Ok(())
    })
    .await;
    if let Err(e) = done {
        tracing::warn!("sandbox recovery: {}", e.message());
    }
}

fn recover_blocking(d: &Daemon) {
    let records = d.sandboxes.list();
    for rec in records.iter().filter(|r| r.ready) {
        if let Some(why) = broken(rec) {
            tracing::warn!(sandbox = %rec.id, "not ready after restart: {why}");
            if let Err(e) = d.sandboxes.update(&rec.id, |s| s.ready = false) {
                tracing::warn!(sandbox = %rec.id, "{e}");
            }
        }
    }
    let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    setup::kill_stray_infras(&setup::pods_dir(d), &known);
    // Before the pod directories go: a DEL for a plugin too old for GC still finds their netns.
    network::collect_garbage(d, &records);
    if let Ok(entries) = std::fs::read_dir(setup::pods_dir(d)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(dir = %e.path().display(), "removing a pod directory without a record");
                setup::remove_dir(&e.path());
            }
        }
    }
}

/// Why a ready sandbox cannot be ready any more: a pin that is no longer mounted, a dead infra process,
/// a pod interface that is gone.
fn broken(rec: &SandboxRecord) -> Option<String> {
    let mounted = setup::mounts_below(&rec.dir);
    for pin in [&rec.netns, &rec.ipcns, &rec.utsns].into_iter().flatten() {
        if !mounted.contains(pin) {
            return Some(format!("{} is not mounted", pin.display()));
        }
    }
    if rec.infra_pid.is_some() && !setup::infra_alive(rec) {
        return Some("the infra process is gone".into());
    }
    if rec.cni_network.is_some() {
        return network::interface_lost(rec);
    }
    None
}

/// The CRI status of a sandbox, as `PodSandboxStatus` and container events report it.
pub fn sandbox_status(_d: &Daemon, sb: &SandboxRecord) -> cri::PodSandboxStatus {
    let namespace_options = sb
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let network = sb
        .ips
        .split_first()
        .map(|(ip, rest)| cri::PodSandboxNetworkStatus {
            ip: ip.clone(),
            additional_ips: rest
                .iter()
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect(),
        });
    cri::PodSandboxStatus {
        id: sb.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: if sb.ready {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        } as i32,
        created_at: sb.created_at,
        network: Some(network.unwrap_or_default()),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(namespace_options),
            }),
        }),
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.runtime_handler.clone(),
    }
}
