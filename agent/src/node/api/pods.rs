//! `/pods`: the pods bound to the node as skiffd follows them; `/runningpods/`: the pods its
//! runtime runs, each with its running containers' names and images, as kubelet builds them from
//! the runtime.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use tokio::sync::watch;

use super::reply::{self, Reply};
use crate::cri::Daemon;
use crate::node::pods::watch::Snapshot;

fn pod_list(items: Vec<Pod>) -> Reply {
    reply::json(&json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    }))
}

pub fn bound(pods: &watch::Receiver<Snapshot>) -> Reply {
    let items = pods
        .borrow()
        .as_ref()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    pod_list(items)
}

pub fn running(d: &Daemon) -> Reply {
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    for sb in d.sandboxes.list().into_iter().filter(|sb| sb.ready) {
        let m = sb.config.metadata.clone().unwrap_or_default();
        pods.insert(
            sb.id.clone(),
            Pod {
                metadata: ObjectMeta {
                    name: Some(m.name),
                    namespace: Some(m.namespace),
                    uid: Some(m.uid),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec::default()),
                ..Pod::default()
            },
        );
    }
    for c in d.containers.list() {
        let Some(pod) = pods.get_mut(&c.sandbox_id) else {
            continue;
        };
        let running = d
            .oci
            .state(&c.id)
            .is_ok_and(|s| s.status == skiff_runtime::state::Status::Running);
        if !running {
            continue;
        }
        if let Some(spec) = pod.spec.as_mut() {
            spec.containers.push(Container {
                name: c.config.metadata.map(|m| m.name).unwrap_or_default(),
                image: Some(c.image_name),
                ..Container::default()
            });
        }
    }
    pod_list(pods.into_values().collect())
}
