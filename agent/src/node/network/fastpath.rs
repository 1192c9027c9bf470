//! The fast path's node side (`skiff_cni::fastpath`): its program for the node's IPv4 pod CIDR on
//! the ingress of every link of the node but loopback and the pods' host ends, so that what comes
//! for the node's pods on an established connection conntrack does not NAT enters the pod without
//! the node's IP forward. skiff-bridge puts the other program on each pod's host end itself.

use std::collections::BTreeSet;
use std::net::IpAddr;

use skiff_cni::fastpath::{self, Hop};
use skiff_cni::ipnet::IpNet;
use skiff_cni::netlink::{link, Socket};
use skiff_cni::plugin::links::parse_veth_label;

/// The links the program is on, and for which pod CIDR.
#[derive(Default)]
pub struct Uplinks {
    cidr: Option<IpNet>,
    done: BTreeSet<u32>,
    /// Whether the kernel runs it: asked once.
    probed: Option<Result<(), String>>,
}

/// The node's links the program belongs on.
fn uplinks() -> Result<Vec<link::Link>, String> {
    let mut s = Socket::route().map_err(|e| e.to_string())?;
    let links = link::list(&mut s).map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .filter(|l| l.name != "lo" && parse_veth_label(&l.alias).is_none())
        .collect())
}

impl Uplinks {
    /// Whether this kernel runs the fast path; why not is logged once.
    pub fn available(&mut self) -> bool {
        let probed = self.probed.get_or_insert_with(|| {
            fastpath::probe().map_err(|e| {
                tracing::warn!(error = %e, "the pod network's fast path is off: the kernel cannot run it");
                e.to_string()
            })
        });
        probed.is_ok()
    }

    /// The program for `cidrs`' IPv4 range on every uplink not yet given it; what failed.
    pub fn sync(&mut self, cidrs: &[IpNet]) -> Vec<String> {
        let cidr = cidrs.iter().find(|c| c.is_ipv4()).map(IpNet::network);
        if cidr != self.cidr {
            self.done.clear();
            self.cidr = cidr;
        }
        let Some(IpNet {
            addr: IpAddr::V4(net),
            prefix,
        }) = cidr
        else {
            return Vec::new();
        };
        let links = match uplinks() {
            Ok(l) => l,
            Err(e) => {
                return vec![format!(
                    "cannot list the node's links for the fast path: {e}"
                )]
            }
        };
        self.done.retain(|i| links.iter().any(|l| l.index == *i));
        let mut problems = Vec::new();
        let todo: Vec<_> = links
            .iter()
            .filter(|l| !self.done.contains(&l.index))
            .collect();
        for l in todo {
            match fastpath::install(&Hop::into_pod(net, prefix), l.index) {
                Ok(()) => {
                    tracing::info!(link = %l.name, pod_cidr = %IpNet { addr: net.into(), prefix }, "fast path on");
                    self.done.insert(l.index);
                }
                Err(e) => problems.push(format!("no fast path on {}: {e}", l.name)),
            }
        }
        problems
    }

    /// Takes the program off every uplink (an add-on took over, or the fast path is off).
    pub fn clear(&mut self) {
        self.done.clear();
        self.cidr = None;
        let Ok(links) = uplinks() else {
            return;
        };
        for l in links {
            match fastpath::remove(l.index) {
                Ok(true) => tracing::info!(link = %l.name, "fast path off"),
                Ok(false) => {}
                Err(e) => tracing::debug!(link = %l.name, error = %e, "take the fast path off"),
            }
        }
    }
}
