//! Linux namespaces: which to create, which to join by path, and the syscalls that do it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::nsfs;
use crate::spec::{IdMapping, NamespaceKind, Spec};

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("linux.namespaces: {kind} namespace path {path}: {source}")]
    Open {
        kind: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("linux.namespaces: {path} is not a {kind} namespace")]
    WrongKind { kind: &'static str, path: String },
    #[error("joining the {kind} namespace: {source}")]
    Join {
        kind: &'static str,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: io::Error,
    },
    #[error("writing {file} for pid {pid}: {source}")]
    IdMap {
        file: &'static str,
        pid: i32,
        source: io::Error,
    },
}

/// What to do with each namespace kind.
pub struct NsPlan {
    /// Kinds to create.
    pub new: Vec<NamespaceKind>,
    /// Kinds to join, with an open fd on the path.
    pub join: Vec<(NamespaceKind, OwnedFd)>,
}

impl NsPlan {
    pub fn from_spec(spec: &Spec) -> Result<NsPlan, NsError> {
        let mut plan = NsPlan {
            new: Vec::new(),
            join: Vec::new(),
        };
        for ns in spec.namespaces() {
            match &ns.path {
                None => plan.new.push(ns.kind),
                Some(path) => plan.join.push((ns.kind, open_ns(ns.kind, path)?)),
            }
        }
        Ok(plan)
    }

    pub fn creates(&self, kind: NamespaceKind) -> bool {
        self.new.contains(&kind)
    }

    pub fn joins(&self, kind: NamespaceKind) -> bool {
        self.join.iter().any(|(k, _)| *k == kind)
    }

    /// A new user namespace, or joining one, forces a two-step spawn: the other namespaces must be created
    /// after the user namespace exists, so that it owns them.
    pub fn needs_two_stages(&self) -> bool {
        self.creates(NamespaceKind::User) || self.joins(NamespaceKind::User)
    }

    /// Flags for the kinds `clone3` itself creates in the single-stage spawn. The cgroup namespace is
    /// unshared later, once the process sits in its cgroup; the time namespace too, since its offsets
    /// must be written before any process lives in it.
    pub fn clone_flags(&self) -> u64 {
        self.new
            .iter()
            .filter(|k| {
                !matches!(
                    k,
                    NamespaceKind::Cgroup | NamespaceKind::Time | NamespaceKind::User
                )
            })
            .fold(0u64, |acc, k| acc | k.clone_flag() as u64)
    }

    /// Whether the init joins its pid namespace (given by path) only once its root is the container's:
    /// it builds the root outside that namespace, then forks the process that runs the container into
    /// it. Otherwise a member of the namespace allowed to ptrace would reach the host's files through
    /// `/proc/<init>/root` while the root is being built. A new pid namespace needs no such care (no
    /// process but ours is ever in it before the root is done), nor does a container without a mount
    /// namespace of its own. With a user namespace the init could not join a pid namespace the host's
    /// user namespace owns, so the pid namespace is entered before it, as before.
    pub fn joins_pid_late(&self) -> bool {
        self.joins(NamespaceKind::Pid)
            && self.creates(NamespaceKind::Mount)
            && !self.needs_two_stages()
    }

    /// Joins the namespaces that only affect children (pid, time) from the calling process; the pid
    /// namespace is left to [`NsPlan::join_pid`] when it is joined late.
    pub fn join_for_children(&self) -> Result<(), NsError> {
        let late = self.joins_pid_late();
        for (kind, fd) in &self.join {
            let pid = *kind == NamespaceKind::Pid;
            if (pid && !late) || *kind == NamespaceKind::Time {
                setns(fd.as_raw_fd(), *kind)?;
            }
        }
        Ok(())
    }

    /// Joins the pid namespace given by path for the caller's children.
    pub fn join_pid(&self) -> Result<(), NsError> {
        for (kind, fd) in &self.join {
            if *kind == NamespaceKind::Pid {
                setns(fd.as_raw_fd(), *kind)?;
            }
        }
        Ok(())
    }

    /// Joins every other namespace given by path, user first so that the rest are joined with its rights.
    pub fn join_own(&self) -> Result<(), NsError> {
        let mut order: Vec<&(NamespaceKind, OwnedFd)> = self
            .join
            .iter()
            .filter(|(k, _)| !matches!(k, NamespaceKind::Pid | NamespaceKind::Time))
            .collect();
        order.sort_by_key(|(k, _)| *k != NamespaceKind::User);
        for (kind, fd) in order {
            setns(fd.as_raw_fd(), *kind)?;
        }
        Ok(())
    }
}

