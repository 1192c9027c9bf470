//! What probes and lifecycle hooks do in or against a container: a command through the CRI's
//! `ExecSync` (the monitor's exec path, in-process), an HTTP GET, a TCP connect, a gRPC health
//! check. One [`Actions`] serves every pod of the node; the network actions share one async
//! client, so many probes cost neither a thread nor a process each.

pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::{container, Daemon};

/// What kubelet keeps of a command's output for its messages and events.
const MAX_OUTPUT: usize = 10 << 10;

/// What an action printed when it passed, or why it failed (the text kubelet puts in events).
pub type Outcome = Result<String, String>;

/// The container an action is about.
pub struct Target<'a> {
    pub container: &'a Container,
    pub id: &'a str,
    pub pod_ip: Option<&'a str>,
}

/// The node's runner of probe and hook actions.
pub struct Actions {
    d: Arc<Daemon>,
    http: http::Client,
}

impl Actions {
    pub fn new(d: Arc<Daemon>) -> Actions {
        Actions {
            d,
            http: http::Client::new(),
        }
    }

    /// The CRI layer the exec actions go through.
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.d
    }

    /// Runs the probe's action once within its `timeoutSeconds` (at least 1 s, as kubelet).
    pub async fn probe(&self, t: &Target<'_>, p: &Probe) -> Outcome {
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        if let Some(e) = &p.exec {
            return self
                .exec(t.id, e.command.clone().unwrap_or_default(), timeout)
                .await;
        }
        if let Some(h) = &p.http_get {
            return self.http_get(t, h, timeout).await;
        }
        if let Some(s) = &p.tcp_socket {
            return self.tcp(t, s, timeout).await;
        }
        if let Some(g) = &p.grpc {
            let ip = t.pod_ip.ok_or("the pod has no IP yet")?;
            let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
            let service = g.service.clone().unwrap_or_default();
            return grpc::check(ip, port, service, timeout).await;
        }
        Err("the probe names no action".into())
    }

    /// `cmd` in the container; passes when it exits 0. `timeout` 0 waits for ever.
    pub async fn exec(&self, id: &str, cmd: Vec<String>, timeout: Duration) -> Outcome {
        match self.exec_status(id, cmd, timeout).await? {
            (0, out) => Ok(out),
            (_, out) => Err(out),
        }
    }

    /// `cmd` in the container: its exit code and output (stdout, then stderr).
    pub async fn exec_status(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, String), String> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd,
            timeout: timeout.as_secs() as i64,
        };
        let r = container::exec_sync(&self.d, req)
            .await
            .map_err(|e| e.message().to_string())?;
        let mut out = r.stdout;
        out.extend_from_slice(&r.stderr);
        out.truncate(MAX_OUTPUT);
        Ok((r.exit_code, String::from_utf8_lossy(&out).into_owned()))
    }

    pub async fn http_get(&self, t: &Target<'_>, h: &HTTPGetAction, timeout: Duration) -> Outcome {
        let host = match h.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => t.pod_ip.ok_or("the pod has no IP yet")?,
        };
        let port = port(t.container, &h.port)?;
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let path = h.path.as_deref().unwrap_or("");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let url = format!("{scheme}://{}{path}", host_port(host, port));
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        self.http.get(&url, &headers, timeout).await
    }

    pub async fn tcp(&self, t: &Target<'_>, s: &TCPSocketAction, timeout: Duration) -> Outcome {
        let host = match s.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => t.pod_ip.ok_or("the pod has no IP yet")?,
        };
        let addr = host_port(host, port(t.container, &s.port)?);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(String::new()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", io_reason(&e))),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        }
    }
}

/// An I/O error as Go prints it: the OS's text without Rust's "(os error N)".
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A port by number, or by the name of one of the container's ports.
pub fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port number: {n}")),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {}", c.name)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .expect("a valid container")
    }

    #[test]
    fn ports_by_number_and_by_name() {
        let c = container();
        assert_eq!(port(&c, &IntOrString::Int(80)), Ok(80));
        assert_eq!(port(&c, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(port(&c, &IntOrString::String("81".into())), Ok(81));
        let e = port(&c, &IntOrString::String("grpc".into())).unwrap_err();
        assert!(e.contains("grpc"), "{e}");
        assert!(port(&c, &IntOrString::Int(70000)).is_err());
        assert!(port(&c, &IntOrString::Int(0)).is_err());
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(host_port("fd00::1", 80), "[fd00::1]:80");
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /ok ") && req.contains("x-probe: yes") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let body = "hello";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {code}\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let c = http::Client::new();
        let t = Duration::from_secs(2);
        let url = |p: &str| format!("http://{addr}{p}");
        let hdr = [("X-Probe".to_string(), "yes".to_string())];
        assert_eq!(c.get(&url("/ok"), &hdr, t).await, Ok("hello".into()));
        assert_eq!(
            c.get(&url("/ok"), &[], t).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let e = c.get(&format!("http://{gone}/"), &[], t).await.unwrap_err();
        assert_eq!(
            e,
            format!("Get \"http://{gone}/\": dial tcp {gone}: connect: connection refused")
        );
    }
}
