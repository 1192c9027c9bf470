//! The stock kubelet (v1.28.7) on skiffd, the containerd-replacement path: `kubeadm join` against a real
//! control plane on loopback with `--cri-socket` at skiffd, then a Deployment run and reached with the real
//! `kubectl` — logs, exec and port-forward go through the kubelet to skiffd's streaming server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_tests::cri::{bridge_conflist, v1 as cri, Options, Skiffd};
use skiff_tests::k8s::{ControlPlane, KubeletNode};

const NODE: &str = "skiff-stock-node";

/// Each test's pods on a bridge and subnet of their own.
struct Net {
    bridge: &'static str,
    subnet: &'static str,
}

impl Net {
    const DEPLOY: Net = Net {
        bridge: "skkubelet0",
        subnet: "10.211.40.0/24",
    };
    const STATS: Net = Net {
        bridge: "skkubelet1",
        subnet: "10.211.41.0/24",
    };
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: registry.skiff.test/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command:
        - sh
        - -c
        - echo hello from skiff; mkdir -p /www; echo served by skiff > /www/index.html; exec httpd -f -p 8080 -h /www
        readinessProbe:
          exec:
            command: [cat, /www/index.html]
          periodSeconds: 1
"#;

/// skiffd with pod networking on a bridge of this test's own, and a node joined on it. The fields drop in this
/// order: skiffd and its containers first, so the kubelet's cgroups are empty when the node removes them.
struct Cluster {
    /// The test's namespace: the pod log directories the kubelet leaves in /var/log/pods until its next
    /// garbage collection are named after it.
    ns: String,
    d: Skiffd,
    node: KubeletNode,
    cp: ControlPlane,
    _ipam: tempfile::TempDir,
}

async fn cluster(net: Net, kubelet_args: &[&str]) -> Cluster {
    let cp = ControlPlane::start();
    let ipam = tempfile::tempdir().unwrap();
    let d = Skiffd::start_with(Options {
        cni_conflist: Some(bridge_conflist(net.bridge, net.subnet, ipam.path())),
        ..Default::default()
    })
    .await;
    let mut node = KubeletNode::join_with(&cp, NODE, &d.socket, kubelet_args);
    node.wait_ready(&cp, Duration::from_secs(60));
    let ns = format!("{}-{}", net.bridge, std::process::id());
    cp.kubectl_ok(&["create", "namespace", &ns]);
    Cluster {
        ns,
        d,
        node,
        cp,
        _ipam: ipam,
    }
}

impl Cluster {
    /// `kubectl -n <ns> args…`.
    fn kubectl(&self, args: &[&str]) -> skiff_tests::Output {
        self.cp
            .kubectl(&[&["-n", self.ns.as_str()][..], args].concat())
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.success(), "kubectl failed:{out}");
        out.stdout
    }

