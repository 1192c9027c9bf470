//! The floor: two network namespaces joined by one veth pair, nothing else on the path.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::tcp::End;

/// Both namespaces, deleted (and the veth with them) when dropped.
pub struct Floor {
    names: [String; 2],
    pub ends: [End; 2],
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Floor {
    pub fn create() -> Result<Floor> {
        let pid = std::process::id();
        let names = [format!("sknbf{pid}a"), format!("sknbf{pid}b")];
        let addrs = [Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)];
        let floor = Floor {
            ends: [0, 1].map(|i| End {
                netns: Path::new("/run/netns").join(&names[i]),
                ip: addrs[i],
            }),
            names: names.clone(),
        };
        for n in &names {
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", "eth0", "netns", &names[0], "type", "veth", "peer", "name", "eth0",
            "netns", &names[1],
        ])?;
        for (n, a) in names.iter().zip(addrs) {
            ip(&["-n", n, "addr", "add", &format!("{a}/30"), "dev", "eth0"])?;
            ip(&["-n", n, "link", "set", "eth0", "up"])?;
        }
        Ok(floor)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}
