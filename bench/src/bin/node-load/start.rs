//! Start and footprint of a node: time to Ready, memory idle and busy, pod start.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use skiff_bench::mem::sum_of;

use crate::deploy;
use crate::nodes::Node;

/// How long the node takes to settle after Ready before its idle memory is read.
pub const SETTLE: Duration = Duration::from_secs(10);

pub fn measure(node: &Node, pods: usize) -> Result<Value> {
    let mine = node.processes();
    std::thread::sleep(SETTLE);
    let idle = sum_of(&*mine);
    let run = deploy::pods(&node.cp, &crate::image(), pods)?;
    let busy = sum_of(&*mine);
    deploy::remove(&node.cp);
    Ok(json!({
        "node": node.kind.label(),
        "ready_after_ms": node.ready_after.as_secs_f64() * 1e3,
        "idle_processes": idle.0, "idle_rss_kib": idle.1, "idle_pss_kib": idle.2,
        "busy_processes": busy.0, "busy_rss_kib": busy.1, "busy_pss_kib": busy.2,
        "pods": run.latencies_ms.len(),
        "pod_ready_ms": run.latencies_ms,
        "all_ready_ms": run.all_ready.as_secs_f64() * 1e3,
    }))
}
