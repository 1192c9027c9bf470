//! Start, stop, remove and log reopening of existing containers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use tonic::Status;

use super::super::error::internal;
use super::super::{blocking, Daemon};
use super::monitor_alive::monitor_alive;
use super::status::phase;
use super::watch::mark_exited;
use super::{lookup, reopen_file, ContainerRecord};
use crate::monitor::protocol::ExitRecord;

/// How long a SIGKILLed container may take to be reaped and recorded.
const KILL_WAIT: Duration = Duration::from_secs(30);

pub async fn start(d: &Arc<Daemon>, id: &str) -> Result<(), Status> {
    let c = lookup(d, id)?;
    let id = c.id.as_str();
    let _g = d.containers.lock(id).await;
    let p = phase(d, &c);
    if p.state != cri::ContainerState::ContainerCreated {
        return Err(Status::failed_precondition(format!(
            "container {id} is {}, not created",
            p.state.as_str_name()
        )));
    }
    let dd = d.clone();
    let cid = id.to_owned();
    blocking(move || {
        dd.oci
            .start(&cid)
            .map_err(|e| Status::unknown(format!("start container {cid}: {e}")))
    })
    .await?;
    d.containers
        .update(id, |c| c.started_at = crate::now_ns())?;
    d.emit(
        id,
        &c.sandbox_id,
        cri::ContainerEventType::ContainerStartedEvent,
    );
    Ok(())
}

/// The signal that asks the container to stop: the config's, the image's, or SIGTERM.
fn stop_signal(d: &Daemon, c: &ContainerRecord) -> i32 {
    let from_config = cri::Signal::try_from(c.config.stop_signal)
        .ok()
        .filter(|s| *s != cri::Signal::RuntimeDefault)
        .map(|s| s.as_str_name().to_owned());
    from_config
        .or_else(|| {
            super::super::image::resolve(d, &c.image_id)
                .ok()
                .and_then(|i| i.run.stop_signal)
        })
        .and_then(|s| skiff_runtime::container::parse_signal(&s).ok())
        .unwrap_or(libc::SIGTERM)
}

/// The stop signal, then SIGKILL to everything in the container after `timeout` seconds. Stopping an
/// exited container does nothing.
pub async fn stop(d: &Arc<Daemon>, c: &ContainerRecord, timeout: i64) -> Result<(), Status> {
    let _g = d.containers.lock(&c.id).await;
    let p = phase(d, c);
    if p.state == cri::ContainerState::ContainerExited {
        finish_exit(d, c).await;
        return Ok(());
    }
    // A created init waits on its exec fifo; only SIGKILL ends it.
    if timeout > 0 && p.state == cri::ContainerState::ContainerRunning {
        kill(d, &c.id, stop_signal(d, c), false).await;
        let limit = Duration::from_secs(timeout.clamp(0, 24 * 3600) as u64);
        if wait_exit(c, limit).await {
            finish_exit(d, c).await;
            return Ok(());
        }
    }
    kill(d, &c.id, libc::SIGKILL, true).await;
    if !wait_exit(c, KILL_WAIT).await {
        return Err(Status::deadline_exceeded(format!(
            "container {} did not exit after SIGKILL",
            c.id
        )));
    }
    finish_exit(d, c).await;
    Ok(())
}

async fn kill(d: &Arc<Daemon>, id: &str, sig: i32, all: bool) {
    let dd = d.clone();
    let cid = id.to_owned();
    let _ = blocking(move || {
        if let Err(e) = dd.oci.kill(&cid, sig, all) {
            tracing::debug!(container = cid, "signal {sig}: {e}");
        }
        Ok(())
    })
    .await;
}

/// Waits until the exit is recorded, or the monitor is gone without recording it.
async fn wait_exit(c: &ContainerRecord, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_millis(2);
    loop {
        if c.exit_file().exists() || !monitor_alive(c) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(nap).await;
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

/// After the container ended: a monitor that died without recording the exit gets a record written
/// for it, so the status stays stable; then ContainerStopped is published once.
async fn finish_exit(d: &Arc<Daemon>, c: &ContainerRecord) {
    let path = c.exit_file();
    if !path.exists() && !monitor_alive(c) {
        let rec = ExitRecord {
            exit_code: 137,
            signal: libc::SIGKILL,
            oom_killed: false,
            finished_at: crate::now_ns(),
            lost: false,
        };
        let data = serde_json::to_vec(&rec).unwrap_or_default();
        if let Err(e) = skiff_runtime::state::write_atomic(&path, &data, 0o644) {
            tracing::warn!(container = c.id, "{e}");
        }
    }
    mark_exited(d, &c.id);
}

/// Kills the container if needed and removes every trace of it. Removing twice is not an error.
pub async fn remove(d: &Arc<Daemon>, c: &ContainerRecord) -> Result<(), Status> {
    if phase(d, c).state != cri::ContainerState::ContainerExited {
        stop(d, c, 0).await?;
    }
    let _g = d.containers.lock(&c.id).await;
    if d.containers.get(&c.id).is_none() {
        return Ok(());
    }
    let dd = d.clone();
    let rec = c.clone();
    blocking(move || {
        // The monitor writes its record into the bundle directory: let it finish first.
        let deadline = Instant::now() + Duration::from_secs(5);
        while monitor_alive(&rec) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        dd.oci
            .delete(&rec.id, true)
            .map_err(|e| internal(format!("delete container {}: {e}", rec.id)))?;
        super::remove_bundle(&rec.bundle);
        Ok(())
    })
    .await?;
    d.containers.remove(&c.id)?;
    d.fs_info.invalidate();
    super::watch::forget(d, &c.id);
    d.emit(
        &c.id,
        &c.sandbox_id,
        cri::ContainerEventType::ContainerDeletedEvent,
    );
    Ok(())
}

/// Has the monitor reopen the log file (after kubelet rotated it) and waits for its confirmation.
pub async fn reopen_log(d: &Arc<Daemon>, c: &ContainerRecord) -> Result<(), Status> {
    if phase(d, c).state != cri::ContainerState::ContainerRunning || !monitor_alive(c) {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            c.id
        )));
    }
    let file = reopen_file(&c.bundle);
    let count = || -> u64 {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = count();
    // SAFETY: kill has no memory effects; the pid was just verified to be our monitor.
    if unsafe { libc::kill(c.monitor_pid, libc::SIGUSR1) } != 0 {
        return Err(internal(std::io::Error::last_os_error()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() <= before {
        if Instant::now() > deadline || !monitor_alive(c) {
            return Err(internal(format!(
                "the monitor of container {} did not reopen its log",
                c.id
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
