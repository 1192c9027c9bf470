//! Streaming attach: a connection to the container monitor's attach socket, which relays the
//! container's output (the monitor also keeps writing it to the CRI log) and takes stdin and
//! terminal sizes, framed as `monitor::attach` describes.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::cri::Daemon;
use crate::monitor::attach as wire;
use crate::stream::channel::{Outcome, Resize};
use crate::stream::server::{Io, Output};
use crate::stream::token::AttachRequest;

/// Relays `io` to and from the container until its output ends (the container exited) or the
/// client went away.
pub async fn run(d: &Arc<Daemon>, req: AttachRequest, io: Io) -> Outcome {
    if let Err(e) = super::check_running(d, &req.container_id) {
        return Outcome::Failed(e.message().to_string());
    }
    let Some(rec) = d.containers.get(&req.container_id) else {
        return Outcome::Failed(format!("container {:?} not found", req.container_id));
    };
    let sock = match connect(&rec.bundle).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed(format!("attach to container {:?}: {e}", req.container_id))
        }
    };
    let (rd, wr) = sock.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(send_frames(rx, wr));
    // kubelet's StdinOnce, as containerd has it: without a terminal, the end of the first attached
    // stdin (closed by the client, or the client gone) closes the container's stdin for good.
    let close_after = rec.config.stdin_once && !rec.config.tty;
    let stdin = io
        .stdin
        .filter(|_| rec.config.stdin)
        .map(|s| tokio::spawn(forward_stdin(s, tx.clone(), close_after)));
    let resize = io
        .resize
        .map(|r| tokio::spawn(forward_resizes(r, tx.clone())));
    // Held until the output ends: the end of the client's stdin is no hang-up towards the
    // monitor, which would stop sending output to this client.
    let _open = tx;
    receive_output(rd, io.stdout, io.stderr).await;
    for t in [stdin, resize].into_iter().flatten() {
        t.abort();
    }
    writer.abort();
    Outcome::Success
}

/// Connects through a descriptor of the bundle directory: its path may be too long for a socket
/// address.
async fn connect(bundle: &std::path::Path) -> std::io::Result<UnixStream> {
    let dir = std::fs::File::open(bundle)?;
    let path = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), wire::SOCKET);
    let s = UnixStream::connect(&path).await;
    drop(dir);
    s
}

async fn send_frames(mut rx: mpsc::Receiver<Vec<u8>>, mut wr: OwnedWriteHalf) {
    while let Some(f) = rx.recv().await {
        if wr.write_all(&f).await.is_err() {
            return;
        }
    }
}

/// Relays the client's stdin; at its end, closes the container's stdin if `close_after`.
async fn forward_stdin(
    mut stdin: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Vec<u8>>,
    close_after: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(wire::frame(wire::STDIN, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
    if close_after {
        tracing::debug!("attached stdin ended: closing the container's stdin (stdin_once)");
        let _ = tx.send(wire::frame(wire::CLOSE_STDIN, &[])).await;
    }
}

async fn forward_resizes(mut sizes: mpsc::Receiver<Resize>, tx: mpsc::Sender<Vec<u8>>) {
    while let Some(s) = sizes.recv().await {
        let mut p = s.width.to_be_bytes().to_vec();
        p.extend_from_slice(&s.height.to_be_bytes());
        if tx.send(wire::frame(wire::RESIZE, &p)).await.is_err() {
            return;
        }
    }
}

/// Copies output frames to the client's streams until the monitor closes the socket or the client
/// stops taking output.
async fn receive_output(
    mut rd: impl AsyncRead + Unpin,
    mut stdout: Option<Output>,
    mut stderr: Option<Output>,
) {
    let mut head = [0u8; 5];
    let mut payload = Vec::new();
    loop {
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > wire::MAX_FRAME {
            break;
        }
        payload.resize(len, 0);
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let out = match head[0] {
            wire::STDERR => stderr.as_mut(),
            _ => stdout.as_mut(),
        };
        if let Some(o) = out {
            if o.write_all(&payload).await.is_err() {
                break;
            }
        }
    }
    for o in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(1), o.shutdown()).await;
    }
}
