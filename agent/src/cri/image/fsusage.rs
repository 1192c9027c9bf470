//! Disk usage of a directory tree, as `du` counts it: allocated blocks, each inode once, without
//! crossing into other file systems (a container's mounted root is not its writable layer).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.bytes += other.bytes;
        self.inodes += other.inodes;
    }
}

/// Usage of `root` and everything below it on the same device; a missing root is zero. Entries that
/// vanish while walking (a container writing) are skipped.
pub fn usage(root: &Path) -> Usage {
    let mut u = Usage::default();
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return u;
    };
    let dev = meta.dev();
    let mut seen = HashSet::new();
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        if meta.dev() != dev || !seen.insert(meta.ino()) {
            continue;
        }
        u.inodes += 1;
        u.bytes += meta.blocks() * 512;
        if !meta.is_dir() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                stack.push((e.path(), m));
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_and_inodes_once() {
        let dir = tempfile::tempdir().unwrap();
        let empty = usage(dir.path());
        assert_eq!(empty.inodes, 1);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), vec![7u8; 64 * 1024]).unwrap();
        std::fs::hard_link(dir.path().join("sub/f"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("sym")).unwrap();
        let u = usage(dir.path());
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 64 * 1024, "{u:?}");
        assert!(u.bytes < 2 * 64 * 1024 + 3 * 8192, "{u:?}");
        assert_eq!(usage(&dir.path().join("missing")), Usage::default());
    }
}
