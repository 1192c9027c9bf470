//! Port-forward sessions over SPDY (`portforward.k8s.io`): the client opens an error stream and a
//! data stream per connection, paired by the `requestid` header; each pair becomes one connection
//! handed to the [`Handler`].

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::channel::{PortForwardStream, PortStream};
use super::handler::Handler;
use super::remotecommand::pipe_to_spdy;
use super::spdy::frame::rst;
use super::spdy::session::{Incoming, Stream, StreamReader};
use super::token::PortForwardRequest;

const PIPE: usize = 256 * 1024;

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    port: u16,
}

/// Serves the session until the client closes it.
pub async fn spdy(mut incoming: Incoming, req: PortForwardRequest, handler: Arc<dyn Handler>) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    while let Some(s) = incoming.accept().await {
        let id = match PortForwardStream::from_headers(&s.headers) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward stream refused");
                let _ = s.writer.reset(rst::PROTOCOL_ERROR).await;
                continue;
            }
        };
        let pair = pending.entry(id.request_id.clone()).or_default();
        pair.port = id.port;
        let slot = match id.kind {
            PortStream::Data => &mut pair.data,
            PortStream::Error => &mut pair.error,
        };
        if slot.is_some() {
            let _ = s.writer.reset(rst::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        if pair.data.is_some() && pair.error.is_some() {
            if let Some(Pair {
                data: Some(data),
                error: Some(error),
                port,
            }) = pending.remove(&id.request_id)
            {
                tokio::spawn(forward(data, error, port, req.clone(), handler.clone()));
            }
        }
    }
}

async fn forward(
    data: Stream,
    error: Stream,
    port: u16,
    req: PortForwardRequest,
    handler: Arc<dyn Handler>,
) {
    let result = if !req.ports.is_empty() && !req.ports.contains(&port) {
        let _ = data.writer.reset(rst::REFUSED_STREAM).await;
        Err(format!(
            "port {port} was not requested for pod {}",
            req.pod_sandbox_id
        ))
    } else {
        connect(data, port, &req, handler).await
    };
    if let Err(msg) = result {
        let text = format!("an error occurred forwarding {port}: {msg}");
        let _ = error.writer.write(text.as_bytes()).await;
    }
    let _ = error.writer.close().await;
}

async fn connect(
    data: Stream,
    port: u16,
    req: &PortForwardRequest,
    handler: Arc<dyn Handler>,
) -> Result<(), String> {
    match handler.connect(req.pod_sandbox_id.clone(), port).await {
        Some(Ok(tcp)) => {
            relay(data, tcp).await;
            return Ok(());
        }
        Some(Err(e)) => {
            // The client waits for the data stream's end as well as the error's.
            let _ = data.writer.close().await;
            return Err(e);
        }
        None => {}
    }
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (rd, wr) = tokio::io::split(ours);
    let up = tokio::spawn(client_to_pipe(data.reader, wr));
    let down = tokio::spawn(pipe_to_spdy(rd, data.writer));
    let result = handler
        .port_forward(req.pod_sandbox_id.clone(), port, theirs)
        .await;
    let _ = down.await;
    up.abort();
    result
}

/// Relays a stream pair's data stream and the pod's socket both ways until both sides are done,
/// each direction closed as its source ends (half-closes pass through).
async fn relay(data: Stream, tcp: TcpStream) {
    let (rd, mut wr) = tcp.into_split();
    let mut reader = data.reader;
    let up = tokio::spawn(async move {
        while let Some(chunk) = reader.read().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let writer = data.writer;
    if let Err(e) = writer.copy_socket(rd).await {
        tracing::debug!(error = %e, "port-forward connection ended");
    }
    let _ = writer.close().await;
    let _ = up.await;
}

async fn client_to_pipe(
    mut reader: StreamReader,
    mut pipe: tokio::io::WriteHalf<tokio::io::DuplexStream>,
) {
    while let Some(data) = reader.read().await {
        if pipe.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}
