//! `kubectl logs` and the node's resource figures through the real kube-apiserver, served by
//! skiffd's kubelet API: the log options (`--tail`, `--since`, `--since-time`, `--timestamps`,
//! `--limit-bytes`), `-f`, `--previous` after a restart, a rotation under `kubectl logs -f` with
//! the rotated files kept to `containerLogMaxFiles`, and `/stats/summary`, `/metrics/resource` and
//! `/metrics/cadvisor` for a pod holding a known amount of memory, held against the CRI's own
//! numbers and the cgroup files, and `/spec/` against the machine.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::cri::{self, v1 as criv1, BUSYBOX};
use skiff_tests::k8s::pod_cluster::PodCluster;

/// Rotation settings small enough to rotate within seconds; four files, so that one rotated file
/// is old enough to be compressed.
const LOG_MAX_FILES: usize = 4;

fn cluster() -> PodCluster {
    PodCluster::builder("logs")
        .kubelet_config(|_| {
            format!(
                "containerLogMaxSize: 16Ki\ncontainerLogMaxFiles: {LOG_MAX_FILES}\n\
                 containerLogMonitorInterval: 1s\n"
            )
        })
        .start()
}

/// `kubectl logs …` in the test's namespace, which must succeed.
fn logs(c: &PodCluster, args: &[&str]) -> String {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    c.kubectl_ok(&a)
}

/// Waits until the pod `name` runs (ready or not); the pod then.
fn running(c: &mut PodCluster, name: &str) -> Value {
    c.until_pod(name, "Running", Duration::from_secs(90), |p| {
        (p["status"]["phase"] == "Running").then(|| p.clone())
    })
}

/// `kubectl logs -f …` as a child whose lines arrive on a channel.
fn follow(c: &PodCluster, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.cp.admin_kubeconfig())
        .args(["-n", &c.ns, "logs", "-f"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn pod(name: &str, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, '{script}']
{extra}"
    )
}

/// The hog's memory limit, in bytes, which its cgroup and `/metrics/cadvisor` must both show.
const HOG_LIMIT: u64 = 200 << 20;

const CRASH_VOLUME: &str = "    volumeMounts: [{name: d, mountPath: /d}]
  volumes: [{name: d, emptyDir: {}}]
";

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() >= 20
        && b[4] == b'-'
        && b[10] == b'T'
        && s.ends_with('Z')
        && s[..4].bytes().all(|c| c.is_ascii_digit())
}

