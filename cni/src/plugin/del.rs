//! DEL (idempotent, tolerant of a vanished netns) and GC.

use super::add::{container_socket, open_netns, phase};
use super::links::nl;
use super::{ipam, Request};
use crate::nat;
use crate::netlink::link;
use crate::spec::{CniError, ErrorCode};

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

pub fn gc(req: &Request) -> Result<(), CniError> {
    ipam::gc(req)?;
    let valid = req.conf.valid_attachments.clone().unwrap_or_default();
    nat::gc(&valid)
}
