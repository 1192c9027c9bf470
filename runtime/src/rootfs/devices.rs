//! Device nodes and the standard `/dev` links.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::resolve::{same_path, RootDir};
use super::sys::{self, fd_path};
use super::{options, RootfsError, RootfsOptions};
use crate::spec::{Device, Mount, Spec};

/// The devices every container gets: (path, major, minor), all character devices, mode 0666.
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The mode of a `linux.devices` entry without `fileMode`.
const DEFAULT_MODE: u32 = 0o666;

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    path: String,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Creates the default and the spec's devices and the `/dev` links, unless `/dev` is a bind of the
/// host's.
pub fn create(root: &RootDir, spec: &Spec, opts: &RootfsOptions) -> Result<(), RootfsError> {
    let dev_is_bind = spec
        .mounts
        .iter()
        .any(|m| same_path(&m.destination, "/dev") && is_bind(m));
    if dev_is_bind {
        // It is the host's /dev: nothing may be created in it.
        return Ok(());
    }
    for node in nodes(spec)? {
        make_node(root, &node, opts)?;
    }
    if spec
        .mounts
        .iter()
        .any(|m| same_path(&m.destination, "/dev/pts") && m.kind.as_deref() == Some("devpts"))
    {
        replace_with_link(root, "/dev/ptmx", "pts/ptmx")?;
    }
    links(root)
}

fn is_bind(m: &Mount) -> bool {
    matches!(m.kind.as_deref(), Some("bind" | "rbind"))
        || m.options.iter().any(|o| o == "bind" || o == "rbind")
}

/// The spec's devices, then the defaults it does not override.
fn nodes(spec: &Spec) -> Result<Vec<Node>, RootfsError> {
    let custom = spec.linux().map(|l| l.devices.as_slice()).unwrap_or(&[]);
    let mut out = custom.iter().map(node).collect::<Result<Vec<_>, _>>()?;
    for (path, major, minor) in DEFAULT_DEVICES {
        if !custom.iter().any(|d| same_path(&d.path, path)) {
            out.push(Node {
                path: path.to_owned(),
                kind: SFlag::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            });
        }
    }
    Ok(out)
}

fn node(d: &Device) -> Result<Node, RootfsError> {
    let bad = |reason: String| RootfsError::BadDevice {
        path: d.path.clone(),
        reason,
    };
    let kind = match d.kind.as_str() {
        "c" | "u" => SFlag::S_IFCHR,
        "b" => SFlag::S_IFBLK,
        "p" => SFlag::S_IFIFO,
        other => return Err(bad(format!("unknown type {other:?}"))),
    };
    let num = |v: i64, what: &str| {
        u32::try_from(v)
            .map(u64::from)
            .map_err(|_| bad(format!("{what} {v} is out of range")))
    };
    Ok(Node {
        path: d.path.clone(),
        kind,
        major: num(d.major, "major")?,
        minor: num(d.minor, "minor")?,
        mode: d.file_mode.unwrap_or(DEFAULT_MODE) & 0o7777,
        uid: d.uid.unwrap_or(0),
        gid: d.gid.unwrap_or(0),
    })
}

fn dev_err<'a>(path: &'a str, what: &'a str) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Device {
        path: path.to_owned(),
        what: what.to_owned(),
        source,
    }
}

