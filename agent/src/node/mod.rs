//! Node mode: skiffd as the kubelet of a Kubernetes node. It joins the cluster the kubeconfig
//! names (bootstrapping its credentials if needed), registers the Node, keeps its status and
//! Lease, and serves the kubelet's healthz, beside the CRI server it still is.
//!
//! The pods bound to the node run through the CRI layer in-process ([`pods`], [`volumes`]).

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod healthz;
pub mod kubeconfig;
pub mod lease;
pub mod machine;
pub mod network;
pub mod pki;
pub mod pods;
pub mod pressure;
pub mod quantity;
pub mod register;
pub mod status;
pub mod volumes;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use tokio::sync::watch;

use crate::cri::Daemon;
use cli::Flags;
use config::KubeletConfiguration;
use machine::Machine;
use quantity::Amount;

/// The Kubernetes release whose kubelet skiffd stands in for (kubeadm checks the version skew).
pub const KUBERNETES_VERSION: &str = "v1.28.7";

/// The version the node reports: the Kubernetes release, then skiff's own.
pub fn kubelet_version() -> String {
    format!("{KUBERNETES_VERSION}-skiff.{}", env!("CARGO_PKG_VERSION"))
}

/// What `kubelet --version` prints.
pub fn version_line() -> String {
    format!("Kubernetes {}", kubelet_version())
}

/// Node mode's settings: flags over the configuration file over kubelet's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub hostname: String,
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub root_dir: PathBuf,
    pub node_ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub healthz: SocketAddr,
    pub kubelet_port: u16,
    pub max_pods: u32,
    pub reserved: BTreeMap<String, f64>,
    pub eviction: BTreeMap<String, Amount>,
    pub status_update: Duration,
    pub status_report: Duration,
    pub lease_seconds: u32,
    pub rotate_certificates: bool,
    pub register_node: bool,
    pub fail_swap_on: bool,
    pub provider_id: Option<String>,
    pub pod_logs_dir: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
}

impl Settings {
    pub fn new(f: &Flags, file: &KubeletConfiguration) -> Result<Settings, String> {
        let mut c = file.clone();
        if let Some(m) = &f.system_reserved {
            c.system_reserved = m.clone();
        }
        if let Some(m) = &f.kube_reserved {
            c.kube_reserved = m.clone();
        }
        if let Some(m) = &f.eviction_hard {
            c.eviction_hard = Some(m.clone());
        }
        let hostname = f
            .hostname_override
            .clone()
            .unwrap_or_else(host_name)
            .trim()
            .to_lowercase();
        if hostname.is_empty() {
            return Err("the host has no name: give --hostname-override".into());
        }
        let healthz_ip = match f.healthz_bind_address {
            Some(ip) => ip,
            None => c.healthz_bind_address.parse().map_err(|_| {
                format!(
                    "healthzBindAddress {:?} is not an IP",
                    c.healthz_bind_address
                )
            })?,
        };
        let node_ips = if f.node_ip.is_empty() {
            default_node_ip().into_iter().collect()
        } else {
            f.node_ip.clone()
        };
        let mut taints = c.register_with_taints.clone();
        taints.extend(f.register_with_taints.iter().cloned());
        Ok(Settings {
            node_name: hostname.clone(),
            hostname,
            kubeconfig: f
                .kubeconfig
                .clone()
                .unwrap_or_else(|| "/etc/kubernetes/kubelet.conf".into()),
            bootstrap_kubeconfig: f.bootstrap_kubeconfig.clone(),
            cert_dir: f.cert_dir.clone().unwrap_or_else(|| f.root_dir.join("pki")),
            root_dir: f.root_dir.clone(),
            node_ips,
            labels: f.node_labels.clone(),
            taints,
            healthz: SocketAddr::new(healthz_ip, f.healthz_port.unwrap_or(c.healthz_port)),
            kubelet_port: c.port,
            max_pods: f.max_pods.unwrap_or(c.max_pods),
            reserved: c.reserved()?,
            eviction: c.eviction_thresholds()?,
            status_update: c.status_update_frequency()?,
            status_report: c.status_report_frequency()?,
            lease_seconds: c.node_lease_duration_seconds,
            rotate_certificates: f.rotate_certificates.unwrap_or(c.rotate_certificates),
            register_node: f.register_node.unwrap_or(c.register_node),
            fail_swap_on: f.fail_swap_on.unwrap_or(c.fail_swap_on),
            provider_id: f.provider_id.clone().or_else(|| c.provider_id.clone()),
            pod_logs_dir: c.pod_logs_dir.clone(),
            cluster_dns: c.cluster_dns.clone(),
            cluster_domain: c.cluster_domain.clone(),
        })
    }

    #[cfg(test)]
    pub fn for_tests() -> Settings {
        let f = Flags {
            hostname_override: Some("node-a".into()),
            ..Default::default()
        };
        Settings::new(&f, &KubeletConfiguration::default()).unwrap()
    }
}

