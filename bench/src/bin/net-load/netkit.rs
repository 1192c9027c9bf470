//! Whether this kernel can make a netkit pair: the one kind of link whose BPF program can hand a
//! pod's packet straight to the node's uplink, so that a pod path would cross no more veth than the
//! floor does. Asked of the kernel itself, with a RTM_NEWLINK of kind `netkit` in a namespace of
//! the bench's own.

use std::path::Path;

use anyhow::{anyhow, Result};
use skiff_bench::sandbox::spawn_in;
use skiff_cni::netlink::{link, Msg, Socket, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};

const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NAME: &str = "sknbnk0";

/// "available", or why not (the kernel's answer).
pub fn probe(netns: &Path) -> Result<String> {
    let h = spawn_in(netns, || {
        let mut s = Socket::route()?;
        let made = s.request("create netkit", |seq| {
            Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
                .raw(&[0; 16])
                .str(IFLA_IFNAME, NAME)
                .begin(IFLA_LINKINFO)
                .str(IFLA_INFO_KIND, "netkit")
                .end()
                .finish(seq)
        });
        Ok(match made {
            Ok(()) => {
                link::delete_by_name(&mut s, NAME)?;
                "available".to_string()
            }
            Err(e) => format!("not available: {e}"),
        })
    })?;
    h.join().map_err(|_| anyhow!("the netkit probe panicked"))?
}
