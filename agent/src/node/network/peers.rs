//! From the Nodes the API lists to what this node's network needs: its own pod CIDRs, one route per
//! other node's pod CIDR via that node's InternalIP of the same family, the cluster's pod ranges
//! (which masquerade spares), and what stands in the way of a route.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use skiff_cni::ipnet::IpNet;

/// A host-gw route to another node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: IpAddr,
    pub node: String,
}

#[derive(Debug, PartialEq)]
pub struct Plan {
    /// This node's pod CIDRs, or why they are unusable.
    pub own: Result<Vec<IpNet>, String>,
    pub routes: Vec<Route>,
    /// Every node's pod CIDRs: traffic between them is pod to pod.
    pub cluster: Vec<IpNet>,
    /// Other nodes that cannot be routed to, one sentence each.
    pub problems: Vec<String>,
}

fn name(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

/// `spec.podCIDRs`, else `spec.podCIDR`, as networks.
pub fn pod_cidrs(n: &Node) -> Result<Vec<IpNet>, String> {
    let spec = n.spec.clone().unwrap_or_default();
    let list = match spec.pod_cidrs {
        Some(l) if !l.is_empty() => l,
        _ => spec.pod_cidr.into_iter().collect(),
    };
    list.iter()
        .map(|c| {
            c.parse::<IpNet>()
                .map(|n| n.network())
                .map_err(|_| format!("node {}: spec.podCIDR {c:?} is not a CIDR", name(n)))
        })
        .collect()
}

fn internal_ips(n: &Node) -> Vec<IpAddr> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// What `me` needs, given every Node.
pub fn plan(me: &str, nodes: &[Node]) -> Plan {
    let mut p = Plan {
        own: Ok(Vec::new()),
        routes: Vec::new(),
        cluster: Vec::new(),
        problems: Vec::new(),
    };
    let mine = nodes
        .iter()
        .find(|n| name(n) == me)
        .map(internal_ips)
        .unwrap_or_default();
    for n in nodes {
        let cidrs = pod_cidrs(n);
        if let Ok(c) = &cidrs {
            p.cluster.extend(c.iter().copied());
        }
        if name(n) == me {
            p.own = cidrs;
            continue;
        }
        match cidrs {
            Ok(c) => routes_to(n, &c, &mut p),
            Err(e) => p.problems.push(e),
        }
    }
    p.cluster.sort_by_key(|c| c.to_string());
    p.cluster.dedup();
    if !mine.is_empty() {
        for v4 in [true, false] {
            spare_family(&mine, v4, &mut p);
        }
    }
    p
}

/// Routes of a family this node has no InternalIP of lead nowhere: they go, said once.
fn spare_family(mine: &[IpAddr], v4: bool, p: &mut Plan) {
    if mine.iter().any(|ip| ip.is_ipv4() == v4) {
        return;
    }
    let before = p.routes.len();
    p.routes.retain(|r| r.dst.is_ipv4() != v4);
    if p.routes.len() < before {
        let family = if v4 { "IPv4" } else { "IPv6" };
        p.problems.push(format!(
            "this node has no {family} InternalIP (--node-ip): no routes to other nodes' {family} pod CIDRs"
        ));
    }
}

fn routes_to(n: &Node, cidrs: &[IpNet], p: &mut Plan) {
    let ips = internal_ips(n);
    for c in cidrs {
        match ips.iter().find(|ip| ip.is_ipv4() == c.is_ipv4()) {
            Some(gw) => p.routes.push(Route {
                dst: *c,
                gw: *gw,
                node: name(n),
            }),
            None if ips.is_empty() => p.problems.push(format!(
                "node {} has no InternalIP: no route to its pod CIDR {c}",
                name(n)
            )),
            None => p.problems.push(format!(
                "node {} has no InternalIP of the family of its pod CIDR {c}: no route to it",
                name(n)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.spec = Some(NodeSpec {
            pod_cidr: cidrs.first().map(|c| c.to_string()),
            pod_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            addresses: Some(
                ips.iter()
                    .map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        n
    }

    #[test]
    fn routes_per_family_and_problems() {
        let nodes = [
            node(
                "a",
                &["10.244.0.0/24", "fd00::/64"],
                &["10.0.0.1", "fc00::1"],
            ),
            node(
                "b",
                &["10.244.1.0/24", "fd00:0:0:1::/64"],
                &["10.0.0.2", "fc00::2"],
            ),
            node("c", &["10.244.2.0/24"], &[]),
            node("d", &["fd00:0:0:3::/64"], &["10.0.0.4"]),
            node("e", &[], &["10.0.0.5"]),
            node("f", &["10.244.5.0/33"], &["10.0.0.6"]),
        ];
        let p = plan("a", &nodes);
        assert_eq!(
            p.own,
            Ok(vec![
                "10.244.0.0/24".parse().unwrap(),
                "fd00::/64".parse().unwrap()
            ])
        );
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.routes[0].gw, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.routes[1].gw, "fc00::2".parse::<IpAddr>().unwrap());
        assert_eq!(p.cluster.len(), 6);
        assert_eq!(p.problems.len(), 3, "{:?}", p.problems);
        assert!(p.problems[0].contains("node c has no InternalIP"));
        assert!(p.problems[1].contains("node d has no InternalIP of the family"));
        assert!(p.problems[2].contains("\"10.244.5.0/33\" is not a CIDR"));
        assert_eq!(plan("e", &nodes).own, Ok(vec![]));
    }

    #[test]
    fn a_node_without_ipv6_routes_only_ipv4() {
        let nodes = [
            node("a", &["10.244.0.0/24", "fd00::/64"], &["10.0.0.1"]),
            node(
                "b",
                &["10.244.1.0/24", "fd00:0:0:1::/64"],
                &["10.0.0.2", "fc00::2"],
            ),
        ];
        let p = plan("a", &nodes);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].gw, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert!(p.problems[0].contains("this node has no IPv6 InternalIP"));
        assert_eq!(plan("b", &nodes).routes.len(), 1);
    }
}
