//! The bare pod path: the shape of a routed pod network built by hand, with nothing of skiff and
//! no netfilter on it. Two "pods" and two "nodes", four network namespaces: each pod on a veth of
//! its own to its node (its address alone in its prefix, the node's end holding the gateway and a
//! host route to it), the nodes on one veth pair between them with a route to each other's pod
//! range. What a packet pays here is the kernel's own price for three veth crossings and two IP
//! forwards — the least any pod network made of veths and the kernel's routing pays — so its ratio
//! to the floor is the ceiling of such networks on this kernel, and the pods' ratio to it is what
//! skiff's pod network adds on top (conntrack for masquerade and Services, nftables).

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::netns::{ip, Namespaces};
use crate::tcp::End;

const POD: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 98, 1, 2), Ipv4Addr::new(10, 98, 2, 2)];
const GATEWAY: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 98, 1, 1), Ipv4Addr::new(10, 98, 2, 1)];
const NODE: [&str; 2] = ["10.98.0.1", "10.98.0.2"];
const RANGE: [&str; 2] = ["10.98.1.0/24", "10.98.2.0/24"];

/// The four namespaces (pod a, node a, node b, pod b), deleted when dropped.
pub struct Bare {
    ns: Namespaces,
    pub ends: [End; 2],
}

impl Bare {
    /// Namespaces named `PREFIX<pid>…`, so that another instance can stand beside this one.
    pub fn create(prefix: &str) -> Result<Bare> {
        let pid = std::process::id();
        let names = ["pa", "na", "nb", "pb"].map(|s| format!("{prefix}{pid}{s}"));
        let ns = Namespaces::create(&names)?;
        let bare = Bare {
            ends: [0, 3].map(|i| End {
                netns: ns.path(i),
                ip: POD[i / 3],
            }),
            ns,
        };
        bare.cable()?;
        for side in 0..2 {
            bare.pod(side)?;
        }
        Ok(bare)
    }

    /// The nodes' link, and each node's route to the other's pod range.
    fn cable(&self) -> Result<()> {
        let nodes = [self.ns.name(1), self.ns.name(2)];
        ip(&[
            "link", "add", "cable", "netns", nodes[0], "type", "veth", "peer", "name", "cable",
            "netns", nodes[1],
        ])?;
        for (i, n) in nodes.iter().enumerate() {
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/30", NODE[i]),
                "dev",
                "cable",
            ])?;
            ip(&["-n", n, "link", "set", "cable", "up"])?;
            ip(&["-n", n, "route", "add", RANGE[1 - i], "via", NODE[1 - i]])?;
            ip(&["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        Ok(())
    }

    /// Pod `side` (0: a, 1: b) on its own veth to its node.
    fn pod(&self, side: usize) -> Result<()> {
        let (pod, node) = (self.ns.name(side * 3), self.ns.name(1 + side));
        let (addr, gw) = (POD[side].to_string(), GATEWAY[side].to_string());
        ip(&[
            "link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", "pod", "netns",
            node,
        ])?;
        ip(&["-n", node, "addr", "add", &format!("{gw}/32"), "dev", "pod"])?;
        ip(&["-n", node, "link", "set", "pod", "up"])?;
        ip(&[
            "-n",
            node,
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            "pod",
        ])?;
        ip(&[
            "-n",
            pod,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", pod, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            pod,
            "route",
            "add",
            &format!("{gw}/32"),
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        ip(&[
            "-n", pod, "route", "add", "default", "via", &gw, "dev", "eth0",
        ])
    }

    /// The namespace of node `side` (0: a, 1: b).
    pub fn node_netns(&self, side: usize) -> std::path::PathBuf {
        self.ns.path(1 + side)
    }

    /// The pod range of node `side`: its network and prefix length.
    pub fn pod_range(&self, side: usize) -> (Ipv4Addr, u8) {
        let (net, len) = RANGE[side].split_once('/').expect("a range has a prefix");
        (
            net.parse().expect("a range's network"),
            len.parse().expect("a range's length"),
        )
    }
}
