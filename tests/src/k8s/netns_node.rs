//! Skiff nodes that each live in a network namespace of their own, on one L2 segment: a [`Lan`] (a
//! namespace holding a bridge, with a veth to the host over which the nodes reach the control plane
//! on `lo`) and [`NetnsNode`]s (a namespace each, a veth into the lan's bridge, an InternalIP of
//! the lan's subnet), joined by [`join`] with skiffd running inside the node's namespace.
//!
//! Nothing addressed to the cluster's pod or service ranges can leave: the lan has no default
//! route, and both the lan and every node route those ranges into a sink (a bridge without ports;
//! a blackhole route would make kube-proxy's DNAT of locally made connections fail before it runs).
//! The host sees only its end of the lan's veth and a route to the lan's subnet.
//!
//! Each lan claims a /24 of 10.227.0.0/16 by creating its namespace (`sknetl<k>`, which fails if
//! taken); nodes are `sknet<k>n<i>` at 10.227.<k>.<10+i>/25, the lan's bridge is 10.227.<k>.1 (an
//! address "outside the cluster" for pods), the host end 10.227.<k>.129/30. Dropping a lan deletes
//! its namespaces and with them every veth; what a killed test left is swept by the next one.
//!
//! A dual-stack lan ([`Lan::create_dual_stack`]) adds fd00:227:<k>::/64 on the same segment: the
//! bridge is fd00:227:<k>::1, node `i` fd00:227:<k>::<10+i>; no IPv6 route leads to the host, and
//! the IPv6 pod and service ranges go into the sinks too.
//!
//! A cabled lan ([`Lan::create_cabled`], two nodes) also joins nodes 0 and 1 by one veth pair of
//! their own (`cable0`, no address), with a /32 route to the other's InternalIP over it: between
//! the two nodes, their InternalIPs and (host-gw) their pods' traffic crosses one veth pair, as two
//! real nodes' NICs on one link would; the bridge still carries the way to the control plane and
//! the outside.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::control_plane::{POD_CIDR, POD_CIDR6, SERVICE_CIDR, SERVICE_CIDR6};
use super::skiff_node::{self, Joined, NodeDir};
use super::{stale, ControlPlane, Daemon};

const ROOT: &str = "/var/tmp/skiff-test/netns";

