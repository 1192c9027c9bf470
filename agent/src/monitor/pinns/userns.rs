//! Pinning a pod's namespaces inside a user namespace of its own (`skiff-monitor pinns --user`).
//!
//! The namespaces are made by a child cloned into all of them at once, so the new user namespace owns
//! the others; this helper, still root of the host, writes the child's id maps, and pins the child's
//! namespaces and mounts the pod's shm once the child has configured them as root of the pod.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use skiff_runtime::spec::IdMapping;

use super::setup::{clone_flag, configure, pin_from, SysctlError};
use crate::monitor::protocol::{PinOptions, EXIT_BAD_SYSCTL};

/// The child failed and said why on stderr; this is its exit code.
#[derive(Debug, thiserror::Error)]
#[error("the namespace child failed with {0}")]
pub struct ChildFailed(pub i32);

pub fn pin(o: &PinOptions) -> Result<()> {
    let (uid, gid) = o.userns.context("no id mappings for the user namespace")?;
    let flags = o.namespaces.iter().fold(0, |f, ns| f | clone_flag(ns));
    let (go_rx, go_tx) = pipe()?;
    let (ready_rx, ready_tx) = pipe()?;
    // SAFETY: clone without CLONE_VM or a stack behaves like fork; this helper is single-threaded, so
    // the child may run arbitrary code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("clone the namespaces");
    }
    if pid == 0 {
        drop(go_tx);
        drop(ready_rx);
        child(o, go_rx, ready_tx)
    }
    let pid = pid as libc::pid_t;
    drop(go_rx);
    drop(ready_tx);
    let (mut go_tx, mut ready_rx) = (std::fs::File::from(go_tx), std::fs::File::from(ready_rx));
    let result = write_maps(pid, &uid, &gid)
        .and_then(|()| go_tx.write_all(b"g").context("start the namespace child"))
        .and_then(|()| {
            let mut b = [0u8; 1];
            match ready_rx.read(&mut b) {
                Ok(1) => pin_from(o, Path::new(&format!("/proc/{pid}"))),
                _ => Err(ChildFailed(0).into()),
            }
        });
    // Closing the pipe lets the child end; its namespaces are pinned or about to be released.
    drop(go_tx);
    let code = reap(pid);
    match result {
        Err(e) if e.is::<ChildFailed>() => Err(ChildFailed(code).into()),
        other => other,
    }
}

/// Root of the new user namespace, configures the namespaces, reports, and stays until told to go.
fn child(o: &PinOptions, go: OwnedFd, ready: OwnedFd) -> ! {
    let mut go = std::fs::File::from(go);
    let mut b = [0u8; 1];
    if go.read(&mut b).ok() != Some(1) {
        // SAFETY: ends this forked child without running the parent's destructors.
        unsafe { libc::_exit(1) }
    }
    let code = match become_root().and_then(|()| configure(o)) {
        Ok(()) => {
            let _ = std::fs::File::from(ready).write_all(b"r");
            let _ = go.read(&mut b);
            0
        }
        Err(e) => {
            eprintln!("skiff-monitor pinns: {e:#}");
            if e.is::<SysctlError>() {
                EXIT_BAD_SYSCTL
            } else {
                1
            }
        }
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

fn become_root() -> Result<()> {
    // SAFETY: setresgid/setresuid take ids by value; 0 is mapped once the parent wrote the maps.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 || unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("become root of the user namespace");
    }
    Ok(())
}

fn write_maps(pid: libc::pid_t, uid: &IdMapping, gid: &IdMapping) -> Result<()> {
    for (file, m) in [("uid_map", uid), ("gid_map", gid)] {
        let line = format!("{} {} {}\n", m.container_id, m.host_id, m.size);
        std::fs::write(format!("/proc/{pid}/{file}"), line)
            .with_context(|| format!("write {file} {}:{}:{}", m.container_id, m.host_id, m.size))?;
    }
    Ok(())
}

/// Waits for the child; its exit code (1 if it did not exit normally).
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a local the call writes.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
