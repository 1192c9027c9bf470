//! Host-side and container-side link setup for the bridge plugin.

use super::config::BridgeConf;
use crate::ipnet::IpNet;
use crate::netlink::link::{self, Link, VethSpec, IFF_PROMISC};
use crate::netlink::route::{self, RouteSpec};
use crate::netlink::{addr, NlError, Socket};
use crate::netns::{sysctl, Netns};
use crate::spec::{CniError, CniResult, ErrorCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

pub fn nl(what: &str) -> impl FnOnce(NlError) -> CniError + '_ {
    move |e| CniError::internal(what.to_string(), e)
}

/// Finds or creates the bridge, applies mtu/promisc/vlan filtering, sets it up.
pub fn ensure_bridge(s: &mut Socket, conf: &BridgeConf) -> Result<Link, CniError> {
    let existing = link::by_name(s, &conf.bridge).map_err(nl("look up bridge"))?;
    let br = match existing {
        Some(l) => l,
        None => {
            match link::add_bridge(s, &conf.bridge, conf.mtu, conf.vlan.is_some()) {
                Err(e) if e.errno() != Some(libc::EEXIST) => return Err(nl("create bridge")(e)),
                _ => {}
            }
            link::by_name(s, &conf.bridge)
                .map_err(nl("look up bridge"))?
                .ok_or_else(|| CniError::internal("bridge vanished after creation", &conf.bridge))?
        }
    };
    if br.kind != "bridge" {
        return Err(CniError::config(format!(
            "{:?} already exists but is not a bridge",
            conf.bridge
        )));
    }
    if conf.promisc_mode && br.flags & IFF_PROMISC == 0 {
        link::set_flags(s, br.index, IFF_PROMISC, IFF_PROMISC).map_err(nl("set bridge promisc"))?;
    }
    if br.flags & link::IFF_UP == 0 {
        link::set_up(s, br.index).map_err(nl("set bridge up"))?;
    }
    Ok(br)
}

fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into the valid buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    if n != 4 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        b = (t ^ std::process::id()).to_ne_bytes();
    }
    format!("veth{:08x}", u32::from_ne_bytes(b))
}

/// Creates the veth pair (peer named `ifname` inside the netns) with the host
/// end already on the bridge (if any) and up, in one request; then labels the host end
/// (`label`, from `veth_label`, so GC can tell whose it is), applies the rarer
/// port options (hairpin, vlan) and, once the port is set, brings the
/// container end up. Returns (host, container).
pub fn create_veth(
    host: &mut Socket,
    ctr: &mut Socket,
    netns: &Netns,
    (ifname, label_text): (&str, &str),
    br: Option<&Link>,
    conf: &BridgeConf,
) -> Result<(Link, Link), CniError> {
    if link::by_name(ctr, ifname)
        .map_err(nl("look up container link"))?
        .is_some()
    {
        return Err(CniError::new(
            ErrorCode::Internal,
            format!("container veth name provided ({ifname}) already exists"),
        ));
    }
    let mtu = conf.mtu.or(br.map(|b| b.mtu).filter(|m| *m > 0));
    let mut host_name = random_veth_name();
    for attempt in 0.. {
        let spec = VethSpec {
            host_name: &host_name,
            peer_name: ifname,
            peer_netns_fd: netns.fd.as_raw_fd(),
            mtu,
            master: br.map_or(0, |b| b.index),
        };
        match link::add_veth(host, &spec) {
            Ok(()) => break,
            Err(e) if e.errno() == Some(libc::EEXIST) && attempt < 8 => {
                host_name = random_veth_name()
            }
            Err(e) => return Err(nl("create veth")(e)),
        }
    }
    let result = lookup_pair(host, ctr, &host_name, ifname).and_then(|(hv, cv)| {
        label(host, &hv, label_text)?;
        if br.is_some() {
            port_options(host, &hv, conf)?;
        }
        link::set_up(ctr, cv.index).map_err(nl("set container veth up"))?;
        Ok((hv, cv))
    });
    if result.is_err() {
        let _ = link::delete_by_name(host, &host_name);
    }
    result
}

