//! A network namespace for one node, so that what its pods and kube-proxy do to routes and netfilter
//! stays out of the host's: a veth pair to the host (the node's InternalIP on its end, a /30 from
//! 10.219.0.0/16), a route to the apiserver's address and nothing else towards the host, and a sink
//! for the cluster's ranges.
//!
//! The sink is a bridge with no ports: the service and pod ranges are routed into it, so a connection
//! to an address no rule catches goes nowhere (never to the real network), while the route lookup
//! before kube-proxy's DNAT of locally made connections still succeeds, which a blackhole or
//! unreachable route would fail.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

pub struct NodeNetns {
    pub name: String,
    /// The node's address, on its end of the veth pair.
    pub node_ip: Ipv4Addr,
    /// The host's end.
    pub host_ip: Ipv4Addr,
    host_link: String,
}

impl NodeNetns {
    /// A namespace named after `tag` (a few characters) and this process, reaching `apiserver`
    /// through the host, with `sinks` (CIDRs) routed into a port-less bridge.
    pub fn create(tag: &str, apiserver: Ipv4Addr, sinks: &[&str]) -> NodeNetns {
        let pid = std::process::id();
        let name = format!("skiff-{tag}-{pid}");
        let n = pid % 16_000;
        let base = Ipv4Addr::new(10, 219, (n / 64) as u8, ((n % 64) * 4) as u8);
        let at = |k: u32| Ipv4Addr::from(u32::from(base) + k);
        let (host_ip, node_ip) = (at(1), at(2));
        let host_link = format!("sk{tag}h{n}");
        let node_link = format!("sk{tag}n{n}");
        // What a killed run of this process id left behind.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &host_link])
            .output();
        let ns = NodeNetns {
            name,
            node_ip,
            host_ip,
            host_link,
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &node_link,
            "netns",
            &ns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &ns.host_link,
        ]);
        ip(&["link", "set", &ns.host_link, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["addr", "add", &format!("{node_ip}/30"), "dev", &node_link]);
        ns.ip(&["link", "set", &node_link, "up"]);
        ns.ip(&[
            "route",
            "add",
            &format!("{apiserver}/32"),
            "via",
            &host_ip.to_string(),
        ]);
        ns.ip(&["link", "add", "sink", "type", "bridge"]);
        ns.ip(&["link", "set", "sink", "up"]);
        for cidr in sinks {
            ns.ip(&["route", "add", cidr, "dev", "sink"]);
        }
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// `ip <args>` inside the namespace; panics with its error output when it fails.
    pub fn ip(&self, args: &[&str]) {
        run(self.command("ip").args(args));
    }

    /// Writes a sysctl (`net/ipv4/ip_forward`) of the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        run(self
            .command("sh")
            .arg("-c")
            .arg(format!("echo {value} > /proc/sys/{key}")));
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        // Deleting the namespace takes its end of the pair, and with it the host's.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
    }
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

fn run(c: &mut Command) {
    let out = c.output().expect("run a command");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NodeNetns {
    /// Makes `127.0.0.1:port` of the host (a test registry, say) answer on `127.0.0.1:port` inside
    /// the namespace too, for as long as the test process lives: the listening socket is made in the
    /// namespace, every connection to it is relayed from the host's.
    pub fn forward_loopback(&self, port: u16) {
        let listener = self.listen(port);
        std::thread::spawn(move || {
            for inside in listener.incoming().flatten() {
                let Ok(outside) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                    continue;
                };
                relay(inside, outside);
            }
        });
    }

    /// A listener on `127.0.0.1:port` of the namespace, made by a thread that enters it.
    fn listen(&self, port: u16) -> TcpListener {
        let ns = std::fs::File::open(self.path()).expect("open the namespace");
        std::thread::spawn(move || {
            // SAFETY: setns on a namespace file this thread owns; it changes only this short-lived
            // thread's network namespace, which nothing else runs in.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("listen in the namespace")
        })
        .join()
        .expect("the listening thread")
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pipe(a, b2);
    pipe(b, a2);
}
