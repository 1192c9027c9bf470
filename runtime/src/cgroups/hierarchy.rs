//! The host's cgroup hierarchies, from its mounts.

use std::path::PathBuf;

use crate::mountinfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// `unified` for cgroup2, else the controllers (`cpu`, `memory`, `systemd` for `name=systemd`), joined by `,`.
    pub name: String,
    pub mountpoint: PathBuf,
    pub v2: bool,
}

pub fn hierarchies() -> Vec<Hierarchy> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| parse(&s))
        .unwrap_or_default()
}

pub fn parse(text: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in mountinfo::parse(text) {
        let name = match m.fstype.as_str() {
            "cgroup2" => "unified".to_owned(),
            "cgroup" => m
                .super_options
                .split(',')
                .filter_map(|o| match o {
                    "rw" | "ro" | "clone_children" | "noprefix" | "xattr" => None,
                    o if o.starts_with("release_agent=") => None,
                    o => Some(o.strip_prefix("name=").unwrap_or(o)),
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        // A hierarchy mounted twice counts once: the first mount wins.
        if !out.iter().any(|o| o.name == name) {
            out.push(Hierarchy {
                v2: m.fstype == "cgroup2",
                name,
                mountpoint: m.mount_point,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid() {
        let hs = parse(HYBRID);
        let names: Vec<_> = hs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["unified", "systemd", "cpu,cpuacct", "memory"]);
        assert_eq!(
            hs[2].mountpoint,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn unified_and_escapes() {
        let hs = parse("1 0 0:1 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n");
        assert_eq!(hs[0].mountpoint, PathBuf::from("/sys/fs/cgroup x"));
    }
}
