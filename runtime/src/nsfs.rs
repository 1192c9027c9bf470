//! Namespace identity on nsfs: which namespace a `/proc/<pid>/ns/<name>` or pinned path is. A leaf:
//! spec validation and the namespace code both ask it.

/// The nsfs device and inode that identify a namespace.
pub fn ns_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok()
}

/// Whether the namespace at `path` is the one skiff or init lives in (`proc_name` is its file under
/// `/proc/<pid>/ns/`): joining it shares the host's, while any other namespace given by path (a pinned
/// one, another container's) is a namespace of its own. A path that cannot be read is not the host's;
/// joining it fails later with its own error.
pub fn is_host_ns(proc_name: &str, path: &str) -> bool {
    let Some(target) = ns_id(path) else {
        return false;
    };
    ["self", "1"]
        .iter()
        .any(|who| ns_id(&format!("/proc/{who}/ns/{proc_name}")) == Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_namespace_is_recognised_by_any_path() {
        assert!(is_host_ns("ipc", "/proc/self/ns/ipc"));
        let by_pid = format!("/proc/{}/ns/net", std::process::id());
        assert!(is_host_ns("net", &by_pid));
        assert!(!is_host_ns("ipc", "/nonexistent/ns"));
    }
}
