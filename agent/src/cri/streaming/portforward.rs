//! Port-forward connections to `localhost:<port>` inside a pod's network namespace. A socket
//! belongs to the namespace it was created in, so each one is made on a short-lived thread that
//! joined the pod's namespace, then handed to tokio.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::net::TcpStream;

use crate::cri::Daemon;

/// How much one copy step moves at most, each way.
const COPY_CHUNK: usize = 128 << 10;

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects `conn` to `port` in pod `sandbox_id` and relays both ways until both sides closed.
pub async fn run(
    d: &Arc<Daemon>,
    sandbox_id: &str,
    port: u16,
    mut conn: DuplexStream,
) -> Result<(), String> {
    let mut tcp = open(d, sandbox_id, port).await?;
    // Each direction is shut down as its source ends, so half-closes pass through. Bulk transfers
    // move in large chunks: the default 8 KiB would cost a wake-up and a frame per 8 KiB.
    match tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut tcp, COPY_CHUNK, COPY_CHUNK)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(%sandbox_id, port, error = %e, "port-forward connection ended");
            Ok(())
        }
    }
}

/// A socket connected to `port` in pod `sandbox_id`.
pub async fn open(d: &Arc<Daemon>, sandbox_id: &str, port: u16) -> Result<TcpStream, String> {
    let sb = d
        .sandboxes
        .get(sandbox_id)
        .ok_or_else(|| format!("pod sandbox {sandbox_id:?} not found"))?;
    if !sb.ready {
        return Err(format!("pod sandbox {sandbox_id:?} is not ready"));
    }
    let netns = sb.netns.clone();
    let std_conn = connect(netns, port)
        .await
        .map_err(|e| format!("connect to localhost:{port} in pod sandbox {sandbox_id:?}: {e}"))?;
    TcpStream::from_std(std_conn).map_err(|e| format!("register socket: {e}"))
}

/// A non-blocking socket connected to `localhost:port` in `netns` (the host's when `None`).
async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<StdTcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns.as_deref(), port));
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the connecting thread died")))
}

/// Runs on its own thread, which it moves into `netns` for good: the thread ends afterwards.
fn connect_in(netns: Option<&Path>, port: u16) -> std::io::Result<StdTcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns)?;
        // SAFETY: setns on an open namespace file affects only this thread, which exits once the
        // socket is made.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                e.kind(),
                format!("join network namespace {}: {e}", ns.display()),
            ));
        }
    }
    // "localhost": IPv4 first, then IPv6, as the name resolves in most pods.
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let s = StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT)
        .or_else(|e4| StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e4))?;
    s.set_nonblocking(true)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}
