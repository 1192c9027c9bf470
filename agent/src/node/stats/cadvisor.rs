//! `/metrics/cadvisor`: the cAdvisor families kubelet 1.28 serves that follow from what skiffd
//! samples anyway (the CRI layer's pod and container usage, the node's own), with kubelet's label
//! set: `id` the cgroup, `name` the runtime's container id, `image`, `container`, `pod`,
//! `namespace`. The node is the root cgroup `/`; a pod is its own cgroup, with its network.

use std::sync::Arc;

use cri_api::v1 as cri;

use super::prom::{render, Family, Sample};
use crate::config::CgroupDriver;
use crate::cri::sandbox::resources::pod_relative_path;
use crate::cri::Daemon;
use crate::node::NodeContext;

/// What kubelet labels every container series with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    pub id: String,
    pub name: String,
    pub image: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

/// The limits a container's cgroup was given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spec {
    /// 0 when unlimited, as cAdvisor reports it.
    pub memory_limit: u64,
    pub cpu_shares: u64,
    pub cpu_period: u64,
    pub cpu_quota: u64,
}

/// One interface's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// A container's writable layer: the device holding it and what it uses there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fs {
    pub device: String,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// One cgroup's series, measured at `millis`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub labels: Labels,
    pub millis: i64,
    pub cpu_nanos: Option<u64>,
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub usage: Option<u64>,
    /// Nanoseconds since the epoch.
    pub start: Option<i64>,
    pub spec: Option<Spec>,
    pub network: Vec<Interface>,
    pub fs: Option<Fs>,
}

/// The whole text, measured now.
pub async fn metrics(ctx: &Arc<NodeContext>) -> String {
    let d = &ctx.daemon;
    let pods = match crate::cri::stats::list_sandboxes(d, Default::default()).await {
        Ok(r) => r.stats,
        Err(e) => {
            tracing::warn!(error = %e.message(), "measure pods for /metrics/cadvisor");
            return render_cadvisor(&[], ctx.machine.cpus, ctx.machine.memory_bytes, false);
        }
    };
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let now = crate::now_ns();
        let mounts = skiff_runtime::mountinfo::read_self().unwrap_or_default();
        let mut entries = vec![root(now)];
        for p in &pods {
            entries.extend(pod(&ctx.daemon, &mounts, now, p));
        }
        render_cadvisor(&entries, ctx.machine.cpus, ctx.machine.memory_bytes, true)
    })
    .await
    .unwrap_or_default()
}

fn v(x: &Option<cri::UInt64Value>) -> Option<u64> {
    x.as_ref().map(|x| x.value)
}

/// The node as cAdvisor's root cgroup.
fn root(now: i64) -> Entry {
    let mem = super::host::memory(now);
    Entry {
        labels: Labels {
            id: "/".into(),
            ..Default::default()
        },
        millis: now / 1_000_000,
        cpu_nanos: super::host::cpu_nanos(),
        working_set: mem.as_ref().and_then(|m| m.working_set_bytes),
        rss: mem.as_ref().and_then(|m| m.rss_bytes),
        usage: mem.as_ref().and_then(|m| m.usage_bytes),
        start: Some(super::host::boot_time()),
        ..Default::default()
    }
}

/// The cgroup path (from a hierarchy's root) of a pod with `parent`, or of its container `id`.
fn cgroup_id(driver: CgroupDriver, parent: &str, container: Option<&str>) -> String {
    let pod = pod_relative_path(parent, driver)
        .map(|p| format!("/{}", p.display()))
        .unwrap_or_default();
    match (container, driver) {
        (None, _) => pod,
        (Some(id), CgroupDriver::Systemd) => format!("{pod}/skiff-{id}.scope"),
        (Some(id), CgroupDriver::Cgroupfs) => CgroupDriver::Cgroupfs.cgroups_path(parent, id),
    }
}

