//! Container log rotation, as kubelet's container log manager does it: every
//! `containerLogMonitorInterval`, the log of each running container that has reached
//! `containerLogMaxSize` is renamed to `<log>.<YYYYMMDD-hhmmss>` and the monitor asked to reopen
//! its log (the CRI's `ReopenContainerLog`). Rotated files but the newest are gzipped
//! (`<rotated>.gz`, as kubelet names them) and the oldest removed so that a container keeps at
//! most `containerLogMaxFiles` files, the live one included. Exited instances are left alone:
//! their last log is what `kubectl logs --previous` reads.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cri_api::v1 as cri;

use crate::cri::container::{container_status, reopen_log, ContainerRecord};
use crate::cri::Daemon;

const GZ: &str = ".gz";
const TMP: &str = ".tmp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub max_size: u64,
    /// Files per container, the live one included (at least 2).
    pub max_files: usize,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reopen the log of container {id}: {message}")]
    Reopen { id: String, message: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RotateError + 'a {
    move |source| RotateError::Io {
        what,
        path: path.into(),
        source,
    }
}

/// Checks every running container's log once per interval, for as long as skiffd runs.
pub async fn run(d: Arc<Daemon>, policy: Policy) {
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for c in d.containers.list() {
            if let Err(e) = rotate_container(&d, &c, &policy).await {
                tracing::warn!(container = %c.id, error = %e, "rotate the container's log");
            }
        }
    }
}

/// Rotates one container's log if it is running and its log has grown to the limit.
pub async fn rotate_container(
    d: &Arc<Daemon>,
    c: &ContainerRecord,
    policy: &Policy,
) -> Result<(), RotateError> {
    let Some(log) = c.log_path.clone() else {
        return Ok(());
    };
    if container_status(d, c).state != cri::ContainerState::ContainerRunning as i32 {
        return Ok(());
    }
    let size = match std::fs::metadata(&log) {
        Ok(m) => m.len(),
        // Removed under the container: the monitor makes a new one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return reopen(d, c).await,
        Err(e) => return Err(io("stat", &log)(e)),
    };
    if size < policy.max_size {
        return Ok(());
    }
    let (log2, max_files) = (log.clone(), policy.max_files);
    let rotated = tokio::task::spawn_blocking(move || prepare(&log2, max_files, now_stamp()))
        .await
        .map_err(|e| RotateError::Io {
            what: "rotate",
            path: log.clone(),
            source: std::io::Error::other(e),
        })??;
    let Some(rotated) = rotated else {
        return Ok(());
    };
    if let Err(e) = reopen(d, c).await {
        // Back, so that the next round tries again and the live log is not lost.
        let _ = std::fs::rename(&rotated, &log);
        return Err(e);
    }
    tracing::debug!(container = %c.id, rotated = %rotated.display(), "rotated the container's log");
    Ok(())
}

async fn reopen(d: &Arc<Daemon>, c: &ContainerRecord) -> Result<(), RotateError> {
    let req = cri::ReopenContainerLogRequest {
        container_id: c.id.clone(),
    };
    reopen_log(d, req)
        .await
        .map(|_| ())
        .map_err(|s| RotateError::Reopen {
            id: c.id.clone(),
            message: s.message().to_string(),
        })
}

/// The rotated files' suffix for now (UTC), kubelet's `20060102-150405`.
fn now_stamp() -> String {
    let full = skiff_runtime::state::now_rfc3339();
    // 2026-12-06T16:00:00.…Z → 20261206-160000
    let digits: String = full
        .chars()
        .take(19)
        .filter(|ch| ch.is_ascii_digit() || *ch == 'T')
        .collect();
    digits.replace('T', "-")
}

