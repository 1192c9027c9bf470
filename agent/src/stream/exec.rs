//! Exec and attach sessions: the remotecommand channels of one SPDY session or one WebSocket,
//! bridged to the [`Io`] a [`Handler`](super::server::Handler) works with.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{self, Channel, Outcome, ResizeDecoder, WsMessage};
use super::server::{BoxFuture, Io};
use super::spdy::frame::rst;
use super::spdy::session::{Incoming, Stream, StreamReader, StreamWriter};
use super::token::{AttachRequest, ExecRequest};

/// Bytes buffered between a transport and a handler per direction.
const PIPE: usize = 64 * 1024;

/// The channels a client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn exec(r: &ExecRequest) -> Self {
        Self {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr && !r.tty,
            tty: r.tty,
        }
    }

    pub fn attach(r: &AttachRequest) -> Self {
        Self {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr && !r.tty,
            tty: r.tty,
        }
    }

    /// The SPDY streams a client opens for these options under `protocol` (v2 has no resize).
    fn expected(&self, protocol: &str) -> Vec<Channel> {
        let resize = self.tty && protocol != channel::V2;
        let mut want = vec![Channel::Error];
        for (on, ch) in [
            (self.stdin, Channel::Stdin),
            (self.stdout, Channel::Stdout),
            (self.stderr, Channel::Stderr),
            (resize, Channel::Resize),
        ] {
            if on {
                want.push(ch);
            }
        }
        want
    }
}

/// Serves one exec/attach over a SPDY session: waits for the client's streams, runs `run`, reports
/// the outcome on the error stream and ends the session.
pub async fn spdy<F>(
    mut incoming: Incoming,
    protocol: &str,
    opts: Options,
    timeout: Duration,
    run: F,
) where
    F: FnOnce(Io) -> BoxFuture<Outcome>,
{
    let expected = opts.expected(protocol);
    let Some(mut streams) = gather(&mut incoming, expected, timeout).await else {
        incoming.close();
        return;
    };
    // Streams beyond the expected ones are refused, so they never hold up the session.
    let closer = incoming.closer();
    tokio::spawn(async move {
        while let Some(extra) = incoming.accept().await {
            let _ = extra.writer.reset(rst::REFUSED_STREAM).await;
        }
    });
    let error = streams.remove(&Channel::Error);
    let mut io = Io {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        tty: opts.tty,
    };
    let mut pumps = Vec::new();
    if let Some(s) = streams.remove(&Channel::Stdin) {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        tokio::spawn(spdy_to_pipe(s.reader, ours));
        let _ = s.writer.close().await;
        io.stdin = Some(Box::new(theirs));
    }
    for ch in [Channel::Stdout, Channel::Stderr] {
        if let Some(s) = streams.remove(&ch) {
            let (ours, theirs) = tokio::io::duplex(PIPE);
            pumps.push(tokio::spawn(pipe_to_spdy(ours, s.writer)));
            let slot = if ch == Channel::Stdout {
                &mut io.stdout
            } else {
                &mut io.stderr
            };
            *slot = Some(Box::new(theirs));
        }
    }
    if let Some(s) = streams.remove(&Channel::Resize) {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(spdy_resize(s.reader, tx));
        let _ = s.writer.close().await;
        io.resize = Some(rx);
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    if let Some(e) = error {
        let _ = e
            .writer
            .write(&channel::error_stream_bytes(protocol, &outcome))
            .await;
        let _ = e.writer.close().await;
    }
    closer.close();
}

async fn gather(
    incoming: &mut Incoming,
    expected: Vec<Channel>,
    timeout: Duration,
) -> Option<HashMap<Channel, Stream>> {
    let mut streams = HashMap::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while !expected.iter().all(|c| streams.contains_key(c)) {
        tokio::select! {
            s = incoming.accept() => {
                let s = s?;
                match channel::Channel::from_headers(&s.headers) {
                    Ok(ch) if !streams.contains_key(&ch) => {
                        streams.insert(ch, s);
                    }
                    Ok(ch) => {
                        tracing::debug!(channel = ch.name(), "duplicate remotecommand stream");
                        let _ = s.writer.reset(rst::PROTOCOL_ERROR).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "remotecommand stream refused");
                        let _ = s.writer.reset(rst::PROTOCOL_ERROR).await;
                    }
                }
            }
            _ = &mut deadline => {
                tracing::warn!(?expected, got = streams.len(), "client did not open its streams in time");
                return None;
            }
        }
    }
    Some(streams)
}

