//! The pod network of skiff nodes without an add-on on a dual-stack cluster: two nodes, each in a
//! network namespace of its own with an IPv4 and an IPv6 address on one L2 segment, joined to a
//! control plane with service and pod ranges of both families. skiff-bridge serves a range of each
//! family, pods get both addresses, the host-gw routes exist per family, and IPv6 goes pod to pod
//! without NAT and out of the cluster masqueraded, as IPv4 does.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use skiff_tests::k8s::netns_node::{
    self, apply, condition_until, eventually, node_json as node, Lan, NetnsNode,
};
use skiff_tests::k8s::pod_cluster::{busybox_registry, create_namespace};
use skiff_tests::k8s::skiff_node::{condition, wait_for};
use skiff_tests::k8s::ControlPlane;
use skiff_tests::registry::Registry;

const NS: &str = "net6";
const ROUTE_METRIC: &str = "metric 2627";
const WITHIN: Duration = Duration::from_secs(60);

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// The node's pod CIDRs once it has one of each family: (IPv4, IPv6).
fn pod_cidrs(cp: &ControlPlane, name: &str) -> (String, String) {
    wait_for("the node's podCIDRs", WITHIN, || {
        match &strings(&node(cp, name)["spec"]["podCIDRs"])[..] {
            [v4, v6] => Some((v4.clone(), v6.clone())),
            _ => None,
        }
    })
}

