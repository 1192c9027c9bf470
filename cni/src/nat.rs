//! Masquerade and hostPort DNAT in an nftables table of skiff-bridge's own
//! (`inet skiff-bridge`). Every rule carries a comment naming its attachment
//! so DEL and GC remove exactly what belongs to it.

use crate::ipnet::{ip_bytes, IpNet};
use crate::netlink::nft::{self, Batch, ChainSpec, Expr, RuleInfo};
use crate::netlink::{NlError, Socket};
use crate::plugin::config::PortMapping;
use crate::spec::{CniError, ValidAttachment};
use std::collections::HashSet;
use std::net::IpAddr;

pub const TABLE: &str = "skiff-bridge";
const POSTROUTING: ChainSpec = ChainSpec {
    name: "postrouting",
    hook: nft::HOOK_POSTROUTING,
    priority: 100,
    kind: "nat",
};
const PREROUTING: ChainSpec = ChainSpec {
    name: "prerouting",
    hook: nft::HOOK_PREROUTING,
    priority: -100,
    kind: "nat",
};
const OUTPUT: ChainSpec = ChainSpec {
    name: "output",
    hook: nft::HOOK_OUTPUT,
    priority: -100,
    kind: "nat",
};

fn nlerr(what: &'static str) -> impl FnOnce(NlError) -> CniError {
    move |e| CniError::internal(what, e)
}

fn tag(id: &str, ifname: &str) -> String {
    format!("skiff:{id}/{ifname}")
}

fn parse_tag(c: &str) -> Option<(&str, &str)> {
    c.strip_prefix("skiff:")?.rsplit_once('/')
}

fn family_match(ip: &IpAddr) -> [Expr; 2] {
    let fam = if ip.is_ipv4() {
        nft::NFPROTO_IPV4
    } else {
        nft::NFPROTO_IPV6
    };
    [
        Expr::Meta {
            key: nft::META_NFPROTO,
            dreg: nft::REG1,
        },
        Expr::Cmp {
            op: nft::CMP_EQ,
            data: vec![fam],
        },
    ]
}

/// (offset of saddr, offset of daddr, address length) in the IP header.
fn addr_layout(ip: &IpAddr) -> (u32, u32, u32) {
    if ip.is_ipv4() {
        (12, 16, 4)
    } else {
        (8, 24, 16)
    }
}

fn load(offset: u32, len: u32) -> Expr {
    Expr::Payload {
        base: nft::BASE_NETWORK,
        offset,
        len,
        dreg: nft::REG1,
    }
}

fn not_in(net: &IpNet) -> [Expr; 2] {
    [
        Expr::Bitwise {
            reg: nft::REG1,
            mask: net.mask_bytes(),
        },
        Expr::Cmp {
            op: nft::CMP_NEQ,
            data: ip_bytes(&net.network().addr),
        },
    ]
}

/// `saddr == pod && daddr !in subnet && daddr !multicast -> masquerade`
fn masq_rule(pod: &IpNet) -> Vec<Expr> {
    let (s, d, len) = addr_layout(&pod.addr);
    let mcast: IpNet = if pod.is_ipv4() {
        IpNet {
            addr: [224, 0, 0, 0].into(),
            prefix: 4,
        }
    } else {
        IpNet {
            addr: "ff00::".parse().unwrap_or(pod.addr),
            prefix: 8,
        }
    };
    let mut e = family_match(&pod.addr).to_vec();
    e.push(load(s, len));
    e.push(Expr::Cmp {
        op: nft::CMP_EQ,
        data: ip_bytes(&pod.addr),
    });
    e.push(load(d, len));
    e.extend(not_in(pod));
    e.push(load(d, len));
    e.extend(not_in(&mcast));
    e.push(Expr::Masq);
    e
}

fn proto_num(p: &str) -> u8 {
    match p.to_ascii_lowercase().as_str() {
        "udp" => 17,
        "sctp" => 132,
        _ => 6,
    }
}

