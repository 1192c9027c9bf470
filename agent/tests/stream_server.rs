//! The streaming server over real TCP on 127.0.0.1, driven by clients written here from the protocol
//! documents: SPDY/3 frames and header blocks (draft-mbelshe-httpbis-spdy-00), the HTTP upgrade and
//! the Kubernetes remotecommand/portforward conventions, and RFC 6455 WebSocket (tungstenite).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use skiff_agent::stream::channel::{Outcome, Resize};
use skiff_agent::stream::server::{BoxFuture, Config, Handler, Io, Server};
use skiff_agent::stream::sink::Pipe;
use skiff_agent::stream::token::{ExecRequest, PortForwardRequest, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Bytes the `emit-tracked` command has handed to stdout so far.
static TRACKED: AtomicUsize = AtomicUsize::new(0);

/// `cat-exit N`: stderr gets a line, stdin is copied to stdout, the exit code is N.
/// `emit N`: N bytes of a pattern on stdout. With a TTY the first resize is echoed first.
/// `emit-pipe N`: the same bytes written into a pipe, which is handed to stdout as an exec's
/// output pipe is (so that the transports move them their own way: spliced, on plain TCP).
struct TestHandler;

/// A pipe, both ends blocking: (read end, write end).
fn os_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    skiff_sys::fd::pipe().expect("pipe")
}

/// The bytes `emit` and `emit-pipe` write: a 64 KiB block of `i % 251`, repeated.
fn pattern_block() -> Vec<u8> {
    (0..65536u32).map(|i| (i % 251) as u8).collect()
}

fn is_pattern(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == ((i % 65536) % 251) as u8)
}

async fn run(cmd: Vec<String>, mut io: Io) -> Outcome {
    if let (Some(resize), Some(out)) = (io.resize.as_mut(), io.stdout.as_mut()) {
        if let Some(Resize { width, height }) = resize.recv().await {
            let _ = out
                .write_all(format!("size {width}x{height}\n").as_bytes())
                .await;
        }
    }
    if let Some(err) = io.stderr.as_mut() {
        let _ = err.write_all(b"to stderr\n").await;
    }
    let arg: usize = cmd.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    match cmd.first().map(String::as_str) {
        Some("emit-pipe") => {
            let (r, w) = os_pipe();
            let writer = std::thread::spawn(move || {
                let block = pattern_block();
                let mut w = std::fs::File::from(w);
                let mut left = arg;
                while left > 0 {
                    let n = left.min(block.len());
                    if std::io::Write::write_all(&mut w, &block[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
            let pipe = Pipe::new(r).expect("register the pipe");
            let out = io.stdout.take().expect("stdout");
            let copied = out.copy_pipe(pipe).await;
            let _ = writer.join();
            match copied {
                Ok(()) => Outcome::Success,
                Err(e) => Outcome::Failed(format!("stdout: {e}")),
            }
        }
        Some(cmd @ ("emit" | "emit-tracked")) => {
            let tracked = cmd == "emit-tracked";
            let block = pattern_block();
            let out = io.stdout.as_mut().expect("stdout");
            let mut left = arg;
            while left > 0 {
                let n = left.min(block.len());
                if out.write_all(&block[..n]).await.is_err() {
                    return Outcome::Failed("stdout closed".into());
                }
                left -= n;
                if tracked {
                    TRACKED.fetch_add(n, Ordering::SeqCst);
                }
            }
            Outcome::Success
        }
        _ => {
            if let (Some(inp), Some(out)) = (io.stdin.as_mut(), io.stdout.as_mut()) {
                let _ = tokio::io::copy(inp, out).await;
            }
            Outcome::from_code(arg as i32)
        }
    }
}

impl Handler for TestHandler {
    fn exec(&self, req: ExecRequest, io: Io) -> BoxFuture<Outcome> {
        Box::pin(run(req.cmd, io))
    }

    fn attach(
        &self,
        _req: skiff_agent::stream::token::AttachRequest,
        io: Io,
    ) -> BoxFuture<Outcome> {
        Box::pin(run(vec!["cat-exit".into(), "0".into()], io))
    }

    fn port_forward(
        &self,
        _pod: String,
        port: u16,
        mut conn: DuplexStream,
    ) -> BoxFuture<Result<(), String>> {
        Box::pin(async move {
            if port == 9 {
                return Err("nothing listens on port 9".into());
            }
            let mut got = Vec::new();
            conn.read_to_end(&mut got)
                .await
                .map_err(|e| e.to_string())?;
            got.reverse();
            conn.write_all(&got).await.map_err(|e| e.to_string())?;
            conn.shutdown().await.map_err(|e| e.to_string())
        })
    }

    /// Port 8081 is served by a socket the forward relays itself, port 9 refused; other ports go
    /// to `port_forward`.
    fn connect(&self, _pod: String, port: u16) -> BoxFuture<Option<Result<TcpStream, String>>> {
        Box::pin(async move {
            if port == 9 {
                return Some(Err("nothing listens on port 9".into()));
            }
            if port != 8081 {
                return None;
            }
            Some(
                TcpStream::connect(reverser())
                    .await
                    .map_err(|e| e.to_string()),
            )
        })
    }
}

/// A TCP server on 127.0.0.1 that answers each connection with what it received, reversed, once
/// the client has half-closed (as the test handler's `port_forward` does).
fn reverser() -> std::net::SocketAddr {
    static ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut got = Vec::new();
                    if conn.read_to_end(&mut got).is_ok() {
                        got.reverse();
                        let _ = conn.write_all(&got);
                    }
                });
            }
        });
        addr
    })
}

