//! A worker node for tests: its directories ([`NodeDir`]: what kubeadm writes, what skiffd keeps,
//! `kubelet` as a link to skiffd), `kubeadm join` run in a private mount namespace ([`spawn_join`]),
//! and [`join`], which does both and starts skiffd as the node's kubelet.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::control_plane::free_port;
use super::{bin, ControlPlane, Daemon};
use crate::cri::{self, target_bin};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A node's directories: what kubeadm writes, what skiffd keeps, and `kubelet` as a link to skiffd.
pub struct NodeDir {
    pub dir: PathBuf,
    /// The bridge of its pod network, removed with the node.
    bridge: String,
}

impl Default for NodeDir {
    fn default() -> NodeDir {
        NodeDir::new()
    }
}

impl NodeDir {
    pub fn new() -> NodeDir {
        Self::with_registry(None)
    }

    /// A node whose skiffd pulls `registry.skiff.test/…` from the test registry at `registry` (host:port).
    pub fn with_registry(registry: Option<&str>) -> NodeDir {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/node/{}-{n}",
            std::process::id()
        ));
        cri::cleanup(&dir);
        for d in ["etc-kubernetes", "var-lib-kubelet", "net.d", "bin", "ns"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(target_bin("skiffd"), dir.join("bin/kubelet")).unwrap();
        let bins = target_bin("skiffd");
        let bin_dir = bins.parent().unwrap();
        let subnet = format!("10.213.{}.0/24", (std::process::id() as u32 + n) % 250);
        let bridge = format!("skn{}", (std::process::id() + n) % 100_000);
        // A bridge left by a node of an earlier run on this subnet would take its traffic.
        remove_bridges_on(&subnet);
        std::fs::write(
            dir.join("net.d/10-pods.conflist"),
            cri::bridge_conflist(&bridge, &subnet, &dir.join("ipam")),
        )
        .unwrap();
        std::fs::write(
            dir.join("skiffd.toml"),
            format!(
                "socket = \"{d}/skiff.sock\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\n\
                 image_root = \"{d}/images\"\nmonitor = \"{bin}/skiff-monitor\"\n\
                 registries = \"{d}/registries.toml\"\n\
                 [cni]\nconf_dir = \"{d}/net.d\"\nbin_dirs = [\"{bin}\"]\ncache_dir = \"{d}/cni-cache\"\n\
                 {pod_network}",
                d = dir.display(),
                bin = bin_dir.display(),
                pod_network = pod_network_line(),
            ),
        )
        .unwrap();
        let mirrors = registry
            .map(|r| format!("[registries.\"registry.skiff.test\"]\nmirrors = [\"http://{r}\"]\n"))
            .unwrap_or_default();
        std::fs::write(dir.join("registries.toml"), mirrors).unwrap();
        NodeDir { dir, bridge }
    }

    pub fn etc(&self, f: &str) -> PathBuf {
        self.dir.join("etc-kubernetes").join(f)
    }

    pub fn var(&self, f: &str) -> PathBuf {
        self.dir.join("var-lib-kubelet").join(f)
    }

    /// The cgroup (below every hierarchy's root) this node's `kubepods` goes under, so that nodes of
    /// tests running side by side keep their pod cgroups apart.
    pub fn cgroup_root(&self) -> String {
        let tail = self.dir.file_name().unwrap_or_default().to_string_lossy();
        format!("skiff-node-{tail}")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("skiff.sock")
    }

    /// The node's `podLogsDir`: its own, not the host's /var/log/pods, where a kubelet running on
    /// the same host removes every pod directory of pods it does not know (its container GC).
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }

    /// `kubelet` with the flags kubeadm's drop-in passes, its paths redirected to this node's
    /// directories, and skiffd's own configuration.
    pub fn kubelet(&self, extra: &[String]) -> Command {
        let kubelet = self.dir.join("bin/kubelet");
        let mut c = Command::new(kubelet);
        c.arg(format!(
            "--bootstrap-kubeconfig={}",
            self.etc("bootstrap-kubelet.conf").display()
        ))
        .arg(format!(
            "--kubeconfig={}",
            self.etc("kubelet.conf").display()
        ))
        .arg(format!("--config={}", self.var("config.yaml").display()))
        .arg(format!("--root-dir={}", self.var("").display()))
        .arg(format!(
            "--skiffd-config={}",
            self.dir.join("skiffd.toml").display()
        ))
        .args(extra);
        c
    }

    /// Runs `kubelet` to its exit; (success, stdout, stderr).
    pub fn run_kubelet(&self, extra: &[String]) -> (bool, String, String) {
        let out = self
            .kubelet(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run kubelet");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn spawn(&self, extra: &[String]) -> Daemon {
        Daemon::spawn("skiffd", &mut self.kubelet(extra), &self.dir)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("skiffd.log")).unwrap_or_default()
    }

    /// A KubeletConfiguration as kubeadm writes it, for the tests that do not join.
    pub fn write_config(&self, healthz_port: u16) {
        std::fs::write(
            self.var("config.yaml"),
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 cgroupDriver: cgroupfs\nhealthzBindAddress: 127.0.0.1\nhealthzPort: {healthz_port}\n\
                 rotateCertificates: true\nnodeStatusReportFrequency: 0s\nport: {}\n",
                free_port(Ipv4Addr::UNSPECIFIED)
            ),
        )
        .unwrap();
    }
}

