//! Pinned namespaces: a pod's network, IPC and UTS namespaces kept alive by bind mounts of their nsfs
//! files, so no process has to hold them (a shared PID namespace needs a process: see `infra`).
//!
//! Pinning runs as a `skiff-monitor` subcommand: unsharing changes the calling process, and skiffd is
//! multi-threaded, so it starts a fresh single-threaded helper for it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use skiff_runtime::spec::IdMapping;

/// The namespaces a pod may pin, by their `/proc/self/ns` names; the user namespace first, since the
/// others are joined with its rights.
pub const PINNABLE: [&str; 4] = ["user", "net", "ipc", "uts"];

/// What `skiff-monitor pinns` is asked to do.
#[derive(Debug, Default, PartialEq)]
pub struct PinOptions {
    /// The pod directory: namespaces go to `<dir>/ns/<name>`, the shm tmpfs to `<dir>/shm`.
    pub dir: PathBuf,
    pub namespaces: Vec<String>,
    pub hostname: Option<String>,
    /// `/proc/sys`-relative keys (slash-separated) and their values.
    pub sysctls: Vec<(String, String)>,
    /// Size in bytes of the pod's /dev/shm tmpfs; none when 0.
    pub shm_size: u64,
    /// The uid and gid mappings of a new user namespace that owns the others (with `user`).
    pub userns: Option<(IdMapping, IdMapping)>,
}

impl PinOptions {
    /// The command line skiffd passes (after `pinns`).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--dir".to_string(), self.dir.to_string_lossy().into_owned()];
        for ns in &self.namespaces {
            a.push(format!("--{ns}"));
        }
        if let Some(h) = &self.hostname {
            a.extend(["--hostname".into(), h.clone()]);
        }
        for (k, v) in &self.sysctls {
            a.extend(["--sysctl".into(), format!("{k}={v}")]);
        }
        if self.shm_size > 0 {
            a.extend(["--shm-size".into(), self.shm_size.to_string()]);
        }
        if let Some((u, g)) = &self.userns {
            a.extend([
                "--uid-map".into(),
                map_arg(u),
                "--gid-map".into(),
                map_arg(g),
            ]);
        }
        a
    }

    pub fn parse(args: &[String]) -> Result<PinOptions> {
        let mut o = PinOptions::default();
        let (mut uid, mut gid) = (None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--dir" => o.dir = value("--dir")?.into(),
                "--hostname" => o.hostname = Some(value("--hostname")?),
                "--sysctl" => {
                    let kv = value("--sysctl")?;
                    let (k, v) = kv.split_once('=').context("--sysctl wants key=value")?;
                    o.sysctls.push((k.into(), v.into()));
                }
                "--shm-size" => o.shm_size = value("--shm-size")?.parse()?,
                "--uid-map" => uid = Some(parse_map(&value("--uid-map")?)?),
                "--gid-map" => gid = Some(parse_map(&value("--gid-map")?)?),
                flag => match flag.strip_prefix("--") {
                    Some(ns) if PINNABLE.contains(&ns) => o.namespaces.push(ns.into()),
                    _ => bail!("unknown argument {flag:?}"),
                },
            }
        }
        if !o.dir.is_absolute() {
            bail!("--dir must be an absolute path");
        }
        let user = o.namespaces.iter().any(|n| n == "user");
        o.userns = match (uid, gid) {
            (Some(u), Some(g)) if user => Some((u, g)),
            (None, None) if !user => None,
            _ => bail!("--user needs --uid-map and --gid-map, and they need --user"),
        };
        Ok(o)
    }
}

/// `container:host:size`.
fn map_arg(m: &IdMapping) -> String {
    format!("{}:{}:{}", m.container_id, m.host_id, m.size)
}

fn parse_map(s: &str) -> Result<IdMapping> {
    let n: Vec<u32> = s
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("mapping {s:?}: want container:host:size"))?;
    match n[..] {
        [container_id, host_id, size] => Ok(IdMapping {
            container_id,
            host_id,
            size,
        }),
        _ => bail!("mapping {s:?}: want container:host:size"),
    }
}

/// `<dir>/ns/<name>`: where a pod's pinned namespace lives.
pub fn pin_path(dir: &Path, ns: &str) -> PathBuf {
    dir.join("ns").join(ns)
}

/// The exit code of `pinns` when the kernel refused a sysctl value: the request was wrong, not the node.
pub const EXIT_BAD_SYSCTL: i32 = 3;

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
            if let Some(f) = e.downcast_ref::<crate::pinns_userns::ChildFailed>() {
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
        return crate::pinns_userns::pin(o);
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

/// Joins the pinned namespace `ns` (one of [`PINNABLE`]) at `pin`; for single-threaded helpers.
pub(crate) fn join(pin: &Path, ns: &str) -> Result<()> {
    let f = std::fs::File::open(pin).with_context(|| format!("open {}", pin.display()))?;
    // SAFETY: setns on an open namespace fd, in a single-threaded helper.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), clone_flag(ns)) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("join {}", pin.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let o = PinOptions {
            dir: "/run/x".into(),
            namespaces: vec!["net".into(), "uts".into()],
            hostname: Some("web".into()),
            sysctls: vec![("net/ipv4/ip_forward".into(), "1".into())],
            shm_size: 64 << 20,
            userns: None,
        };
        assert_eq!(PinOptions::parse(&o.to_args()).unwrap(), o);
        let map = |h| IdMapping {
            container_id: 0,
            host_id: h,
            size: 65536,
        };
        let u = PinOptions {
            dir: "/run/x".into(),
            namespaces: vec!["user".into(), "net".into()],
            userns: Some((map(1000), map(2000))),
            ..Default::default()
        };
        assert_eq!(PinOptions::parse(&u.to_args()).unwrap(), u);
        let bad = |a: &[&str]| {
            let v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            PinOptions::parse(&v).is_err()
        };
        assert!(bad(&["--dir", "rel"]));
        assert!(bad(&["--dir", "/x", "--pid"]));
        assert!(bad(&["--dir", "/x", "--sysctl", "novalue"]));
        assert!(bad(&["--dir"]));
        assert!(bad(&["--dir", "/x", "--user"]));
        assert!(bad(&[
            "--dir",
            "/x",
            "--uid-map",
            "0:1:1",
            "--gid-map",
            "0:1:1"
        ]));
        assert!(bad(&[
            "--dir",
            "/x",
            "--user",
            "--uid-map",
            "0:1",
            "--gid-map",
            "0:1:1"
        ]));
    }
}