fn open_ns(kind: NamespaceKind, path: &str) -> Result<OwnedFd, NsError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| NsError::Open {
            kind: kind.as_str(),
            path: path.to_owned(),
            source,
        })?;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns an int.
    let t = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t != kind.clone_flag() {
        return Err(NsError::WrongKind {
            kind: kind.as_str(),
            path: path.to_owned(),
        });
    }
    Ok(OwnedFd::from(file))
}

pub fn setns(fd: RawFd, kind: NamespaceKind) -> Result<(), NsError> {
    // SAFETY: setns only reads the fd and flag.
    if unsafe { libc::setns(fd, kind.clone_flag()) } != 0 {
        return Err(NsError::Join {
            kind: kind.as_str(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

pub fn unshare(flags: libc::c_int, what: &'static str) -> Result<(), NsError> {
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(NsError::Sys {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like `fork`, but creating namespaces and optionally placing the child in a cgroup at birth.
/// Returns 0 in the child and the child's pid in the parent.
///
/// Only call from a single-threaded process: the child is a copy of the calling thread alone.
pub fn clone3(flags: u64, cgroup: Option<RawFd>) -> Result<i32, NsError> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    raw_clone3(&args)
}

/// Like [`clone3`] with no new namespace, but the child is our parent's (`CLONE_PARENT`): a first stage
/// can fork the real process and exit while its parent keeps waiting for that process. The child's exit
/// signal is ours (SIGCHLD when we came from [`clone3`]).
pub fn clone_sibling() -> Result<i32, NsError> {
    raw_clone3(&CloneArgs {
        flags: libc::CLONE_PARENT as u64,
        // clone3 refuses an exit signal with CLONE_PARENT: the caller's is inherited.
        exit_signal: 0,
        ..Default::default()
    })
}

fn raw_clone3(args: &CloneArgs) -> Result<i32, NsError> {
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a copy of our address space and
    // continues on its own copy of this stack. `args` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(NsError::Sys {
            what: "clone3",
            source: io::Error::last_os_error(),
        });
    }
    Ok(r as i32)
}

/// Writes `/proc/<pid>/{uid,gid}_map` for a process that has just created its user namespace.
pub fn write_id_maps(pid: i32, uids: &[IdMapping], gids: &[IdMapping]) -> Result<(), NsError> {
    let fmt = |maps: &[IdMapping]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect::<String>()
    };
    if !gids.is_empty() && crate::security::rootless::is_rootless() {
        // An unprivileged writer may only map its own gid, and only once setgroups is denied.
        let _ = std::fs::write(format!("/proc/{pid}/setgroups"), "deny");
    }
    if !gids.is_empty() {
        std::fs::write(format!("/proc/{pid}/gid_map"), fmt(gids)).map_err(|source| {
            NsError::IdMap {
                file: "gid_map",
                pid,
                source,
            }
        })?;
    }
    if !uids.is_empty() {
        std::fs::write(format!("/proc/{pid}/uid_map"), fmt(uids)).map_err(|source| {
            NsError::IdMap {
                file: "uid_map",
                pid,
                source,
            }
        })?;
    }
    Ok(())
}

/// Host id that container id `id` maps to (for chown of devices and the like).
pub fn map_to_host(maps: &[IdMapping], id: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        (id >= m.container_id && id - m.container_id < m.size)
            .then(|| m.host_id + (id - m.container_id))
    })
}

/// Whether two processes share the namespace of `kind` (same nsfs inode).
pub fn same_ns(kind: NamespaceKind, a: &str, b: &str) -> bool {
    let ino = |who: &str| nsfs::ns_id(&format!("/proc/{who}/ns/{}", kind.proc_name()));
    match (ino(a), ino(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_mapping() {
        let maps = [IdMapping {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }];
        assert_eq!(map_to_host(&maps, 0), Some(100000));
        assert_eq!(map_to_host(&maps, 65535), Some(165535));
        assert_eq!(map_to_host(&maps, 65536), None);
    }

    #[test]
    fn wrong_kind_is_named() {
        let err = open_ns(NamespaceKind::Network, "/proc/self/ns/uts").unwrap_err();
        assert!(err.to_string().contains("not a network namespace"), "{err}");
        let err = open_ns(NamespaceKind::Uts, "/nonexistent/ns").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    }
}
