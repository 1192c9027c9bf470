//! A client of the Kubernetes streaming protocols, written from the SPDY/3 draft and the
//! remotecommand/portforward documents: the upgrade request, SPDY/3.1 frames with zlib-compressed
//! headers (over TCP or tunnelled in WebSocket binary messages), WebSocket channel framing, and the
//! `metav1.Status` on the error stream. The SPDY header dictionary comes from the caller (skiffd's
//! `stream::spdy::headers::DICTIONARY`), so the client and the server under test use one table.

use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Sends the upgrade request for `url` with `headers`; returns the socket and the response head.
pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> (TcpStream, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let host = rest.split('/').next().unwrap();
    let tcp = TcpStream::connect(host).await.unwrap();
    upgrade_on(tcp, url, headers).await
}

/// The upgrade request for `url` (http or https) on an open connection.
pub async fn upgrade_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
    url: &str,
    headers: &[(&str, &str)],
) -> (S, String) {
    let rest = url.split_once("://").unwrap().1;
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        resp.push(byte[0]);
    }
    (tcp, String::from_utf8_lossy(&resp).into_owned())
}

pub const SPDY_UPGRADE: [(&str, &str); 3] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
];

/// What carries the client's SPDY bytes: TCP, or WebSocket binary messages (the tunnel).
pub enum Transport {
    Tcp(TcpStream),
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    Tls(Box<TlsConn>),
}

/// A SPDY/3 client built from the draft's frame layouts.
pub struct Spdy {
    io: Transport,
    rbuf: Vec<u8>,
    z: Compress,
    next_id: u32,
    /// Types of every control frame received.
    pub seen: Vec<u16>,
    /// The streams the server finished, in the order their FINs arrived.
    pub fins: Vec<u32>,
}

#[derive(Debug)]
pub enum In {
    Data { id: u32, fin: bool, data: Vec<u8> },
    Control { kind: u16 },
}

impl Spdy {
    pub fn new(tcp: TcpStream, dictionary: &[u8]) -> Self {
        Self::over(Transport::Tcp(tcp), dictionary)
    }

    pub fn over(io: Transport, dictionary: &[u8]) -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary).unwrap();
        Self {
            io,
            rbuf: Vec::new(),
            z,
            next_id: 1,
            seen: Vec::new(),
            fins: Vec::new(),
        }
    }

    /// Sends raw bytes, for frames the helpers do not build.
    pub async fn write(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Transport::Tcp(t) => t.write_all(bytes).await.unwrap(),
            Transport::Tls(t) => t.write_all(bytes).await.unwrap(),
            Transport::Ws(ws) => ws.send(Message::binary(bytes.to_vec())).await.unwrap(),
        }
    }

    /// Reads more bytes; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        let read = match &mut self.io {
            Transport::Tcp(t) => t.read(&mut chunk).await,
            Transport::Tls(t) => t.read(&mut chunk).await,
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        self.rbuf.extend_from_slice(&b);
                        return true;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
                    Some(Ok(_)) => {}
                }
            },
        };
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.rbuf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 128);
        self.z
            .compress_vec(&raw, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }

    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let block = self.block(headers);
        let mut f = vec![0x80, 3, 0, 1];
        f.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&block);
        self.write(&f).await;
        id
    }

    pub async fn data(&mut self, id: u32, fin: bool, data: &[u8]) {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&(((fin as u32) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.write(&f).await;
    }

    pub async fn next(&mut self) -> Option<In> {
        loop {
            if self.rbuf.len() >= 8 {
                let h = &self.rbuf[..8];
                let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
                if self.rbuf.len() >= 8 + len {
                    let frame: Vec<u8> = self.rbuf.drain(..8 + len).collect();
                    if frame[0] & 0x80 != 0 {
                        let kind = u16::from_be_bytes([frame[2], frame[3]]);
                        self.seen.push(kind);
                        return Some(In::Control { kind });
                    }
                    let id = u32::from_be_bytes([frame[0] & 0x7f, frame[1], frame[2], frame[3]]);
                    let fin = frame[4] & 1 != 0;
                    if fin {
                        self.fins.push(id);
                    }
                    let data = frame[8..].to_vec();
                    return Some(In::Data { id, fin, data });
                }
            }
            let more = tokio::time::timeout(Duration::from_secs(20), self.fill())
                .await
                .expect("a frame within 20 s");
            if !more {
                return None;
            }
        }
    }

    /// Collects data per stream until every stream in `ids` has finished.
    pub async fn collect(&mut self, ids: &[u32]) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(); ids.len()];
        let mut open: Vec<u32> = ids.to_vec();
        while !open.is_empty() {
            match self.next().await.expect("session ended early") {
                In::Data { id, fin, data } => {
                    if let Some(i) = ids.iter().position(|x| *x == id) {
                        out[i].extend_from_slice(&data);
                    }
                    if fin {
                        open.retain(|x| *x != id);
                    }
                }
                In::Control { .. } => {}
            }
        }
        out
    }
}

