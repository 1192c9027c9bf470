//! What the streaming server hands the code that serves a session: the [`Handler`] it calls, the
//! [`Io`] of one exec or attach, the upgraded [`Conn`]. The transports and the server both build on
//! it.

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::channel::{Outcome, Resize};
use super::sink::{Pipe, Socket};
use super::token::{AttachRequest, ExecRequest};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A byte source handed to a handler.
pub type Input = Box<dyn AsyncRead + Send + Unpin>;
/// A byte sink handed to a handler.
pub type Output = Box<dyn OutputSink>;

/// How much the plain pipe copy moves per write.
const PIPE_COPY: usize = 256 << 10;

/// One output channel of an exec or attach.
pub trait OutputSink: AsyncWrite + Send + Unpin + 'static {
    /// Copies what `pipe` yields to the channel until the pipe's end, then shuts the channel down.
    /// Transports override it: a pipe lets them frame the bytes where they were read rather than
    /// copy them through an `AsyncWrite`.
    fn copy_pipe(self: Box<Self>, pipe: Pipe) -> BoxFuture<std::io::Result<()>> {
        Box::pin(async move {
            let mut out = self;
            let mut buf = BytesMut::new();
            loop {
                buf.clear();
                if pipe.read_buf(&mut buf, PIPE_COPY).await? == 0 {
                    break;
                }
                out.write_all(&buf).await?;
            }
            out.shutdown().await
        })
    }
}

/// An upgraded connection taken apart: what the client sends, and the way out.
pub struct Conn {
    pub read: Input,
    pub write: Socket,
}

impl Conn {
    /// Plain TCP keeps its socket (so that a port-forward's bytes can be spliced into it);
    /// anything else is split.
    pub(super) fn new(upgraded: Upgraded) -> Self {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (rd, wr) = parts.io.into_inner().into_split();
                // Bytes the client sent right behind its request were read with it.
                let read = std::io::Cursor::new(parts.read_buf).chain(rd);
                Conn {
                    read: Box::new(read),
                    write: Socket::tcp(wr),
                }
            }
            Err(upgraded) => {
                let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
                Conn {
                    read: Box::new(rd),
                    write: Socket::stream(wr),
                }
            }
        }
    }
}

/// The streams of one exec or attach, as the client asked for them.
pub struct Io {
    pub stdin: Option<Input>,
    pub stdout: Option<Output>,
    /// Absent with a TTY: the terminal merges it into stdout.
    pub stderr: Option<Output>,
    /// Terminal size changes; present with a TTY.
    pub resize: Option<mpsc::Receiver<Resize>>,
    pub tty: bool,
    /// Cancelled when the client has gone before the command ended (connection closed, WebSocket
    /// close, SPDY GOAWAY or RST_STREAM): an exec's command is then killed.
    pub client_gone: CancellationToken,
}

/// What the streaming server runs once a client is connected. The CRI side implements it over the
/// container runtime; tests implement it directly.
pub trait Handler: Send + Sync + 'static {
    /// Runs `req.cmd` with `io`; resolves when the command has ended and its output is written.
    fn exec(&self, req: ExecRequest, io: Io) -> BoxFuture<Outcome>;
    /// Connects `io` to a running container; resolves when the container's process ends.
    fn attach(&self, req: AttachRequest, io: Io) -> BoxFuture<Outcome>;
    /// Connects `conn` to `port` inside the pod's network namespace. Dropping `conn` or shutting down
    /// its write side half-closes the connection towards the client.
    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
        conn: DuplexStream,
    ) -> BoxFuture<Result<(), String>>;

    /// Connects to `port` inside the pod's network namespace and hands the socket over, so that
    /// the forward can move the bytes itself (without [`Handler::port_forward`]'s in-memory pipe).
    /// `None`: this handler only relays through `port_forward`.
    fn connect(
        &self,
        _pod_sandbox_id: String,
        _port: u16,
    ) -> BoxFuture<Option<Result<TcpStream, String>>> {
        Box::pin(async { None })
    }
}

/// Largest WebSocket message accepted from a client.
const WS_MAX_MESSAGE: usize = 2 << 20;

/// Client messages are small (stdin chunks, resizes, tunnelled SPDY frames): cap what one message
/// may make us buffer.
pub(super) fn ws_limits() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
}
