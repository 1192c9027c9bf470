//! A cgroup of its own in every v1 hierarchy for one kubelet's `--cgroup-root`, so that kubelets of tests
//! running side by side do not share (and fight over) `/kubepods`. Removed, deepest first, when dropped: by then
//! the runtime must have removed its containers (drop the runtime first).

use std::fs;
use std::path::{Path, PathBuf};

const CGROUP: &str = "/sys/fs/cgroup";

pub struct CgroupRoot {
    /// The path as the kubelet takes it (`/name`).
    pub path: String,
    dirs: Vec<PathBuf>,
}

impl CgroupRoot {
    pub fn create(name: &str) -> CgroupRoot {
        let mut dirs = Vec::new();
        for hierarchy in v1_hierarchies() {
            let dir = hierarchy.join(name);
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            // A new v1 cpuset has no CPUs or memory nodes until given its parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(hierarchy.join(file)) {
                    fs::write(dir.join(file), v.trim())
                        .unwrap_or_else(|e| panic!("write {}/{file}: {e}", dir.display()));
                }
            }
            dirs.push(dir);
        }
        // The kubelet makes its cgroups in the cgroup2 mount of the hybrid layout too.
        dirs.push(Path::new(CGROUP).join("unified").join(name));
        CgroupRoot {
            path: format!("/{name}"),
            dirs,
        }
    }
}

/// The v1 hierarchies mounted under /sys/fs/cgroup (cgroup2's `unified` left alone).
fn v1_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "unified"))
        .filter(|p| p.join("cgroup.procs").exists() && !p.join("cgroup.controllers").exists())
        .collect();
    found.sort();
    found
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_tree(dir);
        }
    }
}
