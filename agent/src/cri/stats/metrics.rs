//! The cAdvisor-named metrics kubelet can take from the runtime (`ListMetricDescriptors` /
//! `ListPodSandboxMetrics`). One table drives both calls, so every metric reported has a
//! descriptor with the same label keys.

use std::collections::BTreeMap;

use cri_api::v1 as cri;
use skiff_runtime::cgroups::stats::{BlkioEntry, Stats};

use super::cgroup::{limit, CpuSpec, Sample};
use super::disk::Disk;
use super::net::Interface;
use super::procs::Procs;

/// Label keys of every per-container metric: container id, container name, image; some add more.
const CONTAINER_LABELS: &[&str] = &["id", "name", "image"];
/// Label keys of per-pod network metrics.
const NETWORK_LABELS: &[&str] = &["id", "name", "image", "interface"];

use cri::MetricType::{Counter, Gauge};

/// Everything one container's metrics come from, read once per scrape.
#[derive(Debug, Default)]
pub struct Reading {
    pub stats: Stats,
    pub sample: Sample,
    pub cpu: CpuSpec,
    pub procs: Procs,
    pub disk: Disk,
    /// When the container started (or was created, until it starts), in seconds since the epoch.
    pub start_secs: u64,
    pub now_secs: u64,
}

/// Values of one metric: the labels beyond `CONTAINER_LABELS`, and the value.
type Values = Vec<(Vec<String>, u64)>;

struct Def {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    /// Label keys after `CONTAINER_LABELS`.
    extra: &'static [&'static str],
    value: fn(&Reading) -> Values,
}

const NS_PER_SEC: u64 = 1_000_000_000;

fn one(v: u64) -> Values {
    vec![(Vec::new(), v)]
}

fn on_disk(r: &Reading, v: u64) -> Values {
    vec![(vec![r.disk.device.clone()], v)]
}

/// Block I/O of one kind (`Read`/`Write`) summed per device.
fn blkio(entries: &[BlkioEntry], op: &str) -> Values {
    let mut by_dev: BTreeMap<String, u64> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.op.eq_ignore_ascii_case(op)) {
        *by_dev
            .entry(format!("{}:{}", e.major, e.minor))
            .or_default() += e.value;
    }
    by_dev.into_iter().map(|(d, v)| (vec![d], v)).collect()
}

fn raw(r: &Reading, keys: &[&str]) -> u64 {
    keys.iter()
        .find_map(|k| r.stats.memory.raw.get(*k))
        .copied()
        .unwrap_or(0)
}

