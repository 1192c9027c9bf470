//! The two nodes every node benchmark compares, each joined by `kubeadm join` to a control plane of
//! its own on loopback: skiffd as the kubelet (its release build through `SKIFF_BIN_DIR`), and the
//! stock kubelet on Debian's containerd with runc. Both pull busybox from one local registry.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use skiff_tests::k8s::skiff_node::{self, wait_for, Joined, NodeDir};
use skiff_tests::k8s::{ControlPlane, KubeletNode};
use skiff_tests::registry::Registry;

use skiff_bench::containerd::Containerd;

/// Which node: the names the JSON rows and the command line use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Skiff,
    Kubelet,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "skiff" => Ok(Kind::Skiff),
            "kubelet" => Ok(Kind::Kubelet),
            other => anyhow::bail!("unknown runtime {other:?}: skiff or kubelet"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Skiff => "skiff",
            Kind::Kubelet => "kubelet",
        }
    }
}

/// What each node is given beyond the defaults.
#[derive(Default)]
pub struct Tuning {
    /// `containerLogMaxSize`, in MiB (None: the agent's default).
    pub log_max_mib: Option<u64>,
}

/// The agent and runtime of one node, dropped in an order that leaves nothing behind: the
/// containers before the agent, the agent before its control plane.
enum Agent {
    Skiff(Box<Joined>),
    Kubelet(Box<KubeletAgent>),
}

struct KubeletAgent {
    runtime: Option<Containerd>,
    node: Option<KubeletNode>,
}

pub struct Node {
    pub kind: Kind,
    pub name: String,
    /// From the agent's start to the Node first seen Ready.
    pub ready_after: Duration,
    agent: Agent,
    /// Declared last: dropped after the agent.
    pub cp: ControlPlane,
}

/// Picks a node's processes by pid, `comm` and command line.
pub type Picker = Box<dyn Fn(i32, &str, &str) -> bool>;

impl Node {
    pub fn start(kind: Kind, registry: &Registry, tuning: &Tuning) -> Result<Node> {
        match kind {
            Kind::Skiff => Ok(Self::skiff(registry, tuning)),
            Kind::Kubelet => Self::kubelet(registry, tuning),
        }
    }

    fn skiff(registry: &Registry, tuning: &Tuning) -> Node {
        let cp = ControlPlane::start();
        let node = NodeDir::with_registry(Some(&registry.host()));
        if let Ok(level) = std::env::var("NODE_LOAD_SKIFF_LOG") {
            // Top-level keys come before the file's tables.
            let toml = node.dir.join("skiffd.toml");
            let old = std::fs::read_to_string(&toml).unwrap_or_default();
            let _ = std::fs::write(&toml, format!("log_level = {level:?}\n{old}"));
        }
        let name = format!("bench-skiff-{}", std::process::id());
        let mut config = String::from(
            "evictionHard:\n  memory.available: 50Mi\n  nodefs.available: 1%\n  imagefs.available: 1%\n",
        );
        if let Some(mib) = tuning.log_max_mib {
            config.push_str(&format!("containerLogMaxSize: {mib}Mi\n"));
        }
        let ready = first_ready(&cp, &name);
        let joined = skiff_node::join(&cp, node, &name, &[], &config);
        let ready_after = ready.join().expect("Ready poller") - joined.started;
        Node {
            kind: Kind::Skiff,
            name,
            ready_after,
            agent: Agent::Skiff(Box::new(joined)),
            cp,
        }
    }

    fn kubelet(registry: &Registry, tuning: &Tuning) -> Result<Node> {
        let cp = ControlPlane::start();
        let runtime = Containerd::start(registry)?;
        let name = format!("bench-kubelet-{}", std::process::id());
        let log_flag = tuning
            .log_max_mib
            .map(|mib| format!("--container-log-max-size={mib}Mi"));
        let mut flags: Vec<&str> = log_flag.iter().map(String::as_str).collect();
        let verbosity = std::env::var("NODE_LOAD_KUBELET_V").map(|v| format!("--v={v}"));
        if let Ok(v) = &verbosity {
            flags.push(v);
        }
        let ready = first_ready(&cp, &name);
        let node = KubeletNode::join_with(&cp, &name, &runtime.socket, &flags);
        let ready_after = ready.join().expect("Ready poller") - node.started;
        Ok(Node {
            kind: Kind::Kubelet,
            name,
            ready_after,
            agent: Agent::Kubelet(Box::new(KubeletAgent {
                runtime: Some(runtime),
                node: Some(node),
            })),
            cp,
        })
    }

    /// Where the node keeps its pods' log directories: a skiff node its own (see
    /// `NodeDir::pod_logs`), the kubelet the host's /var/log/pods.
    pub fn pod_logs_dir(&self) -> PathBuf {
        match &self.agent {
            Agent::Skiff(joined) => joined.node.pod_logs(),
            Agent::Kubelet(_) => PathBuf::from("/var/log/pods"),
        }
    }

    /// The node's own processes: skiffd and its `skiff-monitor`s, or the kubelet, containerd and
    /// its `containerd-shim-runc-v2`s (whose short-lived children, runc included, they reap).
    pub fn processes(&self) -> Picker {
        match &self.agent {
            Agent::Skiff(joined) => {
                let skiffd = joined.skiffd.pid() as i32;
                let dir = joined.node.dir.to_string_lossy().into_owned();
                Box::new(move |pid, comm, cmd| {
                    pid == skiffd || (comm == "skiff-monitor" && cmd.contains(&dir))
                })
            }
            Agent::Kubelet(k) => {
                let KubeletAgent { runtime, node } = &**k;
                let kubelet = node
                    .as_ref()
                    .and_then(KubeletNode::kubelet_pid)
                    .unwrap_or(0) as i32;
                let containerd = runtime.as_ref().map_or(0, Containerd::pid) as i32;
                let dir = runtime
                    .as_ref()
                    .map(|r| r.dir.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // comm is cut at 15 bytes: containerd-shim-runc-v2 reads "containerd-shim".
                Box::new(move |pid, comm, cmd| {
                    pid == kubelet
                        || pid == containerd
                        || (comm == "containerd-shim" && cmd.contains(&dir))
                })
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&["delete", "node", &self.name]);
        if let Agent::Kubelet(k) = &mut self.agent {
            // The runtime and its containers go before the node, which then removes the
            // kubelet's cgroups.
            drop(k.runtime.take());
            drop(k.node.take());
        }
    }
}

/// The first moment the Node `name` is seen Ready, polled every 200 ms from now on, whatever else
/// (`kubeadm join`) is still running: the agent's time to Ready, not kubeadm's.
fn first_ready(cp: &ControlPlane, name: &str) -> std::thread::JoinHandle<Instant> {
    let kubeconfig = cp.admin_kubeconfig();
    let name = name.to_string();
    std::thread::spawn(move || {
        let jsonpath = r#"-o=jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
        wait_for("node Ready", Duration::from_secs(300), || {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "node", &name, jsonpath])
                .output()
                .ok()?;
            let at = Instant::now();
            (String::from_utf8_lossy(&out.stdout).trim() == "True").then_some(at)
        })
    })
}
