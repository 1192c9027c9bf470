//! Routed mode: each pod on a veth of its own, no bridge. The pod's address
//! is alone in its prefix and its routes go through the gateway, which the
//! host end holds; the node reaches the pod by a host route through that end.
//! Every packet between pods crosses the node's routing, so nothing passes
//! between them at L2 unseen by the node's conntrack and rules.

use std::net::IpAddr;

use super::links::{add_link_route, enable_forwarding, nl};
use crate::fastpath::{self, Hop};
use crate::ipnet::IpNet;
use crate::netlink::link::Link;
use crate::netlink::{addr, Socket};
use crate::spec::{CniError, CniResult};

/// The pod's addresses, each alone in its prefix: no subnet route in the
/// pod, so even a neighbour in the same range is reached through the node.
pub fn host_prefixes(result: &mut CniResult) {
    for ip in &mut result.ips {
        ip.address = IpNet::host(ip.address.addr);
    }
}

/// The host end: each gateway address (shared by every pod's host end, as a
/// host address), a host route to each pod address, and forwarding on.
pub fn host_end(s: &mut Socket, hv: &Link, result: &CniResult) -> Result<(), CniError> {
    for ip in &result.ips {
        if let Some(gw) = ip.gateway {
            match addr::add(s, hv.index, &IpNet::host(gw)) {
                Err(e) if e.errno() != Some(libc::EEXIST) => {
                    return Err(nl("add the gateway address to the host veth")(e))
                }
                _ => {}
            }
        }
        add_link_route(s, hv.index, ip.address.addr).map_err(nl("add the route to the pod"))?;
    }
    enable_forwarding(result)
}

/// The fast path's program on the host end: what the pod sends from its IPv4 address on an
/// established connection that conntrack does not NAT leaves without the node's IP forward (an
/// IPv6-only pod has nothing for it). The calling thread is in the node's network namespace.
pub fn fast_path(hv: &Link, result: &CniResult) -> Result<(), CniError> {
    let Some(IpAddr::V4(pod)) = result
        .ips
        .iter()
        .map(|i| i.address.addr)
        .find(IpAddr::is_ipv4)
    else {
        return Ok(());
    };
    fastpath::install(&Hop::out_of_pod(pod), hv.index)
        .map_err(|e| CniError::internal(format!("fastPath on {}", hv.name), e))
}
