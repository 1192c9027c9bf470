//! The `ipam` section of a network config, host-local flavour.

use crate::ipnet::{from_bits, to_bits, IpNet};
use crate::spec::CniError;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;

/// Under /run, not /var/lib as the reference host-local: a reservation names a
/// network namespace, and no namespace survives a reboot (see README).
pub const DEFAULT_DATA_DIR: &str = "/run/cni/networks";

#[derive(Debug, Clone, Deserialize)]
struct RawRange {
    subnet: IpNet,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRoute {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawIpam {
    #[serde(rename = "type", default)]
    ipam_type: String,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    subnet: Option<IpNet>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<String>,
}

/// One allocatable range, with defaults filled in and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl Range {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.subnet.contains(ip)
            && to_bits(ip) >= to_bits(&self.start)
            && to_bits(ip) <= to_bits(&self.end)
    }
}

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub ipam_type: String,
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<RawRoute>,
    pub data_dir: String,
    pub resolv_conf: Option<String>,
}

impl IpamConfig {
    pub fn parse(v: &Value) -> Result<IpamConfig, CniError> {
        let raw: RawIpam = serde_json::from_value(v.clone())
            .map_err(|e| CniError::config("invalid ipam section").with_details(e.to_string()))?;
        let mut sets = raw.ranges.clone();
        if let Some(subnet) = raw.subnet {
            sets.insert(
                0,
                vec![RawRange {
                    subnet,
                    range_start: raw.range_start,
                    range_end: raw.range_end,
                    gateway: raw.gateway,
                }],
            );
        }
        if sets.is_empty() || sets.iter().any(Vec::is_empty) {
            return Err(CniError::config(
                "ipam: no IP ranges specified (ipam.ranges)",
            ));
        }
        let range_sets = sets
            .iter()
            .map(|set| set.iter().map(canonicalize).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        check_overlaps(&range_sets)?;
        Ok(IpamConfig {
            ipam_type: raw.ipam_type,
            range_sets,
            routes: raw.routes,
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
            resolv_conf: raw.resolv_conf,
        })
    }
}

fn canonicalize(r: &RawRange) -> Result<Range, CniError> {
    let subnet = r.subnet.network();
    let host_bits = u32::from(crate::ipnet::max_prefix(&subnet.addr) - subnet.prefix);
    if host_bits < 2 {
        return Err(CniError::config(format!(
            "ipam: network {subnet} is too small to allocate from"
        )));
    }
    let first = from_bits(&subnet.addr, to_bits(&subnet.addr) + 1);
    let last = if subnet.is_ipv4() {
        from_bits(&subnet.addr, to_bits(&subnet.broadcast()) - 1)
    } else {
        subnet.broadcast()
    };
    let inside = |name: &str, ip: Option<IpAddr>, default: IpAddr| -> Result<IpAddr, CniError> {
        match ip {
            Some(ip) if !subnet.contains(&ip) => Err(CniError::config(format!(
                "ipam: {name} {ip} is not in subnet {subnet}"
            ))),
            Some(ip) => Ok(ip),
            None => Ok(default),
        }
    };
    let start = inside("rangeStart", r.range_start, first)?;
    let end = inside("rangeEnd", r.range_end, last)?;
    let gateway = match r.gateway {
        Some(gw) if gw.is_ipv4() != subnet.is_ipv4() => {
            return Err(CniError::config(format!(
                "ipam: gateway {gw} is not in subnet {subnet}"
            )))
        }
        Some(gw) => gw,
        None => first,
    };
    if to_bits(&start) > to_bits(&end) {
        return Err(CniError::config(format!(
            "ipam: rangeStart {start} is after rangeEnd {end}"
        )));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn check_overlaps(sets: &[Vec<Range>]) -> Result<(), CniError> {
    let all: Vec<&Range> = sets.iter().flatten().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let disjoint =
                to_bits(&a.end) < to_bits(&b.start) || to_bits(&b.end) < to_bits(&a.start);
            if a.start.is_ipv4() == b.start.is_ipv4() && !disjoint {
                return Err(CniError::config(format!(
                    "ipam: range {}-{} overlaps range {}-{}",
                    a.start, a.end, b.start, b.end
                )));
            }
        }
    }
    Ok(())
}
