//! A NetworkPolicy add-on's enforcement on a skiff node: kube-router and calico (iptables mode)
//! keep their policies as iptables rules in the filter table, in a chain of their own that the top
//! of FORWARD jumps to, matching the pod's address both for routed traffic and, through
//! br_netfilter, for traffic bridged between two pods of one node (`-m physdev
//! --physdev-is-bridged`). Such a pod firewall installed as kube-router installs it isolates a pod
//! from pods on its own node and on the other one; removed, the traffic flows again: none of
//! skiff's own rules lets the traffic past it.

use std::process::Command;

use skiff_tests::k8s::netns_node::NetnsNode;

use super::Cluster;

const TOP: &str = "KUBE-ROUTER-FORWARD";
const POD_FW: &str = "KUBE-POD-FW-SKIFFTEST";

/// `srv` (a pod on node b answering on 8080) isolated by an add-on's rules on its node: `cli` on
/// node a and `client-b` on node b are refused; with the rules gone, both are answered again.
pub fn policy_rules_hold(c: &Cluster, srv: &str) {
    let (a, b) = (&c.a, &c.b);
    let reach = |n: &NetnsNode, pod: &str| {
        let out = n.exec(pod, &["nc", "-w", "3", srv, "8080"]);
        out.stdout.contains(":8080")
    };
    assert!(reach(a, "cli"), "across nodes, before any policy");
    assert!(reach(b, "client-b"), "on one node, before any policy");

    // skiff's own rules are in place beside the add-on's.
    let rules = ruleset(b);
    assert!(rules.contains("table inet skiff-node"), "{rules}");
    isolate(b, srv);
    assert!(
        !reach(a, "cli"),
        "the add-on's rules did not stop a pod on the other node:\n{}",
        ruleset(b)
    );
    let routed = rejected(b);
    assert!(
        routed > 0,
        "the pod firewall never saw the routed connection"
    );
    assert!(
        !reach(b, "client-b"),
        "the add-on's rules did not stop a pod on the same node:\n{}",
        ruleset(b)
    );
    assert!(
        rejected(b) > routed,
        "the pod firewall never saw the bridged connection"
    );

    lift(b);
    assert!(reach(a, "cli"), "across nodes, once the policy is gone");
    assert!(reach(b, "client-b"), "on one node, once the policy is gone");
}

/// The pod firewall kube-router writes for a pod that a policy isolates and nothing may reach: the
/// top-level chain first in FORWARD, the pod's chain for routed and bridged traffic to it, replies
/// and the node's own probes let through, everything else rejected.
fn isolate(n: &NetnsNode, pod_ip: &str) {
    let node_ip = n.ip.to_string();
    let rules: Vec<Vec<&str>> = vec![
        vec!["-N", TOP],
        vec!["-I", "FORWARD", "1", "-j", TOP],
        vec!["-N", POD_FW],
        vec!["-A", TOP, "-d", pod_ip, "-j", POD_FW],
        vec![
            "-A",
            TOP,
            "-m",
            "physdev",
            "--physdev-is-bridged",
            "-d",
            pod_ip,
            "-j",
            POD_FW,
        ],
        vec![
            "-A",
            POD_FW,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
        vec!["-A", POD_FW, "-s", &node_ip, "-d", pod_ip, "-j", "ACCEPT"],
        vec![
            "-A",
            POD_FW,
            "-m",
            "mark",
            "!",
            "--mark",
            "0x10000/0x10000",
            "-j",
            "REJECT",
        ],
    ];
    for r in rules {
        iptables(n, &r);
    }
}

/// Removes the pod firewall, as the add-on does when the policy goes.
fn lift(n: &NetnsNode) {
    iptables(n, &["-D", "FORWARD", "-j", TOP]);
    for chain in [TOP, POD_FW] {
        iptables(n, &["-F", chain]);
    }
    for chain in [TOP, POD_FW] {
        iptables(n, &["-X", chain]);
    }
}

/// The packets the pod firewall rejected.
fn rejected(n: &NetnsNode) -> u64 {
    let out = run(n
        .ns
        .exec("iptables")
        .args(["-w", "-L", POD_FW, "-v", "-x", "-n"]));
    out.lines()
        .filter(|l| l.contains("REJECT"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn ruleset(n: &NetnsNode) -> String {
    run(n.ns.exec("nft").args(["list", "ruleset"]))
}

fn iptables(n: &NetnsNode, args: &[&str]) {
    run(n.ns.exec("iptables").arg("-w").args(args));
}

fn run(c: &mut Command) -> String {
    let out = c.output().expect("run a command in the node's namespace");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
