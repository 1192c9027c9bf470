//! `kubectl logs` and the node's resource figures through the real kube-apiserver, served by
//! skiffd's kubelet API: the log options (`--tail`, `--since`, `--since-time`, `--timestamps`,
//! `--limit-bytes`), `-f`, `--previous` after a restart, a rotation under `kubectl logs -f` with
//! the rotated files kept to `containerLogMaxFiles`, and `/stats/summary` and `/metrics/resource`
//! for a pod holding a known amount of memory, held against the CRI's own numbers.
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
        "",
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
