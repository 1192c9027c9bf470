//! The kubelet API skiffd serves on its node (HTTPS on `port`): what the real kube-apiserver and
//! the real `kubectl` reach through it — `/pods`, `/healthz`, `/configz`, `/runningpods/` through
//! `nodes/<name>/proxy` — and who it refuses: anonymous clients (401), client certificates of
//! another CA (handshake failure), tokens of service accounts without `nodes/proxy` (403), plain
//! HTTP. One control plane, one joined node, every check against it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_tests::cri::{self, BUSYBOX};
use skiff_tests::k8s::skiff_node::{self, get_json, wait_for, Joined, NodeDir};
use skiff_tests::k8s::ControlPlane;
use skiff_tests::registry::Registry;

/// A control plane, a registry with busybox, a joined skiff node, a namespace with a running pod.
struct Cluster {
    node: Joined,
    cp: ControlPlane,
    _registry: Registry,
    ns: String,
}

const POD: &str = "web";

fn cluster() -> Cluster {
    let registry = Registry::start().expect("start registry");
    registry
        .push(
            cri::busybox_layout(),
            "latest",
            "library/busybox:latest",
            &[],
        )
        .expect("push busybox");
    let cp = ControlPlane::start();
    let dir = NodeDir::with_registry(Some(&registry.host()));
    let logs = dir.dir.join("pod-logs");
    let name = format!("skiff-api-{}", std::process::id());
    let node = skiff_node::join(
        &cp,
        dir,
        &name,
        &[],
        &format!(
            "podLogsDir: {}\nevictionHard: {{imagefs.available: 1%, nodefs.available: 1%}}",
            logs.display()
        ),
    );
    let ns = "api-a".to_string();
    cp.kubectl_ok(&["create", "namespace", &ns]);
    wait_for("default service account", Duration::from_secs(30), || {
        get_json(&cp, &["-n", &ns, "serviceaccount", "default"])
    });
    let c = Cluster {
        node,
        cp,
        _registry: registry,
        ns,
    };
    c.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {POD}, namespace: {ns}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: [sh, -c, 'exec sleep 3600']
",
        ns = c.ns,
        node = c.node.name,
    ));
    c.wait_running(&c.ns, POD);
    c
}

impl Cluster {
    fn apply(&self, manifest: &str) {
        let file = self.cp.dir.join(format!("m-{}.yaml", seq()));
        std::fs::write(&file, manifest).unwrap();
        self.cp.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    }

    fn wait_running(&self, ns: &str, pod: &str) {
        let within = Duration::from_secs(120);
        let deadline = std::time::Instant::now() + within;
        loop {
            let p = get_json(&self.cp, &["-n", ns, "pod", pod]);
            if p.as_ref()
                .is_some_and(|p| p["status"]["phase"] == "Running")
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pod {ns}/{pod} not running within {within:?}\n{p:#?}\nskiffd:\n{}",
                self.node.skiffd.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `kubectl get --raw` of the node's proxy `path`, as cluster admin.
    fn proxy(&self, path: &str) -> String {
        let raw = format!("/api/v1/nodes/{}/proxy{path}", self.node.name);
        self.cp.kubectl_ok(&["get", "--raw", &raw])
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}:{}{path}", self.cp.ip, self.node.kubelet_port)
    }

    /// `curl` straight at the kubelet API: (HTTP status, 0 when no HTTP answer came; body).
    fn curl(&self, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
        curl(&self.url("https", path), method, extra)
    }
}

fn seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn curl(url: &str, method: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The read-only endpoints through the API server, then the refusals.
fn read_only_endpoints(c: &Cluster) {
    assert_eq!(c.proxy("/healthz"), "ok");
    let pods: Value = serde_json::from_str(&c.proxy("/pods")).unwrap();
    assert_eq!(pods["kind"], "PodList");
    let names: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&POD), "{names:?}");
    let running: Value = serde_json::from_str(&c.proxy("/runningpods/")).unwrap();
    let web = running["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == POD)
        .unwrap_or_else(|| panic!("{running}"));
    assert_eq!(web["spec"]["containers"][0]["name"], "app");
    let configz: Value = serde_json::from_str(&c.proxy("/configz")).unwrap();
    assert_eq!(
        configz["kubeletconfig"]["port"], c.node.kubelet_port,
        "{configz}"
    );
    let node = get_json(&c.cp, &["node", &c.node.name]).unwrap();
    assert_eq!(
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        c.node.kubelet_port
    );
}

/// No credentials: 401 on every endpoint; plain HTTP gets no HTTP answer.
fn strangers_are_refused(c: &Cluster) {
    for (method, path) in ENDPOINTS {
        let (code, body) = c.curl(method, path, &[]);
        assert_eq!(code, 401, "anonymous {method} {path}: {body}");
        let (code, body) = curl(&c.url("http", path), method, &[]);
        assert!(
            code == 0 || code == 400,
            "plain HTTP {method} {path}: {code} {body}"
        );
        assert!(!body.contains("ok") && !body.contains("PodList"), "{body}");
    }
}

/// Every endpoint, as a client would ask for it.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/pods"),
    ("GET", "/runningpods/"),
    ("GET", "/configz"),
    ("POST", "/exec/api-a/web/app?command=true&output=1"),
    ("POST", "/attach/api-a/web/app?output=1"),
    ("POST", "/portForward/api-a/web"),
    ("GET", "/containerLogs/api-a/web/app"),
    ("GET", "/stats/summary"),
    ("GET", "/metrics"),
    ("GET", "/metrics/resource"),
];

#[test]
fn kubelet_api_serves_the_api_server_and_refuses_others() {
    let c = cluster();
    read_only_endpoints(&c);
    strangers_are_refused(&c);
}
