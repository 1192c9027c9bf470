//! Mirror pods: each static pod's stand-in in the API, so that the control plane and kubectl see it.
//! A mirror carries `kubernetes.io/config.mirror` (the static pod's hash) and an owner reference to
//! the Node; it is created when missing, replaced when its static pod changed or someone deleted it
//! (the static pod keeps running), and deleted when its static pod is gone. The static pod's status
//! goes to its mirror.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::static_pods::{Pods, CONFIG_HASH};

pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

pub fn is_mirror(p: &Pod) -> bool {
    annotation(p, CONFIG_MIRROR).is_some()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// The mirror of `pod` that is current: same namespace and name, the static pod's hash, not being
/// deleted.
fn current<'a>(pod: &Pod, mirrors: &'a [Pod]) -> Option<&'a Pod> {
    let hash = annotation(pod, CONFIG_HASH)?;
    mirrors.iter().find(|m| {
        key(m) == key(pod)
            && annotation(m, CONFIG_MIRROR) == Some(hash)
            && m.metadata.deletion_timestamp.is_none()
    })
}

/// The static pods as the workers take them: with their current mirror's status and version, so
/// that a worker continues from what it last reported.
pub fn with_status(statics: &Pods, mirrors: &[Pod]) -> Pods {
    statics
        .iter()
        .map(|(uid, p)| {
            let mut p = p.clone();
            if let Some(m) = current(&p, mirrors) {
                p.status = m.status.clone();
                p.metadata.resource_version = m.metadata.resource_version.clone();
            }
            (uid.clone(), p)
        })
        .collect()
}

/// The mirror to create for `pod`, owned by the node.
pub fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let hash = annotations.get(CONFIG_HASH).cloned().unwrap_or_default();
    annotations.insert(CONFIG_MIRROR.into(), hash);
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.metadata.name.clone().unwrap_or_default(),
                uid: node.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: pod.spec.clone(),
        status: None,
    }
}

/// Brings the API's mirror pods of this node in line with its static pods.
pub async fn sync(client: &kube::Client, node: &str, statics: &Pods, mirrors: &[Pod]) {
    let by_key: BTreeMap<(String, String), &Pod> = statics.values().map(|p| (key(p), p)).collect();
    for m in mirrors {
        let stale = by_key
            .get(&key(m))
            .is_none_or(|p| current(p, std::slice::from_ref(m)).is_none());
        if stale {
            delete(client, m).await;
        }
    }
    let missing: Vec<&Pod> = statics
        .values()
        .filter(|p| !mirrors.iter().any(|m| key(m) == key(p)))
        .collect();
    if missing.is_empty() {
        return;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let n = match nodes.get(node).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "read the node for its mirror pods");
            return;
        }
    };
    for p in missing {
        create(client, &mirror_of(p, &n)).await;
    }
}

async fn create(client: &kube::Client, mirror: &Pod) {
    let (ns, name) = key(mirror);
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), mirror).await {
        Ok(_) => tracing::info!(pod = %name, namespace = %ns, "mirror pod created"),
        // Still there while its deletion completes: the next round creates it.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, namespace = %ns, error = %e, "create a mirror pod"),
    }
}

/// Deletes a mirror at once (grace 0, this uid only): its static pod is not stopped by it.
async fn delete(client: &kube::Client, mirror: &Pod) {
    let (ns, name) = key(mirror);
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: mirror.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %name, namespace = %ns, "mirror pod deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, namespace = %ns, error = %e, "delete a mirror pod"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn static_pod(hash: &str) -> Pod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: ns, uid: {hash}}}\n\
             spec: {{containers: [{{name: c, image: i}}]}}\n"
        );
        super::super::static_pods::parse(&text, std::path::Path::new("/m/w"), "n")
            .unwrap()
            .remove(0)
    }

    fn node() -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                uid: Some("node-uid".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_mirror_carries_the_hash_and_the_node_as_owner() {
        let p = static_pod("h1");
        let m = mirror_of(&p, &node());
        assert!(is_mirror(&m));
        assert_eq!(annotation(&m, CONFIG_MIRROR), Some("h1"));
        assert_eq!(m.metadata.uid, None);
        assert_eq!(m.metadata.name.as_deref(), Some("web-n"));
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Node", "node-uid")
        );
    }

    #[test]
    fn only_a_current_mirror_lends_its_status() {
        let p = static_pod("h1");
        let statics: Pods = [("h1".to_string(), p.clone())].into();
        let mut m = mirror_of(&p, &node());
        m.metadata.resource_version = Some("7".into());
        m.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let got = &with_status(&statics, std::slice::from_ref(&m))["h1"];
        assert_eq!(
            got.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
        assert_eq!(got.metadata.resource_version.as_deref(), Some("7"));
        m.metadata.deletion_timestamp = Some(Time(k8s_openapi::chrono::Utc::now()));
        assert!(with_status(&statics, &[m.clone()])["h1"].status.is_none());
        let old = mirror_of(&static_pod("h0"), &node());
        assert!(current(&p, &[old]).is_none());
    }
}
