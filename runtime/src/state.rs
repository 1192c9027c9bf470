//! Per-container state under `--root/<id>/`: `state.json`, the `exec.fifo` that holds a created container
//! until `start`, and a lock serialising commands on one id.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupState;
use crate::spec::{Spec, OCI_VERSION};

pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "container id {0:?} is invalid: use 1-1024 characters from [A-Za-z0-9_+.-], not . or .."
    )]
    BadId(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What `state.json` holds: the OCI state plus what later commands need to act on the container
/// without re-reading a bundle that may have changed since `create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// `/proc/<pid>/stat` start time of the init, so that a recycled pid is never mistaken for it.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub cgroup: CgroupState,
    pub config: Spec,
    /// The bundle was made for this container (from an image) and goes with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owned_bundle: bool,
}

/// The OCI state document that hooks read on stdin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn is_zero(p: &i32) -> bool {
    *p == 0
}

pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadId(id.to_owned()))
    }
}

/// The state directory of one container, held under an exclusive lock for as long as this value lives.
pub(crate) struct StateDir {
    pub path: PathBuf,
    lock: File,
}

impl StateDir {
    /// Creates `root/<id>` for a new container; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(root))?;
        let path = root.join(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_owned()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
        Self::lock(path, id)
    }

    /// Opens and locks the state directory of an existing container.
    pub fn open(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        let path = root.join(id);
        let dir = Self::lock(path, id)?;
        if !dir.path.join(STATE_FILE).exists() {
            return Err(StateError::NotFound(id.to_owned()));
        }
        Ok(dir)
    }

    fn lock(path: PathBuf, id: &str) -> Result<StateDir, StateError> {
        let lock = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_owned()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(std::io::Error::last_os_error()));
        }
        // A `delete` that held the lock before us may have removed the directory.
        if lock.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
            return Err(StateError::NotFound(id.to_owned()));
        }
        Ok(StateDir { path, lock })
    }

    /// The lock's descriptor. A cloned child shares it, and with it the lock: the child must close it
    /// before it outlives the command that cloned it.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        self.lock.as_raw_fd()
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    pub fn load(&self) -> Result<ContainerState, StateError> {
        let path = self.path.join(STATE_FILE);
        let data = std::fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&data).map_err(|e| StateError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let data = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
            path: self.path.join(STATE_FILE),
            message: e.to_string(),
        })?;
        write_atomic(&self.path.join(STATE_FILE), &data, 0o600)
    }

    /// Removes the directory; the lock stays held until `self` drops, and later lockers see it gone.
    pub fn remove(self) -> Result<(), StateError> {
        std::fs::remove_dir_all(&self.path).map_err(io_err(&self.path))?;
        drop(self.lock);
        Ok(())
    }
}

use std::os::unix::fs::MetadataExt;

/// Reads `dir`'s state without its lock: state files are replaced atomically, so the read sees a
/// whole document. The lock-holding commands are the only writers.
pub(crate) fn read_unlocked(dir: &Path, id: &str) -> Result<ContainerState, StateError> {
    let path = dir.join(STATE_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotFound(id.to_owned()))
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_slice(&data).map_err(|e| StateError::Corrupt {
        path,
        message: e.to_string(),
    })
}

/// Replaces `path` atomically (see `skiff_sys::fs::write_atomic`): a crash leaves either the old
/// content or the new, never a mix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    skiff_sys::fs::write_atomic(path, data, mode).map_err(io_err(path))
}

/// Writes a `--pid-file`: replaced atomically but not fsynced (as runc writes it), since a pid means
/// nothing after a crash and an fsync is a journal commit on every create and exec.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), StateError> {
    skiff_sys::fs::replace(path, pid.to_string().as_bytes(), 0o644).map_err(io_err(path))
}

/// The start time of a process (clock ticks since boot), or `None` if it does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// `(state letter, start time)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // Field 22 overall is the 20th after the state letter.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ContainerState {
    /// Whether the recorded init is still the process it was (alive, not a zombie, same start time).
    pub fn init_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.pid_start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// The status now, from the process, its cgroup and whether `dir` (the container's state
    /// directory) still holds the exec fifo.
    pub fn status(&self, dir: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if crate::cgroups::is_frozen(&self.cgroup) {
            return Status::Paused;
        }
        if dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    pub fn oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_owned(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Now, as RFC 3339 with nanoseconds in UTC, the way runc prints `created`.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "x.y_z+1", &"a".repeat(1024)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", &"a".repeat(1025), "é"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951782400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1795392000, 0), "2026-11-23T00:00:00.000000000Z");
    }

    #[test]
    fn own_start_time_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).is_some());
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("skiff-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