/// A pod's own cgroup, then each container whose cgroup exists (a running one).
fn pod(
    d: &Daemon,
    mounts: &[skiff_runtime::mountinfo::MountInfo],
    now: i64,
    p: &cri::PodSandboxStats,
) -> Vec<Entry> {
    let (Some(attrs), Some(linux)) = (p.attributes.as_ref(), p.linux.as_ref()) else {
        return Vec::new();
    };
    let Some(sb) = d.sandboxes.get(&attrs.id) else {
        return Vec::new();
    };
    let meta = attrs.metadata.clone().unwrap_or_default();
    let base = Labels {
        pod: meta.name,
        namespace: meta.namespace,
        ..Default::default()
    };
    let mut out = Vec::new();
    let id = cgroup_id(d.cgroup_driver, &sb.cgroup_parent, None);
    if !id.is_empty() {
        let mut e = usage(
            Labels { id, ..base.clone() },
            now,
            linux.cpu.as_ref(),
            linux.memory.as_ref(),
        );
        e.start = Some(sb.created_at);
        e.network = network(linux.network.as_ref());
        out.push(e);
    }
    for c in &linux.containers {
        if c.cpu.is_none() && c.memory.is_none() {
            continue;
        }
        let Some(rec) = c.attributes.as_ref().and_then(|a| d.containers.get(&a.id)) else {
            continue;
        };
        let labels = Labels {
            id: cgroup_id(d.cgroup_driver, &sb.cgroup_parent, Some(&rec.id)),
            name: rec.id.clone(),
            image: rec.image_name.clone(),
            container: rec
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            ..base.clone()
        };
        let mut e = usage(labels, now, c.cpu.as_ref(), c.memory.as_ref());
        e.start = Some(rec.created_at);
        e.spec = Some(spec(&rec.config));
        e.fs = c.writable_layer.as_ref().map(|w| Fs {
            device: skiff_runtime::mountinfo::containing(mounts, &rec.bundle)
                .map(|m| m.source.clone())
                .unwrap_or_default(),
            used_bytes: v(&w.used_bytes).unwrap_or(0),
            inodes_used: v(&w.inodes_used).unwrap_or(0),
        });
        out.push(e);
    }
    out
}

fn usage(
    labels: Labels,
    now: i64,
    cpu: Option<&cri::CpuUsage>,
    mem: Option<&cri::MemoryUsage>,
) -> Entry {
    Entry {
        labels,
        millis: now / 1_000_000,
        cpu_nanos: cpu.and_then(|c| v(&c.usage_core_nano_seconds)),
        working_set: mem.and_then(|m| v(&m.working_set_bytes)),
        rss: mem.and_then(|m| v(&m.rss_bytes)),
        usage: mem.and_then(|m| v(&m.usage_bytes)),
        ..Default::default()
    }
}

fn spec(config: &cri::ContainerConfig) -> Spec {
    let r = config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let non_negative = |n: i64| u64::try_from(n).unwrap_or(0);
    Spec {
        memory_limit: non_negative(r.memory_limit_in_bytes),
        cpu_shares: non_negative(r.cpu_shares),
        cpu_period: non_negative(r.cpu_period),
        cpu_quota: non_negative(r.cpu_quota),
    }
}

fn network(n: Option<&cri::NetworkUsage>) -> Vec<Interface> {
    let Some(n) = n else { return Vec::new() };
    n.interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            rx_bytes: v(&i.rx_bytes).unwrap_or(0),
            rx_errors: v(&i.rx_errors).unwrap_or(0),
            tx_bytes: v(&i.tx_bytes).unwrap_or(0),
            tx_errors: v(&i.tx_errors).unwrap_or(0),
        })
        .collect()
}

/// Label pairs in name order, as Go's client writes them, with `extra` merged in.
fn labels(l: &Labels, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = vec![
        ("container", l.container.clone()),
        ("id", l.id.clone()),
        ("image", l.image.clone()),
        ("name", l.name.clone()),
        ("namespace", l.namespace.clone()),
        ("pod", l.pod.clone()),
    ];
    out.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    out.sort_by_key(|(k, _)| *k);
    out
}

/// The families, filled from `entries`.
struct Families(Vec<Family>);

