//! A stand-in for the two halves of a cluster that sit between `kubectl` and a CRI runtime: the
//! API server (discovery and pod objects, enough for `kubectl exec/attach/port-forward` to find a
//! pod) and the kubelet's streaming proxy (the `exec`, `attach` and `portforward` subresources
//! become CRI `Exec`/`Attach`/`PortForward` calls, and the client's upgrade request is relayed
//! verbatim to the URL the runtime returns, then the bytes both ways).
//!
//! With it the real `kubectl` speaks its own SPDY/3.1 and WebSocket clients — the client-go code
//! that `crictl` uses too — to skiffd's streaming server, through plain HTTP on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::cri::v1 as cri;

/// A container of a pod as the API server describes it.
#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    /// The CRI container id the kubelet half maps the name to.
    pub id: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

impl Container {
    pub fn new(name: &str, id: &str) -> Container {
        Container {
            name: name.into(),
            id: id.into(),
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }
}

#[derive(Clone, Debug)]
struct Pod {
    sandbox: String,
    containers: Vec<Container>,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Pod>,
    /// One line per relayed stream: `<subresource> <transport>`.
    streams: Vec<String>,
}

/// A running stand-in; its kubeconfig points `kubectl` at it.
pub struct Apiserver {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Apiserver {
    pub async fn start(rt: RuntimeServiceClient<Channel>) -> Apiserver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (rt, state) = (rt.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, rt, state).await {
                        eprintln!("apiserver stand-in: {e}");
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig(addr)).unwrap();
        Apiserver {
            addr,
            state,
            dir,
            task,
        }
    }

    /// Publishes a pod `name` in namespace `default`, backed by the CRI sandbox `sandbox`.
    pub fn add_pod(&self, name: &str, sandbox: &str, containers: Vec<Container>) {
        let pod = Pod {
            sandbox: sandbox.into(),
            containers,
        };
        self.state.lock().unwrap().pods.insert(name.into(), pod);
    }

    /// The streams relayed so far, as `exec websocket`, `portforward spdy`, ...
    pub fn streams(&self) -> Vec<String> {
        self.state.lock().unwrap().streams.clone()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `kubectl` pointed at this server, its WebSocket transports switched on or off.
    pub fn kubectl(&self, websockets: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        self.configure(cmd.as_std_mut(), websockets);
        cmd.kill_on_drop(true);
        cmd
    }

    /// The same for a blocking `std` command (one run on a terminal, say).
    pub fn configure(&self, cmd: &mut std::process::Command, websockets: bool) {
        let on = if websockets { "true" } else { "false" };
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", on)
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", on)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"));
    }
}

fn kubeconfig(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff\n    namespace: default\n\
         current-context: skiff\nusers:\n- name: skiff\n  user: {{}}\n"
    )
}

/// One HTTP/1.1 request head.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    /// Header lines as received, names in their original case.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.query
            .iter()
            .any(|(k, v)| k == name && (v == "true" || v == "1"))
    }

    fn values(&self, name: &str) -> Vec<String> {
        let matching = self.query.iter().filter(|(k, _)| k == name);
        matching.map(|(_, v)| v.clone()).collect()
    }

    fn transport(&self) -> &'static str {
        match self.header("upgrade") {
            Some(u) if u.eq_ignore_ascii_case("websocket") => "websocket",
            Some(u) if u.to_ascii_uppercase().starts_with("SPDY/") => "spdy",
            _ => "none",
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn serve(
    mut conn: TcpStream,
    rt: RuntimeServiceClient<Channel>,
    state: Arc<Mutex<State>>,
) -> Result<(), Error> {
    let mut buf = Vec::new();
    loop {
        let Some((req, rest)) = read_head(&mut conn, &mut buf).await? else {
            return Ok(());
        };
        buf = rest;
        let body_len: usize = req
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < body_len {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..body_len);
        let pod = pod_path(&req.path);
        if let Some((name, sub @ ("exec" | "attach" | "portforward"))) = pod {
            let pod = state.lock().unwrap().pods.get(name).cloned();
            let line = format!("{sub} {}", req.transport());
            let url = match pod {
                Some(pod) => stream_url(rt.clone(), &pod, sub, &req).await,
                None => Err((404, format!("pods \"{name}\" not found"))),
            };
            match url {
                Ok(url) => {
                    state.lock().unwrap().streams.push(line);
                    return relay(conn, &req, &url, buf).await;
                }
                Err((code, message)) => respond(&mut conn, code, &status(code, &message)).await?,
            }
            continue;
        }
        let (code, body) = match (req.method.as_str(), pod) {
            ("GET", Some((name, ""))) => match state.lock().unwrap().pods.get(name) {
                Some(pod) => (200, pod_object(name, pod)),
                None => (404, status(404, &format!("pods \"{name}\" not found"))),
            },
            ("GET", None) => match discovery(&req.path) {
                Some(v) => (200, v),
                None => (
                    404,
                    status(404, "the server could not find the requested resource"),
                ),
            },
            _ => (405, status(405, "method not allowed")),
        };
        respond(&mut conn, code, &body).await?;
    }
}

/// Reads one request head; `None` when the client closed the connection between requests.
async fn read_head(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(Request, Vec<u8>)>, Error> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec())?;
            let rest = buf[end + 4..].to_vec();
            return Ok(Some((parse_head(&head)?, rest)));
        }
        if buf.len() > 64 * 1024 {
            return Err("request head over 64 KiB".into());
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_head(head: &str) -> Result<Request, Error> {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("bad request line {first:?}").into());
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    Ok(Request {
        method: method.into(),
        path: path.into(),
        query,
        headers,
    })
}

