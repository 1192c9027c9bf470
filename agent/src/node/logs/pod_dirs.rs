//! The pods' log directories, `<podLogsDir>/<namespace>_<name>_<uid>`: the node agent names them
//! in the sandbox configuration and removes them once their pod is gone, as kubelet's container
//! garbage collection does (its `evictPodLogsDirectories`): at the pod's teardown, and, for
//! directories a stopped agent left, when the pods bound to the node are known again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// `<root>/<namespace>_<name>_<uid>`.
pub fn path(root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    root.join(format!("{namespace}_{name}_{uid}"))
}

/// The pod uid a directory under the root belongs to: what follows its last `_` (no namespace,
/// pod name or uid holds one).
fn uid_of(dir_name: &str) -> Option<&str> {
    dir_name
        .rsplit_once('_')
        .map(|(_, uid)| uid)
        .filter(|u| !u.is_empty())
}

/// The pod directories under `root` (none when it does not exist), with their uids.
fn list(root: &Path) -> Vec<(PathBuf, String)> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %root.display(), error = %e, "list the pod log directories");
            }
            return Vec::new();
        }
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let uid = uid_of(&name)?.to_string();
            Some((e.path(), uid))
        })
        .collect()
}

fn remove(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "removed the log directory of a pod gone"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "remove a pod's log directory"),
    }
}

/// Removes the log directory of the pod `uid`, whose containers are gone.
pub fn remove_pod(root: &Path, uid: &str) {
    for (dir, _) in list(root).into_iter().filter(|(_, u)| u == uid) {
        remove(&dir);
    }
}

/// Removes the log directories of pods not in `known` (the uids of every pod the node runs).
pub fn remove_unknown(root: &Path, known: &HashSet<String>) {
    for (dir, _) in list(root).into_iter().filter(|(_, u)| !known.contains(u)) {
        remove(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_the_pods_gone_lose_their_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for (ns, name, uid) in [
            ("ns", "a", "u-1"),
            ("ns", "b", "u-2"),
            ("kube-system", "c", "u-3"),
        ] {
            let d = path(root, ns, name, uid).join("main");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("0.log"), "x").unwrap();
        }
        std::fs::write(root.join("stray_file_u-9"), "").unwrap();
        remove_pod(root, "u-2");
        assert_eq!(
            dirs(root),
            ["kube-system_c_u-3", "ns_a_u-1", "stray_file_u-9"]
        );
        remove_unknown(root, &["u-3".to_string()].into());
        assert_eq!(dirs(root), ["kube-system_c_u-3", "stray_file_u-9"]);
        remove_unknown(&root.join("missing"), &HashSet::new());
    }

    #[test]
    fn the_uid_is_the_last_field() {
        assert_eq!(uid_of("ns_pod_1234-abcd"), Some("1234-abcd"));
        assert_eq!(uid_of("nounderscore"), None);
        assert_eq!(uid_of("ns_pod_"), None);
    }
}
