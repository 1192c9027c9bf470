//! The node's own networks: the prefixes of its addresses, but for loopback, skiffd's bridge and
//! the host ends of pods' veths (whose gateway address lies in the pod CIDR by design). A pod CIDR
//! inside one of them would hide the node's own neighbours behind the pods.

use skiff_cni::ipnet::IpNet;
use skiff_cni::netlink::{addr, link, NlError, Socket};
use skiff_cni::plugin::links::parse_veth_label;

use super::conflist::BRIDGE;

/// (interface, network) for every address of the node's own.
pub fn networks() -> Result<Vec<(String, IpNet)>, NlError> {
    let mut s = Socket::route()?;
    let links = link::list(&mut s)?;
    let mut out = Vec::new();
    for (index, net) in addr::list(&mut s, 0)? {
        let Some(l) = links.iter().find(|l| l.index == index) else {
            continue;
        };
        if l.name == "lo" || l.name == BRIDGE || parse_veth_label(&l.alias).is_some() {
            continue;
        }
        out.push((l.name.clone(), net.network()));
    }
    Ok(out)
}

/// The first pod CIDR that overlaps a network of the node's, said as a sentence.
pub fn overlap(cidrs: &[IpNet], nets: &[(String, IpNet)]) -> Option<String> {
    cidrs.iter().find_map(|c| {
        nets.iter().find(|(_, n)| n.overlaps(c)).map(|(ifname, n)| {
            format!("the pod CIDR {c} overlaps the node's own network {n} on {ifname}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_names_both() {
        let nets = [("eth0".to_string(), "10.244.0.0/16".parse().unwrap())];
        let c: IpNet = "10.244.3.0/24".parse().unwrap();
        let m = overlap(&[c], &nets).unwrap();
        assert!(m.contains("10.244.3.0/24 overlaps the node's own network 10.244.0.0/16 on eth0"));
        assert_eq!(overlap(&["10.245.0.0/24".parse().unwrap()], &nets), None);
    }
}
