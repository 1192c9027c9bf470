//! The kubelet API skiffd serves on its node (HTTPS on `port`): what the real kube-apiserver and
//! the real `kubectl` reach through it — `exec` (piped and on a terminal), `attach` and
//! `port-forward` over both of kubectl's transports, `/pods`, `/healthz`, `/configz` and
//! `/runningpods/` through `nodes/<name>/proxy` — and who it refuses: anonymous clients (401),
//! client certificates of another CA (handshake failure), tokens without `nodes/proxy` (403),
//! plain HTTP. One control plane, one joined node, every check against it.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::console::{openpty, set_size, Pty};
use skiff_tests::cri::BUSYBOX;
use skiff_tests::k8s::pod_cluster::{create_namespace, PodCluster};
use skiff_tests::k8s::skiff_node::{self, get_json, wait_for, NodeDir};

const POD: &str = "web";
/// A namespace whose pod the namespace-scoped token must not reach.
const OTHER_NS: &str = "api-b";
/// kubectl's two transports: (KUBECTL_*_WEBSOCKETS, name).
const TRANSPORTS: [(bool, &str); 2] = [(true, "websocket"), (false, "spdy")];
const LIMIT: Duration = Duration::from_secs(60);
/// On the pod's loopback only: reachable by a port-forward alone. /big is 4 MiB of a pattern.
const HTTPD: &str = "mkdir -p /www && echo hello-through-the-node > /www/index.html && \
                     yes 0123456789abcdef | head -c 4194304 > /www/big && \
                     exec httpd -f -p 127.0.0.1:8080 -h /www";

/// A control plane, a registry with busybox, a joined skiff node, two namespaces with a running pod.
fn cluster() -> PodCluster {
    let mut c = PodCluster::builder("api").namespace("api-a").start();
    create_namespace(&c.cp, OTHER_NS);
    c.apply_as_written(&format!(
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
  - name: httpd
    image: {BUSYBOX}
    command: [sh, -c, '{HTTPD}']
{readers}---
apiVersion: v1
kind: Pod
metadata: {{name: {POD}, namespace: {OTHER_NS}}}
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
        readers = TRANSPORTS
            .iter()
            .map(|(_, t)| format!(
                "  - name: {t}\n    image: {BUSYBOX}\n    stdin: true\n    stdinOnce: true\n    \
                 command: [sh, -c, 'while read l; do echo got:$l; done; echo bye']\n"
            ))
            .collect::<String>(),
    ));
    wait_running(&mut c, OTHER_NS, POD);
    let ns = c.ns.clone();
    wait_running(&mut c, &ns, POD);
    c
}

fn wait_running(c: &mut PodCluster, ns: &str, pod: &str) {
    c.until(
        &format!("pod {ns}/{pod} running"),
        Duration::from_secs(120),
        |c| {
            get_json(&c.cp, &["-n", ns, "pod", pod])
                .filter(|p| p["status"]["phase"] == "Running")
                .map(drop)
        },
    );
}

/// `kubectl get --raw` of the node's proxy `path`, as cluster admin.
fn proxy(c: &PodCluster, path: &str) -> String {
    let raw = format!("/api/v1/nodes/{}/proxy{path}", c.node.name);
    c.cp.kubectl_ok(&["get", "--raw", &raw])
}

fn url(c: &PodCluster, scheme: &str, path: &str) -> String {
    format!("{scheme}://{}:{}{path}", c.cp.ip, c.node.kubelet_port)
}

/// `curl` straight at the kubelet API: (HTTP status, 0 when no HTTP answer came; body).
fn kubelet_curl(c: &PodCluster, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
    curl(&url(c, "https", path), method, extra)
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
fn read_only_endpoints(c: &PodCluster) {
    assert_eq!(proxy(c, "/healthz"), "ok");
    let pods: Value = serde_json::from_str(&proxy(c, "/pods")).unwrap();
    assert_eq!(pods["kind"], "PodList");
    let names: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&POD), "{names:?}");
    let running: Value = serde_json::from_str(&proxy(c, "/runningpods/")).unwrap();
    let web = running["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == POD)
        .unwrap_or_else(|| panic!("{running}"));
    let containers = web["spec"]["containers"].as_array().unwrap();
    assert!(
        containers
            .iter()
            .any(|c| c["name"] == "app" && c["image"] == BUSYBOX),
        "{web}"
    );
    let configz: Value = serde_json::from_str(&proxy(c, "/configz")).unwrap();
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
fn strangers_are_refused(c: &PodCluster) {
    for (method, path) in ENDPOINTS {
        let (code, body) = kubelet_curl(c, method, path, &[]);
        assert_eq!(code, 401, "anonymous {method} {path}: {body}");
        let (code, body) = curl(&url(c, "http", path), method, &[]);
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
    ("GET", "/metrics/cadvisor"),
    ("GET", "/spec/"),
];

/// The admin's `kubectl` on `transport`, at most `LIMIT`; `input` on its stdin.
fn kubectl(c: &PodCluster, websockets: bool, args: &[&str], input: Vec<u8>) -> Output {
    let mut cmd = kubectl_command();
    admin(c, &mut cmd, websockets);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in {LIMIT:?}"))
        .unwrap()
}

/// A kubectl that speaks WebSocket to this control plane's API server. A version dispatcher (the
/// Cloud SDK's `kubectl`) would pick the API server's own version, one too old for it: its
/// newest kubectl is taken directly.
fn kubectl_command() -> Command {
    let newest = Path::new("/usr/lib/google-cloud-sdk/bin")
        .read_dir()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubectl.1."))
        })
        .max_by_key(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .and_then(|m| m.parse::<u32>().ok())
        });
    Command::new(newest.unwrap_or_else(|| PathBuf::from("kubectl")))
}