/// `daddr is local (or == hostIP) && l4proto/dport match -> dnat to pod:port`
fn dnat_rule(pod: &IpNet, pm: &PortMapping, host_ip: Option<IpAddr>) -> Vec<Expr> {
    let (_, d, len) = addr_layout(&pod.addr);
    let mut e = family_match(&pod.addr).to_vec();
    match host_ip {
        Some(h) => {
            e.push(load(d, len));
            e.push(Expr::Cmp {
                op: nft::CMP_EQ,
                data: ip_bytes(&h),
            });
        }
        None => {
            e.push(Expr::Fib {
                flags: nft::FIB_DADDR,
                result: nft::FIB_RESULT_ADDRTYPE,
                dreg: nft::REG1,
            });
            e.push(Expr::Cmp {
                op: nft::CMP_EQ,
                data: 2u32.to_ne_bytes().to_vec(),
            }); // RTN_LOCAL
        }
    }
    e.push(Expr::Meta {
        key: nft::META_L4PROTO,
        dreg: nft::REG1,
    });
    e.push(Expr::Cmp {
        op: nft::CMP_EQ,
        data: vec![proto_num(&pm.protocol)],
    });
    e.push(Expr::Payload {
        base: nft::BASE_TRANSPORT,
        offset: 2,
        len: 2,
        dreg: nft::REG1,
    });
    e.push(Expr::Cmp {
        op: nft::CMP_EQ,
        data: pm.host_port.to_be_bytes().to_vec(),
    });
    e.push(Expr::Immediate {
        dreg: nft::REG1,
        data: ip_bytes(&pod.addr),
    });
    e.push(Expr::Immediate {
        dreg: nft::REG2,
        data: pm.container_port.to_be_bytes().to_vec(),
    });
    let family = if pod.is_ipv4() {
        nft::NFPROTO_IPV4
    } else {
        nft::NFPROTO_IPV6
    };
    e.push(Expr::Nat {
        kind: nft::NAT_DNAT,
        family,
        addr_reg: nft::REG1,
        proto_reg: Some(nft::REG2),
    });
    e
}

/// Hairpin: a DNATed connection from the pod subnet to this pod is
/// masqueraded so the reply returns through the node.
fn hairpin_rule(pod: &IpNet) -> Vec<Expr> {
    masq_dnat_from(pod, &pod.network())
}

/// A hostPort reached from the node itself through 127.0.0.1: the DNATed
/// connection keeps its loopback source, which the pod could not answer,
/// so it is masqueraded to the bridge's address on the way out.
fn localhost_rule(pod: &IpNet) -> Vec<Expr> {
    let loopback = IpNet {
        addr: [127, 0, 0, 0].into(),
        prefix: 8,
    };
    masq_dnat_from(pod, &loopback)
}

/// Masquerades connections DNATed to `pod` whose source lies in `from`.
fn masq_dnat_from(pod: &IpNet, from: &IpNet) -> Vec<Expr> {
    const IPS_DST_NAT: u32 = 0x20;
    let (s, d, len) = addr_layout(&pod.addr);
    let mut e = family_match(&pod.addr).to_vec();
    e.push(Expr::Ct {
        key: nft::CT_STATUS,
        dreg: nft::REG1,
    });
    e.push(Expr::Bitwise {
        reg: nft::REG1,
        mask: IPS_DST_NAT.to_ne_bytes().to_vec(),
    });
    e.push(Expr::Cmp {
        op: nft::CMP_NEQ,
        data: vec![0; 4],
    });
    e.push(load(d, len));
    e.push(Expr::Cmp {
        op: nft::CMP_EQ,
        data: ip_bytes(&pod.addr),
    });
    e.push(load(s, len));
    e.push(Expr::Bitwise {
        reg: nft::REG1,
        mask: from.mask_bytes(),
    });
    e.push(Expr::Cmp {
        op: nft::CMP_EQ,
        data: ip_bytes(&from.addr),
    });
    e.push(Expr::Masq);
    e
}

/// The table holding the guard that goes with `route_localnet`. It is not
/// per attachment and outlives them, as `route_localnet` does.
pub const LOCALNET_TABLE: &str = "skiff-bridge-localnet";
const LOCALNET_PREROUTING: ChainSpec = ChainSpec {
    name: "prerouting",
    hook: nft::HOOK_PREROUTING,
    priority: -300,
    kind: "filter",
};

/// `meta nfproto ipv4 && iiftype != loopback && ip daddr 127.0.0.0/8 -> drop`
fn localnet_guard_rule() -> Vec<Expr> {
    let v4 = IpAddr::from([127, 0, 0, 1]);
    let loopback = IpNet {
        addr: [127, 0, 0, 0].into(),
        prefix: 8,
    };
    let (_, d, len) = addr_layout(&v4);
    let mut e = family_match(&v4).to_vec();
    e.push(Expr::Meta {
        key: nft::META_IIFTYPE,
        dreg: nft::REG1,
    });
    e.push(Expr::Cmp {
        op: nft::CMP_NEQ,
        data: nft::ARPHRD_LOOPBACK.to_ne_bytes().to_vec(),
    });
    e.push(load(d, len));
    e.push(Expr::Bitwise {
        reg: nft::REG1,
        mask: loopback.mask_bytes(),
    });
    e.push(Expr::Cmp {
        op: nft::CMP_EQ,
        data: ip_bytes(&loopback.addr),
    });
    e.push(Expr::Verdict(nft::NF_DROP));
    e
}