const CONTAINER_METRICS: &[Def] = &[
    Def {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.sample.cpu_nanos / NS_PER_SEC),
    },
    Def {
        name: "container_cpu_user_seconds_total",
        help: "Cumulative user cpu time consumed in seconds.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.sample.cpu_user_nanos / NS_PER_SEC),
    },
    Def {
        name: "container_cpu_system_seconds_total",
        help: "Cumulative system cpu time consumed in seconds.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.sample.cpu_system_nanos / NS_PER_SEC),
    },
    Def {
        name: "container_cpu_cfs_periods_total",
        help: "Number of elapsed enforcement period intervals.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.stats.cpu.throttling.periods),
    },
    Def {
        name: "container_cpu_cfs_throttled_periods_total",
        help: "Number of throttled period intervals.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.stats.cpu.throttling.throttled_periods),
    },
    Def {
        name: "container_cpu_cfs_throttled_seconds_total",
        help: "Total time duration the container has been throttled.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.stats.cpu.throttling.throttled_time / NS_PER_SEC),
    },
    Def {
        name: "container_spec_cpu_shares",
        help: "CPU share of the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.cpu.shares),
    },
    Def {
        name: "container_spec_cpu_period",
        help: "CPU period of the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.cpu.period),
    },
    Def {
        name: "container_spec_cpu_quota",
        help: "CPU quota of the container.",
        kind: Gauge,
        extra: &[],
        value: |r| r.cpu.quota.map(one).unwrap_or_default(),
    },
    Def {
        name: "container_memory_usage_bytes",
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.memory_usage),
    },
    Def {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.working_set),
    },
    Def {
        name: "container_memory_rss",
        help: "Size of RSS in bytes.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.rss),
    },
    Def {
        name: "container_memory_cache",
        help: "Number of bytes of page cache memory.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.cache),
    },
    Def {
        name: "container_memory_swap",
        help: "Container swap usage in bytes.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.swap_usage),
    },
    Def {
        name: "container_memory_mapped_file",
        help: "Size of memory mapped files in bytes.",
        kind: Gauge,
        extra: &[],
        value: |r| one(raw(r, &["total_mapped_file", "mapped_file", "file_mapped"])),
    },
    Def {
        name: "container_memory_kernel_usage",
        help: "Size of kernel memory allocated in bytes.",
        kind: Gauge,
        extra: &[],
        value: |r| {
            let v2 = raw(r, &["kernel"]);
            one(if v2 > 0 { v2 } else { r.stats.memory.kernel.usage })
        },
    },
    Def {
        name: "container_memory_max_usage_bytes",
        help: "Maximum memory usage recorded in bytes.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.stats.memory.usage.max),
    },
    Def {
        name: "container_memory_failcnt",
        help: "Number of memory usage hits limits.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.stats.memory.usage.failcnt),
    },
    Def {
        name: "container_memory_failures_total",
        help: "Cumulative count of memory allocation failures.",
        kind: Counter,
        extra: &["failure_type", "scope"],
        value: |r| {
            let mut out = Vec::new();
            for (kind, key) in [("pgfault", "pgfault"), ("pgmajfault", "pgmajfault")] {
                let own = raw(r, &[key]);
                let all = raw(r, &[&format!("total_{key}"), key]);
                out.push((vec![kind.to_string(), "container".to_string()], own));
                out.push((vec![kind.to_string(), "hierarchy".to_string()], all));
            }
            out
        },
    },
    Def {
        name: "container_spec_memory_limit_bytes",
        help: "Memory limit for the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.memory_limit.unwrap_or(0)),
    },
    Def {
        name: "container_spec_memory_swap_limit_bytes",
        help: "Memory swap limit for the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(limit(r.stats.memory.swap.limit).unwrap_or(0)),
    },
    Def {
        name: "container_oom_events_total",
        help: "Count of out of memory events observed for the container.",
        kind: Counter,
        extra: &[],
        value: |r| one(r.sample.oom_kills),
    },
    Def {
        name: "container_hugetlb_usage_bytes",
        help: "Current hugepage usage in bytes.",
        kind: Gauge,
        extra: &["pagesize"],
        value: |r| {
            let h = &r.stats.hugetlb;
            h.iter().map(|(size, h)| (vec![size.clone()], h.usage)).collect()
        },
    },
    Def {
        name: "container_hugetlb_max_usage_bytes",
        help: "Maximum hugepage usage recorded in bytes.",
        kind: Gauge,
        extra: &["pagesize"],
        value: |r| {
            let h = &r.stats.hugetlb;
            h.iter().map(|(size, h)| (vec![size.clone()], h.max)).collect()
        },
    },
    Def {
        name: "container_processes",
        help: "Number of processes running inside the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.sample.pids),
    },
    Def {
        name: "container_threads",
        help: "Number of threads running inside the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.procs.threads),
    },
    Def {
        name: "container_threads_max",
        help: "Maximum number of threads allowed inside the container, infinity if value is zero.",
        kind: Gauge,
        extra: &[],
        value: |r| one(limit(r.stats.pids.limit).unwrap_or(0)),
    },
    Def {
        name: "container_file_descriptors",
        help: "Number of open file descriptors for the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.procs.fds),
    },
    Def {
        name: "container_sockets",
        help: "Number of open sockets for the container.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.procs.sockets),
    },
    Def {
        name: "container_fs_usage_bytes",
        help: "Number of bytes that are consumed by the container on this filesystem.",
        kind: Gauge,
        extra: &["device"],
        value: |r| on_disk(r, r.disk.usage_bytes),
    },
    Def {
        name: "container_fs_limit_bytes",
        help: "Number of bytes that can be consumed by the container on this filesystem.",
        kind: Gauge,
        extra: &["device"],
        value: |r| on_disk(r, r.disk.capacity_bytes),
    },
    Def {
        name: "container_fs_inodes_total",
        help: "Number of Inodes",
        kind: Gauge,
        extra: &["device"],
        value: |r| on_disk(r, r.disk.inodes_total),
    },
    Def {
        name: "container_fs_inodes_free",
        help: "Number of available Inodes",
        kind: Gauge,
        extra: &["device"],
        value: |r| on_disk(r, r.disk.inodes_free),
    },
    Def {
        name: "container_fs_reads_bytes_total",
        help: "Cumulative count of bytes read.",
        kind: Counter,
        extra: &["device"],
        value: |r| blkio(&r.stats.blkio.io_service_bytes_recursive, "read"),
    },
    Def {
        name: "container_fs_writes_bytes_total",
        help: "Cumulative count of bytes written.",
        kind: Counter,
        extra: &["device"],
        value: |r| blkio(&r.stats.blkio.io_service_bytes_recursive, "write"),
    },
    Def {
        name: "container_fs_reads_total",
        help: "Cumulative count of reads completed.",
        kind: Counter,
        extra: &["device"],
        value: |r| blkio(&r.stats.blkio.io_serviced_recursive, "read"),
    },
    Def {
        name: "container_fs_writes_total",
        help: "Cumulative count of writes completed.",
        kind: Counter,
        extra: &["device"],
        value: |r| blkio(&r.stats.blkio.io_serviced_recursive, "write"),
    },
    Def {
        name: "container_blkio_device_usage_total",
        help: "Blkio device bytes usage.",
        kind: Counter,
        extra: &["device", "major", "minor", "operation"],
        value: |r| {
            let entries = &r.stats.blkio.io_service_bytes_recursive;
            entries
                .iter()
                .map(|e| {
                    let labels = vec![
                        format!("{}:{}", e.major, e.minor),
                        e.major.to_string(),
                        e.minor.to_string(),
                        e.op.clone(),
                    ];
                    (labels, e.value)
                })
                .collect()
        },
    },
    Def {
        name: "container_start_time_seconds",
        help: "Start time of the container since unix epoch in seconds.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.start_secs),
    },
    Def {
        name: "container_last_seen",
        help: "Last time a container was seen by the exporter.",
        kind: Gauge,
        extra: &[],
        value: |r| one(r.now_secs),
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
        name: "container_network_receive_packets_total",
        help: "Cumulative count of packets received.",
        value: |i| i.rx_packets,
    },
    NetDef {
        name: "container_network_receive_packets_dropped_total",
        help: "Cumulative count of packets dropped while receiving.",
        value: |i| i.rx_dropped,
    },
    NetDef {
        name: "container_network_transmit_packets_total",
        help: "Cumulative count of packets transmitted.",
        value: |i| i.tx_packets,
    },
    NetDef {
        name: "container_network_transmit_packets_dropped_total",
        help: "Cumulative count of packets dropped while transmitting.",
        value: |i| i.tx_dropped,
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
        label_keys: keys(CONTAINER_LABELS)
            .into_iter()
            .chain(keys(d.extra))
            .collect(),
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

pub fn container_metrics(now: i64, who: &Subject, r: &Reading) -> Vec<cri::Metric> {
    let mut out = Vec::new();
    for d in CONTAINER_METRICS {
        for (extra, value) in (d.value)(r) {
            let mut labels: Vec<String> = vec![who.id.into(), who.name.into(), who.image.into()];
            labels.extend(extra);
            out.push(cri::Metric {
                name: d.name.into(),
                timestamp: now,
                metric_type: d.kind as i32,
                label_values: labels,
                value: Some(cri::UInt64Value { value }),
            });
        }
    }
    out
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
    use skiff_runtime::cgroups::stats::Hugetlb;
    use std::collections::HashMap;

    /// The cAdvisor names kubelet's and cri-tools' consumers look for, with a value for each.
    const EXPECTED: &[&str] = &[
        "container_blkio_device_usage_total",
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_file_descriptors",
        "container_fs_inodes_free",
        "container_fs_inodes_total",
        "container_fs_limit_bytes",
        "container_fs_reads_bytes_total",
        "container_fs_reads_total",
        "container_fs_usage_bytes",
        "container_fs_writes_bytes_total",
        "container_fs_writes_total",
        "container_hugetlb_max_usage_bytes",
        "container_hugetlb_usage_bytes",
        "container_last_seen",
        "container_memory_cache",
        "container_memory_failcnt",
        "container_memory_failures_total",
        "container_memory_kernel_usage",
        "container_memory_mapped_file",
        "container_memory_max_usage_bytes",
        "container_memory_rss",
        "container_memory_swap",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
        "container_network_transmit_packets_total",
        "container_oom_events_total",
        "container_processes",
        "container_sockets",
        "container_spec_cpu_period",
        "container_spec_cpu_quota",
        "container_spec_cpu_shares",
        "container_spec_memory_limit_bytes",
        "container_spec_memory_swap_limit_bytes",
        "container_start_time_seconds",
        "container_threads",
        "container_threads_max",
    ];

    fn reading() -> Reading {
        let mut r = Reading {
            sample: Sample {
                cpu_nanos: 3 * NS_PER_SEC + 5,
                working_set: 77,
                ..Default::default()
            },
            cpu: CpuSpec {
                shares: 1024,
                period: 100_000,
                quota: Some(20_000),
            },
            procs: Procs {
                threads: 4,
                fds: 9,
                sockets: 2,
            },
            disk: Disk {
                device: "254:1".into(),
                usage_bytes: 4096,
                ..Default::default()
            },
            start_secs: 1_700_000_000,
            now_secs: 1_700_000_100,
            ..Default::default()
        };
        r.stats.cpu.throttling.periods = 12;
        r.stats.memory.usage.failcnt = 3;
        r.stats.memory.raw = [("pgfault".to_string(), 5), ("total_pgfault".to_string(), 8)].into();
        r.stats.hugetlb = [("2MB".to_string(), Hugetlb::default())].into();
        let io = &mut r.stats.blkio;
        for (op, value) in [("Read", 100), ("Write", 200), ("Read", 1)] {
            for list in [
                &mut io.io_service_bytes_recursive,
                &mut io.io_serviced_recursive,
            ] {
                list.push(BlkioEntry {
                    major: 254,
                    minor: 0,
                    op: op.into(),
                    value,
                });
            }
        }
        r
    }

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
        for name in EXPECTED {
            assert!(descs.contains_key(*name), "no descriptor for {name}");
        }
        let who = Subject {
            id: "c1",
            name: "app",
            image: "busybox",
        };
        let ifs = vec![Interface {
            name: "eth0".into(),
            rx_bytes: 10,
            rx_packets: 2,
            ..Default::default()
        }];
        let all: Vec<cri::Metric> = container_metrics(1, &who, &reading())
            .into_iter()
            .chain(network_metrics(1, &who, &ifs))
            .collect();
        for m in &all {
            let d = &descs[&m.name];
            assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
            assert!(!d.help.is_empty());
        }
        for name in EXPECTED {
            assert!(all.iter().any(|m| m.name == *name), "no value for {name}");
        }
        let get = |n: &str| all.iter().find(|m| m.name == n).unwrap();
        let value = |n: &str| get(n).value.unwrap().value;
        assert_eq!(value("container_cpu_usage_seconds_total"), 3);
        assert_eq!(
            get("container_cpu_usage_seconds_total").metric_type,
            Counter as i32
        );
        assert_eq!(value("container_memory_working_set_bytes"), 77);
        assert_eq!(value("container_spec_cpu_shares"), 1024);
        assert_eq!(value("container_spec_cpu_quota"), 20_000);
        assert_eq!(value("container_cpu_cfs_periods_total"), 12);
        assert_eq!(value("container_memory_failcnt"), 3);
        assert_eq!(value("container_threads"), 4);
        assert_eq!(value("container_sockets"), 2);
        assert_eq!(value("container_fs_usage_bytes"), 4096);
        assert_eq!(get("container_fs_usage_bytes").label_values[3], "254:1");
        assert_eq!(value("container_fs_reads_bytes_total"), 101);
        assert_eq!(value("container_network_receive_packets_total"), 2);
        assert_eq!(
            get("container_network_receive_bytes_total").label_values[3],
            "eth0"
        );
        let faults: Vec<_> = all
            .iter()
            .filter(|m| m.name == "container_memory_failures_total")
            .map(|m| (m.label_values[3..].join("/"), m.value.unwrap().value))
            .collect();
        assert!(
            faults.contains(&("pgfault/container".into(), 5)),
            "{faults:?}"
        );
        assert!(
            faults.contains(&("pgfault/hierarchy".into(), 8)),
            "{faults:?}"
        );
    }

    #[test]
    fn unlimited_quota_has_no_value() {
        let mut r = reading();
        r.cpu.quota = None;
        let who = Subject {
            id: "c1",
            name: "app",
            image: "busybox",
        };
        let all = container_metrics(1, &who, &r);
        assert!(!all.iter().any(|m| m.name == "container_spec_cpu_quota"));
    }
}
