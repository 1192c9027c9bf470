//! The redirect path: the bare pod path's shape again, but its nodes forward with tc BPF programs
//! instead of the IP stack, as a BPF dataplane on veths would. On a node's `cable` ingress, a
//! packet for one of the node's pods goes by `bpf_redirect_peer` straight into the pod's
//! namespace, without a second pass through the backlog; on a pod's host end, a packet the FIB
//! routes elsewhere leaves by `bpf_redirect_neigh` out the cable, without the IP forward. Its ratio
//! to the floor is the ceiling of such a dataplane on this kernel; the gap to the bare path, what
//! the kernel's forwarding costs.

use std::ffi::CString;

use anyhow::{anyhow, bail, Result};
use skiff_bench::sandbox::spawn_in;
use skiff_cni::fastpath::asm::Insn;
use skiff_cni::fastpath::program::program;
use skiff_cni::fastpath::{btf, tcx, Hop, INTO_POD, OUT_OF_POD};

use crate::bare::Bare;
use crate::netns::ip;

/// A bare pod path of its own (namespaces `PREFIX…`) with the programs on both nodes; `tracked`:
/// the programs that consult conntrack, and conntrack on in the nodes (a masquerade rule for what
/// leaves the pods' ranges, as a skiff node has).
pub fn create(prefix: &str, tracked: bool) -> Result<Bare> {
    let bare = Bare::create(prefix)?;
    let ct = if tracked {
        Some(btf::conntrack()?)
    } else {
        None
    };
    for side in 0..2 {
        let (net, len) = bare.pod_range(side);
        let into_pod = Hop::into_pod(net, len);
        let out_of_pod = Hop::out_of_pod(bare.ends[side].ip);
        if tracked {
            masquerade(&bare, side)?;
        }
        let h = spawn_in(&bare.node_netns(side), move || {
            attach("cable", INTO_POD, &program(&into_pod, ct.as_ref()))?;
            attach("pod", OUT_OF_POD, &program(&out_of_pod, ct.as_ref()))
        })?;
        h.join()
            .map_err(|_| anyhow!("attaching the redirect programs panicked"))??;
    }
    Ok(bare)
}

fn masquerade(bare: &Bare, side: usize) -> Result<()> {
    let ns = bare.node_netns(side);
    let name = ns
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: no namespace name", ns.display()))?;
    let rules = "add table ip bench; \
                 add chain ip bench post { type nat hook postrouting priority srcnat; }; \
                 add rule ip bench post ip saddr 10.98.0.0/16 ip daddr != 10.98.0.0/16 masquerade";
    ip(&["netns", "exec", name, "nft", rules])
}

/// Loads `prog` and attaches it to the ingress of `dev` in this thread's namespace.
fn attach(dev: &str, name: &str, prog: &[Insn]) -> Result<()> {
    let c = CString::new(dev)?;
    // SAFETY: if_nametoindex reads the NUL-terminated name, which lives across the call.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        bail!("{dev}: {}", std::io::Error::last_os_error());
    }
    let prog = tcx::load(name, prog)?;
    Ok(tcx::attach(&prog, ifindex)?)
}
