//! Out-of-memory kills in a container's cgroup: counted, and watched through a pollable descriptor.
//!
//! cgroup v2 counts them in `memory.events` (`oom_kill`) and notifies changes of that file through
//! inotify; cgroup v1 signals an eventfd registered with `cgroup.event_control` for
//! `memory.oom_control`, whose `oom_kill` line counts them on kernels since 4.13.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::util::{io_err, read_kv};
use super::CgroupError;

/// Where a container's memory controller lives.
#[derive(Debug, Clone)]
pub enum MemoryDir {
    V1(PathBuf),
    V2(PathBuf),
}

impl MemoryDir {
    /// OOM kills so far in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self {
            MemoryDir::V1(d) => (d.join("memory.oom_control"), "oom_kill"),
            MemoryDir::V2(d) => (d.join("memory.events"), "oom_kill"),
        };
        read_kv(&file).get(key).copied().unwrap_or(0)
    }
}

/// A descriptor that becomes readable when the cgroup may have seen an OOM kill.
pub struct OomWatch {
    fd: OwnedFd,
    dir: MemoryDir,
    seen: u64,
}

fn last_err(path: &Path) -> CgroupError {
    io_err(path)(std::io::Error::last_os_error())
}

impl OomWatch {
    pub fn new(dir: MemoryDir) -> Result<OomWatch, CgroupError> {
        let fd = match &dir {
            MemoryDir::V2(d) => inotify_on(&d.join("memory.events"))?,
            MemoryDir::V1(d) => eventfd_on(d)?,
        };
        let seen = dir.oom_kills();
        Ok(OomWatch { fd, dir, seen })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// After the descriptor turned readable: drains it and returns how many new OOM kills there
    /// were (on v1 at least one per notification, even on kernels without the counter).
    pub fn drain(&mut self) -> u64 {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a local buffer of the given size; the fd is non-blocking.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let now = self.dir.oom_kills();
        let new = now.saturating_sub(self.seen);
        self.seen = now;
        match self.dir {
            MemoryDir::V1(_) if n > 0 && new == 0 => 1,
            _ => new,
        }
    }
}

fn inotify_on(file: &Path) -> Result<OwnedFd, CgroupError> {
    // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(last_err(file));
    }
    // SAFETY: the descriptor was just created and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|_| io_err(file)(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        return Err(last_err(file));
    }
    Ok(fd)
}

fn eventfd_on(dir: &Path) -> Result<OwnedFd, CgroupError> {
    let control = dir.join("memory.oom_control");
    let oc = std::fs::File::open(&control).map_err(io_err(&control))?;
    // SAFETY: eventfd takes an initial value and flags and returns a new descriptor or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(last_err(dir));
    }
    // SAFETY: the descriptor was just created and is owned here alone.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let ec = dir.join("cgroup.event_control");
    let line = format!("{} {}", efd.as_raw_fd(), oc.as_raw_fd());
    std::fs::write(&ec, line).map_err(io_err(&ec))?;
    // The registration holds its own reference to memory.oom_control.
    Ok(efd)
}