    /// Applies the Deployment with `replicas` and waits until all of them are Ready.
    fn deploy(&mut self, replicas: u32) {
        let manifest = self.cp.dir.join("hello.yaml");
        let yaml = DEPLOYMENT.replace("replicas: 2", &format!("replicas: {replicas}"));
        std::fs::write(&manifest, yaml).unwrap();
        self.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
        let ns = ["-n", self.ns.as_str()];
        let rollout = ["rollout", "status", "deployment/hello", "--timeout=90s"];
        let out = self
            .cp
            .kubectl_within(&[&ns[..], &rollout[..]].concat(), Duration::from_secs(100));
        self.node.assert_running();
        assert!(
            out.success(),
            "rollout:{out}\npods:\n{}\nkubelet:\n{}\nskiffd:\n{}",
            self.kubectl(&["describe", "pods"]).stdout,
            self.node.kubelet_log(60),
            tail(&self.d.daemon_log(), 40),
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let prefix = format!("{}_", self.ns);
        for e in std::fs::read_dir("/var/log/pods")
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_runs_on_the_stock_kubelet_and_kubectl_reaches_its_pods() {
    let mut c = cluster(Net::DEPLOY, &[]).await;
    c.deploy(2);
    let pods = c.kubectl_ok(&["get", "pods", "-l", "app=hello", "-o", "name"]);
    let pod = pods.lines().next().expect("a pod").to_string();

    let logs = c.kubectl_ok(&["logs", &pod]);
    assert!(logs.contains("hello from skiff"), "{logs}");
    let exec = c.kubectl_ok(&["exec", &pod, "--", "cat", "/www/index.html"]);
    assert_eq!(exec.trim(), "served by skiff");
    // The service account token volume the kubelet mounted in its own mount namespace, seen in the container.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
    assert_eq!(c.kubectl_ok(&["exec", &pod, "--", "cat", sa]), c.ns);
    assert_eq!(exec_stdin(&c, &pod, "piped through\n"), "PIPED THROUGH\n");
    let failed = c.kubectl(&["exec", &pod, "--", "sh", "-c", "exit 3"]);
    assert_eq!(failed.code, Some(3), "{failed}");
    assert_eq!(port_forward_get(&c, &pod), "served by skiff");

    c.kubectl_ok(&["delete", "deployment", "hello", "--wait=true"]);
    let ns = ["-n", c.ns.as_str()];
    c.cp.kubectl_until(
        &[&ns[..], &["get", "pods", "-l", "app=hello", "-o", "name"]].concat(),
        Duration::from_secs(60),
        |o| o.success() && o.stdout.trim().is_empty(),
    );
    let running: Vec<_> =
        c.d.list_containers(None)
            .await
            .into_iter()
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .collect();
    assert!(running.is_empty(), "still running: {running:?}");
    // Stopped now; the kubelet removes them in its next minute's garbage collection.
    let ready: Vec<_> =
        c.d.list_pods(None)
            .await
            .into_iter()
            .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
            .collect();
    assert!(ready.is_empty(), "pods still ready: {ready:?}");
}

/// kubelet 1.28 takes a pod's network counters from cAdvisor — which finds them only for a pause container's
/// cgroup, and skiff pods have no pause container — unless `PodAndContainerStatsFromCRI` is on: then every
/// pod figure, the network's included, comes from skiffd's ListPodSandboxStats (`linux.network`).
#[tokio::test(flavor = "multi_thread")]
async fn the_kubelet_summary_has_network_stats_of_skiff_pods() {
    let mut c = cluster(
        Net::STATS,
        &["--feature-gates=PodAndContainerStatsFromCRI=true"],
    )
    .await;
    c.deploy(1);
    let ip = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=hello",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let mut received = 0;
    for _ in 0..5 {
        received += http_get((ip.trim(), 8080)).len();
    }
    let raw = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
    let out =
        c.cp.kubectl_until(&["get", "--raw", &raw], Duration::from_secs(30), |o| {
            o.success()
                && pod_network(&o.stdout)
                    .is_some_and(|n| n["txBytes"].as_u64() > Some(received as u64))
        });
    let net = pod_network(&out.stdout).unwrap();
    assert_eq!(net["name"], "eth0", "{net}");
    assert!(net["rxBytes"].as_u64() > Some(0), "{net}");
    let eth0 = net["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["name"] == "eth0"));
    assert!(eth0.is_some(), "{net}");
}

/// The `network` of the one pod in the summary (there is no other on the node).
fn pod_network(summary: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(summary).ok()?;
    let pod = v["pods"].as_array()?.first()?;
    pod.get("network").cloned()
}

/// The whole reply to `GET /` over HTTP/1.0.
fn http_get(addr: impl std::net::ToSocketAddrs) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    reply
}

/// `kubectl exec -i <pod> -- tr a-z A-Z` with `input` on its stdin; what came back.
fn exec_stdin(c: &Cluster, pod: &str, input: &str) -> String {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.cp.admin_kubeconfig())
        .args([
            "-n",
            c.ns.as_str(),
            "exec",
            "-i",
            pod,
            "--",
            "tr",
            "a-z",
            "A-Z",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl exec -i");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl exec -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /` through `kubectl port-forward <pod> :8080`.
fn port_forward_get(c: &Cluster, pod: &str) -> String {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.cp.admin_kubeconfig())
        .args(["-n", c.ns.as_str(), "port-forward", pod, ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl port-forward");
    let port = forwarded_port(&mut child);
    let reply = http_get(("127.0.0.1", port));
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply:?}");
    reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The local port from "Forwarding from 127.0.0.1:PORT -> 8080".
fn forwarded_port(child: &mut Child) -> u16 {
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out);
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    // Drained until kubectl exits: a closed pipe would end it at its next "Handling connection".
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    line.strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"))
}
