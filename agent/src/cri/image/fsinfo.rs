//! `ImageFsInfo` from a measurement kept in memory.
//!
//! Measuring walks the whole image store and every writable layer: seconds on a node with gigabytes
//! of images (136k files take 2.7 s warm here). crictl makes this call to check the socket before
//! every command that touches images (`crictl ps` and `inspect` too), all within its 2 s timeout, and
//! kubelet polls it. So one walk at a time runs on a blocking thread; a caller waits for a fresh
//! answer at most `WAIT` and otherwise gets the last complete one. A walk is fresh for `MAX_AGE`,
//! unless a pull, an image removal or a container's creation or removal made it stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use tokio::sync::watch;

use super::Usage;
use crate::cri::Daemon;

const MAX_AGE: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_millis(800);

pub struct FsInfoCache {
    inner: Mutex<Inner>,
    /// How many walks have completed.
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    last: Option<(Instant, cri::ImageFsInfoResponse)>,
    /// Each container's writable layer, from the same walk.
    containers: HashMap<String, Usage>,
    /// The disk changed since `last` was measured.
    stale: bool,
    running: bool,
}

impl Default for FsInfoCache {
    fn default() -> Self {
        FsInfoCache {
            inner: Mutex::default(),
            done: watch::channel(0).0,
        }
    }
}

impl FsInfoCache {
    /// The next call measures again (waiting for it within `WAIT`).
    pub fn invalidate(&self) {
        self.lock().stale = true;
    }

    /// Container `id`'s writable layer as the last walk found it.
    pub fn container(&self, id: &str) -> Option<Usage> {
        self.lock().containers.get(id).copied()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts a walk unless one is running.
pub fn refresh(d: &Arc<Daemon>) {
    {
        let mut inner = d.fs_info.lock();
        if inner.running {
            return;
        }
        inner.running = true;
        inner.stale = false;
    }
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let walk = Walk(&d.fs_info);
        let (resp, containers) = super::measure_fs(&d);
        let mut inner = walk.0.lock();
        inner.last = Some((Instant::now(), resp));
        inner.containers = containers;
    });
}

/// A walk in progress; its end (even by a panic) lets the next one start and wakes the waiters.
struct Walk<'a>(&'a FsInfoCache);

impl Drop for Walk<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.done.send_modify(|n| *n += 1);
    }
}

/// The answer: the last walk if fresh, else a new one if it ends within `WAIT`, else the last one.
pub async fn get(d: &Arc<Daemon>) -> cri::ImageFsInfoResponse {
    let mut done = d.fs_info.done.subscribe();
    let seen = *done.borrow_and_update();
    {
        let inner = d.fs_info.lock();
        if let Some((at, resp)) = &inner.last {
            if !inner.stale && at.elapsed() < MAX_AGE {
                return resp.clone();
            }
        }
    }
    refresh(d);
    let fresh = tokio::time::timeout(WAIT, done.wait_for(|n| *n > seen))
        .await
        .is_ok();
    if !fresh {
        if let Some((_, resp)) = &d.fs_info.lock().last {
            return resp.clone();
        }
        // Nothing measured yet: this first answer has to wait for its walk.
        let _ = done.wait_for(|n| *n > seen).await;
    }
    let inner = d.fs_info.lock();
    inner
        .last
        .as_ref()
        .map(|(_, resp)| resp.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn used(r: &cri::ImageFsInfoResponse) -> (u64, i64) {
        let fs = &r.image_filesystems[0];
        (fs.used_bytes.as_ref().map_or(0, |u| u.value), fs.timestamp)
    }

    #[tokio::test]
    async fn served_from_memory_until_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: tmp.path().join("state"),
            run_dir: tmp.path().join("run"),
            image_root: tmp.path().join("images"),
            ..Config::default()
        };
        let d = Daemon::open(config).unwrap();
        let first = get(&d).await;
        assert!(used(&first).1 > 0);
        std::fs::write(tmp.path().join("images/blob"), vec![1u8; 256 * 1024]).unwrap();
        // Fresh: the same measurement, although the store grew.
        assert_eq!(get(&d).await, first);
        // Stale: walked again.
        d.fs_info.invalidate();
        let second = get(&d).await;
        assert!(used(&second).0 >= used(&first).0 + 256 * 1024, "{second:?}");
        assert!(used(&second).1 > used(&first).1);
    }
}