/// Deletes the test nodes' bridges (`skn…`) that hold an address of `subnet` (`a.b.c.0/24`).
fn remove_bridges_on(subnet: &str) {
    let prefix = subnet.trim_end_matches("0/24");
    let Ok(out) = Command::new("ip").args(["-br", "-4", "addr"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let name = f.next().unwrap_or_default();
        if name.starts_with("skn") && f.skip(1).any(|a| a.starts_with(prefix)) {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// `SKIFF_POD_NETWORK=bridge|routed` picks the pod network skiffd writes for itself and
/// `SKIFF_FAST_PATH=0` turns its fast path off (benchmarks compare them); unset, skiffd's defaults.
fn pod_network_line() -> String {
    let mut lines = std::env::var("SKIFF_POD_NETWORK")
        .map(|m| format!("pod_network = \"{m}\"\n"))
        .unwrap_or_default();
    if std::env::var("SKIFF_FAST_PATH").is_ok_and(|v| v == "0") {
        lines.push_str("fast_path = false\n");
    }
    lines
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        if std::env::var_os("SKIFF_TEST_KEEP").is_some() {
            // The directory goes with the node's mounts; its log stays beside it.
            let _ = std::fs::copy(
                self.dir.join("skiffd.log"),
                self.dir.with_extension("skiffd.log"),
            );
        }
        cri::cleanup(&self.dir);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        super::cgroup_root::CgroupRoot::remove(&self.cgroup_root());
    }
}

/// `kubeadm join`, running; killed when dropped.
pub struct Join {
    child: std::process::Child,
    log: PathBuf,
}

impl Join {
    /// `Some(success)` once it has exited.
    pub fn exited(&mut self) -> Option<bool> {
        self.child.try_wait().unwrap().map(|st| st.success())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Join {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubeadm join` in a mount namespace where /etc/kubernetes and /var/lib/kubelet are `node`'s.
pub fn spawn_join(cp: &ControlPlane, node: &NodeDir, name: &str) -> Join {
    let d = node.dir.display();
    let ns = node.dir.join("ns");
    for sub in ["etc-up", "etc-work", "lib-up", "lib-work"] {
        std::fs::create_dir_all(ns.join(sub)).unwrap();
    }
    // The node's name resolves locally: nothing asks a DNS server.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    std::fs::write(
        node.dir.join("hosts"),
        format!("{hosts}\n{} {name}\n", cp.ip),
    )
    .unwrap();
    let args: Vec<String> = cp
        .join_args(name, &node.socket())
        .into_iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/ns/etc-up,workdir={d}/ns/etc-work /etc
mkdir -p /etc/kubernetes && mount --bind {d}/etc-kubernetes /etc/kubernetes
mount -t overlay overlay -o lowerdir=/var/lib,upperdir={d}/ns/lib-up,workdir={d}/ns/lib-work /var/lib
mkdir -p /var/lib/kubelet && mount --bind {d}/var-lib-kubelet /var/lib/kubelet
cat {d}/hosts > /etc/hosts
exec {kubeadm} {args}",
        kubeadm = bin::path("kubeadm").display(),
        args = args.join(" "),
    );
    let log = node.dir.join("kubeadm-join.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start kubeadm join");
    Join { child, log }
}

/// The value of `KUBELET_KUBEADM_ARGS` in kubeadm-flags.env, split as systemd splits it.
pub fn kubeadm_flags(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("KUBELET_KUBEADM_ARGS="))
        .expect("KUBELET_KUBEADM_ARGS");
    line.trim_matches('"')
        .split_whitespace()
        .map(String::from)
        .collect()
}

pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn get_json(cp: &ControlPlane, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = cp.kubectl(&a);
    out.success()
        .then(|| serde_json::from_str(&out.stdout).unwrap())
}

pub fn condition(node: &Value, t: &str) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
        .unwrap_or(Value::Null)
}

/// Waits for the KubeletConfiguration `kubeadm join` writes and adapts it to this machine: the
/// client CA at the node's copy (kubeadm names /etc/kubernetes, which is the node's directory only
/// inside the join's mount namespace), the kubelet API on a free port (returned), `extra` appended.
pub fn localize_config(node: &NodeDir, extra: &str) -> u16 {
    let config = node.var("config.yaml");
    let text = wait_for("config.yaml", Duration::from_secs(30), || {
        std::fs::read_to_string(&config)
            .ok()
            .filter(|t| t.contains("kind:"))
    });
    let cgroup_root = if extra.contains("cgroupRoot:") {
        String::new()
    } else {
        format!("cgroupRoot: /{}\n", node.cgroup_root())
    };
    let pod_logs = if extra.contains("podLogsDir:") {
        String::new()
    } else {
        format!("podLogsDir: {}\n", node.pod_logs().display())
    };
    // A scalar field the test sets replaces kubeadm's (YAML forbids a key twice).
    let keys: Vec<&str> = extra
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .filter(|k| !k.starts_with(' ') && !k.is_empty())
        .collect();
    let text: String = text
        .lines()
        .filter(|l| {
            !keys
                .iter()
                .any(|k| l.strip_prefix(k).is_some_and(|r| r.starts_with(": ")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replace(
        "/etc/kubernetes/pki/ca.crt",
        &node.etc("pki/ca.crt").display().to_string(),
    );
    let port = free_port(Ipv4Addr::UNSPECIFIED);
    std::fs::write(
        &config,
        format!("{text}\nport: {port}\n{cgroup_root}{pod_logs}{extra}\n"),
    )
    .unwrap();
    port
}

/// A node joined by `kubeadm join`, Ready, with skiffd running as its kubelet.
pub struct Joined {
    pub skiffd: Daemon,
    /// When skiffd was started (after kubeadm had written its flags).
    pub started: Instant,
    /// The port of its kubelet API (HTTPS, on every address).
    pub kubelet_port: u16,
    pub name: String,
    /// skiffd's command line: kubeadm's flags and the test's.
    pub args: Vec<String>,
    pub node: NodeDir,
}

impl Joined {
    /// Stops skiffd (SIGTERM) and waits for it to exit; its containers keep running.
    pub fn stop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.skiffd.pid() as i32, libc::SIGTERM) };
        self.skiffd.wait();
    }

    /// Starts skiffd again with the same command line.
    pub fn restart(&mut self) {
        self.skiffd = self.node.spawn(&self.args);
    }
}

/// Joins `node` to `cp` as `name`: `kubeadm join`, then skiffd with kubeadm's flags plus `extra`,
/// the KubeletConfiguration kubeadm wrote extended by `config_extra`; returns once the node is Ready.
pub fn join(
    cp: &ControlPlane,
    node: NodeDir,
    name: &str,
    extra: &[String],
    config_extra: &str,
) -> Joined {
    let spawn = |n: &NodeDir, args: &[String]| n.spawn(args);
    join_with(cp, node, name, extra, config_extra, cp.ip.into(), &spawn)
}

/// [`join`] with the node's InternalIP and the way skiffd is started (in a network namespace, say)
/// of the caller's choosing.
pub fn join_with(
    cp: &ControlPlane,
    node: NodeDir,
    name: &str,
    extra: &[String],
    config_extra: &str,
    node_ip: IpAddr,
    spawn: &dyn Fn(&NodeDir, &[String]) -> Daemon,
) -> Joined {
    let mut kubeadm = spawn_join(cp, &node, name);
    let flags_env = node.var("kubeadm-flags.env");
    let env = wait_for("kubeadm-flags.env", Duration::from_secs(120), || {
        assert!(
            kubeadm.exited().is_none(),
            "kubeadm join exited:\n{}",
            kubeadm.log()
        );
        std::fs::read_to_string(&flags_env)
            .ok()
            .filter(|t| t.contains("KUBELET_KUBEADM_ARGS"))
    });
    let mut args = kubeadm_flags(&env);
    args.push(format!("--node-ip={node_ip}"));
    args.push(format!("--healthz-port={}", free_port(Ipv4Addr::LOCALHOST)));
    args.extend(extra.iter().cloned());
    let kubelet_port = localize_config(&node, config_extra);
    let mut skiffd = spawn(&node, &args);
    let started = Instant::now();
    let ok = wait_for("kubeadm join to finish", Duration::from_secs(180), || {
        skiffd.assert_running();
        kubeadm.exited()
    });
    assert!(
        ok,
        "kubeadm join failed:\n{}\n{}",
        kubeadm.log(),
        node.log()
    );
    wait_for("node Ready", Duration::from_secs(60), || {
        let n = get_json(cp, &["node", name])?;
        (condition(&n, "Ready")["status"] == "True").then_some(())
    });
    Joined {
        skiffd,
        started,
        kubelet_port,
        name: name.into(),
        args,
        node,
    }
}
