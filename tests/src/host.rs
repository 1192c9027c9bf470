//! Observations of the host: mounts, processes, namespaces, cgroups.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mount points (field 5 of mountinfo, octal escapes decoded) of the given mountinfo file.
pub fn mount_points_of(mountinfo: &str) -> Vec<String> {
    let text = fs::read_to_string(mountinfo).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect()
}

/// Host mount points (this process's namespace).
pub fn mount_points() -> Vec<String> {
    mount_points_of("/proc/self/mountinfo")
}

/// Host mountinfo lines that mention `path` (as mount point or root), for leftover checks.
pub fn mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| unescape(l).contains(&needle))
        .map(str::to_string)
        .collect()
}

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

/// True when `pid` exists and is not a zombie.
pub fn process_alive(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Waits up to `timeout` for `pid` to be gone (or a zombie).
pub fn wait_process_gone(pid: i64, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !process_alive(pid)
}

/// Inode of a namespace file (`/proc/<pid>/ns/<kind>` or a bind-mounted nsfs file).
pub fn ns_inode(path: &str) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path}: {e}"))
        .ino()
}

/// Inode of one of this process's namespaces.
pub fn host_ns(kind: &str) -> u64 {
    ns_inode(&format!("/proc/self/ns/{kind}"))
}

/// Cgroup directories under /sys/fs/cgroup whose name contains `id`.
pub fn cgroup_dirs_named(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            walk_cgroup(&e.path(), id, 0, &mut found);
        }
    }
    found
}

fn walk_cgroup(dir: &Path, id: &str, depth: u32, found: &mut Vec<PathBuf>) {
    if depth > 5 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let p = e.path();
        if names_id(&e.file_name().to_string_lossy(), id) {
            found.push(p.clone());
        }
        walk_cgroup(&p, id, depth + 1, found);
    }
}

/// True when `name` contains `id` as a whole token (so `c-1` does not match `c-12`).
fn names_id(name: &str, id: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    name.match_indices(id).any(|(i, _)| {
        !alnum(name[..i].chars().next_back()) && !alnum(name[i + id.len()..].chars().next())
    })
}

/// Lazily unmounts everything mounted at or below `dir` (deepest first).
pub fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mount_points()
        .into_iter()
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = CString::new(Path::new(&p).as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path; MNT_DETACH cannot corrupt memory.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mounts a tmpfs at `target` (test scaffolding on the host, under the test's own dir).
pub fn mount_tmpfs(target: &Path) {
    fs::create_dir_all(target).expect("create tmpfs mount point");
    let t = CString::new(target.as_os_str().as_bytes()).expect("path");
    let src = CString::new("tmpfs").expect("cstr");
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe { libc::mount(src.as_ptr(), t.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    assert_eq!(
        rc,
        0,
        "mount tmpfs at {}: {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    path.exists()
}

/// Names of the entries of `dir` (sorted), empty if unreadable.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
