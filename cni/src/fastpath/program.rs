//! The fast path's two programs, for a device's tcx ingress: on a node's uplink the one that hands
//! packets for the node's pods straight into the pod's namespace (`bpf_redirect_peer`, no second
//! pass through the backlog, no IP forward), and on a routed pod's host end the one that sends
//! what the pod sends out by the route's device and next hop (`bpf_redirect_neigh`, no IP
//! forward). Anything they do not take goes on through the stack as before.

use super::asm::{Asm, Insn, Label, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8};
use super::btf::Conntrack;

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
const TCP: i32 = 6;

/// The pods' own addresses have no neighbour entry on the node when it never forwards to them.
const FIB_LOOKUP_SKIP_NEIGH: i32 = 4;

/// The stack: the packet's IPv4 header (20 bytes: no options) and the first 14 of its TCP header,
/// copied from the Ethernet payload; `struct bpf_fib_lookup` (64 bytes); `struct bpf_redir_neigh`
/// (20 bytes, 24 zeroed); `struct bpf_ct_opts` (16 bytes).
const PKT: i16 = -40;
const PKT_LEN: i32 = 34;
/// At tc, packet offsets count from the Ethernet header.
const ETH_LEN: i32 = 14;
/// Source and destination address, then source and destination port: `struct bpf_sock_tuple`'s
/// IPv4 form, in the packet's own order.
const PKT_TUPLE: i16 = PKT + 12;
const PKT_DST: i16 = PKT + 16;
const PKT_TCP_FLAGS: i16 = PKT + 20 + 13;
const FIB: i16 = -104;
const FIB_IFINDEX: i16 = FIB + 8;
const FIB_SRC: i16 = FIB + 16;
const FIB_DST: i16 = FIB + 32;
const NEIGH: i16 = -128;
const CT_OPTS: i16 = -144;

const TC_ACT_OK: i32 = 0;

/// `nf_conn.status` bits.
const IPS_ASSURED: i32 = 1 << 2;
const IPS_NAT: i32 = (1 << 4) | (1 << 5);
const TCP_FIN: i32 = 0x01;
const TCP_SYN: i32 = 0x02;
const TCP_RST: i32 = 0x04;
/// What conntrack itself gives a connection after its FIN (`TIME_WAIT`) and after its RST (`CLOSE`),
/// in milliseconds: a flow whose packets bypass conntrack must still end in its table.
const AFTER_FIN_MS: i32 = 120_000;
const AFTER_RST_MS: i32 = 10_000;

/// What a node's program does with the IPv4 packets it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// On a node's uplink: those for the node's pod range `net`/`mask` (network order) go into
    /// the pod.
    IntoPod { net: u32, mask: u32 },
    /// On a routed pod's host end: those the pod at `pod` (network order) sends from its own
    /// address that the FIB routes go out by the route's device and next hop. Any other source
    /// is left to the stack and its checks, so a pod cannot slip a forged packet into another's
    /// connection past the node's rules.
    OutOfPod { pod: u32 },
}

