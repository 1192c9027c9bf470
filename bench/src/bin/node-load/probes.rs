//! What exec probes cost a node: PODS busybox pods, first without probes and then with an exec
//! probe (`true`) every second of each kind asked for; the CPU seconds of the node's processes
//! (`Node::processes`, with the children they reaped: the exec helpers, runc) over a fixed window
//! once every pod is Ready and the node has settled.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_bench::cpu;
use skiff_tests::k8s::ControlPlane;

use crate::deploy;
use crate::nodes::Node;
use crate::start::SETTLE;

pub struct Args {
    pub pods: usize,
    pub window: Duration,
    /// `readinessProbe`, `livenessProbe`.
    pub kinds: Vec<&'static str>,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            pods: 100,
            window: Duration::from_secs(60),
            kinds: vec!["readinessProbe"],
        }
    }
}

/// `readiness,liveness` as the pod spec's field names.
pub fn parse_kinds(s: &str) -> Result<Vec<&'static str>> {
    s.split(',')
        .map(|k| match k {
            "readiness" => Ok("readinessProbe"),
            "liveness" => Ok("livenessProbe"),
            other => bail!("unknown probe kind {other:?}: readiness or liveness"),
        })
        .collect()
}

pub fn measure(node: &Node, a: &Args) -> Result<Value> {
    let unprobed = window(node, "unprobed", a, "")?;
    let probe = r#"{"exec":{"command":["true"]},"periodSeconds":1,"timeoutSeconds":5}"#;
    let fields: String = a
        .kinds
        .iter()
        .map(|k| format!(r#","{k}":{probe}"#))
        .collect();
    let probed = window(node, "probed", a, &fields)?;
    Ok(json!({
        "pods": a.pods,
        "kinds": a.kinds,
        "window_s": a.window.as_secs_f64(),
        "unprobed": unprobed,
        "probed": probed,
    }))
}

/// The Deployment `name` with `container` added to its container: Ready, settled, then the CPU
/// its node's processes spend over the window.
fn window(node: &Node, name: &str, a: &Args, container: &str) -> Result<Value> {
    let cp = &node.cp;
    deploy::apply_with(cp, name, &crate::image(), a.pods, container)?;
    let ready = wait_all_ready(cp, name, a.pods);
    let result = ready.map(|ready_after| {
        std::thread::sleep(SETTLE);
        let pick = node.processes();
        let before = cpu::sample(&*pick);
        std::thread::sleep(a.window);
        let after = cpu::sample(&*pick);
        let (own, children) = cpu::spent(&before, &after);
        json!({
            "all_ready_s": ready_after.as_secs_f64(),
            "processes": after.len(),
            "cpu_own_s": own,
            "cpu_children_s": children,
        })
    });
    deploy::remove_named(cp, name);
    result
}

/// Until `n` replicas of the Deployment `name` are Ready; how long that took.
fn wait_all_ready(cp: &ControlPlane, name: &str, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let within = Duration::from_secs(900);
    let jsonpath = "-o=jsonpath={.status.readyReplicas}";
    loop {
        let out = cp.kubectl(&["get", "deployment", name, jsonpath]);
        if out.success() && out.stdout.trim().parse::<usize>().ok() == Some(n) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("{name}: not all {n} pods Ready within {within:?}:{out}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