async fn server(ttl: Duration) -> Arc<Server> {
    let cfg = Config {
        token_ttl: ttl,
        ..Config::default()
    };
    Server::start(cfg, Arc::new(TestHandler)).await.unwrap()
}

fn exec_req(cmd: &[&str], stdin: bool, tty: bool) -> Request {
    Request::Exec(ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    })
}

// The protocol client is shared with the end-to-end tests through skiffd.
use client::{exit_code, upgrade, In, Spdy, Transport, SPDY_UPGRADE};
use skiff_agent::stream::spdy::headers::DICTIONARY;
use skiff_test_support::stream as client;

#[tokio::test]
async fn exec_over_spdy() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv.url(exec_req(&["cat-exit", "3"], true, false)).unwrap();
    let (tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("x-stream-protocol-version: v4.channel.k8s.io"));
    let mut c = Spdy::new(tcp, &DICTIONARY);
    let error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    // A stream nobody asked for is refused without disturbing the others.
    c.open(&[("streamtype", "resize")]).await;
    c.data(stdin, false, b"hello ").await;
    c.data(stdin, true, b"spdy").await;
    let got = c.collect(&[stdout, stderr, error]).await;
    assert_eq!(got[0], b"hello spdy");
    assert_eq!(got[1], b"to stderr\n");
    assert_eq!(exit_code(&got[2]).as_deref(), Some("3"));
    // The server ends the session: GOAWAY, then EOF.
    let mut kinds = Vec::new();
    while let Some(f) = c.next().await {
        if let In::Control { kind } = f {
            kinds.push(kind);
        }
    }
    assert!(kinds.contains(&7), "no GOAWAY: {kinds:?}");
    assert!(
        c.seen.contains(&3),
        "the extra stream was not reset: {:?}",
        c.seen
    );
}

