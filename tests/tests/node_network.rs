//! The pod network of skiff nodes without an add-on, two nodes each in a network namespace of its
//! own on one L2 segment, joined by `kubeadm join` to a real control plane: skiff-bridge over the
//! pod CIDR the controller-manager allocates, host-gw routes between the nodes, pod to pod without
//! NAT, masquerade out of the cluster, kube-proxy and Services on both nodes, hostPort, a
//! NetworkPolicy add-on's rules holding, hostPath volumes, routes that follow the Nodes, bad Nodes
//! reported as node conditions, and an add-on's config taking over. One control plane for all of
//! it: starting one costs a minute.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "node_network/fast_path.rs"]
mod fast_path;
#[path = "node_network/host_paths.rs"]
mod host_paths;
#[path = "node_network/policy.rs"]
mod policy;
#[path = "node_network/services.rs"]
mod services;

use std::path::PathBuf;
use std::time::Duration;

use skiff_tests::k8s::netns_node::{
    self, apply, condition_until, eventually, node_json as node, Lan, NetnsNode,
};
use skiff_tests::k8s::pod_cluster::{busybox_registry, create_namespace};
use skiff_tests::k8s::skiff_node::{condition, wait_for};
use skiff_tests::k8s::ControlPlane;
use skiff_tests::registry::Registry;

const NS: &str = "net";
const ROUTE_METRIC: &str = "metric 2627";
const WITHIN: Duration = Duration::from_secs(60);

fn pod_cidr(cp: &ControlPlane, name: &str) -> String {
    wait_for("the node's podCIDR", WITHIN, || {
        node(cp, name)["spec"]["podCIDR"].as_str().map(String::from)
    })
}

