//! Two skiff nodes, each in a network namespace of its own on one lan, joined to a real control
//! plane; a busybox pod on each, and the network namespace of each pod found through the CRI.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_tests::cri::{busybox_layout, BUSYBOX};
use skiff_tests::k8s::netns_node::{self, Lan, NetnsNode};
use skiff_tests::k8s::skiff_node::{get_json, wait_for};
use skiff_tests::k8s::ControlPlane;
use skiff_tests::registry::Registry;

use crate::tcp::End;

const NS: &str = "netbench";
const WITHIN: Duration = Duration::from_secs(180);

/// Dropped in field order: the nodes (skiffd and its pods) before the lan, the control plane and
/// the registry.
pub struct Cluster {
    pub a: NetnsNode,
    pub b: NetnsNode,
    _lan: Lan,
    pub cp: ControlPlane,
    _registry: Registry,
}

impl Cluster {
    pub fn start() -> Result<Cluster> {
        let registry = Registry::start()?;
        registry.push(busybox_layout(), "latest", "library/busybox:latest", &[])?;
        let cp = ControlPlane::start();
        let lan = Lan::create_cabled(&cp);
        let mirror = lan.forward(registry.port).to_string();
        let config = "evictionHard: {imagefs.available: 1%, nodefs.available: 1%}";
        let pid = std::process::id();
        let a = netns_node::join(&cp, &lan, 0, &format!("nb-a-{pid}"), Some(&mirror), config);
        let b = netns_node::join(&cp, &lan, 1, &format!("nb-b-{pid}"), Some(&mirror), config);
        cp.kubectl_ok(&["create", "namespace", NS]);
        wait_for(
            "the default service account",
            Duration::from_secs(60),
            || get_json(&cp, &["-n", NS, "serviceaccount", "default"]),
        );
        Ok(Cluster {
            a,
            b,
            _lan: lan,
            cp,
            _registry: registry,
        })
    }

    /// A pod `name` sleeping on `node`, as one end of the path: its namespace and its IP.
    pub fn pod(&self, name: &str, node: &NetnsNode) -> Result<End> {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  \
             nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    \
             image: {BUSYBOX}\n    command: [sleep, '3600']\n",
            node = node.joined.name
        );
        let file = self.cp.dir.join(format!("pod-{name}.yaml"));
        std::fs::write(&file, manifest)?;
        self.cp
            .kubectl_ok(&["apply", "-f", &file.to_string_lossy()]);
        let ip = wait_for(&format!("pod {name} running"), WITHIN, || {
            let p = get_json(&self.cp, &["-n", NS, "pod", name])?;
            (p["status"]["phase"] == "Running")
                .then(|| p["status"]["podIP"].as_str().map(String::from))
                .flatten()
        });
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("pod {name}'s IP {ip}"))?;
        let netns = skiff_bench::sandbox::pod_netns(&node.joined.node.socket(), name)?;
        Ok(End { netns, ip })
    }
}
