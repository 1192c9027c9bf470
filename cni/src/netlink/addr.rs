//! rtnetlink address operations.

use super::socket::ACK;
use super::{attrs, find_attr, Msg, NlError, Socket, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use crate::ipnet::{ip_bytes, IpNet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_F_NODAD: u8 = 0x02;

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

fn ifaddr(net: &IpNet, index: u32, flags: u8) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = family(&net.addr);
    b[1] = net.prefix;
    b[2] = flags;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// Adds `net` to the interface; IPv6 addresses skip DAD so they are usable
/// immediately (the container's address is unique by allocation).
pub fn add(s: &mut Socket, index: u32, net: &IpNet) -> Result<(), NlError> {
    s.request("add address", |seq| {
        let flags = if net.is_ipv4() { 0 } else { IFA_F_NODAD };
        let ip = ip_bytes(&net.addr);
        let mut m = Msg::new(RTM_NEWADDR, ACK | NLM_F_CREATE | NLM_F_EXCL)
            .raw(&ifaddr(net, index, flags))
            .attr(IFA_LOCAL, &ip)
            .attr(IFA_ADDRESS, &ip);
        if net.is_ipv4() && net.prefix < 31 {
            m = m.attr(IFA_BROADCAST, &ip_bytes(&net.broadcast()));
        }
        m.finish(seq)
    })
}

pub fn delete(s: &mut Socket, index: u32, net: &IpNet) -> Result<(), NlError> {
    s.request("delete address", |seq| {
        let ip = ip_bytes(&net.addr);
        Msg::new(RTM_DELADDR, ACK)
            .raw(&ifaddr(net, index, 0))
            .attr(IFA_LOCAL, &ip)
            .finish(seq)
    })
}

/// Lists the addresses on interface `index` (all interfaces when 0).
pub fn list(s: &mut Socket, index: u32) -> Result<Vec<(u32, IpNet)>, NlError> {
    let replies = s.dump("list addresses", |seq| {
        Msg::new(RTM_GETADDR, NLM_F_DUMP).raw(&[0u8; 8]).finish(seq)
    })?;
    let mut out = Vec::new();
    for r in replies {
        let Some(hdr) = r.payload.get(..8) else {
            continue;
        };
        let idx = u32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        if index != 0 && idx != index {
            continue;
        }
        let list = attrs(&r.payload[8..]);
        let data = find_attr(&list, IFA_LOCAL).or_else(|| find_attr(&list, IFA_ADDRESS));
        let addr = match data {
            Some(d) if d.len() == 4 => IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            Some(d) if d.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(d);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => continue,
        };
        if let Some(net) = IpNet::new(addr, hdr[1]) {
            out.push((idx, net));
        }
    }
    Ok(out)
}
