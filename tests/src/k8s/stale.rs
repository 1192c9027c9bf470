//! What test processes that died without unwinding (killed, timed out) left behind: their daemons died with
//! them, but not their directories, addresses on `lo` or cgroups. Each instance directory is named
//! `<pid>-<n>`; those of processes that are gone are handed to a cleanup when a new instance starts.

use std::path::Path;

/// Calls `cleanup` with every `<pid>-<n>` directory under `parent` whose process no longer exists.
pub fn sweep(parent: &Path, mut cleanup: impl FnMut(&Path, &str)) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            cleanup(&e.path(), &name);
        }
    }
}
