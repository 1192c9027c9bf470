//! Exec and attach sessions: the remotecommand channels of one SPDY session or one WebSocket,
//! bridged to the [`Io`] a [`Handler`](super::handler::Handler) works with.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, PollSender};

use super::channel::{self, Channel, Outcome, ResizeDecoder, WsMessage};
use super::handler::{ws_limits, BoxFuture, Conn, Io, Output, OutputSink};
use super::sink::{self, Pipe, Socket, PIPE_SIZE};
use super::spdy::frame::rst;
use super::spdy::session::{Incoming, Stream, StreamReader, StreamWriter};
use super::token::{AttachRequest, ExecRequest};
use super::tunnel::Control;

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
    let started = Instant::now();
    let Some(mut streams) = gather(&mut incoming, expected, timeout).await else {
        incoming.close();
        return;
    };
    tracing::debug!(took = ?started.elapsed(), "SPDY streams opened");
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
    let mut outputs = Vec::new();
    if let Some(s) = streams.remove(&Channel::Stdin) {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        tokio::spawn(spdy_to_pipe(s.reader, ours));
        quiet.push(s.writer);
        io.stdin = Some(Box::new(theirs));
    }
    for ch in [Channel::Stdout, Channel::Stderr] {
        if let Some(s) = streams.remove(&ch) {
            let (ours, theirs) = tokio::io::duplex(OUTPUT_PIPE);
            let taken = Arc::new(AtomicBool::new(false));
            pumps.push(tokio::spawn(output_to_spdy(
                ours,
                s.writer.clone(),
                taken.clone(),
            )));
            outputs.push(s.writer.clone());
            let slot = if ch == Channel::Stdout {
                &mut io.stdout
            } else {
                &mut io.stderr
            };
            *slot = Some(Box::new(SpdyOutput {
                pipe: theirs,
                writer: s.writer,
                taken,
            }));
        }
    }
    if let Some(s) = streams.remove(&Channel::Resize) {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(spdy_resize(s.reader, tx));
        quiet.push(s.writer);
        io.resize = Some(rx);
    }
    let outcome = run(io).await;
    tracing::debug!(took = ?started.elapsed(), "SPDY command done");
    for p in pumps {
        let _ = p.await;
    }
    // An output copied from a pipe is not closed by its pump, nor by a copy given up on.
    for w in outputs.into_iter().chain(quiet) {
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
pub(super) async fn pipe_to_spdy<R: AsyncRead + Unpin>(pipe: R, writer: StreamWriter) {
    if copy_to_spdy(pipe, &writer).await {
        let _ = writer.close().await;
    }
}

/// Like [`pipe_to_spdy`] for an exec's output, which may be handed a pipe instead
/// ([`SpdyOutput::copy_pipe`]): the stream is then left open for that copy.
async fn output_to_spdy(pipe: DuplexStream, writer: StreamWriter, taken: Arc<AtomicBool>) {
    if copy_to_spdy(pipe, &writer).await && !taken.load(Ordering::Acquire) {
        let _ = writer.close().await;
    }
}

/// Copies `pipe` into the stream until EOF; false when the stream failed first.
async fn copy_to_spdy<R: AsyncRead + Unpin>(mut pipe: R, writer: &StreamWriter) -> bool {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if writer.write(&buf[..n]).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// One output channel of a SPDY exec or attach: written through a pipe to a copying task, or
/// handed a pipe of its own that goes into the stream without the copies.
struct SpdyOutput {
    pipe: DuplexStream,
    writer: StreamWriter,
    taken: Arc<AtomicBool>,
}

impl AsyncWrite for SpdyOutput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.pipe).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

impl OutputSink for SpdyOutput {
    fn copy_pipe(self: Box<Self>, pipe: Pipe) -> BoxFuture<std::io::Result<()>> {
        let SpdyOutput {
            pipe: unused,
            writer,
            taken,
        } = *self;
        taken.store(true, Ordering::Release);
        drop(unused);
        Box::pin(async move {
            writer.copy_pipe(pipe).await?;
            writer.close().await.map_err(std::io::Error::other)
        })
    }
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

/// Serves one exec/attach over a WebSocket speaking v4 or v5 channel framing. Everything sent to
/// the client goes through one queue to one writer, which frames output itself (server frames are
/// not masked: a header, the channel byte, the bytes as they were read); tungstenite reads the
/// client's messages, and its own replies (pongs, the close reply) join the same queue.
pub async fn websocket<F>(conn: Conn, v5: bool, opts: Options, run: F)
where
    F: FnOnce(Io) -> BoxFuture<Outcome>,
{
    let (out_tx, out_rx) = mpsc::channel::<WsOut>(WS_QUEUE);
    let client_gone = CancellationToken::new();
    let failed = CancellationToken::new();
    let writer = tokio::spawn(ws_writer(
        conn.write,
        out_rx,
        client_gone.clone(),
        failed.clone(),
    ));
    let control = Control::new(conn.read, out_tx.clone(), WsOut::Raw);
    let source = WebSocketStream::from_raw_socket(control, Role::Server, Some(ws_limits())).await;
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
    let inputs = WsInputs {
        v5,
        stdin,
        resize,
        sizes: ResizeDecoder::default(),
    };
    let reader = tokio::spawn(async move {
        if let ClientEnd::Violation = ws_read(source, inputs).await {
            failed.cancel();
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
    let status = Bytes::from(channel::status_json(&outcome));
    let _ = out_tx.send(WsOut::Data(Channel::Error, status)).await;
    let _ = out_tx.send(WsOut::Close).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

/// How a WebSocket client's side ended.
enum ClientEnd {
    /// It closed the WebSocket or the connection.
    Gone,
    /// It broke RFC 6455 or one of [`ws_limits`]: an unmasked frame, reserved bits, a frame or a
    /// message over the limit (refused from its header alone), text that is not UTF-8.
    Violation,
}

/// Where a WebSocket exec's client messages go.
struct WsInputs {
    v5: bool,
    stdin: Option<DuplexStream>,
    resize: Option<mpsc::Sender<channel::Resize>>,
    sizes: ResizeDecoder,
}

/// Reads the client's messages into `inputs` until it closes the WebSocket, its connection ends or
/// it breaks the protocol.
async fn ws_read(mut source: WebSocketStream<Control<WsOut>>, mut inputs: WsInputs) -> ClientEnd {
    while let Some(msg) = source.next().await {
        match msg {
            Ok(Message::Binary(data)) => inputs.deliver(&data).await,
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(e) if is_violation(&e) => {
                tracing::debug!(error = %e, "WebSocket client broke the protocol");
                return ClientEnd::Violation;
            }
            Err(e) => {
                tracing::trace!(error = %e, "WebSocket client connection ended");
                break;
            }
        }
    }
    ClientEnd::Gone
}

/// Whether tungstenite refused what the client sent, rather than seeing its connection end.
fn is_violation(e: &WsError) -> bool {
    // An end of stream without a close message is the client going away (or half-closing).
    let went_away = matches!(
        e,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    );
    let refused = matches!(
        e,
        WsError::Protocol(_) | WsError::Capacity(_) | WsError::Utf8(_) | WsError::AttackAttempt
    );
    refused && !went_away
}

impl WsInputs {
    /// Hands one binary message to the channel it names.
    async fn deliver(&mut self, data: &[u8]) {
        match WsMessage::decode(data, self.v5) {
            Ok(WsMessage::Data(Channel::Stdin, d)) => {
                if let Some(pipe) = self.stdin.as_mut() {
                    if pipe.write_all(d).await.is_err() {
                        self.stdin = None;
                    }
                }
            }
            Ok(WsMessage::Data(Channel::Resize, d)) => {
                let sizes = self.sizes.feed(d).unwrap_or_default();
                if let Some(tx) = self.resize.as_ref() {
                    for size in sizes {
                        let _ = tx.send(size).await;
                    }
                }
            }
            Ok(WsMessage::Close(Channel::Stdin)) => {
                if let Some(mut pipe) = self.stdin.take() {
                    let _ = pipe.shutdown().await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "WebSocket message refused"),
        }
    }
}

/// What a WebSocket exec's writer sends, in queue order.
enum WsOut {
    /// A message tungstenite framed (a pong, the reply to the client's close).
    Raw(Bytes),
    /// A binary message: the channel byte, then the bytes.
    Data(Channel, Bytes),
    /// Answered once everything queued before it has been written.
    Written(oneshot::Sender<()>),
    /// The close message; the last thing sent.
    Close,
}

/// Messages queued for a WebSocket's writer; with output messages of up to [`WS_CHUNK`] this
/// bounds what a client that stops reading makes us hold (2 MiB, and a pipe's worth per output
/// copied from a pipe, which waits for each message to be sent).
const WS_QUEUE: usize = 8;
/// Largest output message payload read into memory: large messages keep the per-message costs
/// small against the bytes.
const WS_CHUNK: usize = 256 * 1024;
/// Frames gathered into one write at most (about; the last one may overshoot).
const WS_BATCH: usize = 256 * 1024;
/// Payloads at least this large are written from their own buffer rather than copied into the
/// batch.
const ZERO_COPY: usize = 4096;

/// Sends queued messages, as many as are ready per write; a failed write means the client is gone.
/// Once `failed` is cancelled the connection is dropped at once.
async fn ws_writer(
    mut sock: Socket,
    mut rx: mpsc::Receiver<WsOut>,
    client_gone: CancellationToken,
    failed: CancellationToken,
) {
    tokio::select! {
        sent = ws_write(&mut sock, &mut rx) => {
            if let Err(e) = sent {
                tracing::debug!(error = %e, "WebSocket write");
                client_gone.cancel();
            }
            let _ = sock.shutdown().await;
        }
        // A client that broke the protocol is failed (RFC 6455 7.1.7) without waiting for its
        // command to end, nor for it to take the output queued ahead of a close message. The
        // socket is dropped, not shut down: TLS would write (and could wait) to say goodbye. The
        // reading side has ended, so that closes the connection.
        () = failed.cancelled() => {}
    }
}

async fn ws_write(sock: &mut Socket, rx: &mut mpsc::Receiver<WsOut>) -> std::io::Result<()> {
    let mut small = BytesMut::with_capacity(16 * 1024);
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        let mut size = 0;
        let mut written = Vec::new();
        while let Some(m) = next.take() {
            match m {
                WsOut::Raw(b) => small.extend_from_slice(&b),
                WsOut::Data(ch, data) => {
                    sink::ws_binary_header(1 + data.len(), &mut small);
                    small.extend_from_slice(&[ch.id()]);
                    if data.len() >= ZERO_COPY {
                        batch.push(small.split().freeze());
                        size += data.len();
                        batch.push(data);
                    } else {
                        small.extend_from_slice(&data);
                    }
                }
                WsOut::Written(w) => written.push(w),
                WsOut::Close => {
                    small.extend_from_slice(sink::WS_CLOSE);
                    close = true;
                }
            }
            if size + small.len() < WS_BATCH && !close {
                next = rx.try_recv().ok();
            }
        }
        if !small.is_empty() {
            batch.push(small.split().freeze());
        }
        sock.write_all(&mut batch).await?;
        sock.flush().await?;
        written.drain(..).for_each(|w| {
            let _ = w.send(());
        });
        if close {
            break;
        }
    }
    Ok(())
}

/// One output channel of a WebSocket exec or attach as a byte sink: each write becomes one binary
/// message with the channel byte in front, queued for the connection's writer.
struct WsOutput {
    ch: Channel,
    tx: PollSender<WsOut>,
}

impl WsOutput {
    fn new(ch: Channel, tx: mpsc::Sender<WsOut>) -> Self {
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
        let msg = WsOut::Data(this.ch, Bytes::copy_from_slice(&buf[..n]));
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

impl OutputSink for WsOutput {
    /// Reads as much as the pipe holds (up to its capacity) into one message and waits until the
    /// writer has sent it before reading again. Reads grow as large as the pipe while a write is
    /// under way, so the per-message costs vanish against the bytes, and the one buffer is reused.
    fn copy_pipe(self: Box<Self>, pipe: Pipe) -> BoxFuture<std::io::Result<()>> {
        let ch = self.ch;
        let tx = self.tx.get_ref().cloned();
        Box::pin(async move {
            let tx = tx.ok_or_else(gone)?;
            let mut buf = BytesMut::new();
            while pipe.read_buf(&mut buf, PIPE_SIZE).await? > 0 {
                let (done, sent) = oneshot::channel();
                tx.send(WsOut::Data(ch, buf.split().freeze()))
                    .await
                    .map_err(|_| gone())?;
                tx.send(WsOut::Written(done)).await.map_err(|_| gone())?;
                sent.await.map_err(|_| gone())?;
            }
            Ok(())
        })
    }
}
