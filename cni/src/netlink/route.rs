//! rtnetlink route operations.

use super::socket::ACK;
use super::{
    attr_u32, attrs, find_attr, Msg, NlError, Socket, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
};
use crate::ipnet::{ip_bytes, IpNet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTN_UNREACHABLE: u8 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
    /// An `unreachable` route (no gateway, no device): what it matches is answered with ICMP
    /// unreachable instead of following a shorter route.
    pub unreachable: bool,
}

fn rtmsg(dst: &IpNet, scope: u8, table: u8, unreachable: bool) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = if dst.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    };
    b[1] = dst.prefix;
    b[4] = table;
    b[5] = RTPROT_BOOT;
    b[6] = scope;
    b[7] = if unreachable {
        RTN_UNREACHABLE
    } else {
        RTN_UNICAST
    };
    b
}

fn build(kind: u16, flags: u16, r: &RouteSpec, seq: u32) -> Vec<u8> {
    let default_scope = if r.gw.is_some() || r.unreachable {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    let table = r.table.unwrap_or(u32::from(RT_TABLE_MAIN));
    let small_table = u8::try_from(table).unwrap_or(0);
    let mut m = Msg::new(kind, flags)
        .raw(&rtmsg(
            &r.dst,
            r.scope.unwrap_or(default_scope),
            small_table,
            r.unreachable,
        ))
        .u32(RTA_TABLE, table);
    if r.dst.prefix > 0 {
        m = m.attr(RTA_DST, &ip_bytes(&r.dst.network().addr));
    }
    if let Some(gw) = r.gw {
        m = m.attr(RTA_GATEWAY, &ip_bytes(&gw));
    }
    if let Some(oif) = r.oif {
        m = m.u32(RTA_OIF, oif);
    }
    if let Some(p) = r.priority {
        m = m.u32(RTA_PRIORITY, p);
    }
    m.finish(seq)
}

pub fn add(s: &mut Socket, r: &RouteSpec) -> Result<(), NlError> {
    s.request("add route", |seq| {
        build(RTM_NEWROUTE, ACK | NLM_F_CREATE | NLM_F_EXCL, r, seq)
    })
}

pub fn delete(s: &mut Socket, r: &RouteSpec) -> Result<(), NlError> {
    s.request("delete route", |seq| build(RTM_DELROUTE, ACK, r, seq))
}

fn parse_ip(d: &[u8]) -> Option<IpAddr> {
    match d.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(d);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// Lists the routes of every table, both families.
pub fn list(s: &mut Socket) -> Result<Vec<RouteSpec>, NlError> {
    let replies = s.dump("list routes", |seq| {
        Msg::new(RTM_GETROUTE, NLM_F_DUMP)
            .raw(&[0u8; 12])
            .finish(seq)
    })?;
    let mut out = Vec::new();
    for r in replies {
        let Some(hdr) = r.payload.get(..12) else {
            continue;
        };
        let list = attrs(&r.payload[12..]);
        let table = find_attr(&list, RTA_TABLE)
            .and_then(attr_u32)
            .unwrap_or(u32::from(hdr[4]));
        let unspecified = if hdr[0] == libc::AF_INET as u8 {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let dst_ip = find_attr(&list, RTA_DST)
            .and_then(parse_ip)
            .unwrap_or(unspecified);
        let Some(dst) = IpNet::new(dst_ip, hdr[1]) else {
            continue;
        };
        out.push(RouteSpec {
            dst,
            gw: find_attr(&list, RTA_GATEWAY).and_then(parse_ip),
            oif: find_attr(&list, RTA_OIF).and_then(attr_u32),
            priority: find_attr(&list, RTA_PRIORITY).and_then(attr_u32),
            table: Some(table),
            scope: Some(hdr[6]),
            unreachable: hdr[7] == RTN_UNREACHABLE,
        });
    }
    Ok(out)
}
