//! The downward API: the pod's own fields (`fieldRef`) and its containers' resources
//! (`resourceFieldRef`) as kubelet renders them, for downwardAPI volumes, their projections and
//! environment variables. Limits a container does not set are the node's allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, Pod, ResourceFieldSelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::atomic::File;
use super::objects::DEFAULT_MODE;
use super::Error;
use crate::node::quantity;

/// The node's allocatable resources in base units (cores, bytes), for limits left unset.
pub type Allocatable = BTreeMap<String, f64>;

/// The files of a downwardAPI volume.
pub fn volume(
    pod: &Pod,
    volume: &str,
    src: &DownwardAPIVolumeSource,
    node: &Allocatable,
) -> Result<BTreeMap<String, File>, Error> {
    let mode = src.default_mode.map_or(DEFAULT_MODE, |m| m as u32 & 0o7777);
    items(pod, volume, src.items.iter().flatten(), mode, node)
}

/// The files of downward API `items`, each with its own mode or `mode`.
pub fn items<'a>(
    pod: &Pod,
    volume: &str,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    mode: u32,
    node: &Allocatable,
) -> Result<BTreeMap<String, File>, Error> {
    let mut out = BTreeMap::new();
    for item in items {
        let content = file(pod, item, node)
            .map_err(|m| Error::volume(volume, format!("{:?}: {m}", item.path)))?;
        let mode = item.mode.map_or(mode, |m| m as u32 & 0o7777);
        out.insert(item.path.clone(), File { content, mode });
    }
    Ok(out)
}

fn file(pod: &Pod, item: &DownwardAPIVolumeFile, node: &Allocatable) -> Result<Vec<u8>, String> {
    let value = match (&item.field_ref, &item.resource_field_ref) {
        (Some(f), _) => metadata_field(pod, &f.field_path)?,
        (_, Some(r)) => {
            let name = r.container_name.as_deref().unwrap_or_default();
            let c = container(pod, name)
                .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?;
            resource(c, r, node)?
        }
        _ => return Err("neither fieldRef nor resourceFieldRef".into()),
    };
    Ok(value.into_bytes())
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// A metadata field as a volume file shows it: maps as sorted `key="value"` lines.
pub fn metadata_field(pod: &Pod, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let pairs = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => pairs(&m.labels),
        "metadata.annotations" => pairs(&m.annotations),
        _ => {
            if let Some(k) = bracketed(path, "metadata.labels") {
                lookup(&m.labels, k)
            } else if let Some(k) = bracketed(path, "metadata.annotations") {
                lookup(&m.annotations, k)
            } else {
                return Err(format!("fieldRef {path:?} is not supported"));
            }
        }
    })
}

fn lookup(map: &Option<BTreeMap<String, String>>, k: &str) -> String {
    map.as_ref()
        .and_then(|m| m.get(k))
        .cloned()
        .unwrap_or_default()
}

/// `metadata.labels['key']` → `key`.
pub fn bracketed<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    path.strip_prefix(field)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// A container's request or limit over the divisor, rounded up as kubelet does; an unset limit is
/// the node's allocatable, an unset request zero.
pub fn resource(
    c: &Container,
    r: &ResourceFieldSelector,
    node: &Allocatable,
) -> Result<String, String> {
    let (kind, name) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("resourceFieldRef {:?} is not supported", r.resource))?;
    let res = c.resources.clone().unwrap_or_default();
    let set = match kind {
        "limits" => res.limits,
        "requests" => res.requests,
        _ => {
            return Err(format!(
                "resourceFieldRef {:?} is not supported",
                r.resource
            ))
        }
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(format!(
            "resourceFieldRef {:?} is not supported",
            r.resource
        ));
    }
    let value = match set.as_ref().and_then(|m| m.get(name)) {
        Some(q) => parse(q)?,
        None if kind == "limits" => node.get(name).copied().unwrap_or(0.0),
        None => 0.0,
    };
    let divisor = match &r.divisor {
        Some(d) if parse(d)? > 0.0 => parse(d)?,
        _ => 1.0,
    };
    // CPU is compared in millicores, as kubelet does, so 250m over 1m is exactly 250.
    let (value, divisor) = if name == "cpu" {
        (
            (value * 1000.0).round(),
            (divisor * 1000.0).round().max(1.0),
        )
    } else {
        (value.round(), divisor)
    };
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

fn parse(q: &Quantity) -> Result<f64, String> {
    quantity::parse(&q.0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(limits: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "main",
            "resources": {"limits": limits, "requests": {"cpu": "250m"}},
        }))
        .unwrap()
    }

    fn sel(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        }
    }

    #[test]
    fn resources_round_up_over_the_divisor_and_default_to_the_node() {
        let node: Allocatable = [("cpu".into(), 2.0), ("memory".into(), 4e9)].into();
        let mem = c(serde_json::json!({"memory": "64Mi"}));
        let r = |s, d| resource(&mem, &sel(s, d), &node).unwrap();
        assert_eq!(r("limits.memory", None), "67108864");
        assert_eq!(r("limits.memory", Some("1Mi")), "64");
        assert_eq!(r("limits.memory", Some("1G")), "1");
        assert_eq!(r("requests.cpu", None), "1");
        assert_eq!(r("requests.cpu", Some("1m")), "250");
        assert_eq!(r("limits.cpu", None), "2");
        assert_eq!(r("limits.cpu", Some("1m")), "2000");
        assert_eq!(r("requests.memory", None), "0");
        assert!(resource(&mem, &sel("limits.gpu", None), &node).is_err());
    }

    #[test]
    fn maps_are_sorted_quoted_lines() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"b": "2", "a": "x\"y"}},
        }))
        .unwrap();
        assert_eq!(
            metadata_field(&pod, "metadata.labels").unwrap(),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert_eq!(metadata_field(&pod, "metadata.labels['b']").unwrap(), "2");
        assert!(metadata_field(&pod, "spec.nodeName").is_err());
    }
}
