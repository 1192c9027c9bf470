//! A real Kubernetes control plane on loopback: Debian's etcd, kube-apiserver (bootstrap tokens on),
//! kube-controller-manager (CSR signing and approval, bootstrap signer, token cleaner, node CIDRs) and
//! kube-scheduler as plain processes; PKI, kubeconfigs and what `kubeadm join` reads made by `kubeadm init phase`.
//!
//! Each instance has its own directory under /var/tmp/skiff-test/k8s, its own /32 on `lo` (see [`LoopbackAddr`])
//! and free ports, and nothing listens on a fixed port, so instances run side by side. Dropping it kills the
//! processes and removes the address and the directory; what a test process killed before it could drop its
//! instance left behind is removed when the next instance starts.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::bin;
use super::daemon::Daemon;
use super::loopback::{self, LoopbackAddr};
use super::stale;
use crate::cmd::{self, Output};

/// The pinned version: kubeadm must not ask the internet for the latest one.
pub const VERSION: &str = "v1.28.7";
/// The bootstrap token every instance creates (each instance has its own apiserver, so they do not clash).
pub const TOKEN: &str = "skifft.0123456789abcdef";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Handed out per node by the controller-manager; pods get their addresses from the node's CNI config.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The IPv6 service range of a dual-stack instance ([`ControlPlane::start_dual_stack`]).
pub const SERVICE_CIDR6: &str = "fd00:10:96::/112";
/// The IPv6 pod range of a dual-stack instance, a /64 per node.
pub const POD_CIDR6: &str = "fd00:10:244::/56";
const READY_WITHIN: Duration = Duration::from_secs(90);
const ROOT: &str = "/var/tmp/skiff-test/k8s";

/// What the cluster-wide kubelet configuration (the `kubelet-config` ConfigMap) says beyond kubeadm's defaults.
const KUBELET_CONFIG: &str = "\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
";

/// Alpha in v1.28 and off by default: restartable init containers (sidecars), which skiff's node
/// runs; without the gate the API server drops an init container's `restartPolicy`.
const FEATURE_GATES: &str = "--feature-gates=SidecarContainers=true";

pub struct ControlPlane {
    pub dir: PathBuf,
    /// The advertised (and bound) address of the apiserver, on `lo`.
    pub ip: Ipv4Addr,
    pub port: u16,
    /// etcd's client port on 127.0.0.1.
    pub etcd_port: u16,
    /// Service and pod ranges of both families (IPv4 first).
    pub dual_stack: bool,
    daemons: Vec<Daemon>,
    _addr: LoopbackAddr,
}

impl ControlPlane {
    /// A running control plane whose apiserver is ready and which `kubeadm join` can join.
    pub fn start() -> ControlPlane {
        ControlPlane::start_with(false)
    }

    /// As [`ControlPlane::start`], with IPv4 and IPv6 service and pod ranges.
    pub fn start_dual_stack() -> ControlPlane {
        ControlPlane::start_with(true)
    }

    fn start_with(dual_stack: bool) -> ControlPlane {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        stale::sweep(Path::new(ROOT), |dir, _| {
            let addr = std::fs::read_to_string(dir.join("address")).unwrap_or_default();
            if let Ok(ip) = addr.trim().parse() {
                loopback::release(ip);
            }
            let _ = std::fs::remove_dir_all(dir);
        });
        let dir = Path::new(ROOT).join(format!("{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cmd")).unwrap();
        let addr = LoopbackAddr::claim(u64::from(std::process::id()) * 7 + n);
        std::fs::write(dir.join("address"), addr.ip.to_string()).unwrap();
        let port = free_port(addr.ip);
        let mut cp = ControlPlane {
            dir,
            ip: addr.ip,
            port,
            etcd_port: free_port(Ipv4Addr::LOCALHOST),
            dual_stack,
            daemons: Vec::new(),
            _addr: addr,
        };
        cp.write_kubeadm_config();
        cp.init_phase(&["certs", "all"]);
        cp.init_phase(&["kubeconfig", "all"]);
        // This machine joins as a worker, if at all: the control plane's own kubelet.conf would only mislead.
        let _ = std::fs::remove_file(cp.dir.join("kubelet.conf"));
        cp.start_daemons();
        cp.wait_ready();
        cp.init_phase(&["upload-config", "kubeadm"]);
        cp.upload_kubelet_config();
        cp.init_phase(&["bootstrap-token"]);
        cp
    }

