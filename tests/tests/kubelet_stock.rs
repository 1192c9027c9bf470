//! The stock kubelet (v1.28.7) on skiffd, the containerd-replacement path: `kubeadm join` against a real
//! control plane on loopback with `--cri-socket` at skiffd, then a Deployment run and reached with the real
//! `kubectl` — logs, exec and port-forward go through the kubelet to skiffd's streaming server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_tests::cri::{bridge_conflist, v1 as cri, Options, Skiffd};
use skiff_tests::k8s::{ControlPlane, KubeletNode};

const NODE: &str = "skiff-stock-node";
const BRIDGE: &str = "skkubelet0";
const SUBNET: &str = "10.211.40.0/24";

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

async fn cluster() -> Cluster {
    let cp = ControlPlane::start();
    let ipam = tempfile::tempdir().unwrap();
    let d = Skiffd::start_with(Options {
        cni_conflist: Some(bridge_conflist(BRIDGE, SUBNET, ipam.path())),
        ..Default::default()
    })
    .await;
    let mut node = KubeletNode::join(&cp, NODE, &d.socket);
    node.wait_ready(&cp, Duration::from_secs(60));
    let ns = format!("kubelet-stock-{}", std::process::id());
    cp.kubectl_ok(&["create", "namespace", &ns]);
    Cluster {
        ns,
        d,
        node,
        cp,
        _ipam: ipam,
    }
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
    let mut c = cluster().await;
    let (cp, d, node) = (&c.cp, &mut c.d, &mut c.node);
    let ns = c.ns.clone();
    let k = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["-n".to_string(), ns.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let manifest = cp.dir.join("hello.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    cp.kubectl_ok(&k(&["apply", "-f", manifest.to_str().unwrap()]));
    let rollout = cp.kubectl_within(
        &k(&["rollout", "status", "deployment/hello", "--timeout=90s"]),
        Duration::from_secs(100),
    );
    node.assert_running();
    assert!(
        rollout.success(),
        "rollout:{rollout}\npods:\n{}\nkubelet:\n{}",
        cp.kubectl(&k(&["describe", "pods"])).stdout,
        node.kubelet_log(40)
    );
    let pods = cp.kubectl_ok(&k(&["get", "pods", "-l", "app=hello", "-o", "name"]));
    let pod = pods.lines().next().expect("a pod").to_string();

    let logs = cp.kubectl_ok(&k(&["logs", &pod]));
    assert!(logs.contains("hello from skiff"), "{logs}");
    let exec = cp.kubectl_ok(&k(&["exec", &pod, "--", "cat", "/www/index.html"]));
    assert_eq!(exec.trim(), "served by skiff");
    let failed = cp.kubectl(&k(&["exec", &pod, "--", "sh", "-c", "exit 3"]));
    assert_eq!(failed.code, Some(3), "{failed}");
    assert_eq!(port_forward_get(cp, &c.ns, &pod), "served by skiff");

    cp.kubectl_ok(&k(&["delete", "deployment", "hello", "--wait=true"]));
    cp.kubectl_until(
        &k(&["get", "pods", "-l", "app=hello", "-o", "name"]),
        Duration::from_secs(60),
        |o| o.success() && o.stdout.trim().is_empty(),
    );
    let running: Vec<_> = d
        .list_containers(None)
        .await
        .into_iter()
        .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
}

/// `GET /` through `kubectl port-forward <pod> :8080`.
fn port_forward_get(cp: &ControlPlane, ns: &str, pod: &str) -> String {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(["-n", ns, "port-forward", pod, ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl port-forward");
    let port = forwarded_port(&mut child);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
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
