//! Pinned namespaces: a pod's network, IPC and UTS namespaces kept alive by bind mounts of their nsfs
//! files, so no process has to hold them (a shared PID namespace needs a process: see `infra`).
//!
//! Pinning runs as a `skiff-monitor` subcommand: unsharing changes the calling process, and skiffd is
//! multi-threaded, so it starts a fresh single-threaded helper for it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::protocol::{pin_path, PinOptions, EXIT_BAD_SYSCTL};

/// A sysctl the kernel refused, told apart from other failures by its exit code.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {key}={value}: {source}")]
pub(crate) struct SysctlError {
    key: String,
    value: String,
    source: std::io::Error,
}

/// `skiff-monitor pinns ...`: creates and pins a pod's namespaces.
pub fn main(args: &[String]) -> i32 {
    match PinOptions::parse(args).and_then(|o| pin(&o)) {
        Ok(()) => 0,
        Err(e) => {
            // The namespace child has said why itself.
            if let Some(f) = e.downcast_ref::<super::pinns_userns::ChildFailed>() {
                return f.0.max(1);
            }
            eprintln!("skiff-monitor pinns: {e:#}");
            if e.is::<SysctlError>() {
                EXIT_BAD_SYSCTL
            } else {
                1
            }
        }
    }
}

fn pin(o: &PinOptions) -> Result<()> {
    if o.userns.is_some() {
        return super::pinns_userns::pin(o);
    }
    let flags = o.namespaces.iter().fold(0, |f, ns| f | clone_flag(ns));
    if flags != 0 {
        // SAFETY: unshare changes only this single-threaded helper process.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare");
        }
    }
    configure(o)?;
    pin_from(o, Path::new("/proc/self"))
}

/// Sets up the namespaces this process is in: the hostname, lo, the sysctls.
pub(crate) fn configure(o: &PinOptions) -> Result<()> {
    let has = |ns: &str| o.namespaces.iter().any(|n| n == ns);
    if let (true, Some(h)) = (has("uts"), &o.hostname) {
        set_hostname(h)?;
    }
    if has("net") {
        loopback_up()?;
    }
    for (k, v) in &o.sysctls {
        std::fs::write(Path::new("/proc/sys").join(k), v).map_err(|source| SysctlError {
            key: k.clone(),
            value: v.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Pins the namespaces of `proc` (`/proc/self` or `/proc/<pid>`) and mounts the pod's shm.
pub(crate) fn pin_from(o: &PinOptions, proc: &Path) -> Result<()> {
    std::fs::create_dir_all(o.dir.join("ns")).context("create ns dir")?;
    for ns in &o.namespaces {
        let target = pin_path(&o.dir, ns);
        std::fs::File::create(&target).with_context(|| format!("create {}", target.display()))?;
        bind(proc.join("ns").join(ns).as_path(), &target)?;
    }
    if o.shm_size > 0 {
        let owner = o.userns.map(|(u, g)| (u.host_id, g.host_id));
        mount_shm(&o.dir.join("shm"), o.shm_size, owner)?;
    }
    Ok(())
}

pub(crate) fn clone_flag(ns: &str) -> i32 {
    match ns {
        "user" => libc::CLONE_NEWUSER,
        "net" => libc::CLONE_NEWNET,
        "ipc" => libc::CLONE_NEWIPC,
        "uts" => libc::CLONE_NEWUTS,
        _ => 0,
    }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("NUL in {}", p.display()))
}

fn set_hostname(h: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `h`'s bytes, which outlive the call.
    if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sethostname");
    }
    Ok(())
}

fn loopback_up() -> Result<()> {
    use skiff_cni::netlink::{link, Socket};
    let mut s = Socket::route().context("netlink socket")?;
    let lo = link::by_name(&mut s, "lo")
        .context("find lo")?
        .context("no lo in the new network namespace")?;
    link::set_up(&mut s, lo.index).context("set lo up")?;
    Ok(())
}

fn bind(src: &Path, target: &Path) -> Result<()> {
    let (s, t) = (cstr(src)?, cstr(target)?);
    // SAFETY: both are valid NUL-terminated paths; fstype and data are null for a bind mount.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("bind {} on {}", src.display(), target.display()));
    }
    Ok(())
}

/// `owner`: the host ids of the pod's root when it has a user namespace, so /dev/shm is its own.
fn mount_shm(target: &Path, size: u64, owner: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    let t = cstr(target)?;
    let src = CString::new("shm")?;
    let fstype = CString::new("tmpfs")?;
    let ids = owner.map_or(String::new(), |(u, g)| format!(",uid={u},gid={g}"));
    let data = CString::new(format!("mode=1777,size={size}{ids}"))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount shm tmpfs on {}", target.display()));
    }
    Ok(())
}

/// Joins the pinned namespace `ns` (one of [`super::protocol::PINNABLE`]) at `pin`; for single-threaded helpers.
pub(crate) fn join(pin: &Path, ns: &str) -> Result<()> {
    let f = std::fs::File::open(pin).with_context(|| format!("open {}", pin.display()))?;
    // SAFETY: setns on an open namespace fd, in a single-threaded helper.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), clone_flag(ns)) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("join {}", pin.display()));
    }
    Ok(())
}
