//! A /32 on `lo` for a control plane to advertise: kubeadm refuses 127.0.0.1 as an advertise address and the
//! kubelet refuses a 127/8 node IP. The addresses come from TEST-NET-3 (203.0.113.0/24, RFC 5737), which no real
//! network routes; each instance claims its own (adding an address that is already there fails, so two tests
//! never share one) and removes it when dropped.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

pub struct LoopbackAddr {
    pub ip: Ipv4Addr,
}

impl LoopbackAddr {
    /// Claims a free address, starting from one derived from `seed` so concurrent test processes spread out.
    pub fn claim(seed: u64) -> LoopbackAddr {
        for i in 0..253u64 {
            let ip = Ipv4Addr::new(203, 0, 113, 1 + ((seed + i) % 253) as u8);
            let out = ip_addr("add", ip);
            if out.status.success() {
                return LoopbackAddr { ip };
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("exists"), "ip addr add {ip}/32 dev lo: {err}");
        }
        panic!("every address of 203.0.113.0/24 is on lo already");
    }
}

fn ip_addr(verb: &str, ip: Ipv4Addr) -> Output {
    Command::new("ip")
        .args(["addr", verb, &format!("{ip}/32"), "dev", "lo"])
        .output()
        .expect("run ip")
}

impl Drop for LoopbackAddr {
    fn drop(&mut self) {
        let _ = ip_addr("del", self.ip);
    }
}
