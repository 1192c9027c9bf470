//! skiff-cni: CNI specification types, the `skiff-bridge` plugin
//! (bridge + veth + host-local compatible IPAM + nftables NAT over netlink),
//! and the runtime-side library that loads network configs and runs plugins.

pub mod fastpath;
pub mod ipam;
pub mod ipnet;
pub mod libcni;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod spec;
