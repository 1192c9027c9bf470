//! Masquerade of what pods send out of the cluster, in skiffd's own nftables table
//! (`inet skiff-node`): a pod's packet to a pod of any node keeps its source address; to anywhere
//! else it leaves with the node's.

use skiff_cni::ipnet::{ip_bytes, IpNet};
use skiff_cni::netlink::nft::{self, Batch, ChainSpec, Expr};
use skiff_cni::netlink::NlError;

pub const TABLE: &str = "skiff-node";
const POSTROUTING: ChainSpec = ChainSpec {
    name: "postrouting",
    hook: nft::HOOK_POSTROUTING,
    priority: 100,
    kind: "nat",
};

/// Replaces the table with one rule per pod CIDR of this node, sparing the cluster's pod ranges
/// and multicast, in one transaction.
pub fn sync(own: &[IpNet], cluster: &[IpNet]) -> Result<(), NlError> {
    let mut sock = nft::open()?;
    let mut b = Batch::new(&mut sock, TABLE);
    b.table();
    b.delete_table();
    b.new_table();
    b.chain(&POSTROUTING);
    for c in own {
        b.rule(
            POSTROUTING.name,
            &rule(c, cluster),
            &format!("skiff: pods of {c}"),
        );
    }
    b.commit()
}

/// Removes the table, if there is one.
pub fn clear() -> Result<(), NlError> {
    let mut sock = nft::open()?;
    let mut b = Batch::new(&mut sock, TABLE);
    b.table();
    b.delete_table();
    b.commit()
}

fn multicast(v4: bool) -> IpNet {
    if v4 {
        IpNet {
            addr: [224, 0, 0, 0].into(),
            prefix: 4,
        }
    } else {
        IpNet {
            addr: [0xff00, 0, 0, 0, 0, 0, 0, 0].into(),
            prefix: 8,
        }
    }
}

/// `nfproto == family && saddr in own && daddr not in each cluster range && daddr not multicast -> masquerade`
fn rule(own: &IpNet, cluster: &[IpNet]) -> Vec<Expr> {
    let v4 = own.is_ipv4();
    let (saddr, daddr, len) = if v4 { (12, 16, 4) } else { (8, 24, 16) };
    let mut e = vec![
        Expr::Meta {
            key: nft::META_NFPROTO,
            dreg: nft::REG1,
        },
        Expr::Cmp {
            op: nft::CMP_EQ,
            data: vec![if v4 {
                nft::NFPROTO_IPV4
            } else {
                nft::NFPROTO_IPV6
            }],
        },
    ];
    e.extend(in_net(saddr, len, own, nft::CMP_EQ));
    let spared = cluster.iter().filter(|c| c.is_ipv4() == v4);
    for c in spared.chain(std::iter::once(&multicast(v4))) {
        e.extend(in_net(daddr, len, c, nft::CMP_NEQ));
    }
    e.push(Expr::Masq);
    e
}

/// The address at `offset` masked to `net`'s prefix, compared with its network by `op`.
fn in_net(offset: u32, len: u32, net: &IpNet, op: u32) -> [Expr; 3] {
    [
        Expr::Payload {
            base: nft::BASE_NETWORK,
            offset,
            len,
            dreg: nft::REG1,
        },
        Expr::Bitwise {
            reg: nft::REG1,
            mask: net.mask_bytes(),
        },
        Expr::Cmp {
            op,
            data: ip_bytes(&net.network().addr),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_each_cluster_range_of_the_family() {
        let own: IpNet = "10.244.1.0/24".parse().unwrap();
        let cluster = [
            own,
            "10.244.2.0/24".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ];
        let r = rule(&own, &cluster);
        // family (2) + saddr (3) + two spared ranges and multicast (3 each) + masq.
        assert_eq!(r.len(), 2 + 3 + 9 + 1);
    }
}