/// Query-string unescaping as Go's `url.QueryUnescape` does it (`+` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/api/v1/namespaces/default/pods/<name>[/<sub>]` → (name, sub or "").
fn pod_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/default/pods/")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

fn discovery(path: &str) -> Option<Value> {
    let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs});
    Some(match path {
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
            sub("pods/attach", "PodAttachOptions", &["create", "get"]),
            sub("pods/exec", "PodExecOptions", &["create", "get"]),
            sub("pods/portforward", "PodPortForwardOptions", &["create", "get"]),
        ]}),
        "/version" => json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0",
            "platform": "linux/amd64"}),
        _ => return None,
    })
}

fn pod_object(name: &str, pod: &Pod) -> Value {
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": "busybox", "stdin": c.stdin,
                   "stdinOnce": c.stdin_once, "tty": c.tty})
        })
        .collect();
    let statuses: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "ready": true, "restartCount": 0, "image": "busybox",
                        "imageID": "", "containerID": format!("skiff://{}", c.id),
                        "state": {"running": {}}})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": containers},
        "status": {"phase": "Running", "containerStatuses": statuses},
    })
}

fn status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
           "code": code})
}

async fn respond(conn: &mut TcpStream, code: u16, body: &Value) -> Result<(), Error> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        if code == 200 { "OK" } else { "Error" },
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    Ok(())
}

/// Asks the runtime for the streaming URL of this request, as the kubelet does.
async fn stream_url(
    mut rt: RuntimeServiceClient<Channel>,
    pod: &Pod,
    sub: &str,
    req: &Request,
) -> Result<String, (u16, String)> {
    let container = |req: &Request| {
        let name = req.values("container").pop();
        let found = match name.as_deref() {
            Some(n) => pod.containers.iter().find(|c| c.name == n),
            None => pod.containers.first(),
        };
        found
            .map(|c| c.id.clone())
            .ok_or((400, format!("container {name:?} is not valid for the pod")))
    };
    let grpc = |e: tonic::Status| (500, e.message().to_string());
    let url = match sub {
        "exec" => {
            let r = cri::ExecRequest {
                container_id: container(req)?,
                cmd: req.values("command"),
                tty: req.flag("tty"),
                stdin: req.flag("stdin"),
                stdout: req.flag("stdout"),
                stderr: req.flag("stderr"),
            };
            rt.exec(r).await.map_err(grpc)?.into_inner().url
        }
        "attach" => {
            let r = cri::AttachRequest {
                container_id: container(req)?,
                tty: req.flag("tty"),
                stdin: req.flag("stdin"),
                stdout: req.flag("stdout"),
                stderr: req.flag("stderr"),
            };
            rt.attach(r).await.map_err(grpc)?.into_inner().url
        }
        _ => {
            let ports = req.values("ports");
            let r = cri::PortForwardRequest {
                pod_sandbox_id: pod.sandbox.clone(),
                port: ports.iter().filter_map(|p| p.parse().ok()).collect(),
            };
            rt.port_forward(r).await.map_err(grpc)?.into_inner().url
        }
    };
    Ok(url)
}

/// Sends the client's request head to `url` unchanged but for its target and `Host`, then copies
/// bytes both ways until both sides are done: the runtime's answer (101 or an error) reaches the
/// client as the runtime wrote it.
async fn relay(
    mut client: TcpStream,
    req: &Request,
    url: &str,
    early: Vec<u8>,
) -> Result<(), Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("streaming URL {url} is not plain http"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut upstream = TcpStream::connect(authority).await?;
    let mut head = format!("{} {path} HTTP/1.1\r\n", req.method);
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("host") {
            head.push_str(&format!("Host: {authority}\r\n"));
        } else {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    upstream.write_all(head.as_bytes()).await?;
    upstream.write_all(&early).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Where `kubectl` is, for messages.
pub fn kubectl_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| Path::new(p).is_file())
}