/// The number in `prefix-N…` lines.
fn seq(line: &str, prefix: &str) -> Option<u64> {
    line.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

#[test]
fn kubectl_logs_and_resource_stats_through_the_api_server() {
    let mut c = cluster();
    c.apply(&pod(
        "words",
        "echo one; echo two; echo three; sleep 4; echo late; exec sleep 3600",
        "",
    ));
    c.apply(&pod(
        "ticker",
        "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.3; done",
        "",
    ));
    c.apply(&pod(
            "crash",
            "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo instance-$n; sleep 2; exit 1",
            CRASH_VOLUME,
    ));
    // About 100 bytes a line, 500 lines a second: a 16 KiB log rotates every check.
    c.apply(&pod(
            "spew",
            "i=0; while true; do echo spew-$i-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; i=$((i+1)); usleep 2000; done",
            "",
    ));
    c.apply(&pod(
        "hog",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 && echo filled && exec sleep 3600",
        &format!("    resources: {{limits: {{memory: {HOG_LIMIT}}}}}\n"),
    ));

    // The log options, on a log that no longer changes.
    running(&mut c, "words");
    c.until("words' last line", Duration::from_secs(30), |c| {
        logs(c, &["words"]).contains("late").then_some(())
    });
    assert_eq!(logs(&c, &["words"]), "one\ntwo\nthree\nlate\n");
    assert_eq!(logs(&c, &["words", "--tail=2"]), "three\nlate\n");
    assert_eq!(logs(&c, &["words", "--tail=0"]), "");
    assert_eq!(logs(&c, &["words", "--limit-bytes=6"]), "one\ntw");
    assert_eq!(
        logs(&c, &["words", "--since=1h"]),
        "one\ntwo\nthree\nlate\n"
    );
    let stamped = logs(&c, &["words", "--timestamps"]);
    let lines: Vec<(&str, &str)> = stamped
        .lines()
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    assert_eq!(
        lines.iter().map(|(_, m)| *m).collect::<Vec<_>>(),
        ["one", "two", "three", "late"],
        "{stamped}"
    );
    assert!(lines.iter().all(|(t, _)| is_timestamp(t)), "{stamped}");
    // `late` came four seconds after `three`: a since-time at its second leaves the rest out.
    let late_at = lines[3].0;
    assert_eq!(
        logs(&c, &["words", &format!("--since-time={late_at}")]),
        "late\n"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(logs(&c, &["words", "--since=2s"]), "");

    // -f: new lines arrive while the container runs.
    running(&mut c, "ticker");
    let (mut child, rx) = follow(&c, &["ticker", "--tail=1"]);
    let mut ticks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ticks.len() < 5 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            ticks.push(seq(&l, "tick-").unwrap_or_else(|| panic!("{l:?}")));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ticks.len(), 5, "{ticks:?}");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");

    // --previous: the log of the instance before the restart.
    let out = c.kubectl(&["logs", "words", "--previous"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("previous terminated container \"main\" in pod \"words\" not found"),
        "{out}"
    );
    let (restarts, previous, current) =
        c.until(
            "crash restarted and stable",
            Duration::from_secs(120),
            |c| {
                let r = c.pod("crash").unwrap_or_default()["status"]["containerStatuses"][0]
                    ["restartCount"]
                    .as_u64()?;
                if r == 0 {
                    return None;
                }
                let prev = c.kubectl(&["logs", "crash", "--previous"]);
                let cur = c.kubectl(&["logs", "crash"]);
                let again = c.pod("crash").unwrap_or_default()["status"]["containerStatuses"][0]
                    ["restartCount"]
                    .as_u64()?;
                (prev.success() && cur.success() && again == r && !cur.stdout.is_empty())
                    .then_some((r, prev.stdout, cur.stdout))
            },
        );
    assert_eq!(previous, format!("instance-{restarts}\n"));
    assert_eq!(current, format!("instance-{}\n", restarts + 1));

    // A rotation under `kubectl logs -f`: every line once, in order, across the renames.
    running(&mut c, "spew");
    let (mut child, rx) = follow(&c, &["spew"]);
    let uid = c.pod("spew").unwrap_or_default()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = c
        .node
        .node
        .dir
        .join(format!("pod-logs/{}_spew_{uid}/main", c.ns));
    let mut seen = Vec::new();
    let mut rotated_seen = 0;
    let mut gz_seen = false;
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        while let Ok(l) = rx.try_recv() {
            seen.push(seq(&l, "spew-").unwrap_or_else(|| panic!("{l:?}")));
        }
        let files: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            files.len() <= LOG_MAX_FILES,
            "more than {LOG_MAX_FILES} files: {files:?}"
        );
        rotated_seen = rotated_seen.max(files.iter().filter(|f| f.starts_with("0.log.")).count());
        gz_seen |= files.iter().any(|f| f.ends_with(".gz"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        rotated_seen >= LOG_MAX_FILES - 1,
        "rotated files: {rotated_seen}"
    );
    assert!(gz_seen, "no rotated file was compressed");
    assert!(seen.len() > 1000, "{} lines", seen.len());
    let first = seen[0];
    let gaps: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(i, n)| **n != first + *i as u64)
        .take(5)
        .collect();
    assert!(
        gaps.is_empty(),
        "lines lost or repeated across rotations: {gaps:?}"
    );

    check_stats(&mut c);
}

/// `/stats/summary` and `/metrics/resource` for the pod holding 48 MiB of shared memory.
fn check_stats(c: &mut PodCluster) {
    running(c, "hog");
    c.until("hog filled", Duration::from_secs(60), |c| {
        logs(c, &["hog"]).contains("filled").then_some(())
    });
    let node = c.node.name.clone();
    let raw = |c: &PodCluster, path: &str| {
        c.cp.kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy{path}")])
    };
    let summary: Value = serde_json::from_str(&raw(c, "/stats/summary")).unwrap();
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    for k in ["cpu", "memory", "network", "fs", "runtime", "rlimit"] {
        assert!(
            summary["node"][k].is_object(),
            "node.{k}: {}",
            summary["node"]
        );
    }
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 48 << 20
    );
    assert!(
        summary["node"]["runtime"]["imageFs"]["usedBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let pods = summary["pods"].as_array().unwrap();
    let hog = pods
        .iter()
        .find(|p| p["podRef"]["name"] == "hog" && p["podRef"]["namespace"] == c.ns.as_str())
        .unwrap_or_else(|| panic!("no hog in {pods:?}"));
    let ctr = &hog["containers"][0];
    assert_eq!(ctr["name"], "main");
    for k in ["cpu", "memory", "rootfs", "logs"] {
        assert!(ctr[k].is_object(), "container {k}: {ctr}");
    }
    for k in ["cpu", "memory", "ephemeral-storage", "process_stats"] {
        assert!(hog[k].is_object(), "pod {k}: {hog}");
    }
    assert!(hog["network"]["interfaces"].is_array(), "{hog}");
    assert!(ctr["logs"]["usedBytes"].as_u64().unwrap() > 0, "{ctr}");
    let summary_ws = ctr["memory"]["workingSetBytes"].as_u64().unwrap();
    assert!(
        (48 << 20..80 << 20).contains(&summary_ws),
        "working set {summary_ws}"
    );
    let cri_ws = cri_working_set(c, "hog");
    let near = |a: u64, b: u64| a.abs_diff(b) < 4 << 20;
    assert!(
        near(summary_ws, cri_ws),
        "summary {summary_ws} vs CRI {cri_ws}"
    );

    let text = raw(c, "/metrics/resource");
    let sample = |name: &str, labels: &str| -> f64 {
        let prefix = format!("{name}{labels} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{text}"));
        line[prefix.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let labels = format!("{{container=\"main\",namespace=\"{}\",pod=\"hog\"}}", c.ns);
    let ws = sample("container_memory_working_set_bytes", &labels) as u64;
    assert!(near(ws, cri_ws), "metrics {ws} vs CRI {cri_ws}");
    assert!(sample("container_cpu_usage_seconds_total", &labels) > 0.0);
    assert!(sample("container_start_time_seconds", &labels) > 1.7e9);
    let pod_labels = format!("{{namespace=\"{}\",pod=\"hog\"}}", c.ns);
    assert!(sample("pod_memory_working_set_bytes", &pod_labels) as u64 >= ws);
    assert!(sample("pod_cpu_usage_seconds_total", &pod_labels) > 0.0);
    assert!(sample("node_cpu_usage_seconds_total", "") > 0.0);
    assert!(sample("node_memory_working_set_bytes", "") > 0.0);
    assert_eq!(sample("scrape_error", ""), 0.0);
    assert!(
        text.contains("# TYPE container_cpu_usage_seconds_total counter\n"),
        "{text}"
    );

    let own = raw(c, "/metrics");
    assert!(
        own.contains(&format!("kubelet_node_name{{node=\"{node}\"}} 1\n")),
        "{own}"
    );
    assert!(own.contains("process_resident_memory_bytes "), "{own}");

    check_cadvisor(c, &raw(c, "/metrics/cadvisor"));

    let spec: Value = serde_json::from_str(&raw(c, "/spec/")).unwrap();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .map(|kib| kib.trim().parse::<u64>().unwrap() * 1024)
        .unwrap();
    assert_eq!(spec["memory_capacity"], mem_total, "{spec}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(spec["num_cores"], cores, "{spec}");
    assert!(spec["num_sockets"].as_u64().unwrap() >= 1, "{spec}");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(spec["boot_id"], boot_id.trim(), "{spec}");
}

/// The series of `name` whose labels include every one of `want`: its labels and value.
fn series(text: &str, name: &str, want: &[(&str, &str)]) -> (Vec<(String, String)>, f64) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let labels: Vec<(String, String)> = labels
            .split("\",")
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").unwrap();
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        if want
            .iter()
            .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        {
            return (labels, value.split(' ').next().unwrap().parse().unwrap());
        }
    }
    panic!("no {name} with {want:?} in\n{text}")
}

fn label<'a>(labels: &'a [(String, String)], k: &str) -> &'a str {
    &labels.iter().find(|(lk, _)| lk == k).unwrap().1
}