/// The program for `hop`. With `ct`, only the packets of TCP connections conntrack has seen
/// established and does not NAT take the short way ([`tracked`]); without, every IPv4 packet the
/// FIB routes does — which skips the node's netfilter altogether (its NAT and its filter rules),
/// so it is only for measuring what the short way itself costs.
pub fn program(hop: &Hop, ct: Option<&Conntrack>) -> Vec<Insn> {
    let mut a = Asm::default();
    let pass = a.label();
    a.mov_reg(R6, R1)
        .load_w(R2, R6, SKB_PROTOCOL)
        .jne32(R2, ETH_P_IP, pass);
    a.mov_reg(R1, R6)
        .mov_imm(R2, ETH_LEN)
        .mov_reg(R3, FP)
        .add_imm(R3, PKT.into())
        .mov_imm(R4, PKT_LEN)
        .call(SKB_LOAD_BYTES)
        .jne(R0, 0, pass);
    match *hop {
        Hop::IntoPod { net, mask } => a
            .load_w(R2, FP, PKT_DST)
            .and32_imm(R2, mask as i32)
            .jne32(R2, net as i32, pass),
        Hop::OutOfPod { pod } => a.load_w(R2, FP, PKT_TUPLE).jne32(R2, pod as i32, pass),
    };
    if let Some(ct) = ct {
        tracked(&mut a, ct, pass);
    }
    a.zero_stack(FIB, 64)
        .store_imm_b(FP, FIB, AF_INET)
        .load_w(R2, R6, SKB_IFINDEX)
        .store_w(FP, FIB_IFINDEX, R2)
        .load_w(R2, FP, PKT_TUPLE)
        .store_w(FP, FIB_SRC, R2)
        .load_w(R2, FP, PKT_DST)
        .store_w(FP, FIB_DST, R2);
    a.mov_reg(R1, R6)
        .mov_reg(R2, FP)
        .add_imm(R2, FIB.into())
        .mov_imm(R3, 64)
        .mov_imm(R4, FIB_LOOKUP_SKIP_NEIGH)
        .call(FIB_LOOKUP)
        .jne(R0, 0, pass)
        .load_w(R1, FP, FIB_IFINDEX);
    match hop {
        // The pod's eth0 takes the frame with the cable's addresses in its Ethernet header: the
        // redirect resets its packet type to "to this host", all the IP layer asks.
        Hop::IntoPod { .. } => a.mov_imm(R2, 0).call(REDIRECT_PEER).exit(),
        // The next hop the lookup found, so that the helper need not look the route up again.
        Hop::OutOfPod { .. } => a
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

/// Leaves to the stack every packet but those of a TCP connection conntrack has seen established
/// (`ASSURED`) and does not NAT: the handshake crosses the node's netfilter (its FORWARD rules, a
/// policy add-on's among them, decide on it), and so does every packet of a Service's or a
/// hostPort's connection, whose addresses conntrack rewrites. A FIN or RST that takes the short
/// way gives the connection the timeout conntrack would have given it.
fn tracked(a: &mut Asm, ct: &Conntrack, pass: Label) {
    let release = a.label();
    let closing = a.label();
    a.load_b(R2, FP, PKT)
        .jne32(R2, 0x45, pass)
        .load_b(R2, FP, PKT + 9)
        .jne32(R2, TCP, pass)
        // Fragment offset or more-fragments set (network order, read as a little-endian u16).
        .load_w(R2, FP, PKT + 4)
        .jset(R2, 0xff3f_0000u32 as i32, pass);
    a.zero_stack(CT_OPTS, 16)
        .store_imm_w(FP, CT_OPTS, -1)
        .store_imm_b(FP, CT_OPTS + 8, TCP)
        .mov_reg(R1, R6)
        .mov_reg(R2, FP)
        .add_imm(R2, PKT_TUPLE.into())
        .mov_imm(R3, 12)
        .mov_reg(R4, FP)
        .add_imm(R4, CT_OPTS.into())
        .mov_imm(R5, 16)
        .call_kfunc(ct.lookup)
        .jeq(R0, 0, pass)
        .mov_reg(R7, R0)
        .mov_imm(R8, 0)
        .load_dw(R2, R7, ct.status)
        .jset(R2, IPS_NAT, release)
        .and_imm(R2, IPS_ASSURED)
        .jeq(R2, 0, release)
        .load_b(R2, FP, PKT_TCP_FLAGS)
        .jset(R2, TCP_SYN, release)
        .mov_imm(R8, 1)
        .jset(R2, TCP_FIN | TCP_RST, closing)
        .ja(release);
    let fin = a.label();
    a.bind(closing);
    a.mov_reg(R1, R7)
        .and_imm(R2, TCP_RST)
        .jeq(R2, 0, fin)
        .mov_imm(R2, AFTER_RST_MS)
        .call_kfunc(ct.change_timeout)
        .ja(release);
    a.bind(fin);
    a.mov_imm(R2, AFTER_FIN_MS).call_kfunc(ct.change_timeout);
    a.bind(release);
    a.mov_reg(R1, R7).call_kfunc(ct.release).jeq(R8, 0, pass);
}
