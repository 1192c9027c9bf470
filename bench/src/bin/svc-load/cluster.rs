//! Two nodes on one lan, each in a network namespace of its own, joined to one real control plane:
//! a skiff node (skiffd as its kubelet) and a stock node (the kubelet on containerd), both with
//! skiff-bridge under the config skiffd writes for its pod CIDR, and kubeadm's kube-proxy DaemonSet
//! on both. On each node: server pods behind a ClusterIP Service, and a client pod.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use skiff_agent::node::network::conflist;
use skiff_bench::containerd::{self, Containerd};
use skiff_bench::sandbox::pod_netns;
use skiff_cni::ipnet::IpNet;
use skiff_tests::binary::workspace_dir;
use skiff_tests::cri::{busybox_layout, BUSYBOX};
use skiff_tests::k8s::netns_node::{self, Lan, Netns, NetnsNode};
use skiff_tests::k8s::skiff_node::{get_json, wait_for};
use skiff_tests::k8s::{ControlPlane, KubeletNode};
use skiff_tests::registry::Registry;

pub const NS: &str = "svcbench";
/// The servers' port in their pods (the Service's targetPort).
pub const PORT: u16 = 8080;
const WITHIN: Duration = Duration::from_secs(240);

/// The kubelet on containerd, both inside the node's namespace. Dropped with the kubelet stopped
/// first, then in field order: containerd and its pods, the kubelet's directories and cgroups, the
/// namespace.
pub struct StockNode {
    runtime: Containerd,
    node: KubeletNode,
    ns: Netns,
}

/// One node as the benchmark sees it: where its pods' namespaces are found, and its own.
pub struct Side {
    pub tag: &'static str,
    pub node: String,
    pub netns: PathBuf,
    pub cri: PathBuf,
}

/// The pods of one side, each as the namespace its tool runs in; the Service's address.
pub struct Pods {
    pub servers: Vec<PathBuf>,
    pub client: PathBuf,
    pub service: SocketAddr,
}

/// Dropped in field order: the nodes before the lan, the control plane and the registry.
pub struct Cluster {
    pub skiff: NetnsNode,
    pub stock: StockNode,
    _lan: Lan,
    pub cp: ControlPlane,
    _registry: Registry,
}

impl Cluster {
    pub fn start() -> Result<Cluster> {
        let registry = Registry::start()?;
        registry.push(busybox_layout(), "latest", "library/busybox:latest", &[])?;
        containerd::push_pause(&registry)?;
        cluster_images(&registry)?;
        let cp = ControlPlane::start();
        let lan = Lan::create(&cp);
        let mirror = lan.forward(registry.port).to_string();
        let pid = std::process::id();
        let config = "evictionHard: {imagefs.available: 1%, nodefs.available: 1%}";
        let skiff = netns_node::join(
            &cp,
            &lan,
            0,
            &format!("sb-skiff-{pid}"),
            Some(&mirror),
            config,
        );
        // kubeadm's kube-proxy image comes from registry.k8s.io: the registry mirrors it.
        std::fs::write(
            skiff.joined.node.dir.join("registries.toml"),
            format!(
                "[registries.\"registry.skiff.test\"]\nmirrors = [\"http://{mirror}\"]\n\
                 [registries.\"registry.k8s.io\"]\nmirrors = [\"http://{mirror}\"]\n"
            ),
        )?;
        let stock = StockNode::join(&cp, &lan, &format!("sb-kubelet-{pid}"), &mirror)?;
        cp.init_phase(&["addon", "kube-proxy"]);
        wait_for("kube-proxy Ready on both nodes", WITHIN, || {
            let pods = get_json(
                &cp,
                &["-n", "kube-system", "pods", "-l", "k8s-app=kube-proxy"],
            )?;
            let ready = pods["items"]
                .as_array()?
                .iter()
                .filter(|p| ready(p))
                .count();
            (ready == 2).then_some(())
        });
        cp.kubectl_ok(&["create", "namespace", NS]);
        wait_for(
            "the default service account",
            Duration::from_secs(60),
            || get_json(&cp, &["-n", NS, "serviceaccount", "default"]),
        );
        Ok(Cluster {
            skiff,
            stock,
            _lan: lan,
            cp,
            _registry: registry,
        })
    }

