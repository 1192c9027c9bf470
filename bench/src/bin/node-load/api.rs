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
    /// Which of `exec`, `logs` run.
    pub parts: Parts,
}

/// The parts of `node-load api` to run: `--parts exec,logs,probes` (all by default).
#[derive(Clone, Copy)]
pub struct Parts {
    pub exec: bool,
    pub logs: bool,
    pub probes: bool,
}

impl Parts {
    pub fn parse(s: &str) -> Result<Parts> {
        let mut p = Parts {
            exec: false,
            logs: false,
            probes: false,
        };
        for part in s.split(',') {
            match part {
                "exec" => p.exec = true,
                "logs" => p.logs = true,
                "probes" => p.probes = true,
                other => bail!("unknown part {other:?}: exec, logs or probes"),
            }
        }
        Ok(p)
    }
}

impl Default for Args {
    fn default() -> Args {
        Args {
            exec_runs: 50,
            log_mib: 100,
            log_reads: 3,
            parts: Parts {
                exec: true,
                logs: true,
                probes: true,
            },
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
    let mut row = json!({ "node": node.kind.label() });
    if a.parts.exec {
        create_pod(&node.cp, "api-exec", &["sleep", "3600"])?;
        wait_ready(&node.cp, &["api-exec"])?;
        row["exec_ms"] = json!(timed(
            &node.cp,
            &["exec", "api-exec", "--", "true"],
            a.exec_runs
        )?);
        row["shared"] = shared(node, a.exec_runs)?;
        trace_exec(&node.cp, "api-exec")?;
        remove_pods(&node.cp, &node.pod_logs_dir(), &["api-exec"]);
    }
    if a.parts.logs {
        let (bytes, secs) = logs(node, a)?;
        row["log_bytes"] = json!(bytes);
        row["log_read_s"] = json!(secs);
    }
    Ok(row)
}

/// The round trips that share the exec's way without an exec, in ms: `kubectl get --raw /healthz`
/// (kubectl and the API server alone) and the node's `/healthz` through the API server's node
/// proxy (the same plus the proxy's connection to the kubelet API, its TLS, authentication and
/// authorization, and a short reply).
fn shared(node: &Node, runs: usize) -> Result<Value> {
    let proxy = format!("/api/v1/nodes/{}/proxy/healthz", node.name);
    Ok(json!({
        "apiserver_ms": timed(&node.cp, &["get", "--raw", "/healthz"], runs)?,
        "node_healthz_ms": timed(&node.cp, &["get", "--raw", &proxy], runs)?,
    }))
}

/// One `kubectl exec -v=7`, its requests (the URL, the status and kubectl's time for each: a
/// WebSocket try, a fallback to SPDY) printed to stderr.
fn trace_exec(cp: &ControlPlane, pod: &str) -> Result<()> {
    let out = kubectl(cp)
        .args(["exec", "-v=7", pod, "--", "true"])
        .stdin(Stdio::null())
        .output()
        .context("run kubectl exec -v=7")?;
    let log = String::from_utf8_lossy(&out.stderr);
    for line in log.lines().filter(|l| {
        l.contains("Config loaded")
            || l.contains("] GET ")
            || l.contains("] POST ")
            || l.contains("Response Status")
    }) {
        eprintln!("node-load: {line}");
    }
    Ok(())
}

/// `kubectl logs` of the whole log, `log_reads` times: (bytes, seconds) of each read.
fn logs(node: &Node, a: &Args) -> Result<(Vec<u64>, Vec<f64>)> {
    let cp = &node.cp;
    let bytes = a.log_mib * 1024 * 1024;
    let log_script =
        format!("yes {LINE} | head -c {bytes}; echo; echo {LOG_DONE}; exec sleep 3600");
    create_pod(cp, "api-logs", &["sh", "-c", &log_script])?;
    wait_ready(cp, &["api-logs"])?;
    wait_log_written(cp, "api-logs")?;
    let mut reads = Vec::new();
    for _ in 0..a.log_reads {
        reads.push(read_log(cp, "api-logs")?);
    }
    remove_pods(cp, &node.pod_logs_dir(), &["api-logs"]);
    Ok(reads.into_iter().unzip())
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

/// Wall time of `kubectl ARGS`, in ms, `runs` times after the warm-up.
fn timed(cp: &ControlPlane, args: &[&str], runs: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..WARMUP + runs {
        let started = Instant::now();
        let out = kubectl(cp)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run kubectl")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "kubectl {}: {}: {}",
                args.join(" "),
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
