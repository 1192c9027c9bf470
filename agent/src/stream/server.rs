//! The streaming HTTP server: `/exec/<token>`, `/attach/<token>` and `/portforward/<token>`, each
//! upgraded to SPDY/3.1 (`X-Stream-Protocol-Version` negotiation) or to WebSocket
//! (`Sec-WebSocket-Protocol` negotiation), then served by a [`Handler`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::channel::{self, Outcome, Resize};
use super::sink::{Pipe, Socket};
use super::spdy::session;
use super::token::{self, AttachRequest, ExecRequest, TokenError, Tokens};
use super::{exec, portforward, tunnel};

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
    fn new(upgraded: Upgraded) -> Self {
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

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; the default is a random port on 127.0.0.1.
    pub addr: SocketAddr,
    /// How long an issued URL stays valid.
    pub token_ttl: Duration,
    /// How long a SPDY client may take to open the streams it asked for.
    pub stream_creation_timeout: Duration,
    pub spdy: session::Config,
    /// Serve TLS (and hand out `https://` URLs) with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_ttl: token::DEFAULT_TTL,
            stream_creation_timeout: Duration::from_secs(30),
            spdy: session::Config::default(),
            tls: None,
        }
    }
}

/// A running streaming server.
pub struct Server {
    addr: SocketAddr,
    tokens: Tokens,
    cfg: Config,
    handler: Arc<dyn Handler>,
}

impl Server {
    /// Binds `cfg.addr` and starts serving in the background.
    pub async fn start(cfg: Config, handler: Arc<dyn Handler>) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind(cfg.addr).await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(Self {
            addr,
            tokens: Tokens::new(cfg.token_ttl),
            cfg,
            handler,
        });
        tokio::spawn(accept_loop(listener, Arc::downgrade(&server)));
        tracing::info!(%addr, "streaming server listening");
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Files `req` and returns the URL a client connects to.
    pub fn url(&self, req: token::Request) -> Result<String, TokenError> {
        let kind = req.kind();
        let token = self.tokens.issue(req)?;
        let scheme = if self.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}/{kind}/{token}", self.addr))
    }

    pub fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

async fn accept_loop(listener: TcpListener, server: std::sync::Weak<Server>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(server) = server.upgrade() else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let tls = server.cfg.tls.clone().map(TlsAcceptor::from);
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_http(server, tcp, peer).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(server, stream, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "streaming TLS handshake"),
                Err(_) => tracing::debug!(%peer, "streaming TLS handshake timed out"),
            }
        });
    }
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 requests, and the upgrades they ask for, on one connection.
async fn serve_http<IO>(server: Arc<Server>, io: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&server, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "streaming connection");
    }
}

/// The answer to a streaming request: a short text, or the switch to the upgraded protocol.
pub type Reply = Response<Full<Bytes>>;

fn plain(status: StatusCode, msg: &str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r
}

fn route(server: &Arc<Server>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next() {
        Some("exec") => "exec",
        Some("attach") => "attach",
        Some("portforward") => "portforward",
        _ => return plain(StatusCode::NOT_FOUND, "no such streaming endpoint"),
    };
    let token = parts.next().unwrap_or_default();
    if req.method() != http::Method::GET && req.method() != http::Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "streaming needs GET or POST",
        );
    }
    let pending = match server.tokens.redeem(token, kind) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::NOT_FOUND, &e.to_string()),
    };
    upgrade(server, req, pending)
}

/// Upgrades `req` to the transport it asks for and serves `pending` over it with the server's
/// handler: the end of a token's redemption, and what the kubelet API calls directly (it has
/// authorized the request itself and needs no URL).
pub fn upgrade(server: &Arc<Server>, req: Request<Incoming>, pending: token::Request) -> Reply {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        websocket(server, req, pending)
    } else if upgrade.starts_with("spdy/3.1") {
        spdy(server, req, pending)
    } else {
        plain(
            StatusCode::BAD_REQUEST,
            "streaming needs Upgrade: SPDY/3.1 or Upgrade: websocket",
        )
    }
}

fn header_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

fn spdy(server: &Arc<Server>, req: Request<Incoming>, pending: token::Request) -> Reply {
    let offered = header_values(req.headers(), "x-stream-protocol-version");
    let supported = match pending {
        token::Request::PortForward(_) => &[channel::PORT_FORWARD][..],
        _ => channel::SPDY_PROTOCOLS,
    };
    let Some(protocol) = channel::negotiate(&offered, supported) else {
        return plain(
            StatusCode::FORBIDDEN,
            &format!("unable to upgrade: no protocol of {offered:?} is one of {supported:?}"),
        );
    };
    let server = server.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let conn = Conn::new(upgraded);
                let (incoming, session) =
                    session::serve_split(conn.read, conn.write, server.cfg.spdy.clone());
                let handler = server.handler.clone();
                let timeout = server.cfg.stream_creation_timeout;
                match pending {
                    token::Request::Exec(r) => {
                        let opts = exec::Options::exec(&r);
                        exec::spdy(incoming, protocol, opts, timeout, move |io| {
                            handler.exec(r, io)
                        })
                        .await
                    }
                    token::Request::Attach(r) => {
                        let opts = exec::Options::attach(&r);
                        exec::spdy(incoming, protocol, opts, timeout, move |io| {
                            handler.attach(r, io)
                        })
                        .await
                    }
                    token::Request::PortForward(r) => portforward::spdy(incoming, r, handler).await,
                }
                let _ = session.await;
            }
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade"),
        }
    });
    let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Full::new(Bytes::new());
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    r
}

fn websocket(server: &Arc<Server>, req: Request<Incoming>, pending: token::Request) -> Reply {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let offered = header_values(req.headers(), "sec-websocket-protocol");
    let supported = match pending {
        token::Request::PortForward(_) => &[tunnel::SPDY_PORT_FORWARD][..],
        _ => channel::WEBSOCKET_PROTOCOLS,
    };
    let Some(protocol) = channel::negotiate(&offered, supported) else {
        return plain(
            StatusCode::BAD_REQUEST,
            &format!("no WebSocket protocol of {offered:?} is one of {supported:?}"),
        );
    };
    let v5 = protocol == channel::V5;
    let server = server.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade");
                return;
            }
        };
        let handler = server.handler.clone();
        match pending {
            token::Request::Exec(r) => {
                let opts = exec::Options::exec(&r);
                let conn = Conn::new(upgraded);
                exec::websocket(conn, v5, opts, move |io| handler.exec(r, io)).await
            }
            token::Request::Attach(r) => {
                let opts = exec::Options::attach(&r);
                let conn = Conn::new(upgraded);
                exec::websocket(conn, v5, opts, move |io| handler.attach(r, io)).await
            }
            token::Request::PortForward(r) => {
                // The session writes the tunnel's messages itself; tungstenite only reads.
                let conn = Conn::new(upgraded);
                let (control, replies) = mpsc::channel(8);
                let read = tunnel::Control::new(conn.read, control, |b| b);
                let ws =
                    WebSocketStream::from_raw_socket(read, Role::Server, Some(ws_limits())).await;
                let (incoming, session) = session::serve_split(
                    tunnel::WsTunnel::new(ws),
                    conn.write.ws_tunnel(replies),
                    server.cfg.spdy.clone(),
                );
                portforward::spdy(incoming, r, handler).await;
                let _ = session.await;
            }
        }
    });
    let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Full::new(Bytes::new());
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", accept);
    }
    h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    r
}