async fn spdy_to_pipe(mut reader: StreamReader, mut pipe: DuplexStream) {
    while let Some(data) = reader.read().await {
        if pipe.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// Copies `pipe` into a SPDY stream until EOF, then half-closes the stream.
pub(super) async fn pipe_to_spdy<R: AsyncRead + Unpin>(mut pipe: R, writer: StreamWriter) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.write(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = writer.close().await;
}

async fn spdy_resize(mut reader: StreamReader, tx: mpsc::Sender<channel::Resize>) {
    let mut dec = ResizeDecoder::default();
    while let Some(data) = reader.read().await {
        match dec.feed(&data) {
            Ok(sizes) => {
                for size in sizes {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "resize message refused"),
        }
    }
}

/// Serves one exec/attach over a WebSocket speaking v4 or v5 channel framing.
pub async fn websocket<S, F>(ws: WebSocketStream<S>, v5: bool, opts: Options, run: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Io) -> BoxFuture<Outcome>,
{
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        // Pongs to the client's pings are queued by the reading half and go out on a flush: flush
        // now and then even when the command is silent, or heartbeat-checking clients give up.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                m = out_rx.recv() => {
                    let Some(m) = m else { break };
                    let last = matches!(m, Message::Close(_));
                    if sink.send(m).await.is_err() || last {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    let mut io = Io {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        tty: opts.tty,
    };
    let mut stdin = None;
    if opts.stdin {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        stdin = Some(ours);
        io.stdin = Some(Box::new(theirs));
    }
    let mut resize = None;
    if opts.tty {
        let (tx, rx) = mpsc::channel(8);
        resize = Some(tx);
        io.resize = Some(rx);
    }
    let reader = tokio::spawn(async move {
        let mut dec = ResizeDecoder::default();
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            match WsMessage::decode(&data, v5) {
                Ok(WsMessage::Data(Channel::Stdin, d)) => {
                    if let Some(pipe) = stdin.as_mut() {
                        if pipe.write_all(d).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(WsMessage::Data(Channel::Resize, d)) => {
                    let sizes = dec.feed(d).unwrap_or_default();
                    if let Some(tx) = resize.as_ref() {
                        for size in sizes {
                            let _ = tx.send(size).await;
                        }
                    }
                }
                Ok(WsMessage::Close(Channel::Stdin)) => {
                    if let Some(mut pipe) = stdin.take() {
                        let _ = pipe.shutdown().await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "WebSocket message refused"),
            }
        }
    });
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    for (on, ch) in [
        (opts.stdout, Channel::Stdout),
        (opts.stderr, Channel::Stderr),
    ] {
        if !on {
            continue;
        }
        let (ours, theirs) = tokio::io::duplex(PIPE);
        pumps.push(tokio::spawn(pipe_to_ws(ours, ch, out_tx.clone())));
        let slot = if ch == Channel::Stdout {
            &mut io.stdout
        } else {
            &mut io.stderr
        };
        *slot = Some(Box::new(theirs));
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    let status = channel::ws_frame(Channel::Error, &channel::status_json(&outcome));
    let _ = out_tx.send(Message::binary(status)).await;
    let _ = out_tx.send(Message::Close(None)).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

async fn pipe_to_ws(mut pipe: DuplexStream, ch: Channel, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send(Message::binary(channel::ws_frame(ch, &buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