/// A busybox pod on `node` running `cmd`, allowed to ping; its `status.podIPs` once it runs.
fn pod(cp: &ControlPlane, name: &str, node: &str, cmd: &str) -> Vec<IpAddr> {
    let p = netns_node::net_pod(cp, NS, name, node, cmd);
    p["status"]["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str()?.parse().ok())
        .collect()
}

fn sysctl(n: &NetnsNode, key: &str) -> String {
    let out = n.ns.exec("sysctl").args(["-n", key]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
    let cp = ControlPlane::start_dual_stack();
    let lan = Lan::create_dual_stack(&cp);
    let mirror = lan.forward(registry.port).to_string();
    let config = "evictionHard: {imagefs.available: 1%, nodefs.available: 1%}";
    let pid = std::process::id();
    let a = netns_node::join(&cp, &lan, 0, &format!("ds-a-{pid}"), Some(&mirror), config);
    let b = netns_node::join(&cp, &lan, 1, &format!("ds-b-{pid}"), Some(&mirror), config);
    create_namespace(&cp, NS);
    Cluster {
        a,
        b,
        lan,
        cp,
        _registry: registry,
    }
}

/// Both families end to end: node addresses, pod CIDRs to skiff-bridge, kernel settings, routes
/// per family, pods with two addresses talking across nodes over IPv6 by their own addresses,
/// IPv6 out of the cluster masqueraded, and a node with no IPv6 InternalIP reported.
#[test]
fn dual_stack_pods_across_nodes() {
    let c = cluster();
    let (cp, a, b) = (&c.cp, &c.a, &c.b);
    let (name_a, name_b) = (a.joined.name.clone(), b.joined.name.clone());
    let (ip6_a, ip6_b) = (a.ip6.unwrap(), b.ip6.unwrap());

    // The node reports an InternalIP of each family, as `--node-ip` named them.
    let addrs: Vec<String> = node(cp, &name_a)["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "InternalIP")
        .map(|a| a["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addrs, [a.ip.to_string(), ip6_a.to_string()]);

    // skiff-bridge serves a range of each family.
    let (v4_a, v6_a) = pod_cidrs(cp, &name_a);
    let (v4_b, v6_b) = pod_cidrs(cp, &name_b);
    let conf = std::fs::read_to_string(a.conf_dir().join("99-skiff-bridge.conflist")).unwrap();
    assert!(conf.contains(&v4_a) && conf.contains(&v6_a), "{conf}");
    let u = condition_until(cp, &name_a, "NetworkUnavailable", |c| {
        c["status"] == "False"
    });
    assert!(u["message"].as_str().unwrap().contains(&v6_a), "{u}");

    // IPv6 forwarding is on, and the uplink still takes router advertisements.
    for n in [a, b] {
        assert_eq!(
            sysctl(n, "net.ipv6.conf.all.forwarding"),
            "1",
            "{}",
            n.ns.name
        );
        assert_eq!(
            sysctl(n, "net.ipv6.conf.eth0.accept_ra"),
            "2",
            "{}",
            n.ns.name
        );
    }
    let d = condition_until(cp, &name_a, "NetworkDegraded", |c| c["status"] == "False");
    assert_eq!(d["reason"], "NetworkComplete", "{d}");

    // A route per family to the other node's pods, via its address of that family.
    let has = |routes: String, dst: &str, gw: String| {
        routes
            .lines()
            .any(|l| l.starts_with(&format!("{dst} via {gw} ")) && l.contains(ROUTE_METRIC))
    };
    eventually("routes of both families between the nodes", WITHIN, || {
        has(a.routes(), &v4_b, b.ip.to_string())
            && has(a.routes6(), &v6_b, ip6_b.to_string())
            && has(b.routes6(), &v6_a, ip6_a.to_string())
    });

    // Pods have an address of each family, the IPv4 one first (the cluster's first family).
    let srv = pod(cp, "srv", &name_b, "exec nc -ll -p 8080 -e netstat -tn");
    let cli = pod(cp, "cli", &name_a, "exec sleep 3600");
    for ips in [&srv, &cli] {
        assert_eq!(ips.len(), 2, "{ips:?}");
        assert!(ips[0].is_ipv4() && ips[1].is_ipv6(), "{ips:?}");
    }
    let (srv6, cli6) = (srv[1].to_string(), cli[1].to_string());

    // Pod to pod across nodes over IPv6; the server sees the client pod's own IPv6 address.
    let out = a.exec("cli", &["ping", "-6", "-c", "2", "-W", "3", &srv6]);
    assert!(out.success(), "ping -6 across nodes:{out:?}");
    let out = a.exec("cli", &["nc", "-w", "5", &srv6, "8080"]);
    assert!(
        out.stdout.contains(&format!("{cli6}:")),
        "the server pod does not see {cli6} as its peer (NAT?):{out:?}"
    );
    let out = a.exec("cli", &["ping", "-c", "1", "-W", "3", &srv[0].to_string()]);
    assert!(out.success(), "ping over IPv4 across nodes:{out:?}");

    // Out of the cluster over IPv6 (the lan's bridge), the node's IPv6 address is the source.
    let (outside, peers) = c.lan.listen_at(c.lan.gateway6.unwrap().into());
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
    assert!(out.stdout.contains("ok"), "reach the lan over IPv6:{out:?}");
    let peer = peers.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        peer.ip(),
        IpAddr::from(ip6_a),
        "masqueraded out of the cluster"
    );

    ipv4_only_node(&c, &name_a, &srv[0].to_string());
}

/// A node with pod CIDRs of both families but only an IPv4 InternalIP: routed to over IPv4, not
/// over IPv6, and said so; the rest keeps working.
fn ipv4_only_node(c: &Cluster, name_a: &str, srv4: &str) {
    let cp = &c.cp;
    apply(
        cp,
        "apiVersion: v1
kind: Node
metadata: {name: ghost-v4only}
spec: {podCIDR: 10.244.250.0/24, podCIDRs: [10.244.250.0/24, 'fd00:10:244:fa::/64']}
",
    );
    let gw = format!("10.227.{}.99", c.lan.k);
    cp.kubectl_ok(&[
        "patch",
        "node",
        "ghost-v4only",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{gw}"}}]}}}}"#),
    ]);
    let d = condition_until(cp, name_a, "NetworkDegraded", |c| {
        c["message"].as_str().unwrap_or_default().contains(
            "node ghost-v4only has no InternalIP of the family of its pod CIDR fd00:10:244:fa::/64",
        )
    });
    assert_eq!(d["status"], "True", "{d}");
    eventually("the IPv4-only node's IPv4 route", WITHIN, || {
        c.a.routes().contains(&format!("10.244.250.0/24 via {gw} "))
    });
    assert!(!c.a.routes6().contains("fd00:10:244:fa::/64"));
    assert_eq!(condition(&node(cp, name_a), "Ready")["status"], "True");
    let out = c.a.exec("cli", &["ping", "-c", "1", "-W", "3", srv4]);
    assert!(out.success(), "ping with the IPv4-only node around:{out:?}");
    cp.kubectl_ok(&["delete", "node", "ghost-v4only"]);
    condition_until(cp, name_a, "NetworkDegraded", |c| c["status"] == "False");
}
