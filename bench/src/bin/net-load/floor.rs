//! The floor: two network namespaces joined by one veth pair, nothing else on the path.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::netns::{ip, Namespaces};
use crate::tcp::End;

/// Both namespaces, deleted (and the veth with them) when dropped.
pub struct Floor {
    _ns: Namespaces,
    pub ends: [End; 2],
}

impl Floor {
    pub fn create() -> Result<Floor> {
        let pid = std::process::id();
        let ns = Namespaces::create(&[format!("sknbf{pid}a"), format!("sknbf{pid}b")])?;
        let addrs = [Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)];
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            ns.name(0),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(1),
        ])?;
        for (i, a) in addrs.iter().enumerate() {
            let n = ns.name(i);
            ip(&["-n", n, "addr", "add", &format!("{a}/30"), "dev", "eth0"])?;
            ip(&["-n", n, "link", "set", "eth0", "up"])?;
        }
        Ok(Floor {
            ends: [0, 1].map(|i| End {
                netns: ns.path(i),
                ip: addrs[i],
            }),
            _ns: ns,
        })
    }
}