/// A SPDY/3.1 session on the streaming URL `url`, the upgrade checked.
pub async fn spdy_session(url: &str, dictionary: &[u8]) -> Spdy {
    let (tcp, head) = upgrade(url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    Spdy::new(tcp, dictionary)
}

pub fn exit_code(status: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(status).unwrap_or_else(|e| {
        let text = String::from_utf8_lossy(status);
        panic!("the status channel carried {text:?}, not a Status: {e}")
    });
    if v["status"] == "Success" {
        return None;
    }
    assert_eq!(v["reason"], "NonZeroExitCode");
    Some(
        v["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// Opens a WebSocket to the streaming `url` offering `protocols`; returns it and the protocol the
/// server chose.
pub async fn websocket(url: &str, protocols: &str) -> (WebSocketStream<TcpStream>, String) {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    (ws, chosen_protocol(&resp))
}

/// The subprotocol the server chose, empty if none.
fn chosen_protocol(resp: &tokio_tungstenite::tungstenite::handshake::client::Response) -> String {
    resp.headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// What a `v5.channel.k8s.io` WebSocket session delivered: stdout, stderr and the status.
#[derive(Debug, Default)]
pub struct Channels {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Vec<u8>,
    /// The status code of the server's close frame, if it sent one with a code.
    pub close: Option<u16>,
}

/// Reads channel messages until the server closes the session.
pub async fn ws_collect<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Channels {
    let mut c = Channels::default();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("a message within 30 s")
    {
        match msg {
            Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                1 => c.stdout.extend_from_slice(&b[1..]),
                2 => c.stderr.extend_from_slice(&b[1..]),
                3 => c.status.extend_from_slice(&b[1..]),
                other => panic!("unexpected channel {other}"),
            },
            Ok(Message::Close(frame)) => {
                c.close = frame.map(|f| f.code.into());
                break;
            }
            Err(_) => break,
            Ok(_) => {}
        }
    }
    c
}

/// Sends `data` on channel `ch` of a channel-protocol WebSocket.
pub async fn ws_send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    ch: u8,
    data: &[u8],
) {
    let mut m = vec![ch];
    m.extend_from_slice(data);
    ws.send(Message::binary(m)).await.unwrap();
}

/// Closes stdin the `v5.channel.k8s.io` way.
pub async fn ws_close_stdin<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
}

/// A client TLS connection.
pub type TlsConn = tokio_rustls::client::TlsStream<TcpStream>;

/// PEM files made with `openssl`: a CA, and a server certificate for 127.0.0.1 it signed.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes [`TlsFiles`] in `dir`.
pub fn tls_files(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (tests/apt-packages installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=skiff test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    run(&ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server-key.pem", "-out", "server.csr"]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    }
}

/// A TLS connection to the host of `https://` `url`, trusting only the CA in `ca`.
pub async fn tls_connect(url: &str, ca: &Path) -> TlsConn {
    let host = url
        .strip_prefix("https://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("not an https URL: {url}"));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr: std::net::SocketAddr = host.parse().unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the streaming server")
}

/// [`websocket`] over TLS, trusting only the CA in `ca`.
pub async fn websocket_tls(
    url: &str,
    protocols: &str,
    ca: &Path,
) -> (WebSocketStream<TlsConn>, String) {
    let mut req = url
        .replacen("https://", "wss://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let tls = tls_connect(url, ca).await;
    let (ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    (ws, chosen_protocol(&resp))
}