fn make_node(root: &RootDir, n: &Node, opts: &RootfsOptions) -> Result<(), RootfsError> {
    let path = n.path.as_str();
    let (dir, name) = root
        .create_parent(path)
        .map_err(dev_err(path, "create parent directory"))?;
    if opts.in_user_ns {
        return bind_host_node(&dir, &name, n);
    }
    match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(dev_err(path, "remove existing file")(e.into())),
    }
    let dev = libc::makedev(n.major as u32, n.minor as u32);
    mknodat(
        &dir,
        name.as_str(),
        n.kind,
        Mode::from_bits_truncate(n.mode),
        dev,
    )
    .map_err(|e| dev_err(path, "mknod")(e.into()))?;
    let fd = open_nofollow(&dir, &name).map_err(dev_err(path, "open new node"))?;
    // mknod's mode went through the umask; set it exactly.
    std::fs::set_permissions(fd_path(fd.as_fd()), PermissionsExt::from_mode(n.mode))
        .map_err(dev_err(path, "chmod"))?;
    fchownat(
        &dir,
        name.as_str(),
        Some(Uid::from_raw(n.uid)),
        Some(Gid::from_raw(n.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| dev_err(path, "chown")(e.into()))
}

/// In a user namespace mknod is refused: bind the host's node onto an empty file.
fn bind_host_node(dir: &OwnedFd, name: &str, n: &Node) -> Result<(), RootfsError> {
    let path = n.path.as_str();
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(0o600)) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(dev_err(path, "create bind target")(e.into())),
    }
    let target = open_nofollow(dir, name).map_err(dev_err(path, "open bind target"))?;
    let st = fstat(&target).map_err(|e| dev_err(path, "stat bind target")(e.into()))?;
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if fmt == SFlag::S_IFLNK || fmt == SFlag::S_IFDIR {
        return Err(RootfsError::BadDevice {
            path: path.to_owned(),
            reason: "a symlink or directory is in the way of the device".into(),
        });
    }
    sys::mount(
        Some(Path::new(path)),
        &fd_path(target.as_fd()),
        None,
        libc::MS_BIND,
        None,
    )
    .map_err(dev_err(path, "bind-mount host device"))
}

fn open_nofollow(dir: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::openat(dir, name, flags, Mode::empty())?)
}

/// `/dev/fd`, `/dev/std{in,out,err}` and, where the host has one, `/dev/core`.
fn links(root: &RootDir) -> Result<(), RootfsError> {
    let mut all = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        all.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in all {
        let (dir, name) = root
            .create_parent(link)
            .map_err(dev_err(link, "create parent directory"))?;
        match symlinkat(target, &dir, name.as_str()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(dev_err(link, "symlink")(e.into())),
        }
    }
    Ok(())
}

fn replace_with_link(root: &RootDir, link: &str, target: &str) -> Result<(), RootfsError> {
    let (dir, name) = root
        .create_parent(link)
        .map_err(dev_err(link, "create parent directory"))?;
    match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(dev_err(link, "remove existing file")(e.into())),
    }
    symlinkat(target, &dir, name.as_str()).map_err(|e| dev_err(link, "symlink")(e.into()))
}

/// A `/dev` mount asked for `ro` could not be read-only while its nodes were made: now it is.
pub fn finish_dev(spec: &Spec) -> Result<(), RootfsError> {
    let Some(m) = spec
        .mounts
        .iter()
        .rev()
        .find(|m| same_path(&m.destination, "/dev") && !is_bind(m))
    else {
        return Ok(());
    };
    let Ok(parsed) = options::parse(&m.options) else {
        return Ok(());
    };
    if parsed.flags & libc::MS_RDONLY == 0 {
        return Ok(());
    }
    let root = RootDir::open(Path::new("/")).map_err(dev_err("/dev", "open root"))?;
    let dev = root.resolve("/dev").map_err(dev_err("/dev", "resolve"))?;
    sys::remount_bind(&fd_path(dev.as_fd()), parsed.remount_flags())
        .map_err(dev_err("/dev", "remount read-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_devices_override_defaults() {
        let mut spec = Spec::default();
        spec.linux = Some(crate::spec::Linux {
            devices: vec![Device {
                kind: "c".into(),
                path: "/dev/null".into(),
                major: 1,
                minor: 3,
                file_mode: Some(0o600),
                uid: Some(5),
                gid: None,
            }],
            ..Default::default()
        });
        let n = nodes(&spec).expect("nodes");
        assert_eq!(n.len(), DEFAULT_DEVICES.len());
        let null: Vec<_> = n.iter().filter(|n| n.path == "/dev/null").collect();
        assert_eq!(null.len(), 1);
        assert_eq!((null[0].mode, null[0].uid), (0o600, 5));
    }

    #[test]
    fn bad_numbers_are_refused() {
        let d = Device {
            kind: "b".into(),
            path: "/dev/x".into(),
            major: -1,
            ..Default::default()
        };
        let err = node(&d).expect_err("negative major");
        assert!(err.to_string().contains("/dev/x"), "{err}");
    }
}