fn admin(c: &PodCluster, cmd: &mut Command, websockets: bool) {
    let on = if websockets { "true" } else { "false" };
    cmd.env("KUBECONFIG", c.cp.admin_kubeconfig())
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", on)
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", on)
        .args(["-n", &c.ns]);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The streams of the transport just used, as skiffd logged them.
fn streams_logged(c: &PodCluster, kind: &str, transport: &str) -> usize {
    let log = c.node.node.log();
    log.lines()
        .filter(|l| l.contains("kubelet API stream"))
        .filter(|l| l.contains(kind))
        .filter(|l| {
            let t = if transport == "websocket" {
                "transport=websocket"
            } else {
                "transport=spdy/3.1"
            };
            l.contains(t)
        })
        .count()
}

fn exec_piped(c: &PodCluster) {
    let input: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    for (ws, transport) in TRANSPORTS {
        let script = "cat; echo to-stderr >&2; exit 7";
        let args = ["exec", "-i", POD, "-c", "app", "--", "sh", "-c", script];
        let out = kubectl(c, ws, &args, input.clone());
        let err = text(&out.stderr);
        assert!(
            out.stdout == input,
            "{transport}: {} bytes back; {err}",
            out.stdout.len()
        );
        assert!(err.contains("to-stderr"), "{transport}: {err}");
        assert_eq!(out.status.code(), Some(7), "{transport}: {err}");
        let out = kubectl(c, ws, &["exec", POD, "-c", "app", "--", "true"], vec![]);
        assert!(out.status.success(), "{transport}: {}", text(&out.stderr));
        assert!(
            streams_logged(c, "Exec", transport) >= 2,
            "{transport}: not logged\n{}",
            c.node.skiffd.log_tail(30)
        );
    }
}

/// `kubectl exec -it` on a new terminal: the container's shell has a tty of kubectl's size and
/// follows a resize.
fn exec_terminal(c: &PodCluster, ws: bool, transport: &str) {
    let (master, slave) = openpty(37, 111);
    let mut cmd = kubectl_command();
    admin(c, &mut cmd, ws);
    cmd.args(["exec", "-it", POD, "-c", "app", "--", "sh"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: the closure only makes async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn kubectl");
    drop(slave);
    let mut pty = Pty(std::fs::File::from(master.try_clone().unwrap()));
    let step = |pty: &mut Pty, send: &str, want: &str| {
        pty.write_str(send);
        pty.read_until(want, LIMIT)
            .unwrap_or_else(|e| panic!("{transport}: {e}"))
    };
    step(&mut pty, "stty size\r", "37 111");
    set_size(&master, 50, 150);
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = step(&mut pty, "stty size; echo =done\r", "\n=done");
        if got.contains("50 150") {
            break;
        }
        assert!(Instant::now() < deadline, "{transport}: no resize: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    step(&mut pty, "tty\r", "/dev/pts/");
    pty.write_str("exit 4\r");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{transport}: kubectl did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(4),
        "{transport}: kubectl ended with {status}"
    );
}

/// `kubectl attach -i` feeds the container's stdin and ends when the container does.
fn attach(c: &PodCluster) {
    for (ws, transport) in TRANSPORTS {
        let args = ["attach", "-i", POD, "-c", transport];
        let out = kubectl(c, ws, &args, b"one\ntwo\n".to_vec());
        assert_eq!(
            text(&out.stdout),
            "got:one\ngot:two\nbye\n",
            "{transport}: {}",
            text(&out.stderr)
        );
        assert!(
            streams_logged(c, "Attach", transport) >= 1,
            "{transport}: not logged"
        );
    }
}

/// GETs `path` from 127.0.0.1:`port`; the body.
fn http_get(port: u16, path: &str) -> Vec<u8> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", text(&all)));
    all.split_off(end + 4)
}

fn port_forward(c: &PodCluster) {
    for (ws, transport) in TRANSPORTS {
        let mut cmd = kubectl_command();
        admin(c, &mut cmd, ws);
        let mut child = cmd
            .args(["port-forward", &format!("pod/{POD}"), ":8080"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl port-forward");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("port-forward printed nothing").unwrap();
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let port: u16 = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
        let pages: Vec<_> = (0..10)
            .map(|_| std::thread::spawn(move || http_get(port, "/index.html")))
            .collect();
        for p in pages {
            assert_eq!(
                p.join().unwrap(),
                b"hello-through-the-node\n",
                "{transport}"
            );
        }
        let big = http_get(port, "/big");
        assert_eq!(big.len(), 4 << 20, "{transport}");
        assert!(
            big.chunks(17)
                .all(|c| c == &b"0123456789abcdef\n"[..c.len()]),
            "{transport}"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            streams_logged(c, "PortForward", transport) >= 1,
            "{transport}: not logged"
        );
    }
}

/// Service accounts: one with no rights, one with `nodes/proxy` get only, one allowed to exec in
/// its own namespace only.
const RBAC: &str = "apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: api-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: proxy-reader, namespace: api-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ns-exec, namespace: api-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: api-test-node-proxy-get}
rules:
- {apiGroups: [''], resources: [nodes/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: api-test-node-proxy-get}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: api-test-node-proxy-get}
subjects:
- {kind: ServiceAccount, name: proxy-reader, namespace: api-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: exec, namespace: api-a}
rules:
- {apiGroups: [''], resources: [pods], verbs: [get]}
- {apiGroups: [''], resources: [pods/exec], verbs: [create, get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: exec, namespace: api-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec}
subjects:
- {kind: ServiceAccount, name: ns-exec, namespace: api-a}
";

fn token(c: &PodCluster, sa: &str) -> String {
    c.cp.kubectl_ok(&["-n", &c.ns, "create", "token", sa])
        .trim()
        .to_string()
}

/// A client certificate for `subject` (`/O=…/CN=…`) signed by `ca` (certificate, key), or by a
/// new CA of its own; its (certificate, key) files.
fn client_cert(
    dir: &Path,
    name: &str,
    subject: &str,
    ca: Option<(PathBuf, PathBuf)>,
) -> (PathBuf, PathBuf) {
    let f = |ext: &str| dir.join(format!("{name}.{ext}"));
    let ca = ca.unwrap_or_else(|| {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another-ca",
            "-keyout",
            f("ca.key").to_str().unwrap(),
            "-out",
            f("ca.crt").to_str().unwrap(),
        ]);
        (f("ca.crt"), f("ca.key"))
    });
    std::fs::write(f("ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        f("key").to_str().unwrap(),
        "-out",
        f("csr").to_str().unwrap(),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        f("csr").to_str().unwrap(),
        "-CA",
        ca.0.to_str().unwrap(),
        "-CAkey",
        ca.1.to_str().unwrap(),
        "-CAcreateserial",
        "-extfile",
        f("ext").to_str().unwrap(),
        "-out",
        f("crt").to_str().unwrap(),
    ]);
    (f("crt"), f("key"))
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// Credentials the API server would turn away get nothing from the node either.
fn access_control(c: &PodCluster) {
    c.apply_as_written(RBAC);
    let forbidden = |who: &str, bearer: &str, method: &str, path: &str| {
        let auth = format!("Authorization: Bearer {bearer}");
        let (code, body) = kubelet_curl(c, method, path, &["-H", &auth]);
        assert_eq!(code, 403, "{who}: {method} {path}: {body}");
        assert!(
            body.contains(&format!("user=system:serviceaccount:api-a:{who}")),
            "{body}"
        );
    };
    let nobody = token(c, "nobody");
    for (method, path) in ENDPOINTS {
        forbidden("nobody", &nobody, method, path);
    }
    let (code, body) = kubelet_curl(
        c,
        "GET",
        "/pods",
        &["-H", "Authorization: Bearer not-a-token"],
    );
    assert_eq!(code, 401, "an invalid token: {body}");

    // nodes/proxy get: reads, but not an exec (create).
    let reader = token(c, "proxy-reader");
    let auth = format!("Authorization: Bearer {reader}");
    let (code, body) = kubelet_curl(c, "GET", "/pods", &["-H", &auth]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("PodList"), "{body}");
    forbidden(
        "proxy-reader",
        &reader,
        "POST",
        "/exec/api-a/web/app?command=true&output=1",
    );

    // Exec in its own namespace through the API server; not in another, not at the node.
    let ns_exec = token(c, "ns-exec");
    let as_ns_exec = |ns: &str| {
        let mut cmd = kubectl_command();
        cmd.env("KUBECONFIG", "/dev/null")
            .arg(format!("--server={}", c.cp.server_url()))
            .arg(format!(
                "--certificate-authority={}",
                c.cp.pki().join("ca.crt").display()
            ))
            .arg(format!("--token={ns_exec}"))
            .args(["-n", ns, "exec", POD, "-c", "app", "--", "echo", "in"]);
        cmd.output().expect("run kubectl")
    };
    let own = as_ns_exec(&c.ns);
    assert!(
        own.status.success() && text(&own.stdout) == "in\n",
        "{}",
        text(&own.stderr)
    );
    let other = as_ns_exec(OTHER_NS);
    assert!(!other.status.success(), "exec into {OTHER_NS} was allowed");
    assert!(
        text(&other.stderr).contains("forbidden"),
        "{}",
        text(&other.stderr)
    );
    forbidden(
        "ns-exec",
        &ns_exec,
        "POST",
        "/exec/api-b/web/app?command=true&output=1",
    );
    forbidden(
        "ns-exec",
        &ns_exec,
        "POST",
        "/exec/api-a/web/app?command=true&output=1",
    );

    // Client certificates: the cluster CA's are users (authorized as such), another CA's fail
    // the handshake.
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = Some((c.cp.pki().join("ca.crt"), c.cp.pki().join("ca.key")));
    let (crt, key) = client_cert(dir.path(), "stranger", "/CN=stranger", cluster_ca.clone());
    let with = |crt: &Path, key: &Path| {
        kubelet_curl(
            c,
            "GET",
            "/pods",
            &[
                "--cert",
                crt.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        )
    };
    let (code, body) = with(&crt, &key);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("user=stranger"), "{body}");
    let (crt, key) = client_cert(
        dir.path(),
        "admin",
        "/O=system:masters/CN=admin",
        cluster_ca,
    );
    assert_eq!(with(&crt, &key).0, 200);
    let (crt, key) = client_cert(
        dir.path(),
        "intruder",
        "/O=system:masters/CN=intruder",
        None,
    );
    let (code, body) = with(&crt, &key);
    assert_eq!(code, 0, "another CA's certificate got an answer: {body}");

    // Only the healthz port answers plain HTTP, and only on loopback.
    let port = c
        .node
        .args
        .iter()
        .find_map(|a| a.strip_prefix("--healthz-port="))
        .expect("--healthz-port");
    let (code, body) = curl(&format!("http://127.0.0.1:{port}/healthz"), "GET", &[]);
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _) = curl(&format!("http://{}:{port}/healthz", c.cp.ip), "GET", &[]);
    assert_eq!(code, 0, "healthz answered off loopback");
}

/// A second node with `serverTLSBootstrap`: no handshake until its CSR is approved, then a
/// certificate of the cluster CA for its address.
fn server_tls_bootstrap(c: &PodCluster) {
    let name = format!("skiff-api-tls-{}", std::process::id());
    let node = skiff_node::join(
        &c.cp,
        NodeDir::new(),
        &name,
        &[],
        "serverTLSBootstrap: true\nevictionHard: {imagefs.available: 1%, nodefs.available: 1%}",
    );
    let url = format!("https://{}:{}/healthz", c.cp.ip, node.kubelet_port);
    let ca = c.cp.pki().join("ca.crt");
    let verified = || {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("--cacert")
            .arg(&ca)
            .arg(&url)
            .output()
            .expect("run curl");
        text(&out.stdout).trim().parse::<u16>().unwrap_or(0)
    };
    assert_eq!(
        curl(&url, "GET", &[]).0,
        0,
        "served before the CSR was approved"
    );
    let user = format!("system:node:{name}");
    let csr = wait_for("the serving CSR", Duration::from_secs(60), || {
        let list = get_json(&c.cp, &["csr"])?;
        list["items"].as_array()?.iter().find_map(|r| {
            (r["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                && r["spec"]["username"] == user.as_str())
            .then(|| r["metadata"]["name"].as_str().map(str::to_string))
            .flatten()
        })
    });
    c.cp.kubectl_ok(&["certificate", "approve", &csr]);
    wait_for(
        "the cluster-signed certificate",
        Duration::from_secs(30),
        || (verified() == 401).then_some(()),
    );
    let raw = format!("/api/v1/nodes/{name}/proxy/healthz");
    assert_eq!(c.cp.kubectl_ok(&["get", "--raw", &raw]), "ok");
}

#[test]
fn kubelet_api_serves_the_api_server_and_refuses_others() {
    let c = cluster();
    read_only_endpoints(&c);
    strangers_are_refused(&c);
    exec_piped(&c);
    for (ws, transport) in TRANSPORTS {
        exec_terminal(&c, ws, transport);
    }
    attach(&c);
    port_forward(&c);
    access_control(&c);
    server_tls_bootstrap(&c);
}
