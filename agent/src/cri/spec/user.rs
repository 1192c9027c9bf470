//! Users and groups as the container's own `/etc/passwd` and `/etc/group` define them, read through
//! a root-confined lookup so that a hostile image's symlinks cannot point at the host's files.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

use skiff_runtime::rootfs::resolve::RootDir;

/// Larger account files than this are not read (nobody has a 4 MiB /etc/passwd).
const MAX_FILE: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// A file inside `rootfs`, or `None` when it is missing, not a regular file, or unreadable.
pub fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = RootDir::open(rootfs).ok()?;
    let fd = root.resolve(path).ok()?;
    // The O_PATH descriptor is re-opened for reading through procfs: exactly the inode resolved.
    let file = std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The container's accounts, read once per spec.
#[derive(Debug, Default)]
pub struct Accounts {
    pub passwd: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

impl Accounts {
    pub fn load(rootfs: &Path) -> Accounts {
        Accounts {
            passwd: read_in_root(rootfs, "/etc/passwd")
                .map(|t| parse_passwd(&t))
                .unwrap_or_default(),
            groups: read_in_root(rootfs, "/etc/group")
                .map(|t| parse_group(&t))
                .unwrap_or_default(),
        }
    }

    pub fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|p| p.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|p| p.uid == uid)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Groups that list `user` as a member.
    pub fn memberships(&self, user: &str) -> Vec<u32> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.gid)
            .collect()
    }
}
