//! The pod's sandbox: its CRI configuration as kubelet makes it, and finding the one already running
//! (after a restart of skiffd too) by the pod's uid label.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

use super::{POD_NAME, POD_NAMESPACE, POD_UID};
use crate::cri::{sandbox, Daemon};
use crate::node::Settings;

/// Name, namespace and uid: what every CRI object of the pod is labelled with.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodRef {
    pub fn of(pod: &Pod) -> PodRef {
        PodRef {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    pub fn labels(&self) -> HashMap<String, String> {
        [
            (POD_NAME, &self.name),
            (POD_NAMESPACE, &self.namespace),
            (POD_UID, &self.uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

/// `/var/log/pods/<namespace>_<name>_<uid>`, under the configured root.
pub fn log_directory(root: &Path, p: &PodRef) -> PathBuf {
    crate::node::logs::pod_dirs::path(root, &p.namespace, &p.name, &p.uid)
}

/// The sandbox configuration for `pod`, attempt `attempt`.
pub fn config(s: &Settings, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
    let r = PodRef::of(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    labels.extend(r.labels());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: r.name.clone(),
            uid: r.uid.clone(),
            namespace: r.namespace.clone(),
            attempt,
        }),
        hostname: super::hosts::sandbox_hostname(s, pod),
        log_directory: log_directory(&s.pod_logs_dir, &r)
            .to_string_lossy()
            .into_owned(),
        dns_config: super::dns::config(s, pod),
        port_mappings: ports(pod),
        labels: labels.into_iter().collect(),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(&spec)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's namespaces: the node's when asked for, the pod's own otherwise; one PID namespace
/// per container unless `shareProcessNamespace`.
pub fn namespaces(spec: &k8s_openapi::api::core::v1::PodSpec) -> cri::NamespaceOption {
    let host = |b: Option<bool>| {
        if b.unwrap_or(false) {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        }
    };
    let pid = if spec.host_pid.unwrap_or(false) {
        cri::NamespaceMode::Node
    } else if spec.share_process_namespace.unwrap_or(false) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: host(spec.host_network) as i32,
        pid: pid as i32,
        ipc: host(spec.host_ipc) as i32,
        ..Default::default()
    }
}

fn ports(pod: &Pod) -> Vec<cri::PortMapping> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) != 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp,
                Some("SCTP") => cri::Protocol::Sctp,
                _ => cri::Protocol::Tcp,
            } as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// The pod's sandboxes, newest first.
pub async fn of_pod(d: &Arc<Daemon>, uid: &str) -> Vec<cri::PodSandbox> {
    let filter = cri::PodSandboxFilter {
        label_selector: [(POD_UID.to_string(), uid.to_string())].into(),
        ..Default::default()
    };
    let mut all = sandbox::list(
        d,
        cri::ListPodSandboxRequest {
            filter: Some(filter),
        },
    )
    .await
    .map(|r| r.items)
    .unwrap_or_default();
    all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    all
}

/// The pod's IPs as kubelet reports them: one of the node's primary family (its first
/// `--node-ip`, IPv4 without one) first, then one of the other family; what does not parse goes.
pub fn by_family(ips: &[String], v4_first: bool) -> Vec<String> {
    let parsed: Vec<std::net::IpAddr> = ips.iter().filter_map(|i| i.parse().ok()).collect();
    [v4_first, !v4_first]
        .into_iter()
        .filter_map(|v4| parsed.iter().find(|ip| ip.is_ipv4() == v4))
        .map(|ip| ip.to_string())
        .collect()
}

/// The sandbox's IPs, the primary first.
pub async fn ips(d: &Arc<Daemon>, id: &str) -> Vec<String> {
    let st = sandbox::status(
        d,
        cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        },
    )
    .await;
    let Some(net) = st.ok().and_then(|s| s.status).and_then(|s| s.network) else {
        return Vec::new();
    };
    std::iter::once(net.ip)
        .chain(net.additional_ips.into_iter().map(|i| i.ip))
        .filter(|ip| !ip.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_ip_per_family_the_primary_first() {
        let ips = ["fd00::5", "10.244.0.5", "10.244.0.6", "junk"].map(String::from);
        assert_eq!(super::by_family(&ips, true), ["10.244.0.5", "fd00::5"]);
        assert_eq!(super::by_family(&ips, false), ["fd00::5", "10.244.0.5"]);
        assert_eq!(super::by_family(&ips[1..2], false), ["10.244.0.5"]);
    }
}
