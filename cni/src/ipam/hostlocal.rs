//! The built-in allocator, compatible with the reference host-local plugin's
//! store and allocation order (round robin after the last reserved address).

use super::config::{IpamConfig, Range};
use super::store::{Store, StoreError};
use crate::ipnet::{from_bits, to_bits, IpNet};
use crate::spec::{CniError, CniResult, Dns, ErrorCode, IpConfig, Route, ValidAttachment};
use std::collections::HashSet;
use std::net::IpAddr;

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        CniError::io("ipam store failure", e)
    }
}

/// Allocates one address per range set for (id, ifname). `requested` are
/// addresses asked for through the `ips` capability.
pub fn allocate(
    conf: &IpamConfig,
    network: &str,
    id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<CniResult, CniError> {
    let store = Store::open(&conf.data_dir, network)?;
    let mut taken: Vec<IpAddr> = Vec::new();
    let mut ips = Vec::new();
    for (set_idx, set) in conf.range_sets.iter().enumerate() {
        let wanted = requested
            .iter()
            .find(|ip| set.iter().any(|r| r.contains(ip)));
        let got = match wanted {
            Some(ip) => reserve_requested(&store, set, *ip, id, ifname, set_idx),
            None => reserve_next(&store, set, id, ifname, set_idx),
        };
        match got {
            Ok((ip, range)) => {
                taken.push(ip);
                ips.push(IpConfig {
                    address: IpNet {
                        addr: ip,
                        prefix: range.subnet.prefix,
                    },
                    gateway: Some(range.gateway),
                    interface: None,
                });
            }
            Err(e) => {
                // All-or-nothing: give back what this call already took.
                for ip in &taken {
                    let _ = store.release(ip);
                }
                return Err(e);
            }
        }
    }
    Ok(CniResult {
        cni_version: crate::spec::version::CURRENT.into(),
        ips,
        routes: conf
            .routes
            .iter()
            .map(|r| Route {
                dst: r.dst,
                gw: r.gw,
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            })
            .collect(),
        dns: conf
            .resolv_conf
            .as_deref()
            .map(parse_resolv_conf)
            .unwrap_or_default(),
        ..CniResult::default()
    })
}

fn reserve_requested(
    store: &Store,
    set: &[Range],
    ip: IpAddr,
    id: &str,
    ifname: &str,
    set_idx: usize,
) -> Result<(IpAddr, Range), CniError> {
    let range = set.iter().find(|r| r.contains(&ip)).cloned();
    let Some(range) = range else {
        return Err(CniError::config(format!(
            "requested IP {ip} is not in any range"
        )));
    };
    if ip == range.gateway || !store.reserve(&ip, id, ifname, set_idx)? {
        return Err(CniError::new(
            ErrorCode::Internal,
            format!("requested IP address {ip} is not available in range set"),
        ));
    }
    Ok((ip, range))
}

/// Walks the range set from just after the last reserved address, wrapping
/// around once, and takes the first free one.
fn reserve_next(
    store: &Store,
    set: &[Range],
    id: &str,
    ifname: &str,
    set_idx: usize,
) -> Result<(IpAddr, Range), CniError> {
    let gateways: HashSet<IpAddr> = set.iter().map(|r| r.gateway).collect();
    let (mut ri, mut cur) = start_point(set, store.last_reserved(set_idx));
    let total: u128 = set
        .iter()
        .map(|r| to_bits(&r.end) - to_bits(&r.start) + 1)
        .sum();
    let mut tried: u128 = 0;
    while tried < total {
        let range = &set[ri];
        tried += 1;
        if !gateways.contains(&cur)
            && !store.is_reserved(&cur)
            && store.reserve(&cur, id, ifname, set_idx)?
        {
            return Ok((cur, range.clone()));
        }
        if cur == range.end {
            ri = (ri + 1) % set.len();
            cur = set[ri].start;
        } else {
            cur = from_bits(&cur, to_bits(&cur) + 1);
        }
    }
    let first = &set[0];
    Err(CniError::new(
        ErrorCode::Internal,
        format!(
            "no IP addresses available in range set {}-{}",
            first.start, first.end
        ),
    ))
}

fn start_point(set: &[Range], last: Option<IpAddr>) -> (usize, IpAddr) {
    let Some(last) = last else {
        return (0, set[0].start);
    };
    for (i, r) in set.iter().enumerate() {
        if r.contains(&last) {
            if last == r.end {
                let next = (i + 1) % set.len();
                return (next, set[next].start);
            }
            return (i, from_bits(&last, to_bits(&last) + 1));
        }
    }
    (0, set[0].start)
}

pub fn release(conf: &IpamConfig, network: &str, id: &str, ifname: &str) -> Result<(), CniError> {
    let store = Store::open(&conf.data_dir, network)?;
    for ip in store.by_id(id, ifname)? {
        store.release(&ip)?;
    }
    Ok(())
}

/// CHECK: the attachment must still hold a reservation.
pub fn check(
    conf: &IpamConfig,
    network: &str,
    id: &str,
    ifname: &str,
) -> Result<Vec<IpAddr>, CniError> {
    let store = Store::open(&conf.data_dir, network)?;
    let ips = store.by_id(id, ifname)?;
    if ips.is_empty() {
        return Err(CniError::new(
            ErrorCode::Internal,
            format!("host-local: failed to find address for container {id} interface {ifname}"),
        ));
    }
    Ok(ips)
}

/// GC: drop every reservation whose attachment is not in `valid`.
pub fn gc(conf: &IpamConfig, network: &str, valid: &[ValidAttachment]) -> Result<usize, CniError> {
    let store = Store::open(&conf.data_dir, network)?;
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut removed = 0;
    for (ip, id, ifname) in store.entries()? {
        if !keep.contains(&(id.as_str(), ifname.as_str())) {
            store.release(&ip)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// STATUS: the store must be usable and at least one address free per set.
pub fn status(conf: &IpamConfig, network: &str) -> Result<(), CniError> {
    let store = Store::open(&conf.data_dir, network).map_err(|e| {
        CniError::new(ErrorCode::NotAvailable, "ipam store unavailable").with_details(e.to_string())
    })?;
    let reserved: Vec<IpAddr> = store.entries()?.into_iter().map(|(ip, _, _)| ip).collect();
    for set in &conf.range_sets {
        let size: u128 = set
            .iter()
            .map(|r| to_bits(&r.end) - to_bits(&r.start) + 1)
            .sum();
        let gateways: HashSet<IpAddr> = set
            .iter()
            .map(|r| r.gateway)
            .filter(|g| set.iter().any(|r| r.contains(g)))
            .collect();
        let used = reserved
            .iter()
            .filter(|ip| set.iter().any(|r| r.contains(ip)) && !gateways.contains(ip))
            .count();
        if used as u128 + gateways.len() as u128 >= size {
            return Err(CniError::new(
                ErrorCode::NotAvailable,
                "ipam: address range exhausted",
            ));
        }
    }
    Ok(())
}

fn parse_resolv_conf(path: &str) -> Dns {
    let mut dns = Dns::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return dns;
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search = words.map(str::to_string).collect(),
            Some("options") => dns.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}