/// `ip ARGS`, which must succeed; its stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`/run/netns/<name>`), deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates it with `lo` up; `None` if the name is taken.
    fn create(name: &str) -> Option<Netns> {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .expect("run ip")
            .status
            .success();
        ok.then(|| {
            let ns = Netns { name: name.into() };
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        })
    }

    /// `ip -n <name> ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Makes `cmd` run inside this namespace.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let file = std::fs::File::open(self.path()).expect("open the netns file");
        // SAFETY: setns is async-signal-safe; the fd stays open in the closure, which owns it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// A command to run inside this namespace, through `ip netns exec`.
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered this namespace: sockets made there belong to it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("open the netns file");
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an fd that is open.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread in the netns")
    }

    /// Adds a bridge without ports and routes the cluster's pod and service ranges into it.
    fn sink(&self) {
        self.ip(&["link", "add", "sink0", "type", "bridge"]);
        self.ip(&["link", "set", "sink0", "up"]);
        for range in [POD_CIDR, SERVICE_CIDR] {
            self.ip(&["route", "add", range, "dev", "sink0"]);
        }
    }

    /// The IPv6 pod and service ranges into the sink as well.
    fn sink6(&self) {
        for range in [POD_CIDR6, SERVICE_CIDR6] {
            self.ip(&["-6", "route", "add", range, "dev", "sink0"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The shared L2 segment and the way from it to the control plane.
pub struct Lan {
    pub k: u8,
    pub ns: Netns,
    /// The bridge's address: on the lan, outside the cluster.
    pub gateway: Ipv4Addr,
    /// The bridge's IPv6 address, on a dual-stack lan.
    pub gateway6: Option<Ipv6Addr>,
    /// Nodes 0 and 1 joined by a cable of their own.
    cabled: bool,
    dir: PathBuf,
}

impl Lan {
    /// A lan from which `cp`'s apiserver is reachable.
    pub fn create(cp: &ControlPlane) -> Lan {
        Lan::create_with(cp, false, false)
    }

    /// A lan whose segment and nodes have IPv6 addresses too.
    pub fn create_dual_stack(cp: &ControlPlane) -> Lan {
        Lan::create_with(cp, true, false)
    }

    /// A lan of two nodes that reach each other over one veth pair of their own (see the module).
    pub fn create_cabled(cp: &ControlPlane) -> Lan {
        Lan::create_with(cp, false, true)
    }

    fn create_with(cp: &ControlPlane, ipv6: bool, cabled: bool) -> Lan {
        sweep();
        let seed = std::process::id() as usize;
        let (k, ns) = (0..250usize)
            .map(|i| ((seed + i) % 250) as u8)
            // A lan whose sockets outlive it (see `forward`) keeps its host link until they close.
            .filter(|k| !Path::new(&format!("/sys/class/net/sknetlh{k}")).exists())
            .find_map(|k| Netns::create(&format!("sknetl{k}")).map(|ns| (k, ns)))
            .expect("a free 10.227.<k>.0/24");
        let dir = Path::new(ROOT).join(format!("{}-{k}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lan"), k.to_string()).unwrap();
        let lan = Lan {
            k,
            ns,
            gateway: Ipv4Addr::new(10, 227, k, 1),
            gateway6: ipv6.then(|| lan_ip6(k, 1)),
            cabled,
            dir,
        };
        lan.wire(cp);
        if let Some(gw) = lan.gateway6 {
            lan.ns
                .ip(&["addr", "add", &format!("{gw}/64"), "dev", "br0", "nodad"]);
            lan.ns.sink6();
        }
        lan
    }

    fn wire(&self, cp: &ControlPlane) {
        let k = self.k;
        let ns = &self.ns;
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{}/25", self.gateway), "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        let host = format!("sknetlh{k}");
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "up0", "netns", &ns.name,
        ]);
        ip(&["addr", "add", &format!("10.227.{k}.129/30"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ns.ip(&["addr", "add", &format!("10.227.{k}.130/30"), "dev", "up0"]);
        ns.ip(&["link", "set", "up0", "up"]);
        ip(&[
            "route",
            "add",
            &format!("10.227.{k}.0/25"),
            "via",
            &format!("10.227.{k}.130"),
        ]);
        ns.ip(&[
            "route",
            "add",
            &format!("{}/32", cp.ip),
            "via",
            &format!("10.227.{k}.129"),
        ]);
        ns.sink();
        let fwd = ns.exec("sysctl");
        run_ok(fwd, &["-qw", "net.ipv4.ip_forward=1"]);
    }

    /// The InternalIP of node `i`.
    pub fn node_ip(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 227, self.k, 10 + i)
    }

    /// The IPv6 InternalIP of node `i`, on a dual-stack lan.
    pub fn node_ip6(&self, i: u8) -> Option<Ipv6Addr> {
        self.gateway6.map(|_| lan_ip6(self.k, 10 + u16::from(i)))
    }

    /// Node `i`'s namespace on this lan: a veth into the bridge, its address, a default route via the
    /// lan, the sink.
    pub fn node(&self, i: u8) -> Netns {
        let ns = Netns::create(&format!("sknet{}n{i}", self.k)).expect("the node's netns is free");
        let port = format!("v{i}");
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/25", self.node_ip(i)),
            "dev",
            "eth0",
        ]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &self.gateway.to_string()]);
        ns.sink();
        if let Some(ip6) = self.node_ip6(i) {
            ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
            ns.sink6();
        }
        if self.cabled {
            assert!(i < 2, "a cabled lan has two nodes");
            if i == 1 {
                self.cable(&ns);
            }
        }
        ns
    }

    /// One veth pair between node 0 and node 1 (`ns`), each one's InternalIP routed over it from
    /// the other. Made before node 1's skiffd starts: skiffd's routes to the pod CIDRs via the
    /// InternalIPs take the device the InternalIP is routed through when they are added.
    fn cable(&self, ns: &Netns) {
        let first = format!("sknet{}n0", self.k);
        ns.ip(&[
            "link", "add", "cable0", "type", "veth", "peer", "name", "cable0", "netns", &first,
        ]);
        for (netns, peer) in [(ns.name.as_str(), 0), (first.as_str(), 1)] {
            let dst = format!("{}/32", self.node_ip(peer));
            ip(&["-n", netns, "link", "set", "cable0", "up"]);
            ip(&["-n", netns, "route", "add", &dst, "dev", "cable0"]);
        }
    }

    /// `host_port` on the host's 127.0.0.1 reachable from the lan at the returned address, for
    /// as long as the test process runs (a registry, say): the listener keeps the lan's namespace
    /// alive until then.
    pub fn forward(&self, host_port: u16) -> SocketAddr {
        let gw = self.gateway;
        let listener = self
            .ns
            .run(move || TcpListener::bind((gw, 0)).expect("bind on the lan"));
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Ok(up) = TcpStream::connect((Ipv4Addr::LOCALHOST, host_port)) {
                    splice(conn, up);
                }
            }
        });
        addr
    }

    /// A listener at the lan's gateway address; each connection is answered with `ok` and its peer's
    /// address sent on the returned channel.
    pub fn listen(&self) -> (SocketAddr, std::sync::mpsc::Receiver<SocketAddr>) {
        self.listen_at(self.gateway.into())
    }

    /// As [`Lan::listen`], at `gw`, an address of the lan's bridge.
    pub fn listen_at(&self, gw: IpAddr) -> (SocketAddr, std::sync::mpsc::Receiver<SocketAddr>) {
        let listener = self
            .ns
            .run(move || TcpListener::bind((gw, 0)).expect("bind on the lan"));
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let peer = conn.peer_addr();
                let _ = conn.write_all(b"ok\n");
                if let Ok(p) = peer {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        (addr, rx)
    }
}

