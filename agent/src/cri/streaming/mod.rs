//! The CRI `Exec`, `Attach` and `PortForward` calls. Each checks its request and files it with the
//! streaming server, returning the server's single-use URL; [`CriHandler`] then serves the client
//! that connects to it, over skiffd's containers and pods.

pub mod attach;
pub mod exec_command;
pub mod portforward;

use std::sync::{Arc, Weak};

use cri_api::v1 as cri;
use tokio::io::DuplexStream;
use tonic::Status;

use crate::cri::error::{check_id, invalid, not_found};
use crate::cri::Daemon;
use crate::stream::channel::Outcome;
use crate::stream::server::{BoxFuture, Config, Handler, Io, Server};
use crate::stream::token::{self, AttachRequest, ExecRequest, PortForwardRequest, TokenError};

/// Serves streaming connections with skiffd's containers. Holds the daemon weakly: the daemon owns
/// the server that owns this handler.
pub struct CriHandler {
    daemon: Weak<Daemon>,
}

fn stopping() -> String {
    "skiffd is shutting down".into()
}

impl Handler for CriHandler {
    fn exec(&self, req: ExecRequest, io: Io) -> BoxFuture<Outcome> {
        let d = self.daemon.upgrade();
        Box::pin(async move {
            match d {
                Some(d) => exec_command::run(&d, req, io).await,
                None => Outcome::Failed(stopping()),
            }
        })
    }

    fn attach(&self, req: AttachRequest, io: Io) -> BoxFuture<Outcome> {
        let d = self.daemon.upgrade();
        Box::pin(async move {
            match d {
                Some(d) => attach::run(&d, req, io).await,
                None => Outcome::Failed(stopping()),
            }
        })
    }

    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
        conn: DuplexStream,
    ) -> BoxFuture<Result<(), String>> {
        let d = self.daemon.upgrade();
        Box::pin(async move {
            match d {
                Some(d) => portforward::run(&d, &pod_sandbox_id, port, conn).await,
                None => Err(stopping()),
            }
        })
    }

    fn connect(
        &self,
        pod_sandbox_id: String,
        port: u16,
    ) -> BoxFuture<Option<Result<tokio::net::TcpStream, String>>> {
        let d = self.daemon.upgrade();
        Box::pin(async move {
            Some(match d {
                Some(d) => portforward::open(&d, &pod_sandbox_id, port).await,
                None => Err(stopping()),
            })
        })
    }
}

/// Starts the streaming server on `stream_address` and records it in the daemon.
pub async fn start(d: &Arc<Daemon>) -> anyhow::Result<Arc<Server>> {
    use anyhow::Context;
    let tls = match (&d.config.stream_tls_cert, &d.config.stream_tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::stream::tls::server_config(cert, key).context("the streaming server's TLS")?,
        ),
        _ => None,
    };
    let cfg = Config {
        addr: d.config.stream_addr(),
        tls,
        ..Config::default()
    };
    let handler = Arc::new(CriHandler {
        daemon: Arc::downgrade(d),
    });
    let server = Server::start(cfg, handler)
        .await
        .with_context(|| format!("stream_address {}", d.config.stream_address))?;
    if d.stream.set(server.clone()).is_err() {
        anyhow::bail!("the streaming server was already started");
    }
    Ok(server)
}

/// Files `req` with the streaming server and returns its URL.
fn url(d: &Daemon, req: token::Request) -> Result<String, Status> {
    let server = d
        .stream
        .get()
        .ok_or_else(|| Status::unavailable("the streaming server is not running"))?;
    server.url(req).map_err(|e| match e {
        TokenError::TooMany(_) => Status::resource_exhausted(e.to_string()),
        _ => Status::internal(e.to_string()),
    })
}

/// The stream combination kubelet accepts: at least one stream, and no stderr with a TTY (the
/// terminal merges it into stdout).
pub(crate) fn check_streams(
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(invalid("one of stdin, stdout or stderr must be set"));
    }
    if tty && stderr {
        return Err(invalid("tty and stderr cannot both be set"));
    }
    Ok(())
}

/// The container exists and its process runs.
pub(crate) fn check_running(d: &Daemon, id: &str) -> Result<(), Status> {
    check_id("container", id)?;
    if d.containers.get(id).is_none() {
        return Err(not_found("container", id));
    }
    let running = d
        .oci
        .state(id)
        .is_ok_and(|s| s.status == skiff_runtime::state::Status::Running);
    if !running {
        return Err(Status::failed_precondition(format!(
            "container {id:?} is not running"
        )));
    }
    Ok(())
}

/// `Exec`: a URL where the command runs once a client connects.
pub async fn exec(d: &Arc<Daemon>, r: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
    if r.cmd.is_empty() || r.cmd[0].is_empty() {
        return Err(invalid("cmd: no command given"));
    }
    check_streams(r.tty, r.stdin, r.stdout, r.stderr)?;
    check_running(d, &r.container_id)?;
    let url = url(
        d,
        token::Request::Exec(ExecRequest {
            container_id: r.container_id,
            cmd: r.cmd,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        }),
    )?;
    Ok(cri::ExecResponse { url })
}

/// `Attach`: a URL where the client joins the container's own stdio.
pub async fn attach(d: &Arc<Daemon>, r: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
    check_streams(r.tty, r.stdin, r.stdout, r.stderr)?;
    check_running(d, &r.container_id)?;
    let rec = d
        .containers
        .get(&r.container_id)
        .ok_or_else(|| not_found("container", &r.container_id))?;
    if r.stdin && !rec.config.stdin {
        return Err(invalid(format!(
            "stdin: container {:?} was not created with stdin",
            r.container_id
        )));
    }
    if r.tty && !rec.config.tty {
        return Err(invalid(format!(
            "tty: container {:?} was not created with a tty",
            r.container_id
        )));
    }
    let url = url(
        d,
        token::Request::Attach(AttachRequest {
            container_id: r.container_id,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        }),
    )?;
    Ok(cri::AttachResponse { url })
}

/// `PortForward`: a URL where connections reach the pod's `localhost`.
pub async fn port_forward(
    d: &Arc<Daemon>,
    r: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Status> {
    check_id("pod sandbox", &r.pod_sandbox_id)?;
    let sb = d
        .sandboxes
        .get(&r.pod_sandbox_id)
        .ok_or_else(|| not_found("pod sandbox", &r.pod_sandbox_id))?;
    if !sb.ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {:?} is not ready",
            r.pod_sandbox_id
        )));
    }
    let mut ports = Vec::with_capacity(r.port.len());
    for p in &r.port {
        match u16::try_from(*p) {
            Ok(port) if port > 0 => ports.push(port),
            _ => return Err(invalid(format!("port {p}: must be within 1-65535"))),
        }
    }
    let url = url(
        d,
        token::Request::PortForward(PortForwardRequest {
            pod_sandbox_id: r.pod_sandbox_id,
            ports,
        }),
    )?;
    Ok(cri::PortForwardResponse { url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_combinations_follow_kubelet() {
        assert!(check_streams(false, true, false, false).is_ok());
        assert!(check_streams(true, true, true, false).is_ok());
        assert!(check_streams(false, false, false, false).is_err());
        assert!(check_streams(true, false, true, true).is_err());
    }
}
