//! Compare two directory trees entry by entry: type, mode, owner, size, content, link target,
//! device numbers, mtime (seconds), xattrs and hardlink grouping.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    rdev: u64,
    content: Option<String>,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the first path sharing this inode (hardlinks), if any other does.
    hardlink_group: Option<PathBuf>,
}

pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 65536];
    // SAFETY: `c` is NUL-terminated and `names` is a writable buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).expect("name");
        let mut val = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated and `val` is writable for its length.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if len >= 0 {
            val.truncate(len as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), val);
        }
    }
    out
}

fn walk(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut first_by_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut counts: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        if m.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&p)
                .expect("readdir")
                .map(|e| e.expect("entry").path())
                .collect();
            children.sort();
            stack.extend(children);
        }
        *counts.entry((m.dev(), m.ino())).or_default() += 1;
        all.push((p, m));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, m) in all {
        let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
        let key = (m.dev(), m.ino());
        let hardlink_group = (!m.is_dir() && counts[&key] > 1).then(|| {
            first_by_inode
                .entry(key)
                .or_insert_with(|| rel.clone())
                .clone()
        });
        let ft = m.file_type();
        out.insert(
            rel,
            Entry {
                kind: m.mode() & libc::S_IFMT,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_file() { m.size() } else { 0 },
                mtime: if ft.is_dir() { 0 } else { m.mtime() },
                rdev: m.rdev(),
                content: ft
                    .is_file()
                    .then(|| super::build::sha256(&std::fs::read(&p).expect("read"))),
                link: ft
                    .is_symlink()
                    .then(|| std::fs::read_link(&p).expect("readlink")),
                xattrs: xattrs(&p),
                hardlink_group,
            },
        );
    }
    out
}

/// Differences between two trees, one line each; empty when they match. The roots
/// themselves are compared too. Directory mtimes are skipped (inserting into them changes them).
pub fn diff(a: &Path, b: &Path) -> Vec<String> {
    let (ta, tb) = (walk(a), walk(b));
    let mut out = Vec::new();
    for (p, ea) in &ta {
        match tb.get(p) {
            None => out.push(format!("{}: only in {}", p.display(), a.display())),
            Some(eb) if ea != eb => out.push(format!("{}: {ea:?} != {eb:?}", p.display())),
            _ => {}
        }
    }
    for p in tb.keys().filter(|p| !ta.contains_key(*p)) {
        out.push(format!("{}: only in {}", p.display(), b.display()));
    }
    out
}
