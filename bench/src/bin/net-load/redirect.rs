//! The redirect path: the bare pod path's shape again, but its nodes forward with tc BPF programs
//! instead of the IP stack, as a BPF dataplane on veths would. On a node's `cable` ingress, a
//! packet for one of the node's pods goes by `bpf_redirect_peer` straight into the pod's
//! namespace, without a second pass through the backlog; on a pod's host end, a packet the FIB
//! routes elsewhere leaves by `bpf_redirect_neigh` out the cable, without the IP forward. Its ratio
//! to the floor is the ceiling of such a dataplane on this kernel; the gap to the bare path, what
//! the kernel's forwarding costs.

use std::ffi::CString;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};
use skiff_bench::sandbox::spawn_in;

use crate::bare::Bare;
use crate::bpf::{self, Asm, Insn, FP, R0, R1, R2, R3, R4, R6};

const SKB_LOAD_BYTES: i32 = 26;
const FIB_LOOKUP: i32 = 69;
const REDIRECT_NEIGH: i32 = 152;
const REDIRECT_PEER: i32 = 155;

/// `struct __sk_buff` fields.
const SKB_PROTOCOL: i16 = 16;
const SKB_IFINDEX: i16 = 40;

/// `skb->protocol` holds the EtherType in network order.
const ETH_P_IP: i32 = 0x0800u16.to_be() as i32;
const AF_INET: i32 = 2;
/// At tc, packet offsets count from the Ethernet header.
const IP_SADDR: i32 = 14 + 12;

const FIB_LOOKUP_DIRECT: i32 = 1;
/// The pods' own addresses have no neighbour entry on the node when it never forwards to them.
const FIB_LOOKUP_SKIP_NEIGH: i32 = 4;

/// The stack: `struct bpf_fib_lookup` (64 bytes), the packet's source and destination addresses,
/// and `struct bpf_redir_neigh` (20 bytes, 24 zeroed).
const FIB: i16 = -64;
const FIB_IFINDEX: i16 = FIB + 8;
const FIB_SRC: i16 = FIB + 16;
const FIB_DST: i16 = FIB + 32;
const ADDRS: i16 = -72;
const NEIGH: i16 = -96;

const TC_ACT_OK: i32 = 0;

/// What a node's program does with the IPv4 packets it sees.
enum Hop {
    /// On the cable: those for the node's pod range `net`/`mask` (network order) go into the pod.
    IntoPod { net: u32, mask: u32 },
    /// On a pod's host end: those the FIB routes go out by the route's device and next hop.
    OutOfPod,
}

fn program(hop: &Hop) -> Vec<Insn> {
    let mut a = Asm::default();
    let pass = a.label();
    a.mov_reg(R6, R1)
        .load_w(R2, R6, SKB_PROTOCOL)
        .jne32(R2, ETH_P_IP, pass);
    a.mov_reg(R1, R6)
        .mov_imm(R2, IP_SADDR)
        .mov_reg(R3, FP)
        .add_imm(R3, ADDRS.into())
        .mov_imm(R4, 8)
        .call(SKB_LOAD_BYTES)
        .jne(R0, 0, pass);
    if let Hop::IntoPod { net, mask } = *hop {
        a.load_w(R2, FP, ADDRS + 4)
            .and32_imm(R2, mask as i32)
            .jne32(R2, net as i32, pass);
    }
    a.zero_stack(FIB, 64)
        .store_imm_b(FP, FIB, AF_INET)
        .load_w(R2, R6, SKB_IFINDEX)
        .store_w(FP, FIB_IFINDEX, R2)
        .load_w(R2, FP, ADDRS)
        .store_w(FP, FIB_SRC, R2)
        .load_w(R2, FP, ADDRS + 4)
        .store_w(FP, FIB_DST, R2);
    a.mov_reg(R1, R6)
        .mov_reg(R2, FP)
        .add_imm(R2, FIB.into())
        .mov_imm(R3, 64)
        .mov_imm(R4, FIB_LOOKUP_DIRECT | FIB_LOOKUP_SKIP_NEIGH)
        .call(FIB_LOOKUP)
        .jne(R0, 0, pass)
        .load_w(R1, FP, FIB_IFINDEX);
    match hop {
        // The pod's eth0 takes the frame with the cable's addresses in its Ethernet header: the
        // redirect resets its packet type to "to this host", all the IP layer asks.
        Hop::IntoPod { .. } => a.mov_imm(R2, 0).call(REDIRECT_PEER).exit(),
        // The next hop the lookup found, so that the helper need not look the route up again.
        Hop::OutOfPod => a
            .zero_stack(NEIGH, 24)
            .store_imm_w(FP, NEIGH, AF_INET)
            .load_w(R2, FP, FIB_DST)
            .store_w(FP, NEIGH + 4, R2)
            .mov_reg(R2, FP)
            .add_imm(R2, NEIGH.into())
            .mov_imm(R3, 20)
            .mov_imm(R4, 0)
            .call(REDIRECT_NEIGH)
            .exit(),
    };
    a.bind(pass);
    a.mov_imm(R0, TC_ACT_OK).exit();
    a.finish()
}

/// A bare pod path of its own (namespaces `sknbr…`) with the programs on both nodes.
pub fn create() -> Result<Bare> {
    let bare = Bare::create("sknbr")?;
    for side in 0..2 {
        let (net, len) = bare.pod_range(side);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let into_pod = Hop::IntoPod {
            net: u32::from_ne_bytes(net.octets()),
            mask: u32::from_ne_bytes(Ipv4Addr::from(mask).octets()),
        };
        let h = spawn_in(&bare.node_netns(side), move || {
            attach("cable", "skiff_into_pod", &into_pod)?;
            attach("pod", "skiff_out_of_pod", &Hop::OutOfPod)
        })?;
        h.join()
            .map_err(|_| anyhow!("attaching the redirect programs panicked"))??;
    }
    Ok(bare)
}

/// Loads the program for `hop` and attaches it to the ingress of `dev` in this thread's namespace.
fn attach(dev: &str, name: &str, hop: &Hop) -> Result<()> {
    let c = CString::new(dev)?;
    // SAFETY: if_nametoindex reads the NUL-terminated name, which lives across the call.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        bail!("{dev}: {}", std::io::Error::last_os_error());
    }
    let prog = bpf::load_sched_cls(name, &program(hop))?;
    bpf::attach_tcx_ingress(&prog, ifindex)
}
