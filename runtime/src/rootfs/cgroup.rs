//! A `cgroup` mount: cgroup2 on a pure v2 host; on a v1/hybrid host a tmpfs holding one mount per
//! host hierarchy, as the host's `/sys/fs/cgroup` does.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

use super::mount_steps::{after_mount, bind, reopen};
use super::options::MountOptions;
use super::resolve::{Kind, RootDir};
use super::sys::{self, fd_path};
use super::{mount_err, RootfsError, RootfsOptions};
use crate::mountinfo::{self, MountInfo};

const HOST_CGROUP: &str = "/sys/fs/cgroup";

pub fn mount(
    root: &RootDir,
    dest: &str,
    o: &MountOptions,
    opts: &RootfsOptions,
) -> Result<(), RootfsError> {
    let v2 = statfs(HOST_CGROUP).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if v2 {
        unified(root, dest, o, opts)
    } else {
        hybrid(root, dest, o, opts)
    }
}

/// A fresh cgroup2 mount; where the kernel refuses one (no cgroup namespace in a user namespace),
/// a bind of the container's own cgroup directory.
fn unified(
    root: &RootDir,
    dest: &str,
    o: &MountOptions,
    opts: &RootfsOptions,
) -> Result<(), RootfsError> {
    let target = root
        .create(dest, Kind::Dir)
        .map_err(mount_err(dest, "create mount point"))?;
    let res = sys::mount(
        Some(Path::new("cgroup2")),
        &fd_path(target.as_fd()),
        Some("cgroup2"),
        o.flags,
        o.data_string().as_deref(),
    );
    match res {
        Ok(()) => after_mount(root, dest, o, &target),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) => {
            tracing::info!(
                destination = dest,
                cgroup_ns = opts.cgroup_ns,
                "cgroup2 refused; binding"
            );
            let own = own_cgroups().map_err(mount_err(dest, "read /proc/self/cgroup"))?;
            let path = own
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.as_str())
                .unwrap_or("/");
            let mut b = o.clone();
            b.bind = Some(true);
            bind(
                root,
                dest,
                &Path::new(HOST_CGROUP).join(path.trim_start_matches('/')),
                &b,
            )
        }
        Err(e) => Err(mount_err(dest, "mount cgroup2")(e)),
    }
}

fn hybrid(
    root: &RootDir,
    dest: &str,
    o: &MountOptions,
    opts: &RootfsOptions,
) -> Result<(), RootfsError> {
    let target = root
        .create(dest, Kind::Dir)
        .map_err(mount_err(dest, "create mount point"))?;
    sys::mount(
        Some(Path::new("tmpfs")),
        &fd_path(target.as_fd()),
        Some("tmpfs"),
        o.flags & !libc::MS_RDONLY,
        Some("mode=755"),
    )
    .map_err(mount_err(dest, "mount tmpfs for cgroup hierarchies"))?;
    let mounts = mountinfo::read_self().map_err(mount_err(dest, "read mountinfo"))?;
    let own = own_cgroups().map_err(mount_err(dest, "read /proc/self/cgroup"))?;
    for h in hierarchies(&mounts) {
        hierarchy(root, dest, h, &own, o, opts)?;
    }
    if o.flags & libc::MS_RDONLY != 0 {
        let mounted = reopen(root, dest, &target)?;
        sys::mount(
            None,
            &fd_path(mounted.as_fd()),
            None,
            libc::MS_REMOUNT | o.flags,
            Some("mode=755"),
        )
        .map_err(mount_err(dest, "remount cgroup tmpfs read-only"))?;
    }
    after_mount(root, dest, o, &target)
}

/// The host's cgroup mounts directly under /sys/fs/cgroup.
fn hierarchies(mounts: &[MountInfo]) -> impl Iterator<Item = &MountInfo> {
    mounts.iter().filter(|m| {
        (m.fstype == "cgroup" || m.fstype == "cgroup2")
            && m.mount_point.parent() == Some(Path::new(HOST_CGROUP))
    })
}

