//! A worker node joined with the stock kubelet: `kubeadm join` against a [`ControlPlane`], then the kubelet
//! kubeadm configured, on a CRI socket of the test's choosing.
//!
//! Nothing of the host's is written. kubeadm insists on /etc/kubernetes and /var/lib/kubelet, and the kubelet
//! keeps its device-plugin socket in /var/lib/kubelet whatever its root dir, so both run in private mount
//! namespaces where /etc and /var/lib are overlays (with an /etc/hosts naming the node, so nothing asks a DNS
//! server) and the node's own directories are bind-mounted at those two paths. The kubelet's `--root-dir` is
//! a shared mount under the node's directory, so the volumes it mounts for pods propagate to the host's mount
//! namespace, where the runtime bind-mounts them into containers. Its pods get their own `--cgroup-root`, it
//! serves on free ports and leaves iptables alone. Without systemd, kubeadm's `systemctl` calls fail
//! harmlessly; the kubelet is started here once kubeadm has written its flags, and `kubeadm join` then
//! finishes when the TLS bootstrap has. Pod log directories stay where the runtime writes them, /var/log/pods.
//!
//! Drop the runtime (and so its containers) before the node: the node then removes the kubelet's cgroups.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::bin;
use super::cgroup_root::CgroupRoot;
use super::control_plane::{free_port, ControlPlane};
use super::daemon::Daemon;
use super::netns_node::Netns;
use super::stale;

const JOIN_WITHIN: Duration = Duration::from_secs(120);
const ROOT: &str = "/var/tmp/skiff-test/k8s-node";

/// The kubelet's `--cgroup-root` of the node whose directory is named `id`.
fn cgroup_name(id: &str) -> String {
    format!("skiff-test-kubelet-{id}")
}

pub struct KubeletNode {
    pub name: String,
    pub dir: PathBuf,
    /// The kubelet's serving port (the apiserver's way in for logs, exec and port-forward).
    pub port: u16,
    /// When the kubelet was started (after kubeadm had written its flags).
    pub started: Instant,
    kubelet: Option<Daemon>,
    cgroups: CgroupRoot,
    /// The network namespace kubeadm and the kubelet run in, and the node's address there.
    netns: Option<(PathBuf, std::net::Ipv4Addr)>,
}

impl KubeletNode {
    /// Joins `name` to `cp` with the runtime on `cri_socket`; returns once `kubeadm join` has succeeded.
    pub fn join(cp: &ControlPlane, name: &str, cri_socket: &Path) -> KubeletNode {
        Self::join_with(cp, name, cri_socket, &[])
    }

    /// [`KubeletNode::join`] with more kubelet flags (`--feature-gates=…`, …).
    pub fn join_with(
        cp: &ControlPlane,
        name: &str,
        cri_socket: &Path,
        kubelet_args: &[&str],
    ) -> KubeletNode {
        Self::join_on(cp, name, cri_socket, kubelet_args, None)
    }

    /// [`KubeletNode::join_with`] with kubeadm and the kubelet inside `netns`, where the node's
    /// address (its InternalIP, and where the kubelet serves) is `ip`.
    pub fn join_in_netns(
        cp: &ControlPlane,
        name: &str,
        cri_socket: &Path,
        kubelet_args: &[&str],
        netns: &Netns,
        ip: std::net::Ipv4Addr,
    ) -> KubeletNode {
        Self::join_on(cp, name, cri_socket, kubelet_args, Some((netns.path(), ip)))
    }

    fn join_on(
        cp: &ControlPlane,
        name: &str,
        cri_socket: &Path,
        kubelet_args: &[&str],
        netns: Option<(PathBuf, std::net::Ipv4Addr)>,
    ) -> KubeletNode {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        stale::sweep(Path::new(ROOT), |dir, id| {
            crate::host::unmount_below(dir);
            let _ = std::fs::remove_dir_all(dir);
            CgroupRoot::remove(&cgroup_name(id));
        });
        let id = format!("{}-{n}", std::process::id());
        let dir = Path::new(ROOT).join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "etc-kubernetes/manifests",
            "var-lib-kubelet",
            "root",
            "volume-plugins",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut node = KubeletNode {
            name: name.into(),
            port: free_port(cp.ip),
            cgroups: CgroupRoot::create(&cgroup_name(&id)),
            started: Instant::now(),
            kubelet: None,
            netns,
            dir,
        };
        node.share_root_dir();
        node.write_hosts(cp);
        let mut join = node.start_join(cp, cri_socket);
        node.wait_for_flags(&mut join);
        node.kubelet = Some(node.start_kubelet(cp, kubelet_args));
        node.started = Instant::now();
        node.wait_joined(join);
        node
    }

