//! Exit watching: one task per live monitor waits on the monitor's pidfd and publishes
//! ContainerStopped when it is gone; at start-up, the same for monitors that outlived a previous
//! skiffd, and cleanup of what no record owns.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cri_api::v1 as cri;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::super::Daemon;
use super::monitor_alive::monitor_alive;
use super::ContainerRecord;
use crate::monitor::protocol::ExitRecord;

/// Containers whose exit one daemon has published (ContainerStopped), so it is published once.
/// After a restart of skiffd every exit known at recovery counts as published.
#[derive(Default)]
pub struct ExitsSeen(Mutex<HashSet<String>>);

/// Forgets a removed container.
pub fn forget(d: &Daemon, id: &str) {
    d.exits_seen
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
}

/// Watches the container's monitor and publishes the exit when it ends.
pub fn arm(d: &Arc<Daemon>, c: &ContainerRecord) {
    let d = d.clone();
    let c = c.clone();
    tokio::spawn(async move {
        wait_monitor(&c).await;
        // A container that outlived its monitor is watched through its init: its end is
        // noticed, and its time recorded, when it happens rather than when someone asks.
        wait_orphaned_init(&d, &c).await;
        if d.containers.get(&c.id).is_none() {
            return;
        }
        // Behind a running start or stop of the same container, so events keep their order.
        let _g = d.containers.lock(&c.id).await;
        super::status::phase(&d, &c);
        mark_exited(&d, &c.id);
    });
}

async fn wait_monitor(c: &ContainerRecord) {
    let Ok(fd) = skiff_sys::fd::pidfd_open(c.monitor_pid) else {
        return;
    };
    // The pidfd names the process now; if that is not our monitor, ours is already gone.
    if !monitor_alive(c) {
        return;
    }
    wait_pidfd(fd, &c.id, || monitor_alive(c)).await;
}

async fn wait_orphaned_init(d: &Daemon, c: &ContainerRecord) {
    let Ok(fd) = skiff_sys::fd::pidfd_open(c.pid) else {
        return;
    };
    // As for the monitor: checked after the pidfd is open, so a reused pid is not waited for.
    let running = |d: &Daemon| {
        d.containers.get(&c.id).is_some()
            && super::status::phase(d, c).state == cri::ContainerState::ContainerRunning
    };
    if !running(d) {
        return;
    }
    tracing::warn!(
        container = c.id,
        "the monitor is gone, the container still runs"
    );
    wait_pidfd(fd, &c.id, || running(d)).await;
}

/// Until the process behind `fd` has ended (or, if the pidfd cannot be polled, `alive` is false).
async fn wait_pidfd(fd: std::os::fd::OwnedFd, id: &str, alive: impl Fn() -> bool) {
    // SAFETY: the AsyncFd owns the pidfd, which stays open and unchanged until it drops.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(e) => {
            let e = e.to_string();
            tracing::warn!(container = id, "watch process: {e}; polling");
            while alive() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

/// Records that the container's exit is known and publishes ContainerStopped, once.
pub fn mark_exited(d: &Daemon, id: &str) {
    let first = {
        let mut seen = d.exits_seen.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = d.containers.get(id) else {
            return;
        };
        let known = ExitRecord::read(&c.exit_file()).is_some() || !monitor_alive(&c);
        known && seen.insert(id.to_owned())
    };
    if first {
        if let Some(c) = d.containers.get(id) {
            d.emit(
                id,
                &c.sandbox_id,
                cri::ContainerEventType::ContainerStoppedEvent,
            );
        }
    }
}

/// Re-arms watchers of live monitors, notes exits that happened while skiffd was down, and removes
/// runtime containers and directories that belong to no record.
pub async fn recover(d: &Arc<Daemon>) {
    for c in d.containers.list() {
        let running = || super::status::phase(d, &c).state == cri::ContainerState::ContainerRunning;
        if monitor_alive(&c) || running() {
            arm(d, &c);
        } else {
            mark_exited(d, &c.id);
        }
    }
    let dd = d.clone();
    let _ = tokio::task::spawn_blocking(move || collect_garbage(&dd)).await;
}

fn collect_garbage(d: &Daemon) {
    // Sandbox-level objects (infra processes) share the runtime root only if they are containers
    // with records of their own kind; only ids that look like ours are touched.
    let ours = |id: &str| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if let Ok(list) = d.oci.list() {
        for st in list {
            if ours(&st.id)
                && d.containers.get(&st.id).is_none()
                && d.sandboxes.get(&st.id).is_none()
            {
                tracing::info!(container = st.id, "removing a container without a record");
                if let Err(e) = d.oci.delete(&st.id, true) {
                    tracing::warn!(container = st.id, "{e}");
                }
            }
        }
    }
    let dir = d.config.state_dir.join("containers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && ours(&name) && d.containers.get(&name).is_none() {
            tracing::info!(container = name, "removing a directory without a record");
            super::remove_bundle(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::testing;

    fn seen(d: &Daemon, id: &str) -> bool {
        d.exits_seen
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Each daemon publishes an exit once for itself: one daemon's record of published exits does
    /// not silence another's.
    #[test]
    fn two_daemons_publish_an_exit_each() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            testing::daemon(&tmp.path().join("a")),
            testing::daemon(&tmp.path().join("b")),
        );
        let c = testing::record("c1", "pod");
        for d in [&a, &b] {
            d.containers.put(&c).expect("put");
        }
        mark_exited(&a, "c1");
        assert!(seen(&a, "c1") && !seen(&b, "c1"));
        mark_exited(&b, "c1");
        assert!(seen(&b, "c1"));
        forget(&a, "c1");
        assert!(!seen(&a, "c1") && seen(&b, "c1"));
    }
}