    /// `--service-cluster-ip-range`: one range per family.
    pub fn service_cidrs(&self) -> String {
        match self.dual_stack {
            true => format!("{SERVICE_CIDR},{SERVICE_CIDR6}"),
            false => SERVICE_CIDR.into(),
        }
    }

    /// `--cluster-cidr`: one range per family.
    pub fn pod_cidrs(&self) -> String {
        match self.dual_stack {
            true => format!("{POD_CIDR},{POD_CIDR6}"),
            false => POD_CIDR.into(),
        }
    }

    /// `ip:port` of the apiserver, as `kubeadm join` takes it.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn server_url(&self) -> String {
        format!("https://{}", self.endpoint())
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// A cluster-admin kubeconfig (system:masters).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    /// Arguments for `kubeadm join` of a node named `node` whose runtime listens on `cri_socket` (a path).
    /// The CA is trusted on first use: the test made it a moment ago.
    pub fn join_args(&self, node: &str, cri_socket: &Path) -> Vec<String> {
        [
            "join",
            &self.endpoint(),
            "--token",
            TOKEN,
            "--discovery-token-unsafe-skip-ca-verification",
            "--cri-socket",
            &format!("unix://{}", cri_socket.display()),
            "--node-name",
            node,
            "--ignore-preflight-errors=all",
            "-v=1",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The real `kubectl` as cluster admin, with a deadline.
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.kubectl_within(args, cmd::default_timeout())
    }

    pub fn kubectl_within<S: AsRef<OsStr>>(&self, args: &[S], timeout: Duration) -> Output {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args);
        cmd::run(&mut c, &self.dir.join("cmd"), timeout)
    }

