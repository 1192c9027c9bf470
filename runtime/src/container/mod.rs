//! Container lifecycle operations over the state directory: create, start, run, state, kill, delete,
//! list, ps, exec. Each takes the container's lock for its whole duration.

mod create;
mod exec;
mod handshake;
mod observe;
mod signal;
mod update;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use create::CreateOptions;
pub use exec::ExecOptions;
pub use observe::Observed;
pub use signal::parse_signal;

use crate::cgroups::{self, CgroupError};
use crate::hooks::{self, HookError};
use crate::namespaces::NsError;
use crate::process::ProcessError;
use crate::rootfs::RootfsError;
use crate::spec::SpecError;
use crate::state::{self, ContainerState, StateDir, StateError, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("root.path {path}: {source}")]
    RootPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id} is {status}: {action}")]
    WrongState {
        id: String,
        status: Status,
        action: &'static str,
    },
    #[error("container init failed: {0}")]
    Init(String),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// One runtime state root (`--root`) and how its new containers get their cgroups.
pub struct Runtime {
    pub root: PathBuf,
    /// `--systemd-cgroup`: new containers get systemd scopes where systemd runs.
    systemd_cgroup: bool,
}

/// What `skiff state` prints: the OCI state plus runc's extra fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl StateReport {
    fn new(st: &ContainerState, status: Status) -> StateReport {
        StateReport {
            oci_version: crate::spec::OCI_VERSION.into(),
            id: st.id.clone(),
            pid: if status == Status::Stopped { 0 } else { st.pid },
            status,
            bundle: st.bundle.clone(),
            rootfs: st.rootfs.clone(),
            created: st.created.clone(),
            owner: st.owner.clone(),
            annotations: st.annotations.clone(),
        }
    }
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: root.into(),
            systemd_cgroup: false,
        }
    }

    /// Has new containers managed by systemd where it runs (runc's `--systemd-cgroup`).
    pub fn with_systemd_cgroup(mut self, on: bool) -> Runtime {
        self.systemd_cgroup = on;
        self
    }

    pub fn systemd_cgroup(&self) -> bool {
        self.systemd_cgroup
    }

    pub fn state(&self, id: &str) -> Result<StateReport, ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        Ok(StateReport::new(&st, st.status(&dir.path)))
    }

    /// Every container under the root, skipping ones still being created.
    pub fn list(&self) -> Result<Vec<StateReport>, ContainerError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("read {}", self.root.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if state::validate_id(&id).is_err() {
                continue;
            }
            let Ok(st) = state::read_unlocked(&entry.path(), &id) else {
                continue;
            };
            let status = st.status(&entry.path());
            out.push(StateReport::new(&st, status));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub fn start(&self, id: &str) -> Result<(), ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        let status = st.status(&dir.path);
        if status != Status::Created {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                action: "only a created container can be started",
            });
        }
        release(&dir, &st)?;
        let oci = st.oci(Status::Running);
        if let Err(e) = hooks::run_all("poststart", &st.config.hooks().poststart, &oci) {
            tracing::warn!("{e}");
        }
        Ok(())
    }

    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        let status = st.status(&dir.path);
        if all {
            // What outlives the init in its cgroup is still signalled once the container has stopped
            // (containerd's shim kills it all after every exit); a cgroup already gone holds nothing.
            return match cgroups::from_state(&st.cgroup).kill_all(signal) {
                Err(e) if status == Status::Stopped => {
                    tracing::debug!("kill --all of stopped {id}: {e}");
                    Ok(())
                }
                r => r.map_err(Into::into),
            };
        }
        if status == Status::Stopped {
            // "container not running" is the wording runc callers match to tell an exit that came first
            // from a failure to signal.
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                action: "container not running, nothing to signal",
            });
        }
        // SAFETY: kill has no memory effects; the pid was verified alive and ours just above.
        if unsafe { libc::kill(st.pid, signal) } != 0 {
            return Err(io(format!("signal {signal} to pid {}", st.pid))(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<(), ContainerError> {
        let dir = match StateDir::open(&self.root, id) {
            Ok(d) => d,
            Err(StateError::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let st = dir.load()?;
        let status = st.status(&dir.path);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                action: "stop it first or use --force",
            });
        }
        destroy(dir, &st)
    }

    pub fn ps(&self, id: &str) -> Result<Vec<i32>, ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        Ok(cgroups::from_state(&st.cgroup).pids()?)
    }

    pub fn pause(&self, id: &str, frozen: bool) -> Result<(), ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        let status = st.status(&dir.path);
        let ok = if frozen {
            status == Status::Running || status == Status::Created
        } else {
            status == Status::Paused
        };
        if !ok {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                action: if frozen { "cannot pause" } else { "not paused" },
            });
        }
        Ok(cgroups::from_state(&st.cgroup).freeze(frozen)?)
    }
}

/// Lets a created init go: opens the fifo's read end, which unblocks the init's open of the write end,
/// and waits for its byte.
fn release(dir: &StateDir, st: &ContainerState) -> Result<(), ContainerError> {
    let fifo = dir.fifo_path();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .map_err(io(format!("open {}", fifo.display())))?;
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r > 0 && pfd.revents & libc::POLLIN != 0 {
            break;
        }
        if !st.init_alive() {
            return Err(ContainerError::Init(format!(
                "container {} exited before it could start",
                st.id
            )));
        }
    }
    std::fs::remove_file(&fifo).map_err(io(format!("remove {}", fifo.display())))?;
    wait_for_exec(&f, st);
    Ok(())
}

/// Drains the fifo until the init's end closes: at its execve (the end is close-on-exec) or its death.
/// Runs after the startContainer hooks, so poststart hooks follow the user's program starting.
fn wait_for_exec(f: &std::fs::File, st: &ContainerState) {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r > 0 {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0
                || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN))
            {
                return;
            }
        } else if r == 0 && !st.init_alive() {
            return;
        }
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

/// Kills what is left, runs poststop hooks and removes every trace: cgroups, stray mounts, state.
fn destroy(dir: StateDir, st: &ContainerState) -> Result<(), ContainerError> {
    let cg = cgroups::from_state(&st.cgroup);
    if st.init_alive() {
        let _ = cg.freeze(false);
        let _ = cg.kill_all(libc::SIGKILL);
        // SAFETY: kill has no memory effects; the init was verified alive just above.
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
        wait_gone(st, Duration::from_secs(10));
    }
    cg.destroy()?;
    unmount_under(&st.rootfs);
    let oci = st.oci(Status::Stopped);
    if let Err(e) = hooks::run_all("poststop", &st.config.hooks().poststop, &oci) {
        tracing::warn!("{e}");
    }
    dir.remove()?;
    if st.owned_bundle {
        crate::image::bundle::remove_bundle(&st.bundle);
    }
    Ok(())
}

fn wait_gone(st: &ContainerState, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_micros(100);
    while st.init_alive() && Instant::now() < deadline {
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// Mounts that propagated from the container to the host (a shared rootfs) die with it.
fn unmount_under(rootfs: &Path) {
    let Ok(mounts) = crate::mountinfo::read_self() else {
        return;
    };
    let mut points: Vec<PathBuf> = mounts
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(rootfs) && p != rootfs)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 reads a valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
