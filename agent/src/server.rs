//! Serving the CRI on a unix socket until SIGTERM or SIGINT: gRPC over HTTP/2, one task per
//! connection.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};

use crate::authority::AuthorityFix;
use crate::deadline::Deadlines;

use crate::cri::service::Cri;
use crate::cri::Daemon;

/// kubelet sends and accepts messages up to 16 MiB.
const MAX_MESSAGE: usize = 16 << 20;
/// How long in-flight calls may run on after SIGTERM.
const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn serve(daemon: Arc<Daemon>) -> Result<()> {
    let socket = daemon.config.socket.clone();
    // Before the socket exists: a SIGTERM sent as soon as it appears must find the handler in place.
    let signals = Signals::install()?;
    let listener = bind(
        &socket,
        daemon.config.socket_mode,
        daemon.config.socket_group.as_deref(),
    )?;
    let streams = crate::cri::streaming::start(&daemon).await?;
    tracing::info!(socket = %socket.display(), stream = %streams.local_addr(), "serving the CRI");
    let connections = accept(listener, routes(daemon), signals).await;
    // In-flight calls get a grace period; idle clients that ignore GOAWAY do not hold the exit.
    if tokio::time::timeout(GRACE, connections.shutdown())
        .await
        .is_err()
    {
        tracing::info!("calls still running after the grace period are dropped");
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

/// The runtime and image services behind their deadlines.
fn routes(daemon: Arc<Daemon>) -> Deadlines<tonic::service::Routes> {
    let cri = Cri { daemon };
    let runtime = RuntimeServiceServer::new(cri.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let image = ImageServiceServer::new(cri)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let routes = tonic::service::Routes::new(runtime)
        .add_service(image)
        .prepare();
    Deadlines::new(routes)
}

/// Serves each connection `listener` accepts until a signal comes; the connections still open.
async fn accept(
    listener: UnixListener,
    service: Deadlines<tonic::service::Routes>,
    signals: Signals,
) -> GracefulShutdown {
    let connections = GracefulShutdown::new();
    let stop = signals.recv();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((conn, _)) => serve_connection(&connections, service.clone(), conn),
                Err(e) => {
                    // Out of descriptors, say: the next accept may succeed once calls finish.
                    tracing::warn!(error = %e, "accept on the CRI socket");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut stop => return connections,
        }
    }
}

/// One client connection, served over HTTP/2 with its `:authority` made acceptable to h2 (see
/// [`crate::authority`]) and its calls held to their deadlines (see [`crate::deadline`]).
fn serve_connection<S>(connections: &GracefulShutdown, service: S, conn: UnixStream)
where
    S: tonic::codegen::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(AuthorityFix::new(conn));
    let conn = http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(None)
        .serve_connection(io, TowerToHyperService::new(service));
    let conn = connections.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "CRI connection ended");
        }
    });
}

/// Binds `path`, replacing a stale socket but never another kind of file.
fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)
                .with_context(|| format!("remove stale {}", path.display()))?
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Some(g) = group {
        let gid = group_id(g).with_context(|| format!("socket_group {g:?}"))?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(listener)
}

fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group").context("read /etc/group")?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .context("no such group")
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
