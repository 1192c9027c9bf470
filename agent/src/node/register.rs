//! The Node object's identity: name, labels, annotations and taints, created once and kept in
//! line with what the node is (its default labels) when it already exists.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use super::Settings;

/// The labels every node carries, from what it is.
pub fn default_labels(s: &Settings, arch: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", s.hostname.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The Node as first registered: default labels over `--node-labels`, the registration taints.
pub fn node_object(s: &Settings, arch: &str) -> Node {
    let mut labels = s.labels.clone();
    labels.extend(default_labels(s, arch));
    Node {
        metadata: ObjectMeta {
            name: Some(s.node_name.clone()),
            labels: Some(labels),
            annotations: Some(
                [(
                    "volumes.kubernetes.io/controller-managed-attach-detach".to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!s.taints.is_empty()).then(|| s.taints.clone()),
            provider_id: s.provider_id.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates the Node, or brings an existing one's default labels up to date (a node that
/// re-registers keeps what the cluster changed: its taints, its other labels).
pub async fn register(client: kube::Client, s: &Settings, arch: &str) -> Result<Node> {
    let api: Api<Node> = Api::all(client);
    let node = node_object(s, arch);
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => {
            tracing::info!(node = %s.node_name, "node registered");
            Ok(n)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": default_labels(s, arch)}});
            let n = api
                .patch(&s.node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("update node {}", s.node_name))?;
            tracing::info!(node = %s.node_name, "node already registered: labels reconciled");
            Ok(n)
        }
        Err(e) => Err(e).with_context(|| format!("register node {}", s.node_name)),
    }
}
