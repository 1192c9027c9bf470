//! The fast path of routed pods: two tc programs on tcx ingress that forward below the IP stack
//! the packets of TCP connections conntrack has seen established and does not NAT. On a pod's host
//! end (`skiff-bridge`, `fastPath`), what the pod sends leaves by the route's device without the
//! node's IP forward; on the node's uplinks (skiffd), what comes for the node's pods enters the
//! pod's namespace directly. Everything else — the handshake of every connection (so a policy
//! add-on's FORWARD rules decide on it), every packet of a connection conntrack NATs (Services,
//! hostPorts, masquerade), UDP, ICMP, IPv6, fragments — goes through the stack as before. Needs
//! tcx (Linux 6.6) and conntrack's BPF kfuncs in the kernel's BTF.
//!
//! | module | what it is |
//! |---|---|
//! | `asm` | the eBPF assembler |
//! | `btf` | the conntrack kfuncs' ids and `nf_conn.status` from the kernel's BTF |
//! | `program` | the two programs |
//! | `tcx` | load, attach, list, detach |

pub mod asm;
pub mod btf;
pub mod program;
pub mod tcx;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

pub use program::Hop;

/// The programs' names, by which they are found again on a device.
pub const INTO_POD: &str = "skiff_into_pod";
pub const OUT_OF_POD: &str = "skiff_out_pod";

#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("the kernel's BTF: {0}")]
    Btf(String),
    #[error("load BPF program {name}: {err}\n{log}")]
    Load {
        name: String,
        err: std::io::Error,
        log: String,
    },
    #[error("no link {0}")]
    NoLink(String),
    #[error("{op} BPF program on the tcx ingress of link {ifindex}: {err}")]
    Attach {
        op: &'static str,
        ifindex: u32,
        err: std::io::Error,
    },
}

impl Hop {
    /// On an uplink of the node whose IPv4 pod CIDR is `net`/`prefix`.
    pub fn into_pod(net: Ipv4Addr, prefix: u8) -> Hop {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        Hop::IntoPod {
            net: u32::from_ne_bytes((u32::from(net) & mask).to_be_bytes()),
            mask: u32::from_ne_bytes(mask.to_be_bytes()),
        }
    }

    /// On the host end of the pod whose IPv4 address is `pod`.
    pub fn out_of_pod(pod: Ipv4Addr) -> Hop {
        Hop::OutOfPod {
            pod: u32::from_ne_bytes(pod.octets()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Hop::IntoPod { .. } => INTO_POD,
            Hop::OutOfPod { .. } => OUT_OF_POD,
        }
    }
}

/// The program for `hop`, loaded (the conntrack-aware one).
pub fn load(hop: &Hop) -> Result<OwnedFd, FastPathError> {
    let ct = btf::conntrack()?;
    tcx::load(hop.name(), &program::program(hop, Some(&ct)))
}

/// Whether this kernel runs the fast path: its program loads (and is dropped again), and the
/// loopback device's tcx ingress can be listed (tcx came after conntrack's kfuncs).
pub fn probe() -> Result<(), FastPathError> {
    load(&Hop::out_of_pod(Ipv4Addr::UNSPECIFIED))?;
    tcx::attached(LOOPBACK).map(drop)
}

/// The loopback device's index in every network namespace.
const LOOPBACK: u32 = 1;

/// Puts the program for `hop` on the ingress of device `ifindex` (in this thread's network
/// namespace) in place of ours already there: the new one goes on first, so no packet finds none.
pub fn install(hop: &Hop, ifindex: u32) -> Result<(), FastPathError> {
    let old = ours(ifindex)?;
    tcx::attach(&load(hop)?, ifindex)?;
    for prog in old {
        tcx::detach(&prog, ifindex)?;
    }
    Ok(())
}

/// Takes ours off device `ifindex`; whether there was one.
pub fn remove(ifindex: u32) -> Result<bool, FastPathError> {
    let old = ours(ifindex)?;
    for prog in &old {
        tcx::detach(prog, ifindex)?;
    }
    Ok(!old.is_empty())
}

/// The names of the programs on the ingress of the device called `dev` in this thread's network
/// namespace.
pub fn programs_on(dev: &str) -> Result<Vec<String>, FastPathError> {
    let name = std::ffi::CString::new(dev).map_err(|_| FastPathError::NoLink(dev.to_string()))?;
    // SAFETY: if_nametoindex reads the NUL-terminated name, which lives across the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(FastPathError::NoLink(dev.to_string()));
    }
    Ok(tcx::attached(ifindex)?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}

fn ours(ifindex: u32) -> Result<Vec<OwnedFd>, FastPathError> {
    Ok(tcx::attached(ifindex)?
        .into_iter()
        .filter(|(_, name)| name == INTO_POD || name == OUT_OF_POD)
        .map(|(fd, _)| fd)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_pod_keeps_the_range_in_network_order() {
        let Hop::IntoPod { net, mask } = Hop::into_pod(Ipv4Addr::new(10, 244, 1, 7), 24) else {
            panic!("not into_pod");
        };
        assert_eq!(net.to_ne_bytes(), [10, 244, 1, 0]);
        assert_eq!(mask.to_ne_bytes(), [255, 255, 255, 0]);
        let Hop::IntoPod { mask, .. } = Hop::into_pod(Ipv4Addr::UNSPECIFIED, 0) else {
            panic!("not into_pod");
        };
        assert_eq!(mask, 0);
        let Hop::OutOfPod { pod } = Hop::out_of_pod(Ipv4Addr::new(10, 244, 1, 7)) else {
            panic!("not out_of_pod");
        };
        assert_eq!(pod.to_ne_bytes(), [10, 244, 1, 7]);
    }

    #[test]
    fn both_programs_assemble_with_and_without_conntrack() {
        let ct = btf::Conntrack {
            lookup: 1,
            release: 2,
            change_timeout: 3,
            status: 128,
        };
        let pod = Ipv4Addr::new(10, 0, 0, 2);
        for hop in [
            Hop::out_of_pod(pod),
            Hop::into_pod(Ipv4Addr::new(10, 0, 0, 0), 8),
        ] {
            let plain = program::program(&hop, None);
            let tracked = program::program(&hop, Some(&ct));
            assert!(tracked.len() > plain.len());
        }
    }
}
