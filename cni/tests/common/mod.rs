//! Shared fixtures for the root-run CNI tests: network namespaces made and
//! removed by the test, plugin invocation inside a "node" netns, and TCP
//! probes run from inside a namespace.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const BRIDGE: &str = env!("CARGO_BIN_EXE_skiff-bridge");
pub const REF_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique, short name for this test process.
/// A listener on `addr`. The previous listener on it may still be open for a moment after its
/// thread closed it: a plugin that another test forked in between holds a copy of every
/// descriptor until it execs (close-on-exec closes them only then).
fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.expect("bind"),
        }
    }
}

pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("sk{}{}{}", tag, std::process::id() % 100_000, n)
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace owned by the test, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = unique(tag);
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Ns { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    pub fn output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawn");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            // SAFETY: setns affects only this freshly spawned thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns failed");
            f()
        })
    }

    /// Listens on `addr` and answers one connection with the peer's address.
    pub fn serve_once(&self, addr: &str) -> std::thread::JoinHandle<Option<SocketAddr>> {
        let addr: SocketAddr = addr.parse().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel();
        let h = self.run(move || {
            let l = bind(addr);
            tx.send(()).ok();
            l.set_nonblocking(false).ok();
            let (mut s, peer) = l.accept().ok()?;
            s.write_all(peer.to_string().as_bytes()).ok()?;
            Some(peer)
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("listener up");
        h
    }

    /// Connects to `addr` from inside the namespace; returns what the server
    /// said (the address it saw us as).
    pub fn connect(&self, addr: &str) -> Result<String, String> {
        let addr: SocketAddr = addr.parse().expect("addr");
        self.run(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            let mut buf = String::new();
            s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
            Ok(buf)
        })
        .join()
        .expect("connect thread")
    }

    pub fn ping(&self, ip: &str) -> bool {
        Command::new("ip")
            .args([
                "netns", "exec", &self.name, "ping", "-c", "1", "-W", "2", ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair between two namespaces with an address on each end.
pub fn wire(a: &Ns, a_ip: &str, b: &Ns, b_ip: &str) {
    let (an, bn) = (unique("wa"), unique("wb"));
    a.ip(&[
        "link", "add", &an, "type", "veth", "peer", "name", &bn, "netns", &b.name,
    ]);
    a.ip(&["addr", "add", a_ip, "dev", &an]);
    b.ip(&["addr", "add", b_ip, "dev", &bn]);
    a.ip(&["link", "set", &an, "up"]);
    b.ip(&["link", "set", &bn, "up"]);
}

pub struct Call<'a> {
    pub plugin: &'a str,
    pub node: &'a Ns,
    pub cmd: &'a str,
    pub id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
}

/// Invokes a plugin inside the node namespace, as a runtime on that node would.
pub fn invoke(c: &Call<'_>, stdin: &[u8]) -> Output {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &c.node.name, c.plugin])
        .env("CNI_COMMAND", c.cmd)
        .env("CNI_CONTAINERID", c.id)
        .env("CNI_NETNS", c.netns)
        .env("CNI_IFNAME", c.ifname)
        .env("CNI_PATH", REF_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("plugin output")
}

/// skiff-bridge's `cmd` on `eth0` of `netns`, as `node`'s runtime would call it; its output, whatever it is.
pub fn call(
    node: &Ns,
    cmd: &str,
    id: &str,
    netns: &str,
    stdin: &serde_json::Value,
) -> std::process::Output {
    let c = Call {
        plugin: BRIDGE,
        node,
        cmd,
        id,
        netns,
        ifname: "eth0",
    };
    invoke(&c, stdin.to_string().as_bytes())
}

pub fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "plugin failed: stdout={} stderr={}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The plugin failed, with an error whose message contains `msg`.
pub fn refused(out: &Output, msg: &str) {
    assert!(!out.status.success(), "not refused: {msg}");
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(err["msg"].as_str().unwrap().contains(msg), "{err}");
}

pub fn add(node: &Ns, pod: &Ns, id: &str, conf: &serde_json::Value) -> serde_json::Value {
    let c = Call {
        plugin: BRIDGE,
        node,
        cmd: "ADD",
        id,
        netns: &pod.path(),
        ifname: "eth0",
    };
    ok_json(&invoke(&c, conf.to_string().as_bytes()))
}

pub fn del(node: &Ns, pod: &Ns, id: &str, conf: &serde_json::Value) {
    let c = Call {
        plugin: BRIDGE,
        node,
        cmd: "DEL",
        id,
        netns: &pod.path(),
        ifname: "eth0",
    };
    ok_json(&invoke(&c, conf.to_string().as_bytes()));
}

pub fn pod_ip(result: &serde_json::Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("address");
    a.split('/').next().unwrap_or_default().to_string()
}