    /// `kubectl` that must succeed; its stdout.
    pub fn kubectl_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.kubectl(args);
        assert!(out.success(), "kubectl failed:{out}");
        out.stdout
    }

    /// Polls `kubectl args` until `done` holds for its output; panics after `within` with the last output.
    pub fn kubectl_until<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        within: Duration,
        done: impl Fn(&Output) -> bool,
    ) -> Output {
        let deadline = Instant::now() + within;
        loop {
            let out = self.kubectl(args);
            if done(&out) {
                return out;
            }
            if Instant::now() > deadline {
                panic!("kubectl did not get there within {within:?}:{out}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `kubeadm init phase <phase…>` with this instance's configuration, and the kubeconfig directory or the
    /// admin kubeconfig where the phase needs one.
    pub fn init_phase(&self, phase: &[&str]) -> Output {
        let mut c = Command::new(bin::path("kubeadm"));
        c.args(["init", "phase"])
            .args(phase)
            .arg("--config")
            .arg(self.dir.join("kubeadm.yaml"));
        match phase.first() {
            Some(&"kubeconfig") => c.arg("--kubeconfig-dir").arg(&self.dir),
            Some(&"upload-config" | &"bootstrap-token" | &"addon") => {
                c.arg("--kubeconfig").arg(self.admin_kubeconfig())
            }
            _ => &mut c,
        };
        let out = cmd::run(&mut c, &self.dir.join("cmd"), Duration::from_secs(60));
        assert!(out.success(), "kubeadm failed:{out}");
        out
    }

    /// `upload-config kubelet` also annotates the control plane's own Node with its CRI socket, and waits for
    /// that Node to exist with its hostname label; this control plane has no kubelet, so a stand-in Node is there
    /// for the moment.
    fn upload_kubelet_config(&self) {
        let node = self.dir.join("control-plane-node.yaml");
        std::fs::write(
            &node,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: skiff-control-plane\n  \
             labels: {kubernetes.io/hostname: skiff-control-plane}\n",
        )
        .unwrap();
        let file = node.display().to_string();
        self.kubectl_ok(&["create", "-f", &file]);
        self.init_phase(&["upload-config", "kubelet"]);
        self.kubectl_ok(&["delete", "-f", &file, "--wait=false"]);
    }

    fn write_kubeadm_config(&self) {
        let config = format!(
            "apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {ip}
  bindPort: {port}
nodeRegistration:
  name: skiff-control-plane
  criSocket: unix:///run/skiff/skiff.sock
bootstrapTokens:
- token: {TOKEN}
  ttl: 2h
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: {VERSION}
clusterName: skiff-test
certificatesDir: {pki}
controlPlaneEndpoint: {ip}:{port}
networking:
  serviceSubnet: {SERVICE_CIDR}
  podSubnet: {POD_CIDR}
etcd:
  external:
    endpoints: [http://127.0.0.1:{etcd}]
---
{KUBELET_CONFIG}",
            ip = self.ip,
            port = self.port,
            pki = self.pki().display(),
            etcd = self.etcd_port,
        );
        std::fs::write(self.dir.join("kubeadm.yaml"), config).unwrap();
    }

    fn start_daemons(&mut self) {
        let etcd = self.etcd(self.etcd_port, free_port(Ipv4Addr::LOCALHOST));
        self.daemons.push(etcd);
        let apiserver = self.apiserver(self.etcd_port);
        self.daemons.push(apiserver);
        let cm = self.controller_manager();
        self.daemons.push(cm);
        let sched = self.scheduler();
        self.daemons.push(sched);
    }

    fn etcd(&self, port: u16, peer: u16) -> Daemon {
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let mut c = Command::new(bin::etcd());
        c.arg("--name=skiff")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=skiff={peer}"));
        Daemon::spawn("etcd", &mut c, &self.dir)
    }

    fn apiserver(&self, etcd_port: u16) -> Daemon {
        let pki = |f: &str| self.pki().join(f).display().to_string();
        let mut c = Command::new(bin::path("kube-apiserver"));
        c.args([
            format!("--advertise-address={}", self.ip),
            format!("--bind-address={}", self.ip),
            format!("--secure-port={}", self.port),
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            format!("--client-ca-file={}", pki("ca.crt")),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!(
                "--kubelet-client-certificate={}",
                pki("apiserver-kubelet-client.crt")
            ),
            format!(
                "--kubelet-client-key={}",
                pki("apiserver-kubelet-client.key")
            ),
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            format!("--proxy-client-cert-file={}", pki("front-proxy-client.crt")),
            format!("--proxy-client-key-file={}", pki("front-proxy-client.key")),
            format!(
                "--requestheader-client-ca-file={}",
                pki("front-proxy-ca.crt")
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            format!("--service-cluster-ip-range={}", self.service_cidrs()),
            FEATURE_GATES.into(),
        ]);
        Daemon::spawn("kube-apiserver", &mut c, &self.dir)
    }

    fn controller_manager(&self) -> Daemon {
        let pki = |f: &str| self.pki().join(f).display().to_string();
        let kubeconfig = self.dir.join("controller-manager.conf");
        let mut c = Command::new(bin::path("kube-controller-manager"));
        c.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
            format!("--cluster-signing-cert-file={}", pki("ca.crt")),
            format!("--cluster-signing-key-file={}", pki("ca.key")),
            format!("--root-ca-file={}", pki("ca.crt")),
            format!("--service-account-private-key-file={}", pki("sa.key")),
            "--use-service-account-credentials=true".into(),
            "--allocate-node-cidrs=true".into(),
            format!("--cluster-cidr={}", self.pod_cidrs()),
            format!("--service-cluster-ip-range={}", self.service_cidrs()),
            FEATURE_GATES.into(),
        ]);
        if self.dual_stack {
            c.args([
                "--node-cidr-mask-size-ipv4=24",
                "--node-cidr-mask-size-ipv6=64",
            ]);
        }
        Daemon::spawn("kube-controller-manager", &mut c, &self.dir)
    }

    fn scheduler(&self) -> Daemon {
        let kubeconfig = self.dir.join("scheduler.conf");
        let mut c = Command::new(bin::path("kube-scheduler"));
        c.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            FEATURE_GATES.into(),
        ]);
        Daemon::spawn("kube-scheduler", &mut c, &self.dir)
    }

    /// Until the apiserver's /readyz answers ok (its post-start hooks, RBAC bootstrap included, have run).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let out = self.kubectl_within(&["get", "--raw=/readyz"], Duration::from_secs(10));
            if out.success() && out.stdout.trim() == "ok" {
                return;
            }
            for d in &mut self.daemons {
                d.assert_running();
            }
            if Instant::now() > deadline {
                let api = &self.daemons[1];
                panic!(
                    "kube-apiserver not ready within {READY_WITHIN:?}:{out}\n{}",
                    api.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The end of each component's log, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}\n", d.name, d.log_tail(20)))
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.daemons.clear();
        if std::env::var_os("SKIFF_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port nothing listens on right now at `ip`.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}