#[tokio::test]
async fn exec_over_spdy_with_tty_and_large_output() {
    let srv = server(Duration::from_secs(60)).await;
    let total = 64 * 1024 * 1024;
    let url = srv
        .url(exec_req(&["emit", &total.to_string()], false, true))
        .unwrap();
    let (tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut c = Spdy::new(tcp, &DICTIONARY);
    let error = c.open(&[("streamtype", "error")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let resize = c.open(&[("streamtype", "resize")]).await;
    c.data(resize, false, br#"{"Width":120,"Height":40}"#).await;
    let got = c.collect(&[stdout, error]).await;
    let prefix = b"size 120x40\n";
    assert_eq!(&got[0][..prefix.len()], prefix);
    let body = &got[0][prefix.len()..];
    assert_eq!(body.len(), total);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == ((i % 65536) % 251) as u8));
    assert_eq!(exit_code(&got[1]), None);
}

#[tokio::test]
async fn exec_over_websocket_v5() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv.url(exec_req(&["cat-exit", "7"], true, false)).unwrap();
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
    );
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    ws.send(Message::binary(b"\x00hello ws".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("message within 20 s")
    {
        match msg.unwrap() {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                2 => stderr.extend_from_slice(&b[1..]),
                3 => status.extend_from_slice(&b[1..]),
                other => panic!("channel {other}"),
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(stdout, b"hello ws");
    assert_eq!(stderr, b"to stderr\n");
    assert_eq!(exit_code(&status).as_deref(), Some("7"));
}

#[tokio::test]
async fn tokens_are_single_use_and_expire() {
    let srv = server(Duration::from_millis(300)).await;
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (_tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 404"), "reuse: {head}");

    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 404"), "expired: {head}");

    // A token for exec does not open attach, and an unknown protocol is refused.
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (_tcp, head) = upgrade(&url.replace("/exec/", "/attach/"), &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (_tcp, head) = upgrade(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v1.channel.k8s.io"),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn port_forward_over_spdy() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv
        .url(Request::PortForward(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![],
        }))
        .unwrap();
    let (tcp, head) = upgrade(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    forward_twenty(Spdy::new(tcp, &DICTIONARY)).await;
}

/// Opens 20 concurrent port-forward connections (one to a port nobody serves; half of them to a
/// socket the forward relays itself) and checks each.
async fn forward_twenty(mut c: Spdy) {
    let mut pairs = Vec::new();
    for req in 0..20 {
        let rid = req.to_string();
        let port = match req {
            5 => "9",
            r if r % 2 == 1 => "8081",
            _ => "8080",
        };
        let e = c
            .open(&[("streamtype", "error"), ("port", port), ("requestid", &rid)])
            .await;
        let d = c
            .open(&[("streamtype", "data"), ("port", port), ("requestid", &rid)])
            .await;
        pairs.push((e, d));
    }
    for (i, (_, d)) in pairs.iter().enumerate() {
        c.data(*d, true, format!("conn-{i}").as_bytes()).await;
    }
    let ids: Vec<u32> = pairs.iter().flat_map(|(e, d)| [*e, *d]).collect();
    let got = c.collect(&ids).await;
    for (i, chunk) in got.chunks(2).enumerate() {
        let (err, data) = (&chunk[0], &chunk[1]);
        if i == 5 {
            assert!(String::from_utf8_lossy(err).contains("nothing listens on port 9"));
        } else {
            let mut want = format!("conn-{i}").into_bytes();
            want.reverse();
            assert_eq!(data, &want, "connection {i}");
            assert!(err.is_empty(), "{}", String::from_utf8_lossy(err));
        }
    }
}

#[tokio::test]
async fn port_forward_tunnelled_over_websocket() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv
        .url(Request::PortForward(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![],
        }))
        .unwrap();
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "SPDY/3.1+portforward.k8s.io".parse().unwrap(),
    );
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    forward_twenty(Spdy::over(Transport::Ws(Box::new(ws)), &DICTIONARY)).await;
}

fn ws_request(
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    req
}

#[tokio::test]
async fn large_output_over_websocket_v4() {
    let srv = server(Duration::from_secs(60)).await;
    let total = 64 * 1024 * 1024;
    let url = srv
        .url(exec_req(&["emit", &total.to_string()], false, false))
        .unwrap();
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(ws_request(&url, "v4.channel.k8s.io"), tcp)
            .await
            .unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let (mut got, mut status) = (0usize, Vec::new());
    let mut ok = true;
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => {
                    ok &= b[1..]
                        .iter()
                        .enumerate()
                        .all(|(i, x)| *x == (((got + i) % 65536) % 251) as u8);
                    got += b.len() - 1;
                }
                3 => status.extend_from_slice(&b[1..]),
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(got, total);
    assert!(ok, "stdout bytes differ from what was sent");
    assert_eq!(exit_code(&status), None);
}

#[tokio::test]
async fn non_reading_client_holds_the_command_back() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv
        .url(exec_req(&["emit-tracked", "1073741824"], false, false))
        .unwrap();
    let (tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut c = Spdy::new(tcp, &DICTIONARY);
    c.open(&[("streamtype", "error")]).await;
    c.open(&[("streamtype", "stdout")]).await;
    c.open(&[("streamtype", "stderr")]).await;
    // Read nothing; the command may only get as far as the buffers along the way allow. Wait
    // for its progress to settle (bounded in time), then check where it stopped.
    let mut last = usize::MAX;
    let mut second = TRACKED.load(Ordering::SeqCst);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = second;
        second = TRACKED.load(Ordering::SeqCst);
        if second == last && second > 0 {
            break;
        }
    }
    assert_eq!(
        last, second,
        "output kept flowing to a client that reads nothing"
    );
    eprintln!("non-reading client: the command stopped after {second} bytes");
    assert!(
        second < 16 * 1024 * 1024,
        "{second} bytes buffered for a non-reading client"
    );
    assert!(second > 0);
    drop(c);
    // The server is still serving.
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (_tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[tokio::test]
async fn hostile_spdy_clients_do_not_take_the_server_down() {
    let srv = server(Duration::from_secs(60)).await;
    // Garbage where frames belong: GOAWAY and close.
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (tcp, _) = upgrade(&url, &SPDY_UPGRADE).await;
    let mut c = Spdy::new(tcp, &DICTIONARY);
    c.write(&[0x80, 0x07, 0x00, 0x01, 0, 0, 0, 0]).await;
    let mut kinds = Vec::new();
    while let Some(In::Control { kind }) = c.next().await {
        kinds.push(kind);
    }
    assert!(kinds.contains(&7), "{kinds:?}");

    // A frame claiming 16 MiB: refused on its header.
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (tcp, _) = upgrade(&url, &SPDY_UPGRADE).await;
    let mut c = Spdy::new(tcp, &DICTIONARY);
    c.write(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]).await;
    while c.next().await.is_some() {}

    // A header block that inflates past the limit.
    let url = srv.url(exec_req(&["cat-exit", "0"], false, false)).unwrap();
    let (tcp, _) = upgrade(&url, &SPDY_UPGRADE).await;
    let mut c = Spdy::new(tcp, &DICTIONARY);
    let big = "x".repeat(1 << 20);
    c.open(&[("streamtype", &big)]).await;
    while c.next().await.is_some() {}

    // Data for a stream nobody opened: RST_STREAM, the session lives on.
    let url = srv.url(exec_req(&["cat-exit", "4"], false, false)).unwrap();
    let (tcp, _) = upgrade(&url, &SPDY_UPGRADE).await;
    let mut c = Spdy::new(tcp, &DICTIONARY);
    c.data(99, false, b"who?").await;
    assert!(matches!(c.next().await, Some(In::Control { kind: 3 })));
    let error = c.open(&[("streamtype", "error")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    let got = c.collect(&[error, stdout, stderr]).await;
    assert_eq!(exit_code(&got[0]).as_deref(), Some("4"));
}

#[tokio::test]
async fn client_that_never_opens_its_streams_is_dropped() {
    let cfg = Config {
        stream_creation_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let srv = Server::start(cfg, Arc::new(TestHandler)).await.unwrap();
    let url = srv.url(exec_req(&["cat-exit", "0"], true, false)).unwrap();
    let (tcp, _) = upgrade(&url, &SPDY_UPGRADE).await;
    let mut c = Spdy::new(tcp, &DICTIONARY);
    c.open(&[("streamtype", "error")]).await;
    let mut kinds = Vec::new();
    while let Some(f) = c.next().await {
        if let In::Control { kind } = f {
            kinds.push(kind);
        }
    }
    assert!(kinds.contains(&7), "no GOAWAY: {kinds:?}");
}

#[tokio::test]
async fn exec_over_spdy_v3_reports_failure_as_text() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv.url(exec_req(&["cat-exit", "5"], false, false)).unwrap();
    let (tcp, head) = upgrade(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v2.channel.k8s.io"),
        ],
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v3.channel.k8s.io"),
        "{head}"
    );
    let mut c = Spdy::new(tcp, &DICTIONARY);
    let error = c.open(&[("streamtype", "error")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    let got = c.collect(&[error, stdout, stderr]).await;
    assert_eq!(
        String::from_utf8_lossy(&got[0]),
        "command terminated with non-zero exit code: exit status 5"
    );
}

#[tokio::test]
async fn websocket_pings_are_answered_while_the_command_is_silent() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv.url(exec_req(&["cat-exit", "0"], true, false)).unwrap();
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_request(&url, "v5.channel.k8s.io"), tcp)
        .await
        .unwrap();
    ws.send(Message::Ping(b"hb".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            if let Message::Pong(p) = msg.unwrap() {
                return Some(p);
            }
        }
        None
    })
    .await
    .expect("a pong within 5 s");
    assert_eq!(pong.as_deref(), Some(&b"hb"[..]));
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let mut status = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(b) if b.first() == Some(&3) => status.extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(exit_code(&status), None);
}

#[tokio::test]
async fn attach_over_websocket_and_port_outside_the_request() {
    let srv = server(Duration::from_secs(60)).await;
    let url = srv
        .url(Request::Attach(skiff_agent::stream::token::AttachRequest {
            container_id: "c1".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        }))
        .unwrap();
    assert!(url.contains("/attach/"), "{url}");
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_request(&url, "v5.channel.k8s.io"), tcp)
        .await
        .unwrap();
    ws.send(Message::binary(b"\x00attached".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let mut stdout = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(b) if b.first() == Some(&1) => stdout.extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(stdout, b"attached");

    // A port-forward limited to 8080 refuses 8081 on the error stream.
    let url = srv
        .url(Request::PortForward(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![8080],
        }))
        .unwrap();
    let (tcp, _) = upgrade(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ],
    )
    .await;
    let mut c = Spdy::new(tcp, &DICTIONARY);
    let e = c
        .open(&[
            ("streamtype", "error"),
            ("port", "8081"),
            ("requestid", "1"),
        ])
        .await;
    c.open(&[("streamtype", "data"), ("port", "8081"), ("requestid", "1")])
        .await;
    let got = c.collect(&[e]).await;
    assert!(
        String::from_utf8_lossy(&got[0]).contains("port 8081 was not requested"),
        "{:?}",
        String::from_utf8_lossy(&got[0])
    );
}

/// `emit-pipe N` over SPDY: the stdout and stderr bytes and the status.
async fn spdy_pipe_output(mut c: Spdy, total: usize) {
    let error = c.open(&[("streamtype", "error")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    let got = c.collect(&[stdout, stderr, error]).await;
    assert_eq!(got[0].len(), total);
    assert!(
        is_pattern(&got[0]),
        "stdout bytes differ from what was sent"
    );
    assert_eq!(got[1], b"to stderr\n");
    assert_eq!(
        exit_code(&got[2]),
        None,
        "{:?}",
        String::from_utf8_lossy(&got[2])
    );
}

/// `emit-pipe N` over WebSocket: the same checks.
async fn ws_pipe_output<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, total: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let got = client::ws_collect(ws).await;
    assert_eq!(got.stdout.len(), total);
    assert!(
        is_pattern(&got.stdout),
        "stdout bytes differ from what was sent"
    );
    assert_eq!(got.stderr, b"to stderr\n");
    assert_eq!(exit_code(&got.status), None);
}

#[tokio::test]
async fn pipe_output_is_spliced_whole_over_both_transports() {
    let srv = server(Duration::from_secs(60)).await;
    let total = 64 * 1024 * 1024 + 12345;
    let url = srv
        .url(exec_req(&["emit-pipe", &total.to_string()], false, false))
        .unwrap();
    let (tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    spdy_pipe_output(Spdy::new(tcp, &DICTIONARY), total).await;

    let url = srv
        .url(exec_req(&["emit-pipe", &total.to_string()], false, false))
        .unwrap();
    let (mut ws, proto) = client::websocket(&url, "v5.channel.k8s.io").await;
    assert_eq!(proto, "v5.channel.k8s.io");
    ws_pipe_output(&mut ws, total).await;
}

#[tokio::test]
async fn exec_over_tls_by_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let files = client::tls_files(dir.path());
    let tls = skiff_agent::stream::tls::server_config(&files.cert, &files.key).unwrap();
    let cfg = Config {
        tls: Some(tls),
        ..Config::default()
    };
    let srv = Server::start(cfg, Arc::new(TestHandler)).await.unwrap();

    let url = srv.url(exec_req(&["cat-exit", "5"], true, false)).unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (mut ws, proto) = client::websocket_tls(&url, "v5.channel.k8s.io", &files.ca).await;
    assert_eq!(proto, "v5.channel.k8s.io");
    client::ws_send(&mut ws, 0, b"over tls").await;
    client::ws_close_stdin(&mut ws).await;
    let got = client::ws_collect(&mut ws).await;
    assert_eq!(got.stdout, b"over tls");
    assert_eq!(exit_code(&got.status).as_deref(), Some("5"));

    let url = srv.url(exec_req(&["cat-exit", "6"], true, false)).unwrap();
    let tls = client::tls_connect(&url, &files.ca).await;
    let (tls, head) = client::upgrade_on(tls, &url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut c = Spdy::over(Transport::Tls(Box::new(tls)), &DICTIONARY);
    let error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    c.data(stdin, true, b"spdy over tls").await;
    let got = c.collect(&[stdout, stderr, error]).await;
    assert_eq!(got[0], b"spdy over tls");
    assert_eq!(exit_code(&got[2]).as_deref(), Some("6"));

    // A pipe's output cannot be spliced into TLS: it is read and written in frames.
    let total = 8 * 1024 * 1024 + 7;
    let url = srv
        .url(exec_req(&["emit-pipe", &total.to_string()], false, false))
        .unwrap();
    let tls = client::tls_connect(&url, &files.ca).await;
    let (tls, head) = client::upgrade_on(tls, &url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    spdy_pipe_output(
        Spdy::over(Transport::Tls(Box::new(tls)), &DICTIONARY),
        total,
    )
    .await;
    let url = srv
        .url(exec_req(&["emit-pipe", &total.to_string()], false, false))
        .unwrap();
    let (mut ws, _) = client::websocket_tls(&url, "v5.channel.k8s.io", &files.ca).await;
    ws_pipe_output(&mut ws, total).await;

    // A plain-text client gets no upgrade from a TLS server.
    let url = srv.url(exec_req(&["cat-exit", "0"], true, false)).unwrap();
    let plain = url.replacen("https://", "http://", 1);
    let (_tcp, head) = upgrade(&plain, &SPDY_UPGRADE).await;
    assert!(!head.starts_with("HTTP/1.1 101"), "{head}");
}
