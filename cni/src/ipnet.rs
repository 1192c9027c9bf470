//! IP prefixes ("10.1.0.5/24") as CNI writes them: an address plus a prefix
//! length, where the address need not be the network address.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(&addr)).then_some(IpNet { addr, prefix })
    }

    /// `addr` alone: /32 or /128.
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet {
            prefix: max_prefix(&addr),
            addr,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn network(&self) -> IpNet {
        IpNet {
            addr: from_bits(&self.addr, to_bits(&self.addr) & self.mask_bits()),
            prefix: self.prefix,
        }
    }

    pub fn broadcast(&self) -> IpAddr {
        from_bits(
            &self.addr,
            to_bits(&self.addr) | !self.mask_bits() & width_mask(&self.addr),
        )
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && to_bits(ip) & self.mask_bits() == to_bits(&self.addr) & self.mask_bits()
    }

    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.contains(&other.network().addr) || other.contains(&self.network().addr)
    }

    pub fn mask_bits(&self) -> u128 {
        let width = u32::from(max_prefix(&self.addr));
        let host = width - u32::from(self.prefix);
        if host >= 128 {
            0
        } else {
            (width_mask(&self.addr) >> host) << host
        }
    }

    pub fn mask_bytes(&self) -> Vec<u8> {
        let m = self.mask_bits();
        match self.addr {
            IpAddr::V4(_) => (m as u32).to_be_bytes().to_vec(),
            IpAddr::V6(_) => m.to_be_bytes().to_vec(),
        }
    }
}

pub fn max_prefix(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn width_mask(ip: &IpAddr) -> u128 {
    if ip.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

pub fn to_bits(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// Builds an address of the same family as `like`.
pub fn from_bits(like: &IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR {0:?}")]
pub struct ParseIpNetError(pub String);

impl FromStr for IpNet {
    type Err = ParseIpNetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIpNetError(s.chars().take(64).collect());
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let prefix: u8 = p.parse().map_err(|_| err())?;
        IpNet::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_broadcast() {
        let n: IpNet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.1.2.0/24");
        assert_eq!(n.broadcast().to_string(), "10.1.2.255");
        assert!(n.contains(&"10.1.2.200".parse().unwrap()));
        assert!(!n.contains(&"10.1.3.1".parse().unwrap()));
        let v6: IpNet = "fd00:1::5/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:1::/64");
        let zero: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains(&"1.2.3.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }
}