fn hierarchy(
    root: &RootDir,
    dest: &str,
    h: &MountInfo,
    own: &[(String, String)],
    o: &MountOptions,
    opts: &RootfsOptions,
) -> Result<(), RootfsError> {
    let Some(name) = h.mount_point.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let sub = format!("{}/{name}", dest.trim_end_matches('/'));
    if opts.cgroup_ns {
        let target = root
            .create(&sub, Kind::Dir)
            .map_err(mount_err(&sub, "create mount point"))?;
        let data = (h.fstype == "cgroup").then(|| v1_data(&h.super_options));
        sys::mount(
            Some(Path::new("cgroup")),
            &fd_path(target.as_fd()),
            Some(h.fstype.as_str()),
            o.flags,
            data.as_deref(),
        )
        .map_err(mount_err(&sub, &format!("mount {} {name}", h.fstype)))?;
    } else {
        let mut b = MountOptions {
            flags: o.flags,
            bind: Some(true),
            ..Default::default()
        };
        b.flags &= !(libc::MS_BIND | libc::MS_REC);
        bind(root, &sub, &host_dir(h, own), &b)?;
    }
    comount_links(root, dest, name)
}

/// The host directory of this process's cgroup in hierarchy `h`.
fn host_dir(h: &MountInfo, own: &[(String, String)]) -> PathBuf {
    let supers: Vec<&str> = h.super_options.split(',').collect();
    let path = own
        .iter()
        .find(|(ctl, _)| {
            if h.fstype == "cgroup2" {
                ctl.is_empty()
            } else {
                !ctl.is_empty() && ctl.split(',').all(|c| supers.contains(&c))
            }
        })
        .map(|(_, p)| p.as_str())
        .unwrap_or("/");
    let rel = Path::new(path)
        .strip_prefix(&h.root)
        .unwrap_or(Path::new(""));
    h.mount_point.join(rel)
}

/// Mount data for a v1 hierarchy: its controllers and named options, without the access mode
/// (which comes from the spec's flags) or a release agent.
fn v1_data(super_options: &str) -> String {
    super_options
        .split(',')
        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent="))
        .collect::<Vec<_>>()
        .join(",")
}

/// `cpu -> cpu,cpuacct`, as on the host, so both names work.
fn comount_links(root: &RootDir, dest: &str, name: &str) -> Result<(), RootfsError> {
    if !name.contains(',') {
        return Ok(());
    }
    let dir = root
        .resolve(dest)
        .map_err(mount_err(dest, "resolve cgroup tmpfs"))?;
    for part in name.split(',') {
        match nix::unistd::symlinkat(name, dir.as_fd(), part) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(mount_err(dest, &format!("symlink {part}"))(e.into())),
        }
    }
    Ok(())
}

/// `/proc/self/cgroup` as (controllers, path); the v2 line has empty controllers.
fn own_cgroups() -> io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(parse_proc_cgroup(&text))
}

fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_mount_data() {
        assert_eq!(v1_data("rw,cpu,cpuacct"), "cpu,cpuacct");
        assert_eq!(
            v1_data("rw,xattr,release_agent=/x,name=systemd"),
            "xattr,name=systemd"
        );
    }

    #[test]
    fn host_dir_matches_hierarchy() {
        let own = parse_proc_cgroup("4:cpu,cpuacct:/user.slice\n1:name=systemd:/a/b\n0::/u\n");
        let mi = mountinfo::parse(
            "33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n",
        );
        let dirs: Vec<PathBuf> = mi.iter().map(|h| host_dir(h, &own)).collect();
        assert_eq!(dirs[0], Path::new("/sys/fs/cgroup/cpu,cpuacct/user.slice"));
        assert_eq!(dirs[1], Path::new("/sys/fs/cgroup/unified/u"));
        assert_eq!(dirs[2], Path::new("/sys/fs/cgroup/systemd/a/b"));
    }
}
