//! What a cluster user does through the API server, which proxies it to the node's kubelet API:
//! `kubectl exec POD -- true` round trips, and `kubectl logs` of a pod that wrote a large log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skiff_tests::k8s::ControlPlane;

use crate::nodes::{Node, Tuning};

pub struct Args {
    /// Timed `kubectl exec` round trips.
    pub exec_runs: usize,
    /// The size of the log `kubectl logs` reads, in MiB.
    pub log_mib: u64,
    /// Timed reads of that log.
    pub log_reads: usize,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            exec_runs: 50,
            log_mib: 100,
            log_reads: 3,
        }
    }
}

impl Args {
    /// The log must not be rotated while it is written or read: room for it twice over.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            log_max_mib: Some(2 * self.log_mib + 16),
        }
    }
}

/// Untimed round trips first: the connections and caches on the way are warm when timing starts.
const WARMUP: usize = 3;
const LOG_DONE: &str = "log-written";
/// Each log line: 99 characters and a newline.
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzA";

pub fn measure(node: &Node, a: &Args) -> Result<Value> {
    let cp = &node.cp;
    let bytes = a.log_mib * 1024 * 1024;
    let log_script =
        format!("yes {LINE} | head -c {bytes}; echo; echo {LOG_DONE}; exec sleep 3600");
    create_pod(cp, "api-exec", &["sleep", "3600"])?;
    create_pod(cp, "api-logs", &["sh", "-c", &log_script])?;
    wait_ready(cp, &["api-exec", "api-logs"])?;
    let exec_ms = exec_round_trips(cp, "api-exec", a.exec_runs)?;
    wait_log_written(cp, "api-logs")?;
    let mut reads = Vec::new();
    for _ in 0..a.log_reads {
        reads.push(read_log(cp, "api-logs")?);
    }
    remove_pods(cp, &node.pod_logs_dir(), &["api-exec", "api-logs"]);
    Ok(json!({
        "node": node.kind.label(),
        "exec_ms": exec_ms,
        "log_bytes": reads.iter().map(|r| r.0).collect::<Vec<_>>(),
        "log_read_s": reads.iter().map(|r| r.1).collect::<Vec<_>>(),
    }))
}

/// Deletes `pods` and waits for the node to remove their log directories under `logs`, which a
/// node does once its containers are gone (kubelet within a minute); what is still there after a
/// minute is removed here, so no run leaves 100 MiB logs behind.
fn remove_pods(cp: &ControlPlane, logs: &Path, pods: &[&str]) {
    let dirs: Vec<PathBuf> = pods
        .iter()
        .filter_map(|p| {
            let out = cp.kubectl(&["get", "pod", p, "-o=jsonpath={.metadata.uid}"]);
            let uid = out.stdout.trim();
            (out.success() && !uid.is_empty()).then(|| logs.join(format!("default_{p}_{uid}")))
        })
        .collect();
    let mut args = vec!["delete", "pod", "--grace-period=1", "--wait=true"];
    args.extend(pods);
    let _ = cp.kubectl_within(&args, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    while dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    for d in dirs.iter().filter(|d| d.exists()) {
        eprintln!("node-load: removing {} the node left", d.display());
        let _ = std::fs::remove_dir_all(d);
    }
}

fn kubectl(cp: &ControlPlane) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(cp.admin_kubeconfig());
    c
}

fn create_pod(cp: &ControlPlane, name: &str, command: &[&str]) -> Result<()> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": crate::image(), "imagePullPolicy": "IfNotPresent",
            "command": command,
        }]},
    });
    let path = cp.dir.join(format!("{name}.json"));
    std::fs::write(&path, pod.to_string())?;
    let out = cp.kubectl(&["create", "-f", &path.to_string_lossy()]);
    if !out.success() {
        bail!("kubectl create pod {name}:{out}");
    }
    Ok(())
}

fn wait_ready(cp: &ControlPlane, pods: &[&str]) -> Result<()> {
    let mut args = vec!["wait", "--for=condition=Ready", "--timeout=300s"];
    let names: Vec<String> = pods.iter().map(|p| format!("pod/{p}")).collect();
    args.extend(names.iter().map(String::as_str));
    let out = cp.kubectl_within(&args, Duration::from_secs(310));
    if !out.success() {
        bail!("pods {pods:?} not Ready:{out}");
    }
    Ok(())
}

/// Wall time of `kubectl exec POD -- true`, in ms, `runs` times after the warm-up.
fn exec_round_trips(cp: &ControlPlane, pod: &str, runs: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..WARMUP + runs {
        let started = Instant::now();
        let out = kubectl(cp)
            .args(["exec", pod, "--", "true"])
            .stdin(Stdio::null())
            .output()
            .context("run kubectl exec")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "kubectl exec {pod} -- true: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if i >= WARMUP {
            times.push(took.as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

/// Until the pod's last log line says the whole log is written.
fn wait_log_written(cp: &ControlPlane, pod: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = cp.kubectl(&["logs", pod, "--tail=1"]);
        if out.success() && out.stdout.trim() == LOG_DONE {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the log of {pod} was not written within 600 s:{out}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `kubectl logs POD` into a sink: (bytes read, seconds from start to exit).
fn read_log(cp: &ControlPlane, pod: &str) -> Result<(u64, f64)> {
    let started = Instant::now();
    let mut child = kubectl(cp)
        .args(["logs", pod])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start kubectl logs")?;
    let mut stdout = child.stdout.take().context("kubectl's stdout")?;
    let bytes = std::io::copy(&mut stdout, &mut std::io::sink())?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    let took = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("kubectl logs {pod}: {status}: {err}");
    }
    Ok((bytes, took))
}
