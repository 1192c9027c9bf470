//! node-load: a Kubernetes node as the API server sees it, skiffd as the kubelet against the stock
//! kubelet v1.28.7 on containerd, each joined by `kubeadm join` to a control plane of its own on
//! loopback, in turn. For each node it measures:
//! - the time from the agent's start (skiffd, or the kubelet) to the Node first seen Ready;
//! - the memory of the node's processes (skiffd and its monitors; kubelet, containerd and its
//!   shims), idle and with every pod running;
//! - pod start: a Deployment of PODS busybox replicas, images cached, each pod's Ready − created as
//!   one `kubectl get -w` sees both, and the wall time until all are Ready.
//!
//! Prints one JSON object per node and round. The binaries come from `$SKIFF_BIN_DIR` (a release
//! build) and `scripts/k8s-bin`.

mod deploy;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_bench::containerd;
use skiff_bench::mem::sum_of;
use skiff_tests::cri::busybox_layout;
use skiff_tests::k8s::skiff_node::{self, wait_for, NodeDir};
use skiff_tests::k8s::{ControlPlane, KubeletNode};
use skiff_tests::registry::Registry;

struct Args {
    pods: usize,
    rounds: usize,
    runtimes: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        pods: 30,
        rounds: 1,
        runtimes: vec!["skiff".into(), "kubelet".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--pods" => a.pods = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--runtimes" => a.runtimes = value()?.split(',').map(String::from).collect(),
            other => {
                bail!("unknown argument {other} (--pods N, --rounds N, --runtimes skiff,kubelet)")
            }
        }
    }
    for r in &a.runtimes {
        if r != "skiff" && r != "kubelet" {
            bail!("unknown runtime {r:?}: skiff or kubelet");
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let registry = Registry::start()?;
    registry.push(busybox_layout(), "latest", "library/busybox:latest", &[])?;
    containerd::push_pause(&registry)?;
    for round in 0..a.rounds {
        let mut order = a.runtimes.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for runtime in &order {
            let row = match runtime.as_str() {
                "skiff" => skiff_node(&registry, a.pods)?,
                _ => kubelet_node(&registry, a.pods)?,
            };
            println!("{row}");
            eprintln!("node-load: round {} {runtime} done", round + 1);
        }
    }
    Ok(())
}

/// How long the node takes to settle after Ready before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(10);

fn skiff_node(registry: &Registry, pods: usize) -> Result<Value> {
    let cp = ControlPlane::start();
    let node = NodeDir::with_registry(Some(&registry.host()));
    let dir = node.dir.to_string_lossy().into_owned();
    let name = format!("bench-skiff-{}", std::process::id());
    let config = "evictionHard:\n  memory.available: 50Mi\n  nodefs.available: 1%\n  imagefs.available: 1%\n";
    let ready = first_ready(&cp, &name);
    let joined = skiff_node::join(&cp, node, &name, &[], config);
    let ready_after = ready.join().expect("Ready poller") - joined.started;
    let skiffd = joined.skiffd.pid() as i32;
    let mine = move |pid: i32, comm: &str, cmd: &str| {
        pid == skiffd || (comm == "skiff-monitor" && cmd.contains(&dir))
    };
    std::thread::sleep(SETTLE);
    let idle = sum_of(&mine);
    let run = deploy::pods(&cp, &format!("registry.skiff.test/{}", deploy::IMAGE), pods)?;
    let busy = sum_of(&mine);
    deploy::remove(&cp);
    let _ = cp.kubectl(&["delete", "node", &name]);
    drop(joined);
    Ok(row("skiff", ready_after, idle, busy, run))
}

fn kubelet_node(registry: &Registry, pods: usize) -> Result<Value> {
    let cp = ControlPlane::start();
    let runtime = containerd::Containerd::start(registry)?;
    let name = format!("bench-kubelet-{}", std::process::id());
    let ready = first_ready(&cp, &name);
    let node = KubeletNode::join(&cp, &name, &runtime.socket);
    let ready_after = ready.join().expect("Ready poller") - node.started;
    let kubelet = node.kubelet_pid().unwrap_or(0) as i32;
    let containerd = runtime.pid() as i32;
    let dir = runtime.dir.to_string_lossy().into_owned();
    let mine = move |pid: i32, comm: &str, cmd: &str| {
        pid == kubelet || pid == containerd || (comm == "containerd-shim" && cmd.contains(&dir))
    };
    std::thread::sleep(SETTLE);
    let idle = sum_of(&mine);
    let image = format!("registry.skiff.test/{}", deploy::IMAGE);
    let run = deploy::pods(&cp, &image, pods)?;
    let busy = sum_of(&mine);
    deploy::remove(&cp);
    let _ = cp.kubectl(&["delete", "node", &name]);
    // The runtime and its containers go before the node, which then removes the kubelet's cgroups.
    drop(runtime);
    drop(node);
    Ok(row("kubelet", ready_after, idle, busy, run))
}

fn row(
    node: &str,
    ready_after: Duration,
    idle: (u64, u64, u64),
    busy: (u64, u64, u64),
    run: deploy::Run,
) -> Value {
    json!({
        "node": node,
        "ready_after_ms": ready_after.as_secs_f64() * 1e3,
        "idle_processes": idle.0, "idle_rss_kib": idle.1, "idle_pss_kib": idle.2,
        "busy_processes": busy.0, "busy_rss_kib": busy.1, "busy_pss_kib": busy.2,
        "pods": run.latencies_ms.len(),
        "pod_ready_ms": run.latencies_ms,
        "all_ready_ms": run.all_ready.as_secs_f64() * 1e3,
    })
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