/// A busybox pod on `node` running `cmd`, allowed to ping; its IP once it runs.
fn pod(cp: &ControlPlane, name: &str, node: &str, cmd: &str) -> String {
    netns_node::net_pod(cp, NS, name, node, cmd)["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

struct Cluster {
    a: NetnsNode,
    b: NetnsNode,
    lan: Lan,
    cp: ControlPlane,
    _registry: Registry,
}

fn cluster() -> Cluster {
    let registry = busybox_registry();
    services::push_cluster_images(&registry);
    let cp = ControlPlane::start();
    let lan = Lan::create(&cp);
    let mirror = lan.forward(registry.port).to_string();
    let pid = std::process::id();
    let join = |i: u8, name: String| {
        let config = format!(
            "evictionHard: {{imagefs.available: 1%, nodefs.available: 1%}}\npodLogsDir: {}",
            cp.dir.join(format!("pod-logs-{name}")).display()
        );
        netns_node::join(&cp, &lan, i, &name, Some(&mirror), &config)
    };
    let a = join(0, format!("net-a-{pid}"));
    let b = join(1, format!("net-b-{pid}"));
    create_namespace(&cp, NS);
    Cluster {
        a,
        b,
        lan,
        cp,
        _registry: registry,
    }
}

/// Where skiffd on `n` writes its containers' logs.
fn pod_logs(cp: &ControlPlane, n: &NetnsNode) -> PathBuf {
    cp.dir.join(format!("pod-logs-{}", n.joined.name))
}

/// Two nodes, each on the pod CIDR it was given, route to each other's pods; pods talk across
/// nodes by their own addresses and leave the cluster masqueraded; kube-proxy serves Services on
/// both; an add-on's policy rules hold; bad Nodes are reported without breaking the rest; a deleted
/// node's route goes; an add-on's config takes over.
#[test]
fn two_nodes_route_pods_services_and_policies() {
    let c = cluster();
    let (cp, a, b) = (&c.cp, &c.a, &c.b);
    let (name_a, name_b) = (a.joined.name.clone(), b.joined.name.clone());
    let (cidr_a, cidr_b) = (pod_cidr(cp, &name_a), pod_cidr(cp, &name_b));

    // skiffd wrote skiff-bridge's config over the pod CIDR it was given, and says so.
    let conf = std::fs::read_to_string(a.conf_dir().join("99-skiff-bridge.conflist")).unwrap();
    assert!(conf.contains(&cidr_a), "{conf}");
    for n in [&name_a, &name_b] {
        let u = condition_until(cp, n, "NetworkUnavailable", |c| c["status"] == "False");
        assert_eq!(u["reason"], "SkiffBridgeConfigured", "{u}");
    }

    // Forwarding and bridge netfilter are on in each node's namespace.
    for n in [a, b] {
        for key in ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"] {
            let out = n.ns.exec("sysctl").args(["-n", key]).output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "1",
                "{key} in {}",
                n.ns.name
            );
        }
    }
    let d = condition_until(cp, &name_a, "NetworkDegraded", |c| c["status"] == "False");
    assert_eq!(d["reason"], "NetworkComplete", "{d}");

    // One route per other node's pod CIDR, via its InternalIP.
    eventually("routes between the nodes", WITHIN, || {
        a.routes()
            .lines()
            .any(|l| l.starts_with(&format!("{cidr_b} via {} ", b.ip)) && l.contains(ROUTE_METRIC))
            && b.routes()
                .lines()
                .any(|l| l.starts_with(&format!("{cidr_a} via {} ", a.ip)))
    });

    // Routed pods (skiffd's default): an address of the node's own range that no pod holds meets
    // an unreachable route, never the node's default route.
    eventually(
        "the unreachable route over the node's pod CIDR",
        WITHIN,
        || {
            a.routes().lines().any(|l| {
                l.starts_with(&format!("unreachable {cidr_a} ")) && l.contains(ROUTE_METRIC)
            })
        },
    );

    // Pod to pod across nodes, ping and TCP; the server sees the client pod's own address.
    let srv = pod(cp, "srv", &name_b, "exec nc -ll -p 8080 -e netstat -tn");
    let cli = pod(cp, "cli", &name_a, "exec sleep 3600");
    let out = a.exec("cli", &["ping", "-c", "2", "-W", "3", &srv]);
    assert!(out.success(), "ping across nodes:{out:?}");
    let out = a.exec("cli", &["nc", "-w", "5", &srv, "8080"]);
    assert!(
        out.stdout.contains(&format!("{cli}:")),
        "the server pod does not see {cli} as its peer (NAT?):{out:?}"
    );
    let bridges = a.ns.ip(&["link", "show", "type", "bridge"]);
    assert!(
        !bridges.contains("skiff0"),
        "routed pods need no bridge: {bridges}"
    );
    let out = a.exec("cli", &["ip", "-4", "addr", "show", "eth0"]);
    assert!(
        out.stdout.contains(&format!("{cli}/32")),
        "the pod's address alone in its prefix:{out:?}"
    );

    // Out of the cluster (an address on the lan), the node's address is the source.
    let (outside, peers) = c.lan.listen();
    let out = a.exec(
        "cli",
        &[
            "nc",
            "-w",
            "5",
            &outside.ip().to_string(),
            &outside.port().to_string(),
        ],
    );
    assert!(out.stdout.contains("ok"), "reach the lan:{out:?}");
    let peer = peers.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        peer.ip(),
        a.ip,
        "a pod's connection out of the cluster is masqueraded"
    );

    fast_path::established_flows_skip_the_forward(&c, &srv);
    services::services(&c);
    policy::policy_rules_hold(&c, &srv);
    host_paths::host_paths(&c);

    bad_nodes(&c, &name_a, &srv);
    overlap(&c, &name_a, &name_b);

    // A node deleted: its route goes from the other.
    cp.kubectl_ok(&["delete", "node", &name_b]);
    eventually("the deleted node's route removed", WITHIN, || {
        !a.routes().contains(&cidr_b)
    });

    add_on_takes_over(&c, &name_a);
}