/// A number in a cgroup v1 file (`file`), or a `key value` line of it when `key` is given.
fn cgroup_number(controller: &str, id: &str, file: &str, key: Option<&str>) -> u64 {
    let path = format!("/sys/fs/cgroup/{controller}{id}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value = match key {
        None => text.trim(),
        Some(k) => text
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{k} in {path}")),
    };
    value.parse().unwrap()
}

/// `/metrics/cadvisor` for the hog, its cgroup named by the `id` label and held against the
/// cgroup files; the `name` label is the container's id, the pod its own series with its network.
fn check_cadvisor(c: &PodCluster, text: &str) {
    let ns = c.ns.as_str();
    let hog = [("namespace", ns), ("pod", "hog"), ("container", "main")];
    let (labels, ws) = series(text, "container_memory_working_set_bytes", &hog);
    let id = label(&labels, "id").to_string();
    assert_eq!(label(&labels, "image"), BUSYBOX, "{labels:?}");
    let status = c.cp.kubectl_ok(&[
        "get",
        "pod",
        "hog",
        "-n",
        ns,
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    let (_, cid) = status.split_once("://").unwrap();
    assert_eq!(label(&labels, "name"), cid, "{labels:?}");
    assert!(id.ends_with(&format!("/{cid}")), "{id}");

    let usage = cgroup_number("memory", &id, "memory.usage_in_bytes", None);
    let inactive = cgroup_number("memory", &id, "memory.stat", Some("total_inactive_file"));
    let cgroup_ws = usage.saturating_sub(inactive);
    assert!(ws as u64 >= 48 << 20, "working set {ws}");
    assert!(
        (ws - cgroup_ws as f64).abs() < (4 << 20) as f64,
        "cadvisor {ws} vs cgroup {cgroup_ws}"
    );
    let (_, used) = series(text, "container_memory_usage_bytes", &hog);
    assert!(
        (used - usage as f64).abs() < (4 << 20) as f64,
        "cadvisor {used} vs cgroup {usage}"
    );
    let (_, limit) = series(text, "container_spec_memory_limit_bytes", &hog);
    assert_eq!(limit as u64, HOG_LIMIT);
    assert_eq!(
        cgroup_number("memory", &id, "memory.limit_in_bytes", None),
        HOG_LIMIT
    );
    let (_, rss) = series(text, "container_memory_rss", &hog);
    assert!(rss <= used, "rss {rss} over usage {used}");

    let (cpu_labels, cpu) = series(text, "container_cpu_usage_seconds_total", &hog);
    assert_eq!(label(&cpu_labels, "cpu"), "total");
    let cgroup_cpu = cgroup_number("cpuacct", &id, "cpuacct.usage", None) as f64 / 1e9;
    assert!(
        cpu > 0.0 && cpu <= cgroup_cpu + 1e-6,
        "cadvisor {cpu} vs cgroup {cgroup_cpu}"
    );
    assert!(
        cgroup_cpu - cpu < 0.5,
        "cadvisor {cpu} vs cgroup {cgroup_cpu}"
    );
    let (_, start) = series(text, "container_start_time_seconds", &hog);
    assert!(start > 1.7e9, "{start}");
    let (fs_labels, fs) = series(text, "container_fs_usage_bytes", &hog);
    assert!(
        fs >= 0.0 && !label(&fs_labels, "device").is_empty(),
        "{fs_labels:?}"
    );

    let pod = [("namespace", ns), ("pod", "hog"), ("container", "")];
    let (pod_labels, pod_ws) = series(text, "container_memory_working_set_bytes", &pod);
    let pod_id = label(&pod_labels, "id");
    assert!(id.starts_with(&format!("{pod_id}/")), "{pod_id} holds {id}");
    let pod_usage = cgroup_number("memory", pod_id, "memory.usage_in_bytes", None);
    assert!(
        pod_ws >= ws && pod_ws <= pod_usage as f64 + (4 << 20) as f64,
        "pod {pod_ws}, cgroup {pod_usage}"
    );
    let eth0 = [("namespace", ns), ("pod", "hog"), ("interface", "eth0")];
    let (_, rx) = series(text, "container_network_receive_bytes_total", &eth0);
    assert!(rx >= 0.0);
    series(text, "container_network_transmit_bytes_total", &eth0);

    let (_, root_cpu) = series(text, "container_cpu_usage_seconds_total", &[("id", "/")]);
    assert!(root_cpu >= cpu);
    assert_eq!(series_plain(text, "container_scrape_error"), 0.0);
    assert!(series_plain(text, "machine_cpu_cores") >= 1.0);
}

/// The value of an unlabelled series.
fn series_plain(text: &str, name: &str) -> f64 {
    let prefix = format!("{name} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{name} in\n{text}"));
    line[prefix.len()..].parse().unwrap()
}

/// The working set the CRI reports for the container of pod `name`.
fn cri_working_set(c: &PodCluster, name: &str) -> u64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = cri::connect(&c.node.node.socket()).await.unwrap();
        let mut rt = criv1::runtime_service_client::RuntimeServiceClient::new(ch);
        let filter = criv1::ContainerStatsFilter {
            label_selector: [("io.kubernetes.pod.name".to_string(), name.to_string())].into(),
            ..Default::default()
        };
        let stats = rt
            .list_container_stats(criv1::ListContainerStatsRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        stats
            .iter()
            .filter_map(|s| {
                s.memory
                    .as_ref()?
                    .working_set_bytes
                    .as_ref()
                    .map(|v| v.value)
            })
            .max()
            .expect("the CRI measures the container")
    })
}