    /// Polls until the Node reports Ready.
    pub fn wait_ready(&mut self, cp: &ControlPlane, within: Duration) {
        let deadline = Instant::now() + within;
        let jsonpath = "-o=jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        loop {
            let out = cp.kubectl(&["get", "node", &self.name, jsonpath]);
            if out.success() && out.stdout.trim() == "True" {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "node {} not Ready within {within:?}:{out}\nkubelet:\n{}",
                self.name,
                self.kubelet_log(40)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Panics with the kubelet's log when it has exited.
    pub fn assert_running(&mut self) {
        if let Some(k) = &mut self.kubelet {
            k.assert_running();
        }
    }

    /// Ends the kubelet, so that the runtime's pods can be removed without it starting them again.
    pub fn stop_kubelet(&mut self) {
        self.kubelet = None;
    }

    /// The kubelet's pid while it runs.
    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.as_ref().map(Daemon::pid)
    }

    pub fn kubelet_log(&self, lines: usize) -> String {
        self.kubelet
            .as_ref()
            .map(|k| k.log_tail(lines))
            .unwrap_or_default()
    }

    /// The kubelet's root dir as a mount point of its own, shared: what the kubelet mounts below it in its
    /// namespace appears in the host's.
    fn share_root_dir(&self) {
        let root = self.dir.join("root");
        let root = root.to_str().unwrap();
        crate::cmd::host(&self.dir, "mount", &["--bind", root, root]);
        crate::cmd::host(&self.dir, "mount", &["--make-shared", root]);
    }

    fn write_hosts(&self, cp: &ControlPlane) {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let line = format!("{} {}", cp.ip, self.name);
        std::fs::write(self.dir.join("hosts"), format!("{hosts}\n{line}\n")).unwrap();
    }

    /// `program args…` in a mount namespace of its own (named `tag`) with the node's view of /etc/kubernetes,
    /// /var/lib/kubelet and /etc/hosts.
    fn in_node_namespace(&self, tag: &str, program: &Path) -> Command {
        for sub in ["etc-up", "etc-work", "lib-up", "lib-work"] {
            std::fs::create_dir_all(self.dir.join("ns").join(tag).join(sub)).unwrap();
        }
        let script = r#"set -e
d=$1; ns=$d/ns/$2; shift 2
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ns/etc-up,workdir=$ns/etc-work" /etc
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$ns/lib-up,workdir=$ns/lib-work" /var/lib
mkdir -p /etc/kubernetes /var/lib/kubelet
mount --bind "$d/etc-kubernetes" /etc/kubernetes
mount --bind "$d/var-lib-kubelet" /var/lib/kubelet
cat "$d/hosts" > /etc/hosts
exec "$@""#;
        let mut c = Command::new("unshare");
        // The host's / is private, so the overlays stay here; the shared root dir stays shared.
        c.args([
            "--mount",
            "--propagation",
            "unchanged",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&self.dir)
        .arg(tag)
        .arg(program);
        if let Some((netns, _)) = &self.netns {
            let file = std::fs::File::open(netns).expect("open the node's netns file");
            // SAFETY: setns is async-signal-safe; the closure owns the fd, open until the exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }

    /// The node's address: in its network namespace, or the control plane's own.
    fn ip(&self, cp: &ControlPlane) -> std::net::Ipv4Addr {
        self.netns.as_ref().map_or(cp.ip, |(_, ip)| *ip)
    }

    fn start_join(&self, cp: &ControlPlane, cri_socket: &Path) -> Daemon {
        let mut c = self.in_node_namespace("kubeadm", &bin::path("kubeadm"));
        c.args(cp.join_args(&self.name, cri_socket));
        Daemon::spawn("kubeadm-join", &mut c, &self.dir)
    }

    /// Until kubeadm has written the kubelet's flags (after its configuration).
    fn wait_for_flags(&self, join: &mut Daemon) {
        let deadline = Instant::now() + JOIN_WITHIN;
        while self.kubeadm_flags().is_none() {
            join.assert_running();
            assert!(
                Instant::now() < deadline,
                "kubeadm join wrote no kubelet flags:\n{}",
                join.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The arguments in kubeadm-flags.env, once it is complete.
    fn kubeadm_flags(&self) -> Option<Vec<String>> {
        let env =
            std::fs::read_to_string(self.dir.join("var-lib-kubelet/kubeadm-flags.env")).ok()?;
        let value = env
            .lines()
            .find_map(|l| l.strip_prefix("KUBELET_KUBEADM_ARGS=\""))?
            .strip_suffix('"')?;
        Some(value.split_whitespace().map(String::from).collect())
    }

    fn start_kubelet(&self, cp: &ControlPlane, extra: &[&str]) -> Daemon {
        let mut c = self.in_node_namespace("kubelet", &bin::path("kubelet"));
        c.args([
            "--config=/var/lib/kubelet/config.yaml",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
        ])
        .arg(format!("--root-dir={}", self.dir.join("root").display()))
        .arg(format!(
            "--volume-plugin-dir={}",
            self.dir.join("volume-plugins").display()
        ))
        .args(self.kubeadm_flags().unwrap_or_default())
        .arg("--cgroup-driver=cgroupfs")
        .arg(format!("--cgroup-root={}", self.cgroups.path))
        .arg(format!("--hostname-override={}", self.name))
        .arg(format!("--node-ip={}", self.ip(cp)))
        .arg(format!("--address={}", self.ip(cp)))
        .arg(format!("--port={}", self.port))
        .arg(format!(
            "--healthz-port={}",
            free_port(std::net::Ipv4Addr::LOCALHOST)
        ))
        .arg("--make-iptables-util-chains=false")
        .arg("--fail-swap-on=false")
        // A shared test machine's disk may be fuller than the default 10 % free: no evictions for that.
        .arg("--eviction-hard=memory.available<50Mi,nodefs.available<1%,imagefs.available<1%")
        .args(extra);
        Daemon::spawn("kubelet", &mut c, &self.dir)
    }

    fn wait_joined(&mut self, mut join: Daemon) {
        let deadline = Instant::now() + JOIN_WITHIN;
        loop {
            if let Some(code) = join.exit_code() {
                assert_eq!(
                    code,
                    0,
                    "kubeadm join failed:\n{}\nkubelet:\n{}",
                    join.log_tail(30),
                    self.kubelet_log(30)
                );
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "kubeadm join did not finish:\n{}\nkubelet:\n{}",
                join.log_tail(30),
                self.kubelet_log(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        self.kubelet = None;
        crate::host::unmount_below(&self.dir);
        if std::env::var_os("SKIFF_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
