//! rtnetlink link operations: look up, create bridge and veth, set
//! attributes, enslave, delete.

use super::socket::ACK;
use super::{attr_str, attr_u32, attrs, find_attr, Msg, NlError, Socket};
use super::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_VLAN_INFO_PVID: u16 = 2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 4;
pub const IFF_UP: u32 = 0x1;
pub const IFF_PROMISC: u32 = 0x100;

#[derive(Debug, Clone, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub master: u32,
    pub flags: u32,
    pub kind: String,
    /// IFLA_IFALIAS: skiff-bridge labels a host veth with its attachment.
    pub alias: String,
}

impl Link {
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// struct ifinfomsg
fn ifinfo(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let flags = u32::from_ne_bytes(payload.get(8..12)?.try_into().ok()?);
    let list = attrs(payload.get(16..)?);
    let kind = find_attr(&list, IFLA_LINKINFO)
        .map(attrs)
        .and_then(|info| find_attr(&info, IFLA_INFO_KIND).map(attr_str))
        .unwrap_or_default();
    Some(Link {
        index,
        flags,
        kind,
        name: find_attr(&list, IFLA_IFNAME)
            .map(attr_str)
            .unwrap_or_default(),
        mac: find_attr(&list, IFLA_ADDRESS)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        mtu: find_attr(&list, IFLA_MTU).and_then(attr_u32).unwrap_or(0),
        master: find_attr(&list, IFLA_MASTER)
            .and_then(attr_u32)
            .unwrap_or(0),
        alias: find_attr(&list, IFLA_IFALIAS)
            .map(attr_str)
            .unwrap_or_default(),
    })
}

pub fn by_name(s: &mut Socket, name: &str) -> Result<Option<Link>, NlError> {
    let r = s.dump("get link", |seq| {
        Msg::new(RTM_GETLINK, 0)
            .raw(&ifinfo(0, 0, 0, 0))
            .str(IFLA_IFNAME, name)
            .finish(seq)
    });
    match r {
        Ok(replies) => Ok(replies.first().and_then(|r| parse_link(&r.payload))),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn by_index(s: &mut Socket, index: u32) -> Result<Option<Link>, NlError> {
    let r = s.dump("get link", |seq| {
        Msg::new(RTM_GETLINK, 0)
            .raw(&ifinfo(0, index, 0, 0))
            .finish(seq)
    });
    match r {
        Ok(replies) => Ok(replies.first().and_then(|r| parse_link(&r.payload))),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn list(s: &mut Socket) -> Result<Vec<Link>, NlError> {
    let replies = s.dump("list links", |seq| {
        Msg::new(RTM_GETLINK, NLM_F_DUMP)
            .raw(&ifinfo(0, 0, 0, 0))
            .finish(seq)
    })?;
    Ok(replies
        .iter()
        .filter_map(|r| parse_link(&r.payload))
        .collect())
}

/// Creates a bridge; EEXIST is reported to the caller, which re-reads it.
pub fn add_bridge(
    s: &mut Socket,
    name: &str,
    mtu: Option<u32>,
    vlan_filtering: bool,
) -> Result<(), NlError> {
    s.request("create bridge", |seq| {
        let mut m = Msg::new(RTM_NEWLINK, ACK | NLM_F_CREATE | NLM_F_EXCL)
            .raw(&ifinfo(0, 0, 0, 0))
            .str(IFLA_IFNAME, name);
        if let Some(mtu) = mtu {
            m = m.u32(IFLA_MTU, mtu);
        }
        m = m.begin(IFLA_LINKINFO).str(IFLA_INFO_KIND, "bridge");
        if vlan_filtering {
            m = m.begin(IFLA_INFO_DATA).u8(IFLA_BR_VLAN_FILTERING, 1).end();
        }
        m.end().finish(seq)
    })
}

pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    pub peer_netns_fd: i32,
    pub mtu: Option<u32>,
    /// Bridge to enslave the host end to (0: none).
    pub master: u32,
}

/// The per-end part of a veth request: name, mtu and one queue each way.
/// Asking for one queue up front matters: left to its default (one per CPU)
/// the kernel trims each end to one real queue after registering it, and
/// every trim waits for an RCU grace period.
fn veth_end(m: Msg, name: &str, mtu: Option<u32>) -> Msg {
    let mut m = m
        .str(IFLA_IFNAME, name)
        .u32(IFLA_NUM_TX_QUEUES, 1)
        .u32(IFLA_NUM_RX_QUEUES, 1);
    if let Some(mtu) = mtu {
        m = m.u32(IFLA_MTU, mtu);
    }
    m
}

/// Creates a veth pair in one request: the host end stays here, enslaved to
/// `master` and up; the peer is created directly inside the container's
/// netns (never moved there), down: the kernel refuses to open a veth end
/// before its pair is complete, so the caller brings it up afterwards.
pub fn add_veth(s: &mut Socket, v: &VethSpec<'_>) -> Result<(), NlError> {
    s.request("create veth", |seq| {
        let m = Msg::new(RTM_NEWLINK, ACK | NLM_F_CREATE | NLM_F_EXCL)
            .raw(&ifinfo(0, 0, IFF_UP, IFF_UP));
        let mut m = veth_end(m, v.host_name, v.mtu);
        if v.master != 0 {
            m = m.u32(IFLA_MASTER, v.master);
        }
        let m = m
            .begin(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfo(0, 0, 0, 0));
        veth_end(m, v.peer_name, v.mtu)
            .u32(IFLA_NET_NS_FD, v.peer_netns_fd as u32)
            .end()
            .end()
            .end()
            .finish(seq)
    })
}

pub fn set_flags(s: &mut Socket, index: u32, flags: u32, mask: u32) -> Result<(), NlError> {
    s.request("set link flags", |seq| {
        Msg::new(RTM_SETLINK, ACK)
            .raw(&ifinfo(0, index, flags, mask))
            .finish(seq)
    })
}

pub fn set_up(s: &mut Socket, index: u32) -> Result<(), NlError> {
    set_flags(s, index, IFF_UP, IFF_UP)
}

pub fn set_master(s: &mut Socket, index: u32, master: u32) -> Result<(), NlError> {
    s.request("set master", |seq| {
        Msg::new(RTM_SETLINK, ACK)
            .raw(&ifinfo(0, index, 0, 0))
            .u32(IFLA_MASTER, master)
            .finish(seq)
    })
}

/// Sets the link's alias (IFLA_IFALIAS, at most 255 bytes).
pub fn set_alias(s: &mut Socket, index: u32, alias: &str) -> Result<(), NlError> {
    s.request("set alias", |seq| {
        Msg::new(RTM_SETLINK, ACK)
            .raw(&ifinfo(0, index, 0, 0))
            .str(IFLA_IFALIAS, alias)
            .finish(seq)
    })
}

pub fn set_mtu(s: &mut Socket, index: u32, mtu: u32) -> Result<(), NlError> {
    s.request("set mtu", |seq| {
        Msg::new(RTM_SETLINK, ACK)
            .raw(&ifinfo(0, index, 0, 0))
            .u32(IFLA_MTU, mtu)
            .finish(seq)
    })
}

/// Sets the bridge port's hairpin mode (IFLA_BRPORT_MODE).
pub fn set_hairpin(s: &mut Socket, index: u32, on: bool) -> Result<(), NlError> {
    s.request("set hairpin", |seq| {
        Msg::new(RTM_SETLINK, ACK)
            .raw(&ifinfo(libc::AF_BRIDGE as u8, index, 0, 0))
            .begin(IFLA_PROTINFO)
            .u8(IFLA_BRPORT_MODE, u8::from(on))
            .end()
            .finish(seq)
    })
}

/// Adds `vid` as the port's PVID, untagged (the bridge plugin's `vlan`).
pub fn add_port_vlan(s: &mut Socket, index: u32, vid: u16, is_self: bool) -> Result<(), NlError> {
    const IFLA_BRIDGE_FLAGS: u16 = 0;
    const BRIDGE_FLAGS_SELF: u16 = 2;
    s.request("add port vlan", |seq| {
        let mut info = Vec::with_capacity(4);
        info.extend_from_slice(&(BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED).to_ne_bytes());
        info.extend_from_slice(&vid.to_ne_bytes());
        let mut m = Msg::new(RTM_SETLINK, ACK)
            .raw(&ifinfo(libc::AF_BRIDGE as u8, index, 0, 0))
            .begin(IFLA_AF_SPEC);
        if is_self {
            m = m.attr(IFLA_BRIDGE_FLAGS, &BRIDGE_FLAGS_SELF.to_ne_bytes());
        }
        m.attr(IFLA_BRIDGE_VLAN_INFO, &info).end().finish(seq)
    })
}

/// Deletes a link by name; deleting either end of a veth removes both.
pub fn delete_by_name(s: &mut Socket, name: &str) -> Result<(), NlError> {
    s.request("delete link", |seq| {
        Msg::new(RTM_DELLINK, ACK)
            .raw(&ifinfo(0, 0, 0, 0))
            .str(IFLA_IFNAME, name)
            .finish(seq)
    })
}

pub fn delete(s: &mut Socket, index: u32) -> Result<(), NlError> {
    s.request("delete link", |seq| {
        Msg::new(RTM_DELLINK, ACK)
            .raw(&ifinfo(0, index, 0, 0))
            .finish(seq)
    })
}
