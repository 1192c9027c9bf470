//! A pod's local storage limits, as kubelet's eviction manager enforces them: a disk-backed emptyDir
//! whose contents pass its `sizeLimit` evicts the pod (Failed, reason `Evicted`, kubelet's message).
//! Measured as `du` counts, at most every [`PERIOD`], since walking a large volume costs.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::deadline::Verdict;
use crate::cri::image::usage;
use crate::node::quantity;

pub const REASON: &str = "Evicted";
/// kubelet's eviction manager looks every 10 s.
pub const PERIOD: Duration = Duration::from_secs(10);

/// The eviction of `pod` once a disk-backed emptyDir under `volumes` (its `<pod>/volumes`) holds
/// more than its `sizeLimit`.
pub fn check(pod: &Pod, volumes: &Path) -> Option<Verdict> {
    let dirs = volumes.join("kubernetes.io~empty-dir");
    for v in pod.spec.as_ref()?.volumes.iter().flatten() {
        let Some(e) = &v.empty_dir else { continue };
        if !e.medium.as_deref().unwrap_or_default().is_empty() {
            continue;
        }
        let Some(limit) = &e.size_limit else { continue };
        let Ok(max) = quantity::parse(&limit.0) else {
            continue;
        };
        if usage(&dirs.join(&v.name)).bytes as f64 > max {
            return Some(Verdict {
                phase: "Failed",
                reason: REASON,
                message: format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    v.name, limit.0
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(limit: &str, medium: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {"sizeLimit": limit, "medium": medium}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn a_disk_empty_dir_past_its_limit_evicts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kubernetes.io~empty-dir/scratch");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), vec![1u8; 64 << 10]).unwrap();
        assert_eq!(check(&pod("1Mi", None), tmp.path()), None);
        let v = check(&pod("32Ki", None), tmp.path()).unwrap();
        assert_eq!((v.phase, v.reason), ("Failed", REASON));
        assert_eq!(
            v.message,
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"32Ki\". "
        );
        // A memory-backed emptyDir is bounded by its tmpfs instead.
        assert_eq!(check(&pod("32Ki", Some("Memory")), tmp.path()), None);
    }
}
