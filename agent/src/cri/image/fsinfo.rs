//! `ImageFsInfo` from a measurement kept in memory.
//!
//! Measuring walks the whole image store and every writable layer: seconds on a node with gigabytes
//! of images (136k files take 2.7 s warm here). crictl makes this call to check the socket before
//! every command that touches images (`crictl ps` and `inspect` too), all within its 2 s timeout, and
//! kubelet polls it. So one walk at a time runs on a blocking thread; a caller waits for a fresh
//! answer at most `WAIT` and otherwise gets the last complete one. A walk is fresh for `MAX_AGE`,
//! unless a pull, an image removal or a container's creation or removal made it stale.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use tokio::sync::watch;

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
        let resp = super::measure_fs(&d);
        let mut inner = d.fs_info.lock();
        inner.last = Some((Instant::now(), resp));
        inner.running = false;
        drop(inner);
        d.fs_info.done.send_modify(|n| *n += 1);
    });
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