    pub fn sides(&self) -> [Side; 2] {
        [
            Side {
                tag: "skiff",
                node: self.skiff.joined.name.clone(),
                netns: self.skiff.ns.path(),
                cri: self.skiff.joined.node.socket(),
            },
            Side {
                tag: "kubelet",
                node: self.stock.node.name.clone(),
                netns: self.stock.ns.path(),
                cri: self.stock.runtime.socket.clone(),
            },
        ]
    }

    /// `servers` server pods and a client pod on `side`'s node, and a ClusterIP Service in front of
    /// the servers; once all run, their namespaces and the Service's address.
    pub fn pods(&self, side: &Side, servers: usize) -> Result<Pods> {
        let tag = side.tag;
        let names: Vec<String> = (0..servers).map(|i| format!("srv-{tag}-{i}")).collect();
        let mut manifest = String::new();
        for n in &names {
            manifest += &pod(n, &side.node, &format!("srv-{tag}"));
        }
        let client = format!("cli-{tag}");
        manifest += &pod(&client, &side.node, "client");
        manifest += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: srv-{tag}, namespace: {NS}}}\n\
             spec:\n  selector: {{app: srv-{tag}}}\n  ports:\n  - {{port: 80, targetPort: {PORT}}}\n"
        );
        let file = self.cp.dir.join(format!("svcbench-{tag}.yaml"));
        std::fs::write(&file, manifest)?;
        self.cp
            .kubectl_ok(&["apply", "-f", &file.to_string_lossy()]);
        for n in names.iter().chain([&client]) {
            wait_for(&format!("pod {n} running"), WITHIN, || {
                let p = get_json(&self.cp, &["-n", NS, "pod", n])?;
                ready(&p).then_some(())
            });
        }
        let svc = get_json(&self.cp, &["-n", NS, "service", &format!("srv-{tag}")])
            .context("the Service")?;
        let ip: Ipv4Addr = svc["spec"]["clusterIP"]
            .as_str()
            .context("the Service's clusterIP")?
            .parse()?;
        Ok(Pods {
            servers: names
                .iter()
                .map(|n| pod_netns(&side.cri, n))
                .collect::<Result<_>>()?,
            client: pod_netns(&side.cri, &client)?,
            service: SocketAddr::from((ip, 80)),
        })
    }
}

impl StockNode {
    /// containerd and the kubelet in node 1's namespace of `lan`, joined as `name`, pulling from
    /// `mirror`; once the node has its pod CIDR, skiff-bridge's config over it as skiffd writes it.
    fn join(cp: &ControlPlane, lan: &Lan, name: &str, mirror: &str) -> Result<StockNode> {
        let ns = lan.node(1);
        // What a kubeadm node's preflight asks of its administrator (skiffd sets both itself).
        let out = ns
            .exec("sysctl")
            .args([
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.bridge.bridge-nf-call-iptables=1",
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "sysctl in {}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let runtime = Containerd::start_in(&ns, mirror)?;
        let node = KubeletNode::join_in_netns(cp, name, &runtime.socket, &[], &ns, lan.node_ip(1));
        let cidr = wait_for("the kubelet node's pod CIDR", WITHIN, || {
            let n = get_json(cp, &["node", name])?;
            n["spec"]["podCIDR"].as_str().map(String::from)
        });
        let cidr: IpNet = cidr.parse().with_context(|| format!("pod CIDR {cidr}"))?;
        // The same pod network a skiff node writes for itself.
        let cni = skiff_agent::config::CniConfig::default();
        let text = conflist::render(
            &[cidr],
            &runtime.dir.join("ipam"),
            cni.pod_network,
            cni.fast_path,
        );
        std::fs::write(runtime.conf_dir().join(conflist::FILE), text)?;
        Ok(StockNode { runtime, node, ns })
    }
}

impl Drop for StockNode {
    fn drop(&mut self) {
        // The kubelet first, or it would start again the pods containerd removes as it goes.
        self.node.stop_kubelet();
    }
}

fn pod(name: &str, node: &str, app: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, labels: {{app: {app}}}}}\n\
         spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    \
         image: {BUSYBOX}\n    command: [sleep, '3600']\n"
    )
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The kube-proxy image kubeadm deploys, built by `scripts/cluster-images` into `registry`.
fn cluster_images(registry: &Registry) -> Result<()> {
    let out = Command::new(workspace_dir().join("scripts/cluster-images"))
        .arg(registry.host())
        .output()
        .context("run scripts/cluster-images")?;
    if !out.status.success() {
        bail!(
            "scripts/cluster-images: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
