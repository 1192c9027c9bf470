//! The cAdvisor-named metrics kubelet can take from the runtime (`ListMetricDescriptors` /
//! `ListPodSandboxMetrics`). One table drives both calls, so every metric reported has a
//! descriptor with the same label keys.

use cri_api::v1 as cri;

use super::cgroup::Sample;
use super::net::Interface;

/// Label keys of per-container metrics: container id, container name, image.
const CONTAINER_LABELS: &[&str] = &["id", "name", "image"];
/// Label keys of per-pod network metrics.
const NETWORK_LABELS: &[&str] = &["id", "name", "image", "interface"];

use cri::MetricType::{Counter, Gauge};

struct Def {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    value: fn(&Sample) -> u64,
}

const NS_PER_SEC: u64 = 1_000_000_000;

const CONTAINER_METRICS: &[Def] = &[
    Def {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds.",
        kind: Counter,
        value: |s| s.cpu_nanos / NS_PER_SEC,
    },
    Def {
        name: "container_cpu_user_seconds_total",
        help: "Cumulative user cpu time consumed in seconds.",
        kind: Counter,
        value: |s| s.cpu_user_nanos / NS_PER_SEC,
    },
    Def {
        name: "container_cpu_system_seconds_total",
        help: "Cumulative system cpu time consumed in seconds.",
        kind: Counter,
        value: |s| s.cpu_system_nanos / NS_PER_SEC,
    },
    Def {
        name: "container_memory_usage_bytes",
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        kind: Gauge,
        value: |s| s.memory_usage,
    },
    Def {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes.",
        kind: Gauge,
        value: |s| s.working_set,
    },
    Def {
        name: "container_memory_rss",
        help: "Size of RSS in bytes.",
        kind: Gauge,
        value: |s| s.rss,
    },
    Def {
        name: "container_memory_cache",
        help: "Number of bytes of page cache memory.",
        kind: Gauge,
        value: |s| s.cache,
    },
    Def {
        name: "container_memory_swap",
        help: "Container swap usage in bytes.",
        kind: Gauge,
        value: |s| s.swap_usage,
    },
    Def {
        name: "container_spec_memory_limit_bytes",
        help: "Memory limit for the container.",
        kind: Gauge,
        value: |s| s.memory_limit.unwrap_or(0),
    },
    Def {
        name: "container_oom_events_total",
        help: "Count of out of memory events observed for the container.",
        kind: Counter,
        value: |s| s.oom_kills,
    },
    Def {
        name: "container_processes",
        help: "Number of processes running inside the container.",
        kind: Gauge,
        value: |s| s.pids,
    },
];

struct NetDef {
    name: &'static str,
    help: &'static str,
    value: fn(&Interface) -> u64,
}

const NETWORK_METRICS: &[NetDef] = &[
    NetDef {
        name: "container_network_receive_bytes_total",
        help: "Cumulative count of bytes received.",
        value: |i| i.rx_bytes,
    },
    NetDef {
        name: "container_network_receive_errors_total",
        help: "Cumulative count of errors encountered while receiving.",
        value: |i| i.rx_errors,
    },
    NetDef {
        name: "container_network_transmit_bytes_total",
        help: "Cumulative count of bytes transmitted.",
        value: |i| i.tx_bytes,
    },
    NetDef {
        name: "container_network_transmit_errors_total",
        help: "Cumulative count of errors encountered while transmitting.",
        value: |i| i.tx_errors,
    },
];

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    let container = CONTAINER_METRICS.iter().map(|d| cri::MetricDescriptor {
        name: d.name.into(),
        help: d.help.into(),
        label_keys: keys(CONTAINER_LABELS),
    });
    let network = NETWORK_METRICS.iter().map(|d| cri::MetricDescriptor {
        name: d.name.into(),
        help: d.help.into(),
        label_keys: keys(NETWORK_LABELS),
    });
    container.chain(network).collect()
}

/// Who a metric is about: (id, name, image).
pub struct Subject<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub image: &'a str,
}

pub fn container_metrics(now: i64, who: &Subject, s: &Sample) -> Vec<cri::Metric> {
    CONTAINER_METRICS
        .iter()
        .map(|d| cri::Metric {
            name: d.name.into(),
            timestamp: now,
            metric_type: d.kind as i32,
            label_values: vec![who.id.into(), who.name.into(), who.image.into()],
            value: Some(cri::UInt64Value {
                value: (d.value)(s),
            }),
        })
        .collect()
}

pub fn network_metrics(now: i64, who: &Subject, ifs: &[Interface]) -> Vec<cri::Metric> {
    let mut out = Vec::new();
    for i in ifs {
        for d in NETWORK_METRICS {
            out.push(cri::Metric {
                name: d.name.into(),
                timestamp: now,
                metric_type: Counter as i32,
                label_values: vec![
                    who.id.into(),
                    who.name.into(),
                    who.image.into(),
                    i.name.clone(),
                ],
                value: Some(cri::UInt64Value {
                    value: (d.value)(i),
                }),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_metric_matches_its_descriptor() {
        let descs: HashMap<String, cri::MetricDescriptor> = descriptors()
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        assert_eq!(
            descs.len(),
            CONTAINER_METRICS.len() + NETWORK_METRICS.len(),
            "names are unique"
        );
        for name in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ] {
            assert!(descs.contains_key(name), "{name}");
        }
        let who = Subject {
            id: "c1",
            name: "app",
            image: "busybox",
        };
        let s = Sample {
            cpu_nanos: 3 * NS_PER_SEC + 5,
            working_set: 77,
            ..Default::default()
        };
        let ifs = vec![Interface {
            name: "eth0".into(),
            rx_bytes: 10,
            ..Default::default()
        }];
        let all: Vec<cri::Metric> = container_metrics(1, &who, &s)
            .into_iter()
            .chain(network_metrics(1, &who, &ifs))
            .collect();
        assert_eq!(all.len(), descs.len());
        for m in &all {
            let d = &descs[&m.name];
            assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
            assert!(!d.help.is_empty());
        }
        let get = |n: &str| all.iter().find(|m| m.name == n).unwrap();
        assert_eq!(
            get("container_cpu_usage_seconds_total")
                .value
                .unwrap()
                .value,
            3
        );
        assert_eq!(
            get("container_cpu_usage_seconds_total").metric_type,
            Counter as i32
        );
        assert_eq!(
            get("container_memory_working_set_bytes")
                .value
                .unwrap()
                .value,
            77
        );
        assert_eq!(
            get("container_network_receive_bytes_total").label_values[3],
            "eth0"
        );
    }
}
