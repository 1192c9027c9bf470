//! Pod start as the API server sees it: a Deployment of busybox replicas, each pod's Ready − created
//! timed by one `kubectl get pods -w` that sees both moments.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_tests::k8s::ControlPlane;

/// The image every pod runs, below the registry the nodes mirror.
pub const IMAGE: &str = "library/busybox:latest";
const WITHIN: Duration = Duration::from_secs(300);

pub struct Run {
    /// Per pod: Ready − first seen, in ms.
    pub latencies_ms: Vec<f64>,
    /// From `kubectl create` of the Deployment to the last pod Ready.
    pub all_ready: Duration,
}

/// A Deployment of `replicas` busybox pods sleeping, `container` (JSON members, each with a leading
/// comma) added to their container.
fn manifest(name: &str, image: &str, replicas: usize, container: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}"}},
"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},
"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"terminationGracePeriodSeconds":1,
"containers":[{{"name":"main","image":"{image}","imagePullPolicy":"IfNotPresent",
"command":["sleep","3600"]{container}}}]}}}}}}}}"#
    )
}

fn apply(cp: &ControlPlane, name: &str, image: &str, replicas: usize) -> Result<()> {
    apply_with(cp, name, image, replicas, "")
}

/// Creates the Deployment `name` of `replicas` pods whose container has `container` added (JSON
/// members, each with a leading comma).
pub fn apply_with(
    cp: &ControlPlane,
    name: &str,
    image: &str,
    replicas: usize,
    container: &str,
) -> Result<()> {
    let path = cp.dir.join(format!("{name}.json"));
    std::fs::write(&path, manifest(name, image, replicas, container))?;
    let out = cp.kubectl(&["create", "-f", &path.to_string_lossy()]);
    if !out.success() {
        bail!("kubectl create {name}:{out}");
    }
    Ok(())
}

/// Creates `n` replicas once the image is cached on the node (a one-replica Deployment pulls it
/// first, and is gone before timing starts) and times them to Ready.
pub fn pods(cp: &ControlPlane, image: &str, n: usize) -> Result<Run> {
    apply(cp, "warm", image, 1)?;
    watch_ready(cp, "warm", 1, || Ok(()))?;
    remove_named(cp, "warm");
    let started = Instant::now();
    let latencies = watch_ready(cp, "bench", n, || apply(cp, "bench", image, n))?;
    Ok(Run {
        latencies_ms: latencies,
        all_ready: started.elapsed(),
    })
}

/// Watches pods labelled `app=<name>`, runs `create` once the watch is up, and returns each pod's
/// Ready − first seen (ms) once `n` are Ready.
fn watch_ready(
    cp: &ControlPlane,
    name: &str,
    n: usize,
    create: impl FnOnce() -> Result<()>,
) -> Result<Vec<f64>> {
    let template = r#"{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}"#;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(["get", "pods", "-l", &format!("app={name}"), "-w"])
        .arg(format!("-o=jsonpath={template}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start kubectl get -w")?;
    let stdout = child.stdout.take().context("kubectl's stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    // The watch's first answer (an empty list) comes before anything is created.
    std::thread::sleep(Duration::from_millis(1500));
    let result = create().and_then(|()| collect(&rx, n));
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn collect(rx: &mpsc::Receiver<(Instant, String)>, n: usize) -> Result<Vec<f64>> {
    let deadline = Instant::now() + WITHIN;
    let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
    let mut ready: BTreeMap<String, f64> = BTreeMap::new();
    while ready.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = rx
            .recv_timeout(left)
            .map_err(|_| anyhow::anyhow!("{} of {n} pods Ready within {WITHIN:?}", ready.len()))?;
        let mut f = line.split_whitespace();
        let Some(pod) = f.next() else { continue };
        let first = *seen.entry(pod.to_string()).or_insert(at);
        if f.next() == Some("True") && !ready.contains_key(pod) {
            ready.insert(pod.to_string(), (at - first).as_secs_f64() * 1e3);
        }
    }
    Ok(ready.into_values().collect())
}

/// Deletes the Deployment `name` and waits for its pods to be gone from the node.
pub fn remove_named(cp: &ControlPlane, name: &str) {
    let _ = cp.kubectl(&["delete", "deployment", name, "--wait=true"]);
    let selector = format!("app={name}");
    let _ = cp.kubectl_within(
        &[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            &selector,
            "--timeout=120s",
        ],
        Duration::from_secs(130),
    );
}

/// Deletes the timed Deployment and waits for its pods to be gone from the node.
pub fn remove(cp: &ControlPlane) {
    remove_named(cp, "bench");
}
