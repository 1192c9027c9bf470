//! CHECK: the interface, its addresses and routes in the container, the
//! host end on the bridge, and the IPAM reservation must match prevResult.

use super::add::{container_socket, open_netns};
use super::config::{BridgeConf, Mode};
use super::links::nl;
use super::{ipam, Request};
use crate::netlink::{addr, link, route, Socket};
use crate::spec::{CniError, CniResult, ErrorCode};

fn fail(msg: String) -> CniError {
    CniError::new(ErrorCode::Internal, msg)
}

pub fn check(req: &Request) -> Result<(), CniError> {
    let conf = BridgeConf::parse(&req.raw)?;
    let prev = req
        .conf
        .prev_result
        .clone()
        .ok_or_else(|| CniError::config("Required prevResult missing"))?;
    let prev = CniResult::from_value(prev)?;
    ipam::check(req)?;
    let mut host = Socket::route().map_err(nl("open netlink"))?;
    let br = match conf.mode {
        Mode::Bridge => Some(
            link::by_name(&mut host, &conf.bridge)
                .map_err(nl("look up bridge"))?
                .ok_or_else(|| fail(format!("bridge {:?} not found", conf.bridge)))?,
        ),
        Mode::Routed => None,
    };
    let netns = open_netns(&req.env.netns)?;
    let mut ctr = container_socket(&netns)?;
    let cv = link::by_name(&mut ctr, &req.env.ifname)
        .map_err(nl("look up container link"))?
        .ok_or_else(|| {
            fail(format!(
                "interface {:?} not found in {}",
                req.env.ifname, req.env.netns
            ))
        })?;
    check_host_end(&mut host, br.as_ref(), &prev)?;
    let have = addr::list(&mut ctr, cv.index).map_err(nl("list addresses"))?;
    for ip in &prev.ips {
        if !have.iter().any(|(_, a)| *a == ip.address) {
            return Err(fail(format!(
                "address {} missing on {}",
                ip.address, req.env.ifname
            )));
        }
    }
    let routes = route::list(&mut ctr).map_err(nl("list routes"))?;
    for r in &prev.routes {
        if !routes
            .iter()
            .any(|x| x.dst == r.dst.network() && (r.gw.is_none() || x.gw == r.gw))
        {
            return Err(fail(format!("route to {} missing in container", r.dst)));
        }
    }
    Ok(())
}

/// The host end exists, on the bridge, or (routed) on none.
fn check_host_end(
    host: &mut Socket,
    br: Option<&link::Link>,
    prev: &CniResult,
) -> Result<(), CniError> {
    let Some(hv) = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && br.is_none_or(|b| i.name != b.name))
    else {
        return Ok(());
    };
    let l = link::by_name(host, &hv.name)
        .map_err(nl("look up host veth"))?
        .ok_or_else(|| fail(format!("host veth {:?} not found", hv.name)))?;
    match br {
        Some(b) if l.master != b.index => Err(fail(format!(
            "host veth {:?} is not attached to {:?}",
            hv.name, b.name
        ))),
        None if l.master != 0 => Err(fail(format!(
            "host veth {:?} is attached to a bridge in routed mode",
            hv.name
        ))),
        _ => Ok(()),
    }
}
