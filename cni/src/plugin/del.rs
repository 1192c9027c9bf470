//! DEL (idempotent, tolerant of a vanished netns) and GC.

use super::add::{container_socket, open_netns, phase};
use super::config::{BridgeConf, Mode};
use super::links::{gc_veths, nl};
use super::{ipam, Request};
use crate::nat;
use crate::netlink::link;
use crate::netlink::Socket;
use crate::spec::{CniError, ErrorCode};
use std::collections::HashSet;

pub fn del(req: &Request) -> Result<(), CniError> {
    // IPAM first: even if the netns is gone the address must be freed.
    phase("ipam", || ipam::del(req))?;
    let nft = phase("nat", || {
        nat::teardown(&req.env.container_id, &req.env.ifname)
    })?;
    if !req.env.netns.is_empty() {
        phase("link", || delete_container_link(req))?;
    }
    phase("nft close", || drop(nft));
    Ok(())
}

fn delete_container_link(req: &Request) -> Result<(), CniError> {
    let netns = match open_netns(&req.env.netns) {
        Ok(ns) => ns,
        Err(e) if e.is(ErrorCode::UnknownContainer) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut ctr = container_socket(&netns)?;
    // One request by name: deleting the container end removes its peer on
    // the bridge too.
    match link::delete_by_name(&mut ctr, &req.env.ifname) {
        Err(e) if e.errno() != Some(libc::ENODEV) => Err(nl("delete container link")(e)),
        _ => Ok(()),
    }
}

/// GC: releases the addresses, host veths and nft rules of every attachment
/// not in `cni.dev/valid-attachments`. Each part is tried; the first error
/// is returned.
pub fn gc(req: &Request) -> Result<(), CniError> {
    let conf = BridgeConf::parse(&req.raw)?;
    let valid = req.conf.valid_attachments.clone().unwrap_or_default();
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let addresses = phase("ipam", || ipam::gc(req));
    let veths = phase("veths", || {
        let mut host = Socket::route().map_err(nl("open netlink"))?;
        let bridge = (conf.mode == Mode::Bridge).then_some(conf.bridge.as_str());
        gc_veths(&mut host, bridge, &req.conf.name, |id, ifname| {
            keep.contains(&(id, ifname))
        })
    });
    let rules = phase("nat", || nat::gc(&valid));
    addresses.and(veths.map(drop)).and(rules)
}