/// Nodes without an InternalIP, or with one no route can go through, are reported on the others;
/// pods keep talking.
fn bad_nodes(c: &Cluster, name_a: &str, srv: &str) {
    let cp = &c.cp;
    apply(
        cp,
        "apiVersion: v1
kind: Node
metadata: {name: ghost-noip}
spec: {podCIDR: 10.244.250.0/24, podCIDRs: [10.244.250.0/24]}
---
apiVersion: v1
kind: Node
metadata: {name: ghost-far}
spec: {podCIDR: 10.244.251.0/24, podCIDRs: [10.244.251.0/24]}
",
    );
    cp.kubectl_ok(&[
        "patch",
        "node",
        "ghost-far",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.77"}]}}"#,
    ]);
    let d = condition_until(cp, name_a, "NetworkDegraded", |c| {
        let m = c["message"].as_str().unwrap_or_default();
        m.contains("node ghost-noip has no InternalIP")
            && m.contains("ghost-far's pod CIDR 10.244.251.0/24 via 192.0.2.77 cannot be added")
    });
    assert_eq!(d["status"], "True", "{d}");
    assert_eq!(condition(&node(cp, name_a), "Ready")["status"], "True");
    let out = c.a.exec("cli", &["ping", "-c", "1", "-W", "3", srv]);
    assert!(
        out.success(),
        "ping across nodes with bad nodes around:{out:?}"
    );
    cp.kubectl_ok(&["delete", "node", "ghost-noip", "ghost-far"]);
    condition_until(cp, name_a, "NetworkDegraded", |c| c["status"] == "False");
}

/// A pod CIDR inside the node's own network: skiffd refuses it and says so; the other node is fine;
/// once the overlap goes, the network comes back.
fn overlap(c: &Cluster, name_a: &str, name_b: &str) {
    let (cp, b) = (&c.cp, &c.b);
    b.ns.ip(&["link", "add", "ovl0", "type", "bridge"]);
    b.ns.ip(&["addr", "add", "10.244.255.254/16", "dev", "ovl0"]);
    let u = condition_until(cp, name_b, "NetworkUnavailable", |c| c["status"] == "True");
    assert_eq!(u["reason"], "PodCIDROverlapsNodeNetwork", "{u}");
    assert!(
        u["message"]
            .as_str()
            .unwrap_or_default()
            .contains("10.244.0.0/16 on ovl0"),
        "{u}"
    );
    assert!(!b.conf_dir().join("99-skiff-bridge.conflist").exists());
    let r = condition_until(cp, name_b, "Ready", |c| c["status"] == "False");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("overlaps"),
        "{r}"
    );
    assert_eq!(condition(&node(cp, name_a), "Ready")["status"], "True");
    b.ns.ip(&["link", "del", "ovl0"]);
    condition_until(cp, name_b, "NetworkUnavailable", |c| c["status"] == "False");
    condition_until(cp, name_b, "Ready", |c| c["status"] == "True");
}

/// An add-on writes its own config: skiffd removes its config and routes, the node stays Ready, and
/// the next pod gets its address from the add-on's network.
fn add_on_takes_over(c: &Cluster, name_a: &str) {
    let (cp, a) = (&c.cp, &c.a);
    let addon = format!(
        r#"{{"cniVersion":"1.0.0","name":"addon","plugins":[{{"type":"skiff-bridge","bridge":"addon0",
        "isDefaultGateway":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.227.{}.192/27"}}]],
        "dataDir":"{}"}}}}]}}"#,
        c.lan.k,
        a.joined.node.dir.join("addon-ipam").display()
    );
    std::fs::write(a.conf_dir().join("10-addon.conflist"), addon).unwrap();
    let u = condition_until(cp, name_a, "NetworkUnavailable", |c| {
        c["reason"] == "NetworkAddOnConfigured"
    });
    assert_eq!(u["status"], "False", "{u}");
    assert!(!a.conf_dir().join("99-skiff-bridge.conflist").exists());
    assert!(!a.routes().contains(ROUTE_METRIC), "{}", a.routes());
    assert!(
        fast_path::uplink_programs(a).is_empty(),
        "the fast path stays on the uplink under an add-on"
    );
    assert_eq!(condition(&node(cp, name_a), "Ready")["status"], "True");
    let ip = pod(cp, "after-addon", name_a, "exec sleep 3600");
    assert!(ip.starts_with(&format!("10.227.{}.", c.lan.k)), "{ip}");
}