/// Everything before the rename, then the rename itself: tidies the rotated files, compresses all
/// but the newest, removes the oldest beyond the policy, and moves the live log aside. Returns the
/// rotated name, or `None` when a file of that name exists already (two rotations in a second).
pub fn prepare(
    log: &Path,
    max_files: usize,
    stamp: String,
) -> Result<Option<PathBuf>, RotateError> {
    let mut rotated = rotated_files(log)?;
    remove_leftovers(&mut rotated)?;
    // Room for the live log and the one rotated now.
    let keep = max_files.saturating_sub(2);
    let excess = rotated.len().saturating_sub(keep);
    for old in rotated.drain(..excess) {
        std::fs::remove_file(&old).map_err(io("remove", &old))?;
    }
    if let Some((_newest, older)) = rotated.split_last() {
        for f in older {
            compress(f)?;
        }
    }
    let target = PathBuf::from(format!("{}.{stamp}", log.display()));
    if target.exists() || PathBuf::from(format!("{}{GZ}", target.display())).exists() {
        return Ok(None);
    }
    std::fs::rename(log, &target).map_err(io("rename", log))?;
    Ok(Some(target))
}

/// `<log>.*`, oldest first (the time stamps sort as their names).
pub fn rotated_files(log: &Path) -> Result<Vec<PathBuf>, RotateError> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.",
        log.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let e = e.map_err(io("list", dir))?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Drops what an interrupted compression left: a `.tmp`, or the plain file beside its `.gz`.
fn remove_leftovers(files: &mut Vec<PathBuf>) -> Result<(), RotateError> {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut kept = Vec::new();
    for (f, name) in files.drain(..).zip(&names) {
        let superseded = !name.ends_with(GZ) && names.contains(&format!("{name}{GZ}"));
        if name.ends_with(TMP) || superseded {
            std::fs::remove_file(&f).map_err(io("remove", &f))?;
        } else {
            kept.push(f);
        }
    }
    *files = kept;
    Ok(())
}

/// `f` → `f.gz`, written to `f.tmp`, synced and renamed, then `f` removed.
fn compress(f: &Path) -> Result<(), RotateError> {
    if f.to_string_lossy().ends_with(GZ) {
        return Ok(());
    }
    let tmp = PathBuf::from(format!("{}{TMP}", f.display()));
    let gz = PathBuf::from(format!("{}{GZ}", f.display()));
    let mut input = File::open(f).map_err(io("open", f))?;
    let out = File::create(&tmp).map_err(io("create", &tmp))?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut enc).map_err(io("compress", f))?;
    let mut out = enc.finish().map_err(io("compress", f))?;
    out.flush().map_err(io("write", &tmp))?;
    out.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, &gz).map_err(io("rename", &tmp))?;
    std::fs::remove_file(f).map_err(io("remove", f))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Five rotations with room for four files: the live log, the two newest rotated ones plain
    /// (compression runs before each rename, sparing the newest, which a follower may still be
    /// reading), the older one gzipped with its content intact, the oldest gone.
    #[test]
    fn rotations_compress_and_drop_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(dir.path().join("1.log"), "another instance").unwrap();
        for i in 0..5 {
            std::fs::write(&log, format!("content {i}\n")).unwrap();
            let stamp = format!("20261206-16000{i}");
            let r = prepare(&log, 4, stamp.clone()).unwrap().unwrap();
            assert_eq!(r, dir.path().join(format!("0.log.{stamp}")));
            assert!(!log.exists());
        }
        std::fs::write(&log, "live\n").unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "0.log",
                "0.log.20261206-160002.gz",
                "0.log.20261206-160003",
                "0.log.20261206-160004",
                "1.log"
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            File::open(dir.path().join("0.log.20261206-160002.gz")).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        assert_eq!(text, "content 2\n");
        // Another rotation in the same second leaves everything as it is.
        assert_eq!(prepare(&log, 4, "20261206-160004".into()).unwrap(), None);
        assert!(log.exists());
    }

    #[test]
    fn leftovers_of_an_interrupted_compression_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        for f in [
            "0.log",
            "0.log.20261206-160000",
            "0.log.20261206-160000.gz",
            "0.log.20261206-160001.tmp",
            "0.log.20261206-160002",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        prepare(&log, 5, "20261206-160003".into()).unwrap().unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "0.log.20261206-160000.gz",
                "0.log.20261206-160002",
                "0.log.20261206-160003"
            ]
        );
    }

    #[test]
    fn stamps_have_kubelets_layout() {
        let s = now_stamp();
        assert_eq!(s.len(), 15, "{s}");
        assert_eq!(&s[8..9], "-");
        assert!(s.chars().filter(|c| *c != '-').all(|c| c.is_ascii_digit()));
    }
}
