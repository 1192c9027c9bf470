//! The steps of pinning, shared by both ways to make the namespaces: configuring them from inside,
//! bind-mounting their nsfs files, the pod's shm, and joining a pinned namespace.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::monitor::protocol::{pin_path, PinOptions};

/// A sysctl the kernel refused, told apart from other failures by its exit code.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {key}={value}: {source}")]
pub(crate) struct SysctlError {
    key: String,
    value: String,
    source: std::io::Error,
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

/// Joins the pinned namespace `ns` (one of [`crate::monitor::protocol::PINNABLE`]) at `pin`; for single-threaded helpers.
pub(crate) fn join(pin: &Path, ns: &str) -> Result<()> {
    let f = std::fs::File::open(pin).with_context(|| format!("open {}", pin.display()))?;
    // SAFETY: setns on an open namespace fd, in a single-threaded helper.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), clone_flag(ns)) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("join {}", pin.display()));
    }
    Ok(())
}
