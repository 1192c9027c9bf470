//! `/metrics/resource`: the node's, pods' and containers' CPU and working set, and container start
//! times, as kubelet 1.28 derives them from the summary (what metrics-server scrapes).

use super::prom::{render, Family, Sample};
use super::types::{CpuStats, MemoryStats, Summary};
use crate::node::logs::format::parse_time;

fn millis(t: &str) -> Option<i64> {
    parse_time(t).ok().map(|n| n / 1_000_000)
}

fn cpu_sample(labels: Vec<(&'static str, String)>, c: &Option<CpuStats>) -> Option<Sample> {
    let c = c.as_ref()?;
    Some(Sample {
        labels,
        value: c.usage_core_nano_seconds? as f64 / 1e9,
        millis: millis(&c.time),
    })
}

fn memory_sample(labels: Vec<(&'static str, String)>, m: &Option<MemoryStats>) -> Option<Sample> {
    let m = m.as_ref()?;
    Some(Sample {
        labels,
        value: m.working_set_bytes? as f64,
        millis: millis(&m.time),
    })
}

fn family(name: &'static str, help: &'static str, kind: &'static str) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}

/// The text kubelet serves; `scrape_error` is 1 when the summary could not be had.
pub fn render_resource(summary: Option<&Summary>) -> String {
    let mut node_cpu = family(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let mut node_mem = family(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        "gauge",
    );
    let mut pod_cpu = family(
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    let mut pod_mem = family(
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        "gauge",
    );
    let mut c_cpu = family(
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    let mut c_mem = family(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        "gauge",
    );
    let mut c_start = family(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        "gauge",
    );
    let mut scrape = family(
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    scrape.samples.push(Sample {
        labels: vec![],
        value: if summary.is_some() { 0.0 } else { 1.0 },
        millis: None,
    });
    if let Some(s) = summary {
        node_cpu.samples.extend(cpu_sample(vec![], &s.node.cpu));
        node_mem
            .samples
            .extend(memory_sample(vec![], &s.node.memory));
        for p in &s.pods {
            let pod = || {
                vec![
                    ("namespace", p.pod_ref.namespace.clone()),
                    ("pod", p.pod_ref.name.clone()),
                ]
            };
            pod_cpu.samples.extend(cpu_sample(pod(), &p.cpu));
            pod_mem.samples.extend(memory_sample(pod(), &p.memory));
            for c in &p.containers {
                let labels = || {
                    let mut l = vec![("container", c.name.clone())];
                    l.extend(pod());
                    l
                };
                c_cpu.samples.extend(cpu_sample(labels(), &c.cpu));
                c_mem.samples.extend(memory_sample(labels(), &c.memory));
                if let Ok(start) = parse_time(&c.start_time) {
                    c_start.samples.push(Sample {
                        labels: labels(),
                        value: start as f64 / 1e9,
                        millis: Some(start / 1_000_000),
                    });
                }
            }
        }
    }
    render(vec![
        node_cpu, node_mem, pod_cpu, pod_mem, c_cpu, c_mem, c_start, scrape,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::types::*;
    use super::*;

    #[test]
    fn a_summary_becomes_kubelets_resource_metrics() {
        let t = "2026-12-06T16:00:00Z".to_string();
        let cpu = |n| {
            Some(CpuStats {
                time: t.clone(),
                usage_nano_cores: Some(1),
                usage_core_nano_seconds: Some(n),
            })
        };
        let mem = |n| {
            Some(MemoryStats {
                time: t.clone(),
                working_set_bytes: Some(n),
                ..Default::default()
            })
        };
        let s = Summary {
            node: NodeStats {
                cpu: cpu(2_500_000_000),
                memory: mem(1 << 30),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: "2026-12-06T15:59:00Z".into(),
                    cpu: cpu(500_000_000),
                    memory: mem(64 << 20),
                    ..Default::default()
                }],
                cpu: cpu(600_000_000),
                memory: mem(65 << 20),
                ..Default::default()
            }],
        };
        let text = render_resource(Some(&s));
        let ms = 1_796_572_800_000i64;
        for line in [
            format!("container_cpu_usage_seconds_total{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 0.5 {ms}"),
            format!("container_memory_working_set_bytes{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 6.7108864e+07 {ms}"),
            format!("container_start_time_seconds{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 1.79657274e+09 {}", ms - 60_000),
            format!("node_cpu_usage_seconds_total 2.5 {ms}"),
            format!("node_memory_working_set_bytes 1.073741824e+09 {ms}"),
            format!("pod_cpu_usage_seconds_total{{namespace=\"ns\",pod=\"p\"}} 0.6 {ms}"),
            format!("pod_memory_working_set_bytes{{namespace=\"ns\",pod=\"p\"}} 6.815744e+07 {ms}"),
            "scrape_error 0".to_string(),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(render_resource(None).contains("scrape_error 1\n"));
    }
}
