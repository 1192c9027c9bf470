//! Exec and attach sessions: the remotecommand channels of one SPDY session or one WebSocket,
//! bridged to the [`Io`] a [`Handler`](super::server::Handler) works with.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, PollSender};

use super::channel::{self, Channel, Outcome, ResizeDecoder, WsMessage};
use super::server::{BoxFuture, Io, Output};
use super::spdy::frame::rst;
use super::spdy::session::{Incoming, Stream, StreamReader, StreamWriter};
use super::token::{AttachRequest, ExecRequest};

/// Bytes buffered between a transport and a handler per direction.
const PIPE: usize = 64 * 1024;
/// Bytes buffered between a handler's output and a SPDY stream: room for a few data frames per
/// wake-up.
const OUTPUT_PIPE: usize = 256 * 1024;

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
    let client_gone = incoming.client_gone();
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
        client_gone,
    };
    let mut pumps = Vec::new();
    // The server's halves of the stdin and resize streams stay open until the command ends:
    // client-go takes a FIN on stdin for the end of the session and closes its own stdin at once,
    // cutting off whatever it had not sent yet.
    let mut quiet = Vec::new();
    if let Some(s) = streams.remove(&Channel::Stdin) {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        tokio::spawn(spdy_to_pipe(s.reader, ours));
        quiet.push(s.writer);
        io.stdin = Some(Box::new(theirs));
    }
    for ch in [Channel::Stdout, Channel::Stderr] {
        if let Some(s) = streams.remove(&ch) {
            let (ours, theirs) = tokio::io::duplex(OUTPUT_PIPE);
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
        quiet.push(s.writer);
        io.resize = Some(rx);
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    for w in quiet {
        let _ = w.close().await;
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
    let mut buf = vec![0u8; 128 * 1024];
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
    let (sink, mut source) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Message>(WS_QUEUE);
    let client_gone = CancellationToken::new();
    let writer = tokio::spawn(ws_writer(sink, out_rx, client_gone.clone()));
    let mut io = Io {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        tty: opts.tty,
        client_gone: client_gone.clone(),
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
        // The client closed the WebSocket or the connection (after the command ended, harmless).
        client_gone.cancel();
    });
    for (on, ch) in [
        (opts.stdout, Channel::Stdout),
        (opts.stderr, Channel::Stderr),
    ] {
        if !on {
            continue;
        }
        let out: Output = Box::new(WsOutput::new(ch, out_tx.clone()));
        if ch == Channel::Stdout {
            io.stdout = Some(out);
        } else {
            io.stderr = Some(out);
        }
    }
    // Everything the command wrote is queued ahead of the status: one queue, one writer.
    let outcome = run(io).await;
    let status = channel::ws_frame(Channel::Error, &channel::status_json(&outcome));
    let _ = out_tx.send(Message::binary(status)).await;
    // A close frame without a status code reads as an abnormal end (1005) to client-go, which
    // then reports the stream as failed however the command ended.
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = out_tx.send(Message::Close(Some(normal))).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

/// Messages queued for a WebSocket's writer; with [`WS_CHUNK`]-sized output messages this bounds
/// what a client that stops reading makes us hold (2 MiB).
const WS_QUEUE: usize = 8;
/// Largest output message payload: large messages keep the per-message costs (a wake-up, an
/// allocation, a frame header) small against the copying.
const WS_CHUNK: usize = 256 * 1024;

/// Sends queued messages, as many as are ready per flush: one write to the socket for a run of
/// messages rather than one per message.
async fn ws_writer<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
    client_gone: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Pongs to the client's pings are queued by the reading half and go out on a flush: flush now
    // and then even when the command is silent, or heartbeat-checking clients give up.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    'run: loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(mut m) = m else { break };
                loop {
                    let last = matches!(m, Message::Close(_));
                    if sink.feed(m).await.is_err() {
                        client_gone.cancel();
                        break 'run;
                    }
                    if last {
                        break 'run;
                    }
                    match rx.try_recv() {
                        Ok(next) => m = next,
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    client_gone.cancel();
                    break;
                }
            }
            _ = tick.tick() => {
                if sink.flush().await.is_err() {
                    client_gone.cancel();
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
}

/// One output channel of a WebSocket exec or attach as a byte sink: each write becomes one binary
/// message with the channel byte in front, queued for the connection's writer.
struct WsOutput {
    ch: Channel,
    tx: PollSender<Message>,
}

impl WsOutput {
    fn new(ch: Channel, tx: mpsc::Sender<Message>) -> Self {
        Self {
            ch,
            tx: PollSender::new(tx),
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the WebSocket connection is closed",
    )
}

impl AsyncWrite for WsOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let n = buf.len().min(WS_CHUNK);
        let msg = Message::binary(channel::ws_frame(this.ch, &buf[..n]));
        this.tx.send_item(msg).map_err(|_| gone())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().tx.close();
        Poll::Ready(Ok(()))
    }
}
