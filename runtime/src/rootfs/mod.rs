//! The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use crate::spec::Spec;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub struct RootfsOptions {
    pub in_user_ns: bool,
    pub cgroup_ns: bool,
}

/// Maps `linux.rootfsPropagation` to mount flags.
pub fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    let flag = match name {
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    };
    Some(flag)
}

pub fn mount_options() -> Vec<&'static str> {
    vec!["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind"]
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn mount(src: Option<&str>, dst: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> Result<(), RootfsError> {
    let s = src.map(|s| CString::new(s).unwrap_or_default());
    let t = fstype.map(|s| CString::new(s).unwrap_or_default());
    let d = data.map(|s| CString::new(s).unwrap_or_default());
    let dst_c = cstr(dst);
    let p = |o: &Option<CString>| o.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null());
    // SAFETY: all pointers are NUL-terminated strings or null, valid for the call.
    let r = unsafe { libc::mount(p(&s), dst_c.as_ptr(), p(&t), flags, p(&d) as *const libc::c_void) };
    if r != 0 {
        return Err(RootfsError::Sys { what: "mount", path: dst.to_owned(), source: io::Error::last_os_error() });
    }
    Ok(())
}

fn parse_options(opts: &[String]) -> (libc::c_ulong, libc::c_ulong, String) {
    let (mut flags, mut prop, mut data) = (0, 0, Vec::new());
    for o in opts {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            o => match propagation_flag(o) {
                Some(p) => prop |= p,
                None => data.push(o.to_owned()),
            },
        }
    }
    (flags, prop, data.join(","))
}

pub fn prepare(spec: &Spec, rootfs: &Path, _opts: &RootfsOptions) -> Result<(), RootfsError> {
    let prop = spec.linux().and_then(|l| l.rootfs_propagation.as_deref()).and_then(propagation_flag).unwrap_or(libc::MS_SLAVE | libc::MS_REC);
    mount(None, Path::new("/"), None, prop, None)?;
    mount(Some(&rootfs.to_string_lossy()), rootfs, None, libc::MS_BIND | libc::MS_REC, None)?;
    for m in &spec.mounts {
        let dst = rootfs.join(m.destination.trim_start_matches('/'));
        let (flags, prop, data) = parse_options(&m.options);
        let is_bind = flags & libc::MS_BIND != 0;
        let src_is_file = is_bind && m.source.as_deref().map(|s| Path::new(s).is_file()).unwrap_or(false);
        if src_is_file {
            if let Some(p) = dst.parent() { let _ = std::fs::create_dir_all(p); }
            if !dst.exists() { let _ = std::fs::File::create(&dst); }
        } else {
            let _ = std::fs::create_dir_all(&dst);
        }
        let kind = if m.kind.as_deref() == Some("bind") { None } else { m.kind.as_deref() };
        let data = if data.is_empty() { None } else { Some(data.as_str()) };
        if m.kind.as_deref() == Some("cgroup") {
            continue;
        }
        mount(m.source.as_deref(), &dst, kind, flags & !libc::MS_RDONLY | if is_bind { 0 } else { flags & libc::MS_RDONLY }, data)?;
        if is_bind && flags & (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) != 0 {
            mount(None, &dst, None, flags | libc::MS_REMOUNT, None)?;
        }
        if prop != 0 {
            mount(None, &dst, None, prop, None)?;
        }
    }
    let dev = rootfs.join("dev");
    for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)] {
        let p = dev.join(name);
        if !p.exists() {
            // SAFETY: mknod reads a valid path.
            unsafe { libc::mknod(cstr(&p).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) };
            // SAFETY: chmod reads a valid path.
            unsafe { libc::chmod(cstr(&p).as_ptr(), 0o666) };
        }
    }
    for (link, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    Ok(())
}

pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |what, source| RootfsError::Sys { what, path: rootfs.to_owned(), source };
    std::env::set_current_dir(rootfs).map_err(|e| err("chdir", e))?;
    // SAFETY: pivot_root with "." twice stacks the old root under the new one.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        return Err(err("pivot_root", io::Error::last_os_error()));
    }
    mount(None, Path::new("."), None, libc::MS_SLAVE | libc::MS_REC, None)?;
    // SAFETY: detaching the old root, now stacked on ".".
    if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(err("umount old root", io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(|e| err("chdir", e))
}

pub fn finish(spec: &Spec, _opts: &RootfsOptions) -> Result<(), RootfsError> {
    if let Some(l) = spec.linux() {
        for (k, v) in &l.sysctl {
            let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&p, v).map_err(|e| RootfsError::Sys { what: "sysctl", path: p.clone(), source: e })?;
        }
        for p in &l.readonly_paths {
            let p = Path::new(p);
            if p.exists() {
                mount(Some(&p.to_string_lossy()), p, None, libc::MS_BIND | libc::MS_REC, None)?;
                mount(None, p, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)?;
            }
        }
        for p in &l.masked_paths {
            let p = Path::new(p);
            if p.is_dir() {
                mount(Some("tmpfs"), p, Some("tmpfs"), libc::MS_RDONLY, None)?;
            } else if p.exists() {
                mount(Some("/dev/null"), p, None, libc::MS_BIND, None)?;
            }
        }
    }
    if spec.root.as_ref().map(|r| r.readonly).unwrap_or(false) {
        mount(None, Path::new("/"), None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, None)?;
    }
    Ok(())
}