fn lookup_pair(
    host: &mut Socket,
    ctr: &mut Socket,
    host_name: &str,
    ifname: &str,
) -> Result<(Link, Link), CniError> {
    let hv = link::by_name(host, host_name)
        .map_err(nl("look up host veth"))?
        .ok_or_else(|| CniError::internal("host veth missing", host_name))?;
    let cv = link::by_name(ctr, ifname)
        .map_err(nl("look up container veth"))?
        .ok_or_else(|| CniError::internal("container veth missing", ifname))?;
    Ok((hv, cv))
}

/// The kernel keeps at most `IFALIAS_MAX` bytes; a longer label (an unusually
/// long container id) is not stored, and GC then leaves that veth alone.
const IFALIAS_MAX: usize = 255;

/// The label of a host veth: its network and attachment. Network names and
/// container ids cannot hold ':' or '/' (CNI allows `[a-zA-Z0-9_.-]`).
pub fn veth_label(network: &str, id: &str, ifname: &str) -> String {
    format!("skiff:{network}:{id}/{ifname}")
}

/// (network, container id, ifname) of a label written by `veth_label`.
pub fn parse_veth_label(label: &str) -> Option<(&str, &str, &str)> {
    let (network, rest) = label.strip_prefix("skiff:")?.split_once(':')?;
    let (id, ifname) = rest.rsplit_once('/')?;
    Some((network, id, ifname))
}

fn label(s: &mut Socket, hv: &Link, text: &str) -> Result<(), CniError> {
    if text.len() > IFALIAS_MAX {
        tracing::warn!(veth = %hv.name, "attachment label too long for an interface alias");
        return Ok(());
    }
    link::set_alias(s, hv.index, text).map_err(nl("label host veth"))
}