/// fd00:227:<k>::<host>.
fn lan_ip6(k: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x227, u16::from(k), 0, 0, 0, 0, host)
}

fn splice(a: TcpStream, b: TcpStream) {
    let pairs = [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)];
    for (mut from, mut to) in pairs {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

fn run_ok(mut c: Command, args: &[&str]) {
    let out = c.args(args).output().expect("run a command in a netns");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Lan {
    fn drop(&mut self) {
        remove_nodes(self.k);
        if std::env::var_os("SKIFF_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes the node namespaces of lan `k` (the lan's own goes with its [`Netns`]).
fn remove_nodes(k: u8) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let prefix = format!("sknet{k}n");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// Removes the namespaces of lans whose test process is gone.
fn sweep() {
    stale::sweep(Path::new(ROOT), |dir, _| {
        if let Ok(k) = std::fs::read_to_string(dir.join("lan")) {
            if let Ok(k) = k.trim().parse::<u8>() {
                remove_nodes(k);
                let _ = Command::new("ip")
                    .args(["netns", "del", &format!("sknetl{k}")])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// A skiff node joined from its own namespace.
pub struct NetnsNode {
    /// Dropped before the namespace: skiffd and its pods go first.
    pub joined: Joined,
    pub ns: Netns,
    pub ip: Ipv4Addr,
    /// The IPv6 InternalIP, on a dual-stack lan.
    pub ip6: Option<Ipv6Addr>,
}

/// Joins node `i` of `lan` to `cp` as `name`: its own namespace, directories and CNI conf dir (with
/// no network config: skiffd writes its own once the node has a pod CIDR), images of
/// `registry.skiff.test` and `registry.k8s.io` pulled through `registry` (an address on the lan, see
/// [`Lan::forward`]). On a dual-stack lan the node's `--node-ip` names both of its addresses.
pub fn join(
    cp: &ControlPlane,
    lan: &Lan,
    i: u8,
    name: &str,
    registry: Option<&str>,
    config_extra: &str,
) -> NetnsNode {
    let ns = lan.node(i);
    let node = NodeDir::with_registry(registry);
    let _ = std::fs::remove_file(node.dir.join("net.d/10-pods.conflist"));
    if let Some(r) = registry {
        mirror_cluster_images(&node, r);
    }
    let ip = lan.node_ip(i);
    let spawn = |n: &NodeDir, args: &[String]| -> Daemon {
        let mut c = n.kubelet(args);
        ns.enter_on_exec(&mut c);
        Daemon::spawn("skiffd", &mut c, &n.dir)
    };
    let ip6 = lan.node_ip6(i);
    let extra: Vec<String> = ip6
        .map(|v6| format!("--node-ip={ip},{v6}"))
        .into_iter()
        .collect();
    let joined = skiff_node::join_with(cp, node, name, &extra, config_extra, ip.into(), &spawn);
    NetnsNode {
        joined,
        ns,
        ip,
        ip6,
    }
}

/// Pulls of `registry.k8s.io/…` (kubeadm's kube-proxy, say) and `docker.io/…` go to `registry`
/// too, where `scripts/cluster-images` and `scripts/lab-images` push the cluster's own images and
/// the lab's (`busybox`, `nginx` by their usual names).
fn mirror_cluster_images(node: &NodeDir, registry: &str) {
    let file = node.dir.join("registries.toml");
    let mut text = std::fs::read_to_string(&file).expect("the node's registries file");
    for host in ["registry.k8s.io", "docker.io"] {
        text.push_str(&format!(
            "[registries.\"{host}\"]\nmirrors = [\"http://{registry}\"]\n"
        ));
    }
    std::fs::write(&file, text).expect("write the node's registries file");
}

impl NetnsNode {
    /// Starts skiffd again in the node's namespace, with the command line it had (after
    /// [`Joined::stop`]).
    pub fn restart(&mut self) {
        let mut c = self.joined.node.kubelet(&self.joined.args);
        self.ns.enter_on_exec(&mut c);
        self.joined.skiffd = Daemon::spawn("skiffd", &mut c, &self.joined.node.dir);
    }

    /// The CNI conf dir skiffd reads.
    pub fn conf_dir(&self) -> PathBuf {
        self.joined.node.dir.join("net.d")
    }

    /// `ip route show` in the node's namespace.
    pub fn routes(&self) -> String {
        self.ns.ip(&["route", "show"])
    }

    /// `ip -6 route show` in the node's namespace.
    pub fn routes6(&self) -> String {
        self.ns.ip(&["-6", "route", "show"])
    }
}

/// Waits up to `within` for `f`.
pub fn eventually(what: &str, within: Duration, f: impl FnMut() -> bool) {
    let mut f = f;
    skiff_node::wait_for(what, within, || f().then_some(()));
}

/// What a command run in a pod's container printed, and how it ended.
#[derive(Debug)]
pub struct Exec {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

impl NetnsNode {
    /// Runs `cmd` in the first container of pod `pod` on this node, through skiffd's CRI socket
    /// (`ExecSync`): the node's streaming server is inside its namespace, its socket is not.
    pub fn exec(&self, pod: &str, cmd: &[&str]) -> Exec {
        let socket = self.joined.node.socket();
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the CRI client");
        rt.block_on(async move {
            use cri_api::v1 as cri;
            let ch = crate::cri::connect(&socket)
                .await
                .expect("connect to skiffd");
            let mut c = cri::runtime_service_client::RuntimeServiceClient::new(ch);
            let filter = cri::ContainerFilter {
                label_selector: [("io.kubernetes.pod.name".to_string(), pod.to_string())].into(),
                ..Default::default()
            };
            let list = c
                .list_containers(cri::ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .expect("list containers")
                .into_inner();
            let id = list
                .containers
                .iter()
                .find(|c| c.state == cri::ContainerState::ContainerRunning as i32)
                .map(|c| c.id.clone())
                .unwrap_or_else(|| panic!("no running container of pod {pod}"));
            let r = c
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 30,
                })
                .await
                .expect("exec in the pod")
                .into_inner();
            Exec {
                exit_code: r.exit_code,
                stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            }
        })
    }
}

/// The Node `name` as JSON (`Null` while the API server does not have it).
pub fn node_json(cp: &ControlPlane, name: &str) -> serde_json::Value {
    skiff_node::get_json(cp, &["node", name]).unwrap_or(serde_json::Value::Null)
}

/// Waits until the Node `name`'s condition `t` satisfies `ok`; the condition's JSON.
pub fn condition_until(
    cp: &ControlPlane,
    name: &str,
    t: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let found = (0..120).find_map(|_| {
        last = skiff_node::condition(&node_json(cp, name), t);
        if ok(&last) {
            return Some(last.clone());
        }
        std::thread::sleep(Duration::from_millis(500));
        None
    });
    found.unwrap_or_else(|| panic!("node {name}: condition {t} never got there; last: {last}"))
}

/// `kubectl apply` of `manifest`.
pub fn apply(cp: &ControlPlane, manifest: &str) {
    let file = cp.dir.join(format!("m-{}.yaml", manifest.len()));
    std::fs::write(&file, manifest).expect("manifest written");
    cp.kubectl_ok(&["apply", "-f", &file.to_string_lossy()]);
}

/// A busybox pod `ns/name` on `node` running `cmd`, allowed to ping; its JSON once it runs.
pub fn net_pod(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    node: &str,
    cmd: &str,
) -> serde_json::Value {
    let image = crate::cri::BUSYBOX;
    apply(
        cp,
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {image}
    command: [sh, -c, '{cmd}']
    securityContext: {{capabilities: {{add: [NET_RAW]}}}}
"
        ),
    );
    skiff_node::wait_for(
        &format!("pod {name} running"),
        Duration::from_secs(120),
        || {
            let p = skiff_node::get_json(cp, &["-n", ns, "pod", name])?;
            (p["status"]["phase"] == "Running").then_some(p)
        },
    )
}
