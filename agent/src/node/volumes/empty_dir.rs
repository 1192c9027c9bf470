//! emptyDir: a directory that lives as long as the pod, on the node's disk, or with
//! `medium: Memory` a tmpfs as large as the smallest of `sizeLimit`, the pod's memory limit and the
//! node's allocatable memory (kubelet's rule). A disk emptyDir's `sizeLimit` evicts the pod once its
//! contents pass it (`pods::eviction`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod};
use nix::mount::{mount, MsFlags};

use super::downward::Allocatable;
use super::Error;
use crate::node::quantity;

pub fn setup(
    dir: &Path,
    volume: &str,
    e: &EmptyDirVolumeSource,
    pod: &Pod,
    node: &Allocatable,
) -> Result<(), Error> {
    let fail = |what: &str, err: &dyn std::fmt::Display| {
        Error::volume(volume, format!("{what} {}: {err}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|err| fail("create", &err))?;
    match e.medium.as_deref().unwrap_or_default() {
        "" => {}
        "Memory" => {
            if !is_tmpfs(dir) {
                let size = memory_size(e, pod, node).map_err(|m| Error::volume(volume, m))?;
                let opts = format!("size={size},mode=0777");
                mount(
                    Some("tmpfs"),
                    dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(opts.as_str()),
                )
                .map_err(|err| fail("mount a tmpfs on", &err))?;
            }
        }
        other => {
            return Err(Error::volume(
                volume,
                format!("emptyDir medium {other:?} is not supported"),
            ))
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|err| fail("chmod", &err))
}

fn is_tmpfs(dir: &Path) -> bool {
    skiff_runtime::mountinfo::read_self()
        .unwrap_or_default()
        .iter()
        .any(|m| m.mount_point == dir && m.fstype == "tmpfs")
}

/// The tmpfs size in bytes: node allocatable memory, less if the pod's memory limit is less, less
/// again if `sizeLimit` is.
pub fn memory_size(e: &EmptyDirVolumeSource, pod: &Pod, node: &Allocatable) -> Result<u64, String> {
    let mut size = node.get("memory").copied().unwrap_or(0.0);
    let smaller = |size: f64, v: f64| {
        if v > 0.0 && (size <= 0.0 || v < size) {
            v
        } else {
            size
        }
    };
    if let Some(limit) = pod_memory_limit(pod)? {
        size = smaller(size, limit);
    }
    if let Some(q) = &e.size_limit {
        let v = quantity::parse(&q.0).map_err(|e| format!("sizeLimit: {e}"))?;
        size = smaller(size, v);
    }
    if size <= 0.0 {
        return Err("no size for the memory-backed emptyDir".into());
    }
    Ok(size as u64)
}

/// The pod's memory limit when every container has one: the sum of the app containers', or the
/// largest init container's if that is more.
fn pod_memory_limit(pod: &Pod) -> Result<Option<f64>, String> {
    let Some(spec) = &pod.spec else {
        return Ok(None);
    };
    let limit = |c: &k8s_openapi::api::core::v1::Container| -> Result<Option<f64>, String> {
        let q = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"));
        q.map(|q| quantity::parse(&q.0).map_err(|e| format!("container {:?}: {e}", c.name)))
            .transpose()
    };
    let mut sum = 0.0;
    for c in &spec.containers {
        match limit(c)? {
            Some(v) => sum += v,
            None => return Ok(None),
        }
    }
    for c in spec.init_containers.iter().flatten() {
        match limit(c)? {
            Some(v) => sum = f64::max(sum, v),
            None => return Ok(None),
        }
    }
    Ok(Some(sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_size_is_the_smallest_of_limit_pod_and_node() {
        let node: Allocatable = [("memory".into(), 8e9)].into();
        let pod = |limits: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [
                    {"name": "a", "resources": {"limits": limits}},
                    {"name": "b", "resources": {"limits": {"memory": "100Mi"}}}
                ]}
            }))
            .unwrap()
        };
        let e = |limit: Option<&str>| EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: limit
                .map(|l| k8s_openapi::apimachinery::pkg::api::resource::Quantity(l.into())),
        };
        let limited = pod(serde_json::json!({"memory": "100Mi"}));
        let open = pod(serde_json::json!({}));
        assert_eq!(memory_size(&e(None), &open, &node).unwrap(), 8_000_000_000);
        assert_eq!(memory_size(&e(None), &limited, &node).unwrap(), 200 << 20);
        assert_eq!(
            memory_size(&e(Some("16Mi")), &limited, &node).unwrap(),
            16 << 20
        );
        assert_eq!(
            memory_size(&e(Some("1Gi")), &limited, &node).unwrap(),
            200 << 20
        );
    }
}
