//! What a container is now (from the monitor's exit record, the runtime's state and the monitor's
//! liveness) as CRI statuses, lists and verbose info.

use std::collections::HashMap;

use cri_api::v1 as cri;
use skiff_runtime::state::Status as RtStatus;

use super::super::Daemon;
use super::monitor_alive::monitor_alive;
use super::ContainerRecord;
use crate::monitor::protocol::ExitRecord;

/// A container's phase with what the CRI reports about an exit.
pub struct Phase {
    pub state: cri::ContainerState,
    pub exit: Option<ExitRecord>,
    pub reason: String,
    pub message: String,
}

/// The runtime's view of the container, read without taking its lock.
fn runtime_state(d: &Daemon, id: &str) -> Option<RtStatus> {
    d.oci.observe(id).ok().map(|o| o.status)
}

pub fn phase(d: &Daemon, c: &ContainerRecord) -> Phase {
    if let Some(e) = ExitRecord::read(&c.exit_file()) {
        if e.lost {
            return lost(e);
        }
        let reason = if e.oom_killed {
            "OOMKilled"
        } else if e.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        return Phase {
            state: cri::ContainerState::ContainerExited,
            exit: Some(e),
            reason: reason.into(),
            message: String::new(),
        };
    }
    let live = monitor_alive(c);
    let state = match runtime_state(d, &c.id) {
        Some(RtStatus::Created | RtStatus::Creating) => cri::ContainerState::ContainerCreated,
        Some(RtStatus::Running | RtStatus::Paused) => cri::ContainerState::ContainerRunning,
        // The init is gone and the monitor is about to record it.
        _ if live && c.started_at > 0 => cri::ContainerState::ContainerRunning,
        _ if live => cri::ContainerState::ContainerCreated,
        _ => return lost(record_loss(c)),
    };
    Phase {
        state,
        exit: None,
        reason: String::new(),
        message: String::new(),
    }
}

fn lost(e: ExitRecord) -> Phase {
    Phase {
        state: cri::ContainerState::ContainerExited,
        exit: Some(e),
        reason: "Unknown".into(),
        message: "the container's monitor ended without recording its exit".into(),
    }
}

/// Records, once, that the container ended unseen: nobody else will, and without a record every
/// status would give another time (or none: 1970). The first writer's time stands.
fn record_loss(c: &ContainerRecord) -> ExitRecord {
    let rec = ExitRecord {
        exit_code: 255,
        finished_at: crate::now_ns(),
        lost: true,
        ..Default::default()
    };
    let path = c.exit_file();
    let tmp = path.with_extension(format!("lost.{}", crate::now_ns()));
    let data = serde_json::to_vec(&rec).unwrap_or_default();
    let written = skiff_runtime::state::write_atomic(&tmp, &data, 0o644)
        .map_err(|e| e.to_string())
        .and_then(|()| match std::fs::hard_link(&tmp, &path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.to_string()),
            _ => Ok(()),
        });
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = written {
        tracing::warn!(container = c.id, "record the lost exit: {e}");
        return rec;
    }
    tracing::warn!(
        container = c.id,
        "the container's monitor ended without recording its exit"
    );
    ExitRecord::read(&path).unwrap_or(rec)
}

/// The CRI status of a container, as `ContainerStatus` and container events report it.
pub fn container_status(d: &Daemon, c: &ContainerRecord) -> cri::ContainerStatus {
    let p = phase(d, c);
    let (exit_code, finished_at) = p
        .exit
        .as_ref()
        .map(|e| (e.exit_code, e.finished_at))
        .unwrap_or((0, 0));
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: p.state as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at,
        exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        image_id: c.image_id.clone(),
        reason: p.reason,
        message: p.message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| cri::ContainerResources {
                linux: Some(r),
                ..Default::default()
            }),
        stop_signal: c.config.stop_signal,
        user: spec_user(c).map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: u.uid.into(),
                gid: u.gid.into(),
                supplemental_groups: u.additional_gids.iter().map(|g| (*g).into()).collect(),
            }),
        }),
    }
}

/// The identity the container's process runs as, from its spec.
fn spec_user(c: &ContainerRecord) -> Option<skiff_runtime::spec::User> {
    let spec = skiff_runtime::spec::Spec::load(&c.bundle).ok()?;
    spec.process().map(|p| p.user.clone())
}

/// `verbose` ContainerStatus: `info["info"]` is a JSON document for debugging.
pub fn verbose_info(d: &Daemon, c: &ContainerRecord) -> HashMap<String, String> {
    let spec: serde_json::Value = std::fs::read(c.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let info = serde_json::json!({
        "sandboxID": c.sandbox_id,
        "pid": c.pid,
        "monitorPid": c.monitor_pid,
        "monitorAlive": monitor_alive(c),
        "bundle": c.bundle,
        "runtimeRoot": d.config.runtime_root(),
        "imageName": c.image_name,
        "imageID": c.image_id,
        "exit": ExitRecord::read(&c.exit_file()),
        "runtimeSpec": spec,
    });
    [("info".to_string(), info.to_string())].into()
}

/// ListContainers: ids and sandbox ids match by prefix, as crictl abbreviates them.
pub fn list(d: &Daemon, f: Option<&cri::ContainerFilter>) -> Vec<cri::Container> {
    d.containers
        .list()
        .into_iter()
        .filter(|c| matches_ids(c, f))
        .map(|c| (phase(d, &c).state as i32, c))
        .filter(|(state, c)| matches_rest(*state, c, f))
        .map(|(state, c)| cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.sandbox_id.clone(),
            metadata: c.config.metadata.clone(),
            image: Some(image_spec(&c)),
            image_ref: c.image_id.clone(),
            state,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_id,
        })
        .collect()
}

/// The image as the client asked for it.
fn image_spec(c: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: c.image_name.clone(),
        annotations: c
            .config
            .image
            .as_ref()
            .map(|i| i.annotations.clone())
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn matches_ids(c: &ContainerRecord, f: Option<&cri::ContainerFilter>) -> bool {
    let Some(f) = f else {
        return true;
    };
    (f.id.is_empty() || c.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
}

fn matches_rest(state: i32, c: &ContainerRecord, f: Option<&cri::ContainerFilter>) -> bool {
    let Some(f) = f else {
        return true;
    };
    let state_ok = f.state.as_ref().is_none_or(|v| v.state == state);
    let labels_ok = f
        .label_selector
        .iter()
        .all(|(k, v)| c.config.labels.get(k) == Some(v));
    state_ok && labels_ok
}
