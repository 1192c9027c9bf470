//! `/metrics`: skiffd's own metrics, the process collector's and kubelet's node-level gauges.

use super::prom::{render, Family, Sample};
use crate::node::NodeContext;

fn one(name: &'static str, help: &'static str, kind: &'static str, value: f64) -> Family {
    Family {
        name,
        help,
        kind,
        samples: vec![Sample {
            labels: vec![],
            value,
            millis: None,
        }],
    }
}

/// The process's CPU seconds, resident and virtual bytes, start time and open descriptors.
fn process() -> Vec<Family> {
    let mut out = Vec::new();
    // SAFETY: sysconf reads constants and has no memory effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // After the command's closing parenthesis: state is field 3; utime 14, stime 15,
        // starttime 22, vsize 23, rss 24.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        let at = |n: usize| f.get(n - 3).copied().unwrap_or(0.0);
        out.push(one(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            (at(14) + at(15)) / ticks,
        ));
        out.push(one(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            at(23),
        ));
        out.push(one(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            at(24) * page,
        ));
        let boot = super::host::boot_time() as f64 / 1e9;
        out.push(one(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            boot + at(22) / ticks,
        ));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push(one(
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            fds.count() as f64,
        ));
    }
    out
}

pub fn render_agent(ctx: &NodeContext) -> String {
    let d = &ctx.daemon;
    let mut families = process();
    families.push(Family {
        name: "kubelet_node_name",
        help: "[ALPHA] The node's name. The count is always 1.",
        kind: "gauge",
        samples: vec![Sample {
            labels: vec![("node", ctx.settings.node_name.clone())],
            value: 1.0,
            millis: None,
        }],
    });
    let running_pods = d.sandboxes.list().iter().filter(|s| s.ready).count();
    families.push(one(
        "kubelet_running_pods",
        "[ALPHA] Number of pods that have a running pod sandbox",
        "gauge",
        running_pods as f64,
    ));
    let mut states = std::collections::BTreeMap::new();
    for c in d.containers.list() {
        let st = crate::cri::container::container_status(d, &c).state();
        let name = match st {
            cri_api::v1::ContainerState::ContainerCreated => "created",
            cri_api::v1::ContainerState::ContainerRunning => "running",
            cri_api::v1::ContainerState::ContainerExited => "exited",
            cri_api::v1::ContainerState::ContainerUnknown => "unknown",
        };
        *states.entry(name).or_insert(0u64) += 1;
    }
    families.push(Family {
        name: "kubelet_running_containers",
        help: "[ALPHA] Number of containers currently running",
        kind: "gauge",
        samples: states
            .into_iter()
            .map(|(state, n)| Sample {
                labels: vec![("container_state", state.to_string())],
                value: n as f64,
                millis: None,
            })
            .collect(),
    });
    render(families)
}
