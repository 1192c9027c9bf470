//! The host's cgroup mounts, read from `/proc/self/mountinfo`.

use std::path::PathBuf;

use super::Layout;

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

pub fn layout(hs: &[Hierarchy]) -> Layout {
    let v1 = hs.iter().any(|h| !h.v2);
    let v2 = hs.iter().any(|h| h.v2);
    match (v1, v2) {
        (false, _) => Layout::Unified,
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::Legacy,
    }
}

pub fn parse(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let mountpoint = PathBuf::from(unescape(left[4]));
        let h = match right[0] {
            "cgroup2" => Hierarchy {
                name: "unified".into(),
                mountpoint,
                v2: true,
            },
            "cgroup" => {
                let ctrls: Vec<&str> = right[2]
                    .split(',')
                    .filter_map(|o| match o {
                        "rw" | "ro" | "clone_children" | "noprefix" | "xattr" => None,
                        o if o.starts_with("release_agent=") => None,
                        o => Some(o.strip_prefix("name=").unwrap_or(o)),
                    })
                    .collect();
                Hierarchy {
                    name: ctrls.join(","),
                    mountpoint,
                    v2: false,
                }
            }
            _ => continue,
        };
        // A hierarchy mounted twice counts once: the first mount wins.
        if !out.iter().any(|o| o.name == h.name) {
            out.push(h);
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(layout(&hs), Layout::Hybrid);
        assert_eq!(
            hs[2].mountpoint,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn unified_and_escapes() {
        let hs = parse("1 0 0:1 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n");
        assert_eq!(hs[0].mountpoint, PathBuf::from("/sys/fs/cgroup x"));
        assert_eq!(layout(&hs), Layout::Unified);
    }
}