/// With `route_localnet` on the bridge the kernel would also accept packets
/// a pod addresses to 127.0.0.0/8 through it, reaching services the node
/// binds to loopback only (CVE-2020-8558). Before conntrack and routing,
/// drop every IPv4 packet to 127.0.0.0/8 that did not arrive on a loopback
/// device: without `route_localnet` the kernel drops those as martian
/// anyway, so the guard costs nothing legitimate. Created once per node
/// netns; concurrent ADDs race harmlessly (EEXIST).
pub fn localnet_guard() -> Result<(), CniError> {
    let mut s = open()?;
    let exists = nft::table_exists(&mut s, nft::NFPROTO_INET, LOCALNET_TABLE)
        .map_err(nlerr("look up nftables table"))?;
    if exists {
        return Ok(());
    }
    let mut b = Batch::new(&mut s, LOCALNET_TABLE);
    b.new_table();
    b.chain(&LOCALNET_PREROUTING);
    b.rule(
        LOCALNET_PREROUTING.name,
        &localnet_guard_rule(),
        "route_localnet guard",
    );
    match b.commit() {
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        r => r.map_err(nlerr("install the route_localnet guard")),
    }
}

fn open() -> Result<Socket, CniError> {
    nft::open().map_err(nlerr("open nftables netlink"))
}

/// Adds `rules` (chain, expressions), tagged `tag`, to `table`, creating the
/// table and those of `chains` that are missing. Existing chains are left
/// out of the batch (see [`Batch::chain`]); the batch is tied to the
/// generation the chains were listed in, so a concurrent DEL deleting the
/// table in between makes it fail and it is rebuilt.
fn install(
    family: u8,
    chains: &[&ChainSpec],
    rules: &[(&str, Vec<Expr>)],
    tag: &str,
) -> Result<(), CniError> {
    let mut s = open()?;
    for _ in 0..16 {
        let genid = nft::generation(&mut s).map_err(nlerr("read nftables generation"))?;
        let have =
            nft::list_chains(&mut s, family, TABLE).map_err(nlerr("list nftables chains"))?;
        let mut b = Batch::for_family(&mut s, family, TABLE);
        b.if_generation(genid);
        b.table();
        for c in chains.iter().filter(|c| !have.iter().any(|h| h == c.name)) {
            b.chain(c);
        }
        for (chain, exprs) in rules {
            b.rule(chain, exprs, tag);
        }
        match b.commit() {
            Err(e) if matches!(e.errno(), Some(libc::ERESTART) | Some(libc::ENOENT)) => {}
            r => return r.map_err(nlerr("install nftables rules")),
        }
    }
    Err(CniError::internal(
        "install nftables rules",
        "the ruleset kept changing underneath",
    ))
}

pub fn masquerade(id: &str, ifname: &str, pods: &[IpNet]) -> Result<(), CniError> {
    let rules: Vec<_> = pods
        .iter()
        .map(|pod| (POSTROUTING.name, masq_rule(pod)))
        .collect();
    install(nft::NFPROTO_INET, &[&POSTROUTING], &rules, &tag(id, ifname))
}

pub fn port_mappings(
    id: &str,
    ifname: &str,
    pods: &[IpNet],
    maps: &[PortMapping],
) -> Result<(), CniError> {
    let mut rules = Vec::new();
    for pod in pods {
        for pm in maps {
            let host_ip = match pm.host_ip.as_deref().filter(|h| !h.is_empty()) {
                Some(h) => Some(h.parse::<IpAddr>().map_err(|_| {
                    CniError::config(format!("portMappings: invalid hostIP {h:?}"))
                })?),
                None => None,
            };
            if host_ip.is_some_and(|h| h.is_ipv4() != pod.is_ipv4()) {
                continue;
            }
            let rule = dnat_rule(pod, pm, host_ip);
            rules.push((PREROUTING.name, rule.clone()));
            rules.push((OUTPUT.name, rule));
        }
        rules.push((POSTROUTING.name, hairpin_rule(pod)));
        if pod.is_ipv4() {
            rules.push((POSTROUTING.name, localhost_rule(pod)));
        }
    }
    install(
        nft::NFPROTO_INET,
        &[&PREROUTING, &OUTPUT, &POSTROUTING],
        &rules,
        &tag(id, ifname),
    )
}