/// GC: deletes the host veths on `bridge` (or, routed, on no bridge at all)
/// labelled with an attachment of `network` for which `keep(id, ifname)` is
/// false (deleting the host end removes the pod's end too). Unlabelled ports
/// (another plugin's, or an older skiff-bridge's) and other networks' stay.
pub fn gc_veths(
    s: &mut Socket,
    bridge: Option<&str>,
    network: &str,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<usize, CniError> {
    let master = match bridge {
        None => 0,
        Some(name) => match link::by_name(s, name).map_err(nl("look up bridge"))? {
            Some(br) => br.index,
            None => return Ok(0),
        },
    };
    let stale_label = |alias: &str| {
        parse_veth_label(alias).is_some_and(|(net, id, ifname)| net == network && !keep(id, ifname))
    };
    let stale: Vec<Link> = link::list(s)
        .map_err(nl("list links"))?
        .into_iter()
        .filter(|l| l.master == master && l.kind == "veth" && stale_label(&l.alias))
        .collect();
    for l in &stale {
        match link::delete(s, l.index) {
            Err(e) if e.errno() != Some(libc::ENODEV) => return Err(nl("delete host veth")(e)),
            _ => tracing::debug!(veth = %l.name, alias = %l.alias, "removed a stale host veth"),
        }
    }
    Ok(stale.len())
}

fn port_options(s: &mut Socket, hv: &Link, conf: &BridgeConf) -> Result<(), CniError> {
    if conf.hairpin_mode {
        link::set_hairpin(s, hv.index, true).map_err(nl("set hairpin mode"))?;
    }
    if let Some(vid) = conf.vlan {
        link::add_port_vlan(s, hv.index, vid, false).map_err(nl("set port vlan"))?;
    }
    Ok(())
}

/// Adds the result's addresses and routes to the container interface. The
/// sysctls are per netns, so they are written from inside it. `onlink_gateways`
/// (routed mode, where the pod's address is alone in its prefix) first adds a
/// link route to each gateway, so the routes through it can be added.
pub fn configure_container(
    s: &mut Socket,
    netns: &Netns,
    cv: &Link,
    result: &CniResult,
    onlink_gateways: bool,
) -> Result<(), CniError> {
    {
        let _inside = netns.enter().map_err(|e| CniError::io("enter netns", e))?;
        container_sysctls(cv, result);
    }
    add_container_addrs(s, cv, result, onlink_gateways)
}

fn container_sysctls(cv: &Link, result: &CniResult) {
    let has_v6 = result.ips.iter().any(|i| !i.address.is_ipv4());
    if has_v6 {
        let _ = sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", cv.name), "0");
        let _ = sysctl(&format!("net/ipv6/conf/{}/accept_dad", cv.name), "0");
    }
    let _ = sysctl(&format!("net/ipv4/conf/{}/arp_notify", cv.name), "1");
}

fn add_container_addrs(
    s: &mut Socket,
    cv: &Link,
    result: &CniResult,
    onlink_gateways: bool,
) -> Result<(), CniError> {
    let mut gws: HashMap<bool, IpAddr> = HashMap::new();
    for ip in &result.ips {
        addr::add(s, cv.index, &ip.address).map_err(nl("add container address"))?;
        if let Some(gw) = ip.gateway {
            gws.entry(gw.is_ipv4()).or_insert(gw);
        }
    }
    if onlink_gateways {
        for gw in gws.values() {
            add_link_route(s, cv.index, *gw).map_err(nl("add container route to the gateway"))?;
        }
    }
    for r in &result.routes {
        let spec = RouteSpec {
            dst: r.dst,
            gw: r.gw.or_else(|| gws.get(&r.dst.is_ipv4()).copied()),
            oif: Some(cv.index),
            priority: r.priority,
            table: r.table,
            scope: r.scope,
            unreachable: false,
        };
        match route::add(s, &spec) {
            Err(e) if e.errno() != Some(libc::EEXIST) => return Err(nl("add container route")(e)),
            _ => {}
        }
    }
    Ok(())
}

/// A route to `ip` alone, through `index` without a gateway (scope link).
pub fn add_link_route(s: &mut Socket, index: u32, ip: IpAddr) -> Result<(), NlError> {
    let spec = RouteSpec {
        dst: IpNet::host(ip),
        gw: None,
        oif: Some(index),
        priority: None,
        table: None,
        scope: None,
        unreachable: false,
    };
    match route::add(s, &spec) {
        Err(e) if e.errno() != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

/// Puts each range's gateway address on the bridge (isGateway).
pub fn ensure_gateway_addrs(
    s: &mut Socket,
    br: &Link,
    result: &CniResult,
    force: bool,
) -> Result<(), CniError> {
    let existing = addr::list(s, br.index).map_err(nl("list bridge addresses"))?;
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let want = IpNet {
            addr: gw,
            prefix: ip.address.prefix,
        };
        if existing.iter().any(|(_, a)| *a == want) {
            continue;
        }
        for (_, other) in existing
            .iter()
            .filter(|(_, a)| a.is_ipv4() == want.is_ipv4())
        {
            if !other.contains(&want.addr) || is_link_local(&other.addr) {
                continue;
            }
            if !force {
                return Err(CniError::new(
                    ErrorCode::Internal,
                    format!(
                        "{:?} already has an IP address different from {want}",
                        br.name
                    ),
                ));
            }
            addr::delete(s, br.index, other).map_err(nl("remove old bridge address"))?;
        }
        match addr::add(s, br.index, &want) {
            Err(e) if e.errno() != Some(libc::EEXIST) => return Err(nl("add bridge address")(e)),
            _ => {}
        }
    }
    enable_forwarding(result)
}

/// The node forwards for its pods: ip_forward, and IPv6 forwarding when a pod has an IPv6 address.
pub fn enable_forwarding(result: &CniResult) -> Result<(), CniError> {
    let v4 = result.ips.iter().any(|i| i.address.is_ipv4());
    let v6 = result.ips.iter().any(|i| !i.address.is_ipv4());
    if v4 {
        sysctl("net/ipv4/ip_forward", "1").map_err(|e| CniError::io("enable ip_forward", e))?;
    }
    if v6 {
        sysctl("net/ipv6/conf/all/forwarding", "1")
            .map_err(|e| CniError::io("enable ipv6 forwarding", e))?;
    }
    Ok(())
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_labels_round_trip_and_foreign_aliases_are_not_labels() {
        let label = veth_label("pods", "abc123", "eth0");
        assert_eq!(label, "skiff:pods:abc123/eth0");
        assert_eq!(parse_veth_label(&label), Some(("pods", "abc123", "eth0")));
        for foreign in ["", "uplink", "skiff:abc/eth0", "skiff:pods:noifname"] {
            assert_eq!(parse_veth_label(foreign), None, "{foreign}");
        }
    }
}
