//! Container and pod stats over the real socket, from the cgroups of real running containers:
//! memory a container allocates shows in its working set, CPU time grows, filters select, pod
//! stats hold their containers, and the metrics agree with their descriptors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use skiff_tests::cri::{container_config, host_network, pod_config, v1 as cri, Options, Skiffd};
use tonic::Code;

/// A container to run: its name, its labels and the shell script it runs.
type Spec<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// Runs a pod with one container per `(name, labels, script)`; the pod's id and the containers'.
/// Pods use the node's network unless the daemon was given a CNI config.
async fn running_pod(d: &mut Skiffd, pod: &str, containers: &[Spec<'_>]) -> (String, Vec<String>) {
    let mut config = pod_config(pod, &d.log_dir());
    let has_cni = std::fs::read_dir(d.dir.join("net.d")).is_ok_and(|mut e| e.next().is_some());
    if !has_cni {
        config = host_network(config);
    }
    let sandbox = d.run_pod(config).await;
    d.pull_busybox().await;
    let mut ids = Vec::new();
    for (name, labels, script) in containers {
        let mut c = container_config(name, script);
        c.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ids.push(d.run_container(&sandbox, c).await);
    }
    (sandbox.id, ids)
}

async fn container_stats(d: &mut Skiffd, id: &str) -> cri::ContainerStats {
    d.rt.container_stats(cri::ContainerStatsRequest {
        container_id: id.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .stats
    .unwrap()
}

fn value(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().map_or(0, |v| v.value)
}

fn working_set(s: &cri::ContainerStats) -> u64 {
    value(&s.memory.as_ref().unwrap().working_set_bytes)
}

fn cpu_total(s: &cri::ContainerStats) -> u64 {
    value(&s.cpu.as_ref().unwrap().usage_core_nano_seconds)
}

/// Polls until `ok` holds for the container's stats, or panics with the last ones.
async fn wait_stats(
    d: &mut Skiffd,
    id: &str,
    ok: impl Fn(&cri::ContainerStats) -> bool,
) -> cri::ContainerStats {
    let mut last = None;
    for _ in 0..100 {
        let s = container_stats(d, id).await;
        if s.memory.is_some() && s.cpu.is_some() && ok(&s) {
            return s;
        }
        last = Some(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stats never matched: {last:?}");
}

#[tokio::test]
async fn unknown_and_bad_ids() {
    let mut d = Skiffd::start().await;
    let e =
        d.rt.container_stats(cri::ContainerStatsRequest {
            container_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e =
        d.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    for bad in ["", "../etc", "x".repeat(5000).as_str()] {
        let e =
            d.rt.container_stats(cri::ContainerStatsRequest {
                container_id: bad.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
    }
    let list =
        d.rt.list_container_stats(cri::ListContainerStatsRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert!(list.stats.is_empty());
    let pods =
        d.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert!(pods.stats.is_empty());
}

#[tokio::test]
async fn metric_descriptors_name_cadvisor_metrics() {
    let mut d = Skiffd::start().await;
    let descs =
        d.rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors;
    let names: Vec<&str> = descs.iter().map(|d| d.name.as_str()).collect();
    for n in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(descs
        .iter()
        .all(|d| !d.help.is_empty() && !d.label_keys.is_empty()));
    let m =
        d.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner();
    assert!(m.pod_metrics.is_empty());
}

#[tokio::test]
async fn memory_a_container_allocates_is_in_its_working_set() {
    let mut d = Skiffd::start().await;
    // About 40 MB held in a shell variable. The variable is used after `sleep`, because busybox
    // sh execs a script's last command, which would free the 40 MB once allocated.
    let script = "x=$(head -c 40000000 /dev/zero | tr '\\0' a); echo ready; sleep 1000; echo ${#x}";
    let (_, ids) = running_pod(&mut d, "mem", &[("hog", &[], script)]).await;
    let s = wait_stats(&mut d, &ids[0], |s| working_set(s) > 35_000_000).await;
    let m = s.memory.as_ref().unwrap();
    assert!(value(&m.usage_bytes) >= working_set(&s), "{m:?}");
    assert!(value(&m.rss_bytes) > 30_000_000, "{m:?}");
    assert!(value(&m.page_faults) > 0, "{m:?}");
    assert!(m.timestamp > 0);
    let attrs = s.attributes.as_ref().unwrap();
    assert_eq!(attrs.id, ids[0]);
    assert_eq!(attrs.metadata.as_ref().unwrap().name, "hog");
    assert!(s.writable_layer.is_some());
    // Held memory stays counted: the working set is not a peak caught while it was allocated.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = container_stats(&mut d, &ids[0]).await;
    assert!(working_set(&later) > 35_000_000, "{:?}", later.memory);
}

#[tokio::test]
async fn cpu_usage_grows_and_has_a_rate() {
    let mut d = Skiffd::start().await;
    let (_, ids) = running_pod(&mut d, "cpu", &[("spin", &[], "while :; do :; done")]).await;
    let first = wait_stats(&mut d, &ids[0], |s| cpu_total(s) > 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = container_stats(&mut d, &ids[0]).await;
    let spent = cpu_total(&second) - cpu_total(&first);
    // A busy loop on a shared 2-core machine gets at least a tenth of a core.
    assert!(spent > 150_000_000, "{spent} ns in 1.5 s");
    let rate = value(&second.cpu.as_ref().unwrap().usage_nano_cores);
    assert!(
        rate > 100_000_000 && rate < 2_100_000_000,
        "{rate} nano cores"
    );
}

#[tokio::test]
async fn list_filters_and_pod_stats() {
    let mut d = Skiffd::start().await;
    let web: &[(&str, &str)] = &[("role", "web")];
    let db: &[(&str, &str)] = &[("role", "db")];
    let (pod, ids) = running_pod(
        &mut d,
        "two",
        &[("web", web, "sleep 1000"), ("db", db, "sleep 1000")],
    )
    .await;
    let list = |f: cri::ContainerStatsFilter| {
        let mut rt = d.rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_container_stats(cri::ListContainerStatsRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .stats
                .into_iter()
                .map(|s| s.attributes.unwrap().id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut all = ids.clone();
    all.sort();
    assert_eq!(list(Default::default()).await, all);
    assert_eq!(
        list(cri::ContainerStatsFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await,
        all
    );
    assert_eq!(
        list(cri::ContainerStatsFilter {
            id: ids[1].clone(),
            ..Default::default()
        })
        .await,
        vec![ids[1].clone()]
    );
    let selector: HashMap<String, String> = [("role".to_string(), "web".to_string())].into();
    assert_eq!(
        list(cri::ContainerStatsFilter {
            label_selector: selector,
            ..Default::default()
        })
        .await,
        vec![ids[0].clone()]
    );
    assert!(list(cri::ContainerStatsFilter {
        pod_sandbox_id: "ffffffffffff".into(),
        ..Default::default()
    })
    .await
    .is_empty());

    let s =
        d.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(s.attributes.as_ref().unwrap().id, pod);
    let linux = s.linux.unwrap();
    assert_eq!(linux.containers.len(), 2);
    assert!(value(&linux.memory.unwrap().working_set_bytes) > 0);
    assert!(linux.cpu.is_some());
    assert!(value(&linux.process.unwrap().process_count) >= 2);

    let pods =
        d.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                label_selector: [("app".to_string(), "two".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pods.len(), 1);

    // Metrics: every reported metric has a descriptor with as many label keys.
    let descs: HashMap<String, usize> =
        d.rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
    let m =
        d.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].pod_sandbox_id, pod);
    assert_eq!(m[0].container_metrics.len(), 2);
    let metrics = m[0]
        .metrics
        .iter()
        .chain(m[0].container_metrics.iter().flat_map(|c| c.metrics.iter()));
    let mut working_sets = 0;
    for metric in metrics {
        assert_eq!(
            descs.get(&metric.name),
            Some(&metric.label_values.len()),
            "{metric:?}"
        );
        if metric.name == "container_memory_working_set_bytes" {
            working_sets += 1;
            assert!(value(&metric.value) > 0);
        }
    }
    assert_eq!(working_sets, 2);
}

#[tokio::test]
async fn pod_network_counters_come_from_its_namespace() {
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(
            r#"{"cniVersion":"1.1.0","name":"pods","plugins":[{"type":"skiff-bridge","bridge":"skst0","ipam":{"type":"host-local","subnet":"10.98.7.0/24"}}]}"#
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let (pod, _) = running_pod(&mut d, "net", &[("idle", &[], "sleep 1000")]).await;
    let s =
        d.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let net = s.linux.unwrap().network.expect("network stats");
    let eth0 = net.default_interface.expect("default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(net.interfaces.iter().all(|i| i.name != "lo"));
}

/// The cAdvisor container metrics kubelet's consumers read (and cri-tools checks), each with a value
/// for a running container in a pod with its own network.
const CADVISOR_METRICS: &[&str] = &[
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
    "container_fs_usage_bytes",
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

#[tokio::test]
async fn pod_metrics_carry_the_cadvisor_names_from_cgroups_and_proc() {
    let ipam = tempfile::tempdir().unwrap();
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(skiff_tests::cri::bridge_conflist(
            "skmet0",
            "10.98.41.0/24",
            ipam.path(),
        )),
        ..Default::default()
    })
    .await;
    let sandbox = d.run_pod(pod_config("metrics", &d.log_dir())).await;
    d.pull_busybox().await;
    let mut c = container_config("busy", "sleep 1000 & exec sleep 1000");
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = d.run_container(&sandbox, c).await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let descs: HashMap<String, usize> =
        d.rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
    let pods =
        d.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    let pod = pods
        .iter()
        .find(|p| p.pod_sandbox_id == sandbox.id)
        .expect("the pod's metrics");
    assert_eq!(pod.container_metrics.len(), 1);
    assert_eq!(pod.container_metrics[0].container_id, id);
    let all: Vec<&cri::Metric> = pod
        .metrics
        .iter()
        .chain(pod.container_metrics[0].metrics.iter())
        .collect();
    for m in &all {
        assert_eq!(descs.get(&m.name), Some(&m.label_values.len()), "{m:?}");
        assert_eq!(
            &m.label_values[0],
            if m.name.contains("network") {
                &sandbox.id
            } else {
                &id
            }
        );
    }
    let get = |name: &str| {
        all.iter()
            .find(|m| m.name == name)
            .map(|m| value(&m.value))
            .unwrap_or_else(|| panic!("no value for {name}"))
    };
    for name in CADVISOR_METRICS {
        assert!(descs.contains_key(*name), "no descriptor for {name}");
        get(name);
    }
    // The settings in force, read back from the container's cgroups.
    assert_eq!(get("container_spec_cpu_shares"), 512);
    assert_eq!(get("container_spec_cpu_quota"), 20_000);
    assert_eq!(get("container_spec_cpu_period"), 100_000);
    assert_eq!(get("container_spec_memory_limit_bytes"), 64 << 20);
    // Its two processes, from /proc: a thread and three standard descriptors each.
    assert_eq!(get("container_threads"), 2);
    assert!(get("container_file_descriptors") >= 6);
    assert!(get("container_memory_usage_bytes") > 0);
    assert!(get("container_fs_limit_bytes") > 0);
    assert!(get("container_fs_inodes_total") >= get("container_fs_inodes_free"));
    let start = get("container_start_time_seconds");
    assert!(
        start <= started && start + 60 > started,
        "{start} vs {started}"
    );
    assert!(get("container_last_seen") >= start);
}
