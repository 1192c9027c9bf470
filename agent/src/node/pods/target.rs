//! What one sync of a pod hands to the steps that start its containers: the pod, its sandbox and
//! the node's view of it ([`Target`]), and the pod's containers as the CRI has them ([`instances`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

use super::Shared;
use crate::cri::{container, Daemon};
use crate::node::volumes::downward::Allocatable;
use crate::node::Settings;

/// Everything one sync needs to start a container.
pub struct Target<'a> {
    pub shared: &'a Shared,
    pub d: &'a Arc<Daemon>,
    pub pod: &'a Pod,
    pub sandbox_id: &'a str,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub pod_ips: &'a [String],
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub mounts: &'a HashMap<String, PathBuf>,
    pub client: &'a kube::Client,
    /// `<root>/pods/<uid>`: the hosts file and subPath mounts live there.
    pub pod_dir: &'a Path,
    pub allocatable: &'a Allocatable,
    pub settings: &'a Settings,
}

/// The pod's containers in the CRI (every state), grouped by name, newest first.
pub async fn instances(d: &Arc<Daemon>, sandbox_id: &str) -> HashMap<String, Vec<cri::Container>> {
    let filter = cri::ContainerFilter {
        pod_sandbox_id: sandbox_id.into(),
        ..Default::default()
    };
    let list = container::list(
        d,
        cri::ListContainersRequest {
            filter: Some(filter),
        },
    )
    .await
    .map(|r| r.containers)
    .unwrap_or_default();
    let mut by_name: HashMap<String, Vec<cri::Container>> = HashMap::new();
    for c in list {
        let name = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        by_name.entry(name).or_default().push(c);
    }
    for v in by_name.values_mut() {
        v.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    }
    by_name
}
