//! ADD: bridge, veth, IPAM, addresses and routes, gateway, NAT.

use super::config::{BridgeConf, Mode};
use super::links::{
    configure_container, create_veth, ensure_bridge, ensure_gateway_addrs, nl, veth_label,
};
use super::{ipam, routed, Request};
use crate::ipnet::IpNet;
use crate::nat;
use crate::netlink::{link, Socket};
use crate::netns::{sysctl, Netns, NetnsError};
use crate::spec::{CniError, CniResult, ErrorCode, Interface, Route};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Runs one step of a command inside a span, so `SKIFF_CNI_LOG=debug` shows
/// where the time goes.
pub fn phase<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    tracing::debug_span!("phase", name).in_scope(f)
}

pub fn open_netns(path: &str) -> Result<Netns, CniError> {
    Netns::open(path).map_err(|e| match e {
        NetnsError::Missing { .. } => CniError::new(ErrorCode::UnknownContainer, e.to_string()),
        NetnsError::NotNetns { .. } => CniError::new(ErrorCode::InvalidEnv, e.to_string()),
        NetnsError::Io { .. } => CniError::io("failed to open netns", e),
    })
}

/// A netlink socket bound inside the container's netns (a socket keeps the
/// namespace it was created in).
pub fn container_socket(netns: &Netns) -> Result<Socket, CniError> {
    let _inside = netns.enter().map_err(|e| CniError::io("enter netns", e))?;
    Socket::route().map_err(nl("open netlink in netns"))
}

pub fn add(req: &Request) -> Result<Value, CniError> {
    let conf = BridgeConf::parse(&req.raw)?;
    let ipam_type = ipam::ipam_type(req)?;
    // Validate the whole config before touching the system.
    ipam::validate(req)?;
    let (netns, mut host, mut ctr) = phase("sockets", || {
        let netns = open_netns(&req.env.netns)?;
        let host = Socket::route().map_err(nl("open netlink"))?;
        let ctr = container_socket(&netns)?;
        Ok::<_, CniError>((netns, host, ctr))
    })?;
    let br = match conf.mode {
        Mode::Bridge => Some(phase("bridge", || ensure_bridge(&mut host, &conf))?),
        Mode::Routed => None,
    };
    let label = veth_label(&req.conf.name, &req.env.container_id, &req.env.ifname);
    let (hv, cv) = phase("veth", || {
        create_veth(
            &mut host,
            &mut ctr,
            &netns,
            (&req.env.ifname, &label),
            br.as_ref(),
            &conf,
        )
    })?;
    // The bridge takes its MAC from its ports, so read it after attaching.
    let br = br.map(|br| {
        link::by_index(&mut host, br.index)
            .ok()
            .flatten()
            .unwrap_or(br)
    });
    tracing::debug!(host = %hv.name, mode = ?conf.mode, ipam = %ipam_type, "veth created");
    match finish(
        req,
        &conf,
        &netns,
        &mut host,
        &mut ctr,
        (br.as_ref(), &hv, &cv),
    ) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Leave nothing behind: undo IPAM, NAT and the veth pair.
            let _ = ipam::del(req);
            let _ = nat::teardown(&req.env.container_id, &req.env.ifname).map(drop);
            let _ = link::delete(&mut host, hv.index);
            Err(e)
        }
    }
}

fn finish(
    req: &Request,
    conf: &BridgeConf,
    netns: &Netns,
    host: &mut Socket,
    ctr: &mut Socket,
    (br, hv, cv): (Option<&link::Link>, &link::Link, &link::Link),
) -> Result<Value, CniError> {
    // Before the pod has an address, so no spoofed frame gets a chance.
    if conf.macspoofchk {
        phase("macspoofchk", || {
            nat::mac_spoof_check(&req.env.container_id, &req.env.ifname, &hv.name, &cv.mac)
        })?;
    }
    let mut result = phase("ipam", || ipam::add(req, conf))?;
    if result.ips.is_empty() {
        return Err(CniError::new(
            ErrorCode::Internal,
            "IPAM plugin returned missing IP config",
        ));
    }
    let host_side = [br, Some(hv)].into_iter().flatten().map(|l| Interface {
        name: l.name.clone(),
        mac: l.mac_string(),
        ..Interface::default()
    });
    result.interfaces = host_side.collect();
    result.interfaces.push(Interface {
        name: cv.name.clone(),
        mac: cv.mac_string(),
        sandbox: netns.path.clone(),
        ..Interface::default()
    });
    let pod_end = result.interfaces.len() - 1;
    for ip in &mut result.ips {
        ip.interface = Some(pod_end);
    }
    // The ranges' prefixes, which masquerade and hairpin rules need even where
    // the pod's own address is alone in its prefix.
    let pod_ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
    if conf.mode == Mode::Routed {
        routed::host_prefixes(&mut result);
    }
    if conf.is_default_gateway {
        add_default_routes(&mut result);
    }
    phase("container", || {
        configure_container(ctr, netns, cv, &result, br.is_none())
    })?;
    match br {
        Some(br) if conf.is_gateway => phase("gateway", || {
            ensure_gateway_addrs(host, br, &result, conf.force_address)
        })?,
        Some(_) => {}
        None => phase("host end", || routed::host_end(host, hv, &result))?,
    }
    if conf.fast_path {
        phase("fast path", || routed::fast_path(hv, &result))?;
    }
    if conf.ip_masq {
        phase("masquerade", || {
            nat::masquerade(&req.env.container_id, &req.env.ifname, &pod_ips)
        })?;
    }
    if !conf.runtime_config.port_mappings.is_empty() {
        if pod_ips.iter().any(IpNet::is_ipv4) {
            route_localnet(&br.unwrap_or(hv).name)?;
        }
        phase("portmap", || {
            nat::port_mappings(
                &req.env.container_id,
                &req.env.ifname,
                &pod_ips,
                &conf.runtime_config.port_mappings,
            )
        })?;
    }
    Ok(result.to_version(&req.conf.cni_version))
}

/// Lets connections to 127.0.0.1:<hostPort>, DNATed to a pod, leave through
/// the bridge (or, routed, the pod's host veth): without it the kernel drops
/// a loopback source routed out of a non-loopback interface as martian.
fn route_localnet(ifname: &str) -> Result<(), CniError> {
    // The guard first: route_localnet is never on without it.
    nat::localnet_guard()?;
    let key = format!("net/ipv4/conf/{ifname}/route_localnet");
    if std::fs::read_to_string(format!("/proc/sys/{key}")).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    sysctl(&key, "1").map_err(|e| CniError::io(format!("enable {key}"), e))
}

fn add_default_routes(result: &mut CniResult) {
    let mut add = Vec::new();
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let any: IpAddr = if gw.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let dst = IpNet {
            addr: any,
            prefix: 0,
        };
        let have = result
            .routes
            .iter()
            .chain(&add)
            .any(|r: &Route| r.dst == dst);
        if !have {
            add.push(Route {
                dst,
                gw: Some(gw),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            });
        }
    }
    result.routes.extend(add);
}
