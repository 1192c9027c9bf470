//! The streaming HTTP server: `/exec/<token>`, `/attach/<token>` and `/portforward/<token>`, each
//! upgraded to SPDY/3.1 (`X-Stream-Protocol-Version` negotiation) or to WebSocket
//! (`Sec-WebSocket-Protocol` negotiation), then served by a [`Handler`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::channel;
use super::handler::ws_limits;
use super::spdy::session;
use super::token::{self, TokenError, Tokens};
use super::{portforward, remotecommand, tunnel};

// The handler's types keep their old paths here too.
pub use super::handler::{BoxFuture, Conn, Handler, Input, Io, Output, OutputSink};

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
        let started = Instant::now();
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                tracing::debug!(took = ?started.elapsed(), "SPDY upgraded");
                let conn = Conn::new(upgraded);
                let (incoming, session) =
                    session::serve_split(conn.read, conn.write, server.cfg.spdy.clone());
                let handler = server.handler.clone();
                let timeout = server.cfg.stream_creation_timeout;
                match pending {
                    token::Request::Exec(r) => {
                        let opts = remotecommand::Options::exec(&r);
                        remotecommand::spdy(incoming, protocol, opts, timeout, move |io| {
                            handler.exec(r, io)
                        })
                        .await
                    }
                    token::Request::Attach(r) => {
                        let opts = remotecommand::Options::attach(&r);
                        remotecommand::spdy(incoming, protocol, opts, timeout, move |io| {
                            handler.attach(r, io)
                        })
                        .await
                    }
                    token::Request::PortForward(r) => portforward::spdy(incoming, r, handler).await,
                }
                let _ = session.await;
                tracing::debug!(took = ?started.elapsed(), "SPDY session done");
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
        let started = Instant::now();
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
                let opts = remotecommand::Options::exec(&r);
                let conn = Conn::new(upgraded);
                remotecommand::websocket(conn, v5, opts, move |io| handler.exec(r, io)).await;
                tracing::debug!(took = ?started.elapsed(), "WebSocket exec done");
            }
            token::Request::Attach(r) => {
                let opts = remotecommand::Options::attach(&r);
                let conn = Conn::new(upgraded);
                remotecommand::websocket(conn, v5, opts, move |io| handler.attach(r, io)).await
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
