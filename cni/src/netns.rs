//! Network namespaces: open one by path and run code inside it on a
//! dedicated thread, so the caller's own namespace never changes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_MAGIC: i64 = 0x9fa0;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path:?} does not exist")]
    Missing { path: String },
    #[error("{path:?} is not a network namespace")]
    NotNetns { path: String },
    #[error("network namespace {path:?}: {err}")]
    Io { path: String, err: io::Error },
}

pub struct Netns {
    pub path: String,
    pub fd: OwnedFd,
}

impl Netns {
    pub fn open(path: &str) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => NetnsError::Missing { path: path.into() },
            _ => NetnsError::Io {
                path: path.into(),
                err,
            },
        })?;
        // SAFETY: statfs is plain data; zeroed is valid and fstatfs fills it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the duration of the call; st is writable.
        let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
        if rc != 0 {
            return Err(NetnsError::Io {
                path: path.into(),
                err: io::Error::last_os_error(),
            });
        }
        let magic = st.f_type as i64;
        if magic != NSFS_MAGIC && magic != PROC_MAGIC {
            return Err(NetnsError::NotNetns { path: path.into() });
        }
        Ok(Netns {
            path: path.into(),
            fd: file.into(),
        })
    }

    /// Runs `f` on a fresh thread that has joined this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this thread only, with an open netns fd;
                    // the thread ends after `f`, so no other code runs in it.
                    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netns worker panicked")))
        })
        .map_err(|err| NetnsError::Io {
            path: self.path.clone(),
            err,
        })
    }
}

/// While alive, the calling thread is inside another network namespace;
/// dropping it returns the thread to the namespace it came from.
pub struct Entered {
    home: OwnedFd,
}

impl Netns {
    /// Moves the calling thread into this namespace without a helper thread
    /// (a spawn and join cost two scheduler round trips on a loaded node).
    /// Meant for single-threaded callers such as a plugin process; library
    /// code that may share its thread should use [`Netns::run`].
    pub fn enter(&self) -> Result<Entered, NetnsError> {
        let io_err = |err| NetnsError::Io {
            path: self.path.clone(),
            err,
        };
        let home: OwnedFd = File::open("/proc/thread-self/ns/net")
            .map_err(io_err)?
            .into();
        // SAFETY: setns on the calling thread with an open netns fd; the
        // returned guard switches back before the thread does anything else
        // that depends on its namespace.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: setns back to the namespace this thread started in, from a
        // fd opened before leaving it.
        if unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // Carrying on in the wrong namespace would configure the wrong
            // host; there is no safe way to continue.
            tracing::error!(err = %io::Error::last_os_error(), "cannot return to the original netns");
            std::process::abort();
        }
    }
}

/// Writes a sysctl (slash-separated key) in the calling thread's network namespace.
pub fn sysctl(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value)
}