/// Deletes the rules of `table` that `keep` rejects, and the table itself
/// once nothing is left in it. The batch is tied to the ruleset generation
/// it was computed from, so a concurrent ADD adding a rule in between makes
/// it fail (ERESTART) and it is recomputed, instead of deleting the table
/// under the new rule.
fn delete_where(
    s: &mut Socket,
    family: u8,
    table: &str,
    keep: impl Fn(&RuleInfo) -> bool,
) -> Result<(), CniError> {
    for _ in 0..16 {
        let genid = nft::generation(s).map_err(nlerr("read nftables generation"))?;
        let rules = nft::list_rules(s, family, table)
            .map_err(nlerr("list nftables rules"))?
            .unwrap_or_default();
        let (doomed, kept): (Vec<RuleInfo>, Vec<RuleInfo>) =
            rules.into_iter().partition(|r| !keep(r));
        let drop_table = kept.is_empty()
            && (!doomed.is_empty()
                || nft::table_exists(s, family, table).map_err(nlerr("look up nftables table"))?);
        let mut b = Batch::for_family(s, family, table);
        b.if_generation(genid);
        if drop_table {
            b.delete_table();
        } else {
            for r in &doomed {
                b.delete_rule(r);
            }
        }
        if b.is_empty() {
            return Ok(());
        }
        match b.commit() {
            // The ruleset moved on (ERESTART), or a concurrent DEL removed
            // the same rules or table first (ENOENT): look again.
            Err(e) if matches!(e.errno(), Some(libc::ERESTART) | Some(libc::ENOENT)) => {}
            r => return r.map_err(nlerr("delete nftables rules")),
        }
    }
    Err(CniError::internal(
        "delete nftables rules",
        "the ruleset kept changing underneath",
    ))
}

/// The nf_tables socket a DEL used. Deleted rules and tables are freed by
/// the kernel after an RCU grace period, and closing an nf_tables socket
/// waits for pending frees: holding the socket until the veth is gone lets
/// that wait overlap the one the link deletion makes anyway.
pub struct Teardown {
    _sock: Socket,
}

/// Removes every rule of the attachment (DEL), and a table left empty.
pub fn teardown(id: &str, ifname: &str) -> Result<Teardown, CniError> {
    let t = tag(id, ifname);
    let mut s = open()?;
    for family in [nft::NFPROTO_INET, nft::NFPROTO_BRIDGE] {
        delete_where(&mut s, family, TABLE, |r| r.comment != t)?;
    }
    Ok(Teardown { _sock: s })
}

/// Removes rules of attachments not in `valid` (GC), and tables left empty.
pub fn gc(valid: &[ValidAttachment]) -> Result<(), CniError> {
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let keep = |r: &RuleInfo| parse_tag(&r.comment).is_none_or(|k| keep.contains(&k));
    let mut s = open()?;
    delete_where(&mut s, nft::NFPROTO_INET, TABLE, keep)?;
    delete_where(&mut s, nft::NFPROTO_BRIDGE, TABLE, keep)
}

/// The bridge-family chain that sees every frame a port receives, before
/// the bridge forwards it.
const SPOOF_PREROUTING: ChainSpec = ChainSpec {
    name: "prerouting",
    hook: nft::HOOK_PREROUTING,
    priority: -300,
    kind: "filter",
};

/// `iifname == host veth && ether saddr != container MAC -> drop`
fn spoof_rule(host_veth: &str, mac: &[u8]) -> Vec<Expr> {
    let mut name = host_veth.as_bytes().to_vec();
    name.resize(nft::IFNAMSIZ, 0);
    vec![
        Expr::Meta {
            key: nft::META_IIFNAME,
            dreg: nft::REG1,
        },
        Expr::Cmp {
            op: nft::CMP_EQ,
            data: name,
        },
        Expr::Payload {
            base: nft::BASE_LL,
            offset: 6,
            len: 6,
            dreg: nft::REG1,
        },
        Expr::Cmp {
            op: nft::CMP_NEQ,
            data: mac.to_vec(),
        },
        Expr::Verdict(nft::NF_DROP),
    ]
}

/// macspoofchk: frames entering the bridge from `host_veth` must carry the
/// container interface's MAC as their source, in table `bridge skiff-bridge`.
pub fn mac_spoof_check(
    id: &str,
    ifname: &str,
    host_veth: &str,
    mac: &[u8],
) -> Result<(), CniError> {
    if mac.len() != 6 {
        return Err(CniError::internal(
            "macspoofchk",
            format!("container interface has a {}-byte address", mac.len()),
        ));
    }
    install(
        nft::NFPROTO_BRIDGE,
        &[&SPOOF_PREROUTING],
        &[(SPOOF_PREROUTING.name, spoof_rule(host_veth, mac))],
        &tag(id, ifname),
    )
}