impl Families {
    fn push(&mut self, name: &str, labels: Vec<(&'static str, String)>, value: f64, millis: i64) {
        if let Some(f) = self.0.iter_mut().find(|f| f.name == name) {
            f.samples.push(Sample {
                labels,
                value,
                millis: Some(millis),
            });
        }
    }
}

/// Name, help, kind of every family served (help as cAdvisor words it).
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
    ),
    ("container_memory_rss", "Size of RSS in bytes.", "gauge"),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        "gauge",
    ),
    (
        "container_spec_cpu_shares",
        "CPU share of the container.",
        "gauge",
    ),
    (
        "container_spec_cpu_period",
        "CPU period of the container.",
        "gauge",
    ),
    (
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        "gauge",
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter",
        "gauge",
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        "counter",
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        "counter",
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        "counter",
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        "counter",
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        "gauge",
    ),
    ("container_fs_inodes_total", "Number of Inodes", "gauge"),
];

fn entry_samples(f: &mut Families, e: &Entry) {
    let l = |extra: &[(&'static str, &str)]| labels(&e.labels, extra);
    let ms = e.millis;
    if let Some(n) = e.cpu_nanos {
        f.push(
            "container_cpu_usage_seconds_total",
            l(&[("cpu", "total")]),
            n as f64 / 1e9,
            ms,
        );
    }
    let memory = [
        ("container_memory_working_set_bytes", e.working_set),
        ("container_memory_rss", e.rss),
        ("container_memory_usage_bytes", e.usage),
    ];
    for (name, value) in memory {
        if let Some(b) = value {
            f.push(name, l(&[]), b as f64, ms);
        }
    }
    if let Some(s) = e.start {
        f.push(
            "container_start_time_seconds",
            l(&[]),
            (s / 1_000_000_000) as f64,
            ms,
        );
    }
    f.push("container_last_seen", l(&[]), (ms / 1000) as f64, ms);
    if let Some(s) = &e.spec {
        f.push(
            "container_spec_memory_limit_bytes",
            l(&[]),
            s.memory_limit as f64,
            ms,
        );
        f.push("container_spec_cpu_shares", l(&[]), s.cpu_shares as f64, ms);
        if s.cpu_quota > 0 {
            f.push("container_spec_cpu_period", l(&[]), s.cpu_period as f64, ms);
            f.push("container_spec_cpu_quota", l(&[]), s.cpu_quota as f64, ms);
        }
    }
    for i in &e.network {
        let il = || l(&[("interface", &i.name)]);
        f.push(
            "container_network_receive_bytes_total",
            il(),
            i.rx_bytes as f64,
            ms,
        );
        f.push(
            "container_network_receive_errors_total",
            il(),
            i.rx_errors as f64,
            ms,
        );
        f.push(
            "container_network_transmit_bytes_total",
            il(),
            i.tx_bytes as f64,
            ms,
        );
        f.push(
            "container_network_transmit_errors_total",
            il(),
            i.tx_errors as f64,
            ms,
        );
    }
    if let Some(fs) = &e.fs {
        let dl = || l(&[("device", &fs.device)]);
        f.push("container_fs_usage_bytes", dl(), fs.used_bytes as f64, ms);
        f.push("container_fs_inodes_total", dl(), fs.inodes_used as f64, ms);
    }
}

fn plain(name: &'static str, help: &'static str, value: f64) -> Family {
    Family {
        name,
        help,
        kind: "gauge",
        samples: vec![Sample {
            labels: vec![],
            value,
            millis: None,
        }],
    }
}

/// The text; `measured` is false when the pods could not be measured (`container_scrape_error`).
pub fn render_cadvisor(entries: &[Entry], cpus: u64, memory_bytes: u64, measured: bool) -> String {
    let mut f = Families(
        FAMILIES
            .iter()
            .map(|(name, help, kind)| Family {
                name,
                help,
                kind,
                samples: Vec::new(),
            })
            .collect(),
    );
    for e in entries {
        entry_samples(&mut f, e);
    }
    let mut all = f.0;
    all.push(plain(
        "container_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        if measured { 0.0 } else { 1.0 },
    ));
    all.push(plain(
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        cpus as f64,
    ));
    all.push(plain(
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        memory_bytes as f64,
    ));
    render(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Entry {
        Entry {
            labels: Labels {
                id: "/kubepods/burstable/podu/abc".into(),
                name: "abc".into(),
                image: "r/busybox:1".into(),
                container: "main".into(),
                pod: "p".into(),
                namespace: "ns".into(),
            },
            millis: 1_796_572_800_000,
            cpu_nanos: Some(1_500_000_000),
            working_set: Some(1 << 20),
            rss: Some(1 << 19),
            usage: Some(2 << 20),
            start: Some(1_796_572_740_000_000_000),
            spec: Some(Spec {
                memory_limit: 256 << 20,
                cpu_shares: 2,
                ..Default::default()
            }),
            network: Vec::new(),
            fs: Some(Fs {
                device: "/dev/vda".into(),
                used_bytes: 4096,
                inodes_used: 3,
            }),
        }
    }

    #[test]
    fn a_container_gets_kubelets_labels_and_families() {
        let text = render_cadvisor(&[container()], 2, 1 << 30, true);
        let l = "container=\"main\",id=\"/kubepods/burstable/podu/abc\",image=\"r/busybox:1\",\
                 name=\"abc\",namespace=\"ns\",pod=\"p\"";
        let ms = 1_796_572_800_000i64;
        for line in [
            format!(
                "container_cpu_usage_seconds_total{{{}}} 1.5 {ms}",
                l.replace(",id", ",cpu=\"total\",id")
            ),
            format!("container_memory_working_set_bytes{{{l}}} 1.048576e+06 {ms}"),
            format!("container_memory_rss{{{l}}} 524288 {ms}"),
            format!("container_memory_usage_bytes{{{l}}} 2.097152e+06 {ms}"),
            format!("container_spec_memory_limit_bytes{{{l}}} 2.68435456e+08 {ms}"),
            format!("container_spec_cpu_shares{{{l}}} 2 {ms}"),
            format!("container_start_time_seconds{{{l}}} 1.79657274e+09 {ms}"),
            format!(
                "container_fs_usage_bytes{{{}}} 4096 {ms}",
                format_args!("container=\"main\",device=\"/dev/vda\",{}", &l[17..])
            ),
            "container_scrape_error 0".into(),
            "machine_cpu_cores 2".into(),
            "# TYPE container_cpu_usage_seconds_total counter".into(),
        ] {
            assert!(
                text.lines().any(|x| x == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(
            !text.contains("container_spec_cpu_quota"),
            "no quota, no series:\n{text}"
        );
        assert!(!text.contains("container_network_"), "{text}");
    }

    #[test]
    fn a_pod_carries_its_network_per_interface() {
        let e = Entry {
            labels: Labels {
                id: "/kubepods/podu".into(),
                pod: "p".into(),
                namespace: "ns".into(),
                ..Default::default()
            },
            millis: 7,
            network: vec![Interface {
                name: "eth0".into(),
                rx_bytes: 10,
                tx_bytes: 20,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render_cadvisor(&[e], 1, 1, true);
        let l = "container=\"\",id=\"/kubepods/podu\",image=\"\",interface=\"eth0\",name=\"\",\
                 namespace=\"ns\",pod=\"p\"";
        assert!(
            text.contains(&format!(
                "container_network_receive_bytes_total{{{l}}} 10 7\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "container_network_transmit_bytes_total{{{l}}} 20 7\n"
            )),
            "{text}"
        );
        assert!(render_cadvisor(&[], 1, 1, false).contains("container_scrape_error 1\n"));
    }

    #[test]
    fn cgroup_ids_follow_the_driver() {
        let parent = "/kubepods/burstable/podu";
        assert_eq!(cgroup_id(CgroupDriver::Cgroupfs, parent, None), parent);
        assert_eq!(
            cgroup_id(CgroupDriver::Cgroupfs, parent, Some("abc")),
            "/kubepods/burstable/podu/abc"
        );
        let slice = "kubepods-burstable-podu.slice";
        assert_eq!(
            cgroup_id(CgroupDriver::Systemd, slice, Some("abc")),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu.slice/skiff-abc.scope"
        );
        assert_eq!(cgroup_id(CgroupDriver::Cgroupfs, "", None), "");
    }
}