/// kubelet's refusal to run with swap on unless `failSwapOn` is false.
pub fn check_swap(s: &Settings) -> Result<(), String> {
    if !s.fail_swap_on {
        return Ok(());
    }
    let swaps = machine::swaps_in_use(&std::fs::read_to_string("/proc/swaps").unwrap_or_default());
    if swaps.is_empty() {
        return Ok(());
    }
    Err(format!(
        "running with swap on is not supported: turn swap off or set failSwapOn: false \
         (--fail-swap-on=false); /proc/swaps lists {}",
        swaps.join(", ")
    ))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
}

/// The address of the interface the default route leaves by, as kubelet picks one without
/// `--node-ip`. A UDP connect chooses the route and sends nothing.
fn default_node_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
}

/// Everything the node's loops share.
pub struct NodeContext {
    pub settings: Settings,
    pub machine: Machine,
    pub daemon: Arc<Daemon>,
    pub network: network::Health,
}

/// Runs node mode until skiffd stops: credentials, registration, then status, Lease and
/// certificate rotation side by side. `start` has been prepared from files (its errors were fatal);
/// what fails from here on is retried.
pub async fn run(ctx: Arc<NodeContext>, start: bootstrap::Start) -> anyhow::Result<()> {
    let s = &ctx.settings;
    ctx.network
        .set_kernel(tokio::task::spawn_blocking(network::kernel::prepare).await?);
    let paths = bootstrap::Paths {
        kubeconfig: s.kubeconfig.clone(),
        bootstrap_kubeconfig: s.bootstrap_kubeconfig.clone(),
        cert_dir: s.cert_dir.clone(),
    };
    let identity = bootstrap::obtain(start, &paths, &s.node_name).await;
    let (tx, clients) = watch::channel(identity.kubeconfig.client()?);
    if s.rotate_certificates {
        tokio::spawn(bootstrap::rotate(
            identity,
            s.kubeconfig.clone(),
            s.cert_dir.clone(),
            s.node_name.clone(),
            tx,
        ));
    }
    if !s.register_node {
        tracing::info!("registerNode is false: not registering the node");
        return std::future::pending().await;
    }
    let node = register_until_done(&ctx, &clients).await;
    let holder = lease::Holder {
        node: s.node_name.clone(),
        node_uid: node.metadata.uid.clone().unwrap_or_default(),
        duration_seconds: s.lease_seconds,
    };
    tokio::spawn(lease::run(holder, clients.clone()));
    tokio::spawn(pods::run(ctx.clone(), clients.clone()));
    tokio::spawn(network::run(ctx.clone(), clients.clone()));
    status::run(ctx.clone(), node, clients).await;
    Ok(())
}

async fn register_until_done(
    ctx: &NodeContext,
    clients: &watch::Receiver<kube::Client>,
) -> k8s_openapi::api::core::v1::Node {
    let mut backoff = bootstrap::Backoff::default();
    loop {
        let client = clients.borrow().clone();
        match register::register(client, &ctx.settings, &ctx.machine.architecture).await {
            Ok(n) => return n,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "register the node; retrying");
                backoff.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_kubeadms_check() {
        let v = version_line();
        let rest = v.strip_prefix("Kubernetes v").unwrap();
        let (core, suffix) = rest.split_at(rest.find('-').unwrap());
        assert_eq!(
            core.split('.').filter(|p| p.parse::<u32>().is_ok()).count(),
            3
        );
        assert!(suffix.chars().all(|c| c.is_alphanumeric()
            || c == '_'
            || c == '-'
            || c == '.'
            || c == '+'));
    }

    #[test]
    fn flags_override_the_file() {
        let c = KubeletConfiguration::parse(
            std::path::Path::new("c"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 30\n\
             healthzPort: 10248\nregisterWithTaints: [{key: a, effect: NoSchedule}]\n",
        )
        .unwrap();
        let f = Flags::parse([
            "--hostname-override=Worker-1",
            "--max-pods=12",
            "--healthz-port=20248",
            "--node-ip=10.9.8.7",
            "--register-with-taints=b=c:NoExecute",
            "--root-dir=/tmp/kubelet-root",
            "--eviction-hard=memory.available<1Gi",
        ])
        .unwrap();
        let s = Settings::new(&f, &c).unwrap();
        assert_eq!(s.node_name, "worker-1");
        assert_eq!(s.eviction.len(), 1);
        assert_eq!(
            s.eviction["memory.available"],
            Amount::Absolute((1u64 << 30) as f64)
        );
        let bad = Flags::parse(["--hostname-override=a", "--kube-reserved=memory=lots"]).unwrap();
        let e = Settings::new(&bad, &c).unwrap_err();
        assert!(e.contains("kubeReserved memory"), "{e}");
        assert_eq!(s.max_pods, 12);
        assert_eq!(s.healthz, "127.0.0.1:20248".parse().unwrap());
        assert_eq!(s.node_ips, vec!["10.9.8.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.taints.len(), 2);
        assert_eq!(s.cert_dir, PathBuf::from("/tmp/kubelet-root/pki"));
        assert_eq!(s.kubeconfig, PathBuf::from("/etc/kubernetes/kubelet.conf"));
    }
}
