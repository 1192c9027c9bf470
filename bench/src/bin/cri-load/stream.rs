//! Throughput through the CRI streaming server, each against its floor measured in the same run:
//! `Exec` of `dd` over WebSocket (`v5.channel.k8s.io`) and over SPDY/3.1 (`v4.channel.k8s.io`)
//! against the same busybox `dd` read through a pipe and through a loopback TCP socket, and `PortForward` of a bulk HTTP download
//! from busybox `httpd` inside a pod over SPDY (`portforward.k8s.io`) and through the WebSocket
//! tunnel (`SPDY/3.1+portforward.k8s.io`) against the same `httpd` read over loopback TCP.
//!
//! The SPDY client here is the least a client needs: SYN_STREAM with zlib-compressed headers (the
//! SPDY/3 dictionary), DATA frames, and control frames skipped; it never sends WINDOW_UPDATE, as the
//! Go SPDY stack of kubectl and crictl does not.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cri::runtime_service_client::RuntimeServiceClient;
use cri_api::v1 as cri;
use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tonic::transport::Channel;

/// Block size of every `dd` producer: a pipe's capacity.
const DD_BLOCK: u64 = 64 << 10;
/// What one read takes from a socket at most, on every path (floors included).
const READ_CHUNK: usize = 1 << 20;
/// Where the pod's `httpd` listens, inside the pod's network namespace.
const POD_PORT: u16 = 8090;

/// `dd` writing `bytes` of zeros in 64 KiB blocks (busybox `head -c` writes small chunks and tops
/// out near 130 MiB/s on its own, which would measure the producer, not the path).
pub fn dd_zeros(bytes: u64) -> Vec<String> {
    let count = bytes.div_ceil(DD_BLOCK);
    [
        "dd",
        "if=/dev/zero",
        &format!("bs={DD_BLOCK}"),
        &format!("count={count}"),
    ]
    .map(String::from)
    .to_vec()
}

fn mib_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / 1048576.0 / since.elapsed().as_secs_f64()
}

/// The streaming server's URL split into host:port and path.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("streaming URL {url:?} is not http://"))?;
    let at = rest.find('/').context("streaming URL without a path")?;
    Ok((rest[..at].to_string(), rest[at..].to_string()))
}

async fn exec_url(
    rt: &mut RuntimeServiceClient<Channel>,
    cid: &str,
    cmd: Vec<String>,
) -> Result<String> {
    Ok(rt
        .exec(cri::ExecRequest {
            container_id: cid.into(),
            cmd,
            stdout: true,
            ..Default::default()
        })
        .await
        .context("Exec")?
        .into_inner()
        .url)
}

async fn ws_connect(url: &str, protocol: &str) -> Result<WebSocketStream<TcpStream>> {
    let (host, _) = split_url(url)?;
    let mut req = url.replacen("http://", "ws://", 1).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let tcp = TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
    let got = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    ensure!(
        got == Some(protocol),
        "server chose protocol {got:?}, not {protocol}"
    );
    Ok(ws)
}

/// Streams `bytes` of zeros out of the container through `Exec` over WebSocket; MiB/s. Like the
/// SPDY client, it reads the frames itself out of reads of up to [`READ_CHUNK`] with no copy per
/// message (a WebSocket library copies each message out of its read buffer, which would measure
/// the client as much as the server).
pub async fn exec_websocket(
    rt: &mut RuntimeServiceClient<Channel>,
    cid: &str,
    bytes: u64,
) -> Result<f64> {
    let url = exec_url(rt, cid, dd_zeros(bytes)).await?;
    let t0 = Instant::now();
    let mut tcp = ws_upgrade(&url, "v5.channel.k8s.io").await?;
    let mut frames = WsFrames::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut got, mut status) = (0u64, Vec::new());
    loop {
        let n = tcp.read(&mut buf).await?;
        ensure!(n > 0, "the connection closed before the WebSocket close");
        let closed = frames.feed(&buf[..n], |ch, data| match ch {
            1 => got += data.len() as u64,
            3 => status.extend_from_slice(data),
            _ => {}
        })?;
        if closed {
            break;
        }
    }
    let rate = mib_s(bytes, t0);
    check_status(&status)?;
    ensure!(got == bytes, "exec delivered {got} of {bytes} bytes");
    Ok(rate)
}

/// The RFC 6455 sample key: the server's answer to it is checked, so any key will do.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Upgrades a plain connection to a WebSocket speaking `protocol`; the connection is left right
/// behind the server's response.
async fn ws_upgrade(url: &str, protocol: &str) -> Result<TcpStream> {
    let (host, path) = split_url(url)?;
    let mut tcp = TcpStream::connect(&host).await?;
    tcp.set_nodelay(true)?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let text = read_head(&mut tcp).await?;
    ensure!(text.starts_with("HTTP/1.1 101"), "upgrade refused: {text}");
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(WS_KEY.as_bytes());
    ensure!(
        header("sec-websocket-accept") == Some(accept),
        "bad Sec-WebSocket-Accept in {text}"
    );
    ensure!(
        header("sec-websocket-protocol").as_deref() == Some(protocol),
        "server chose another protocol than {protocol}: {text}"
    );
    Ok(tcp)
}

/// Reads an HTTP response head a byte at a time, so that nothing behind it is taken.
async fn read_head(tcp: &mut TcpStream) -> Result<String> {
    let mut resp = Vec::new();
    let mut b = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        ensure!(
            tcp.read(&mut b).await? == 1,
            "connection closed in the upgrade"
        );
        resp.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&resp).into_owned())
}

/// Server-to-client WebSocket frames (unmasked) of v4/v5 channel messages, parsed as they come in
/// pieces: each message's first byte is its channel.
#[derive(Default)]
struct WsFrames {
    /// Header bytes of the next frame received so far.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come; its opcode.
    left: u64,
    opcode: u8,
    fin: bool,
    /// The current message's channel, once its first byte has come.
    channel: Option<u8>,
}

impl WsFrames {
    /// Feeds received bytes, handing each piece of message payload to `on_data`; true once the
    /// server's close frame has come.
    fn feed(&mut self, mut data: &[u8], mut on_data: impl FnMut(u8, &[u8])) -> Result<bool> {
        while !data.is_empty() {
            if self.left == 0 {
                self.head.push(data[0]);
                data = &data[1..];
                let Some((opcode, fin, len)) = ws_frame_head(&self.head)? else {
                    continue;
                };
                self.head.clear();
                if opcode == 8 {
                    return Ok(true);
                }
                (self.opcode, self.fin, self.left) = (opcode, fin, len);
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let n = data
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            let (mut piece, rest) = data.split_at(n);
            data = rest;
            self.left -= n as u64;
            if matches!(self.opcode, 0 | 2) {
                if self.channel.is_none() {
                    self.channel = Some(piece[0]);
                    piece = &piece[1..];
                }
                if let Some(ch) = self.channel {
                    on_data(ch, piece);
                }
            }
            if self.left == 0 {
                self.end_frame();
            }
        }
        Ok(false)
    }

    fn end_frame(&mut self) {
        if matches!(self.opcode, 0 | 2) && self.fin {
            self.channel = None;
        }
    }
}

/// A complete frame header in `h`: opcode, FIN and payload length; `None` while more bytes are
/// needed.
fn ws_frame_head(h: &[u8]) -> Result<Option<(u8, bool, u64)>> {
    let [b0, b1, ..] = *h else { return Ok(None) };
    ensure!(b1 & 0x80 == 0, "the server masked a frame");
    let (need, short) = match b1 & 0x7f {
        126 => (4, None),
        127 => (10, None),
        n => (2, Some(u64::from(n))),
    };
    if h.len() < need {
        return Ok(None);
    }
    let len = short.unwrap_or_else(|| {
        h[2..need]
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    });
    Ok(Some((b0 & 0x0f, b0 & 0x80 != 0, len)))
}

/// A v4/v5 error-channel payload: nothing or `"status":"Success"`.
fn check_status(status: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(status);
    ensure!(
        text.is_empty() || text.contains("\"Success\""),
        "the command failed: {text}"
    );
    Ok(())
}

/// Streams `bytes` of zeros out of the container through `Exec` over SPDY/3.1; MiB/s.
pub async fn exec_spdy(
    rt: &mut RuntimeServiceClient<Channel>,
    cid: &str,
    bytes: u64,
) -> Result<f64> {
    let url = exec_url(rt, cid, dd_zeros(bytes)).await?;
    let t0 = Instant::now();
    let mut sp = Spdy::upgrade(&url, "v4.channel.k8s.io").await?;
    let error = sp.open(&[("streamtype", "error")]).await?;
    let stdout = sp.open(&[("streamtype", "stdout")]).await?;
    let (mut got, mut status) = (0u64, Vec::new());
    sp.run(&[stdout, error], |id, data| {
        if id == stdout {
            got += data.len() as u64;
        } else {
            status.extend_from_slice(data);
        }
    })
    .await?;
    let rate = mib_s(bytes, t0);
    check_status(&status)?;
    ensure!(got == bytes, "exec delivered {got} of {bytes} bytes");
    Ok(rate)
}

/// The floor of both exec paths: the host's busybox (the image's own binary) `dd` read straight
/// through a pipe of 1 MiB, as skiffd makes an exec's output pipe; MiB/s.
pub async fn pipe_floor(bytes: u64) -> Result<f64> {
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("busybox")
        .args(dd_zeros(bytes))
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawn busybox dd")?;
    let mut out = child.stdout.take().context("dd stdout")?;
    // As large a pipe as skiffd gives an exec's output, so the floor is the best a pipe does.
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETPIPE_SZ on the pipe we read; it only changes the pipe's capacity.
    unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    let got = drain(&mut out).await?;
    child.wait().await?;
    let rate = mib_s(bytes, t0);
    ensure!(got == bytes, "pipe delivered {got} of {bytes} bytes");
    Ok(rate)
}

/// The second floor of both exec paths: the same busybox `dd` with its stdout a loopback TCP
/// socket that `cri-load` reads, the least an exec's output delivered over the network costs (one
/// copy into the socket, one out of it); MiB/s.
pub async fn exec_tcp_floor(bytes: u64) -> Result<f64> {
    let t0 = Instant::now();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the floor's socket")?;
    let theirs = std::net::TcpStream::connect(listener.local_addr()?).context("connect")?;
    let (ours, _) = listener.accept().context("accept")?;
    let mut child = tokio::process::Command::new("busybox")
        .args(dd_zeros(bytes))
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .spawn()
        .context("spawn busybox dd")?;
    ours.set_nonblocking(true)?;
    let mut ours = TcpStream::from_std(ours)?;
    let got = drain(&mut ours).await?;
    child.wait().await?;
    let rate = mib_s(bytes, t0);
    ensure!(got == bytes, "TCP delivered {got} of {bytes} bytes");
    Ok(rate)
}

/// The shell command of the pod's bulk server: a sparse file of `bytes`, read once so that its
/// pages are cached (as the floor's are), served by busybox `httpd` (which sends it with
/// sendfile) on the pod's loopback.
pub fn pod_server_script(bytes: u64) -> String {
    format!(
        "mkdir -p /www && truncate -s {bytes} /www/big && cat /www/big >/dev/null && \
         exec httpd -f -p 127.0.0.1:{POD_PORT} -h /www"
    )
}

/// Waits until the pod's `httpd` answers inside the pod.
pub async fn wait_pod_server(rt: &mut RuntimeServiceClient<Channel>, cid: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: cid.into(),
                cmd: ["wget", "-q", "--spider"]
                    .map(String::from)
                    .into_iter()
                    .chain([format!("http://127.0.0.1:{POD_PORT}/big")])
                    .collect(),
                timeout: 5,
            })
            .await
            .context("ExecSync wget")?
            .into_inner();
        if r.exit_code == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "httpd in the pod never answered: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const GET: &[u8] = b"GET /big HTTP/1.0\r\n\r\n";

/// Counts the body bytes of an HTTP response fed in pieces.
#[derive(Default)]
struct Body {
    head: Vec<u8>,
    in_body: bool,
    bytes: u64,
}

impl Body {
    fn feed(&mut self, data: &[u8]) {
        if self.in_body {
            self.bytes += data.len() as u64;
            return;
        }
        self.head.extend_from_slice(data);
        if let Some(at) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
            self.in_body = true;
            self.bytes = (self.head.len() - at - 4) as u64;
        }
    }

    fn check(&self, want: u64) -> Result<()> {
        let status = self.head.split(|b| *b == b'\r').next().unwrap_or_default();
        let status = String::from_utf8_lossy(status);
        ensure!(status.contains(" 200"), "HTTP response {status:?}");
        ensure!(
            self.bytes == want,
            "HTTP body of {} bytes, not {want}",
            self.bytes
        );
        Ok(())
    }
}

/// Downloads the pod's file through `PortForward` over SPDY, or through the WebSocket tunnel;
/// MiB/s.
pub async fn port_forward(
    rt: &mut RuntimeServiceClient<Channel>,
    sandbox: &str,
    bytes: u64,
    websocket: bool,
) -> Result<f64> {
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox.into(),
            port: vec![i32::from(POD_PORT)],
        })
        .await
        .context("PortForward")?
        .into_inner()
        .url;
    let t0 = Instant::now();
    let mut sp = if websocket {
        let ws = ws_connect(&url, "SPDY/3.1+portforward.k8s.io").await?;
        Spdy::new(Wire::Ws(Box::new(ws)))
    } else {
        Spdy::upgrade(&url, "portforward.k8s.io").await?
    };
    let port = POD_PORT.to_string();
    let h = |kind| {
        [
            ("streamtype", kind),
            ("port", port.as_str()),
            ("requestid", "0"),
        ]
    };
    let error = sp.open(&h("error")).await?;
    let data = sp.open(&h("data")).await?;
    sp.data(data, GET).await?;
    let (mut body, mut err) = (Body::default(), Vec::new());
    sp.run(&[data], |id, d| {
        if id == data {
            body.feed(d);
        } else if id == error {
            err.extend_from_slice(d);
        }
    })
    .await?;
    let rate = mib_s(bytes, t0);
    ensure!(
        err.is_empty(),
        "port-forward error: {}",
        String::from_utf8_lossy(&err)
    );
    body.check(bytes)?;
    Ok(rate)
}

/// The port-forward floor's file: a sparse file of `bytes` in a fresh directory, read once so
/// that its pages are cached, as the pod's are.
pub fn floor_file(bytes: u64) -> Result<tempfile_dir::Dir> {
    let dir = tempfile_dir::Dir::new()?;
    let path = dir.0.join("big");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .context("create the floor's file")?;
    file.set_len(bytes).context("size the floor's file")?;
    std::io::copy(&mut &file, &mut std::io::sink()).context("read the floor's file")?;
    Ok(dir)
}

/// A directory removed on drop.
pub mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> anyhow::Result<Dir> {
            use anyhow::Context;
            let p = std::env::temp_dir().join(format!("cri-load-www-{}", std::process::id()));
            std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
            Ok(Dir(p))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The port-forward floor: the same busybox `httpd` serving the same sparse file (from
/// [`floor_file`]) on the host's loopback, downloaded over plain TCP; MiB/s.
pub async fn tcp_floor(dir: &tempfile_dir::Dir, bytes: u64) -> Result<f64> {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut httpd = tokio::process::Command::new("busybox")
        .args(["httpd", "-f", "-p", &addr.to_string(), "-h"])
        .arg(&dir.0)
        .kill_on_drop(true)
        .spawn()
        .context("spawn busybox httpd")?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tcp = loop {
            match TcpStream::connect(addr).await {
                Ok(t) => break t,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => bail!("connect to busybox httpd at {addr}: {e}"),
            }
        };
        let t0 = Instant::now();
        tcp.write_all(GET).await?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut body = Body::default();
        loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            body.feed(&buf[..n]);
        }
        let rate = mib_s(bytes, t0);
        body.check(bytes)?;
        Ok(rate)
    }
    .await;
    let _ = httpd.kill().await;
    result
}

/// What carries the SPDY bytes.
enum Wire {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// A SPDY/3.1 client session.
struct Spdy {
    wire: Wire,
    z: Compress,
    next_id: u32,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Spdy {
    fn new(wire: Wire) -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&skiff_agent::stream::spdy::headers::DICTIONARY)
            .expect("the SPDY dictionary");
        Self {
            wire,
            z,
            next_id: 1,
            buf: vec![0u8; 2 * READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// Upgrades a plain connection to SPDY/3.1 with `protocol` as the sub-protocol.
    async fn upgrade(url: &str, protocol: &str) -> Result<Self> {
        let (host, path) = split_url(url)?;
        let mut tcp = TcpStream::connect(&host).await?;
        tcp.set_nodelay(true)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: Upgrade\r\n\
             Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await?;
        let text = read_head(&mut tcp).await?;
        ensure!(text.starts_with("HTTP/1.1 101"), "upgrade refused: {text}");
        Ok(Self::new(Wire::Tcp(tcp)))
    }

    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        match &mut self.wire {
            Wire::Tcp(t) => t.write_all(&frame).await?,
            Wire::Ws(ws) => ws.send(Message::binary(frame)).await?,
        }
        Ok(())
    }

    /// Opens a stream with `headers` (SYN_STREAM); returns its id.
    async fn open(&mut self, headers: &[(&str, &str)]) -> Result<u32> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut block = Vec::with_capacity(raw.len() + 64);
        self.z
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .context("deflate SPDY headers")?;
        let id = self.next_id;
        self.next_id += 2;
        let mut f = vec![0x80, 3, 0, 1];
        f.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&block);
        self.send(f).await?;
        Ok(id)
    }

    async fn data(&mut self, id: u32, data: &[u8]) -> Result<()> {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.send(f).await
    }

    /// Reads more bytes into the buffer; false at the end of the connection.
    async fn fill(&mut self) -> Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match &mut self.wire {
            Wire::Tcp(t) => {
                if self.buf.len() - self.end < READ_CHUNK {
                    self.buf.resize(self.end + READ_CHUNK, 0);
                }
                let n = t.read(&mut self.buf[self.end..]).await?;
                self.end += n;
                Ok(n > 0)
            }
            Wire::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        if self.buf.len() - self.end < b.len() {
                            self.buf.resize(self.end + b.len(), 0);
                        }
                        self.buf[self.end..self.end + b.len()].copy_from_slice(&b);
                        self.end += b.len();
                        return Ok(true);
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(false),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            },
        }
    }

    /// Hands every DATA frame's payload to `on_data` until each of `until` has ended (FIN) or the
    /// session closed. A reset of one of them is an error. Payloads are handed over as they
    /// arrive, a frame in as many pieces as reads (as a client that reads each frame's payload
    /// into its own buffer copies it once): only control frames and headers are gathered whole.
    async fn run(&mut self, until: &[u32], mut on_data: impl FnMut(u32, &[u8])) -> Result<()> {
        let mut open: Vec<u32> = until.to_vec();
        // The DATA frame being received: its stream, the payload bytes still to come, its flags.
        let mut data: Option<(u32, usize, u8)> = None;
        while !open.is_empty() {
            loop {
                if let Some((id, left, flags)) = data {
                    let n = left.min(self.end - self.start);
                    on_data(id, &self.buf[self.start..self.start + n]);
                    self.start += n;
                    if n < left {
                        data = Some((id, left - n, flags));
                        break;
                    }
                    data = None;
                    if flags & 1 != 0 {
                        open.retain(|s| *s != id);
                    }
                    continue;
                }
                if self.end - self.start < 8 {
                    break;
                }
                let h = &self.buf[self.start..self.start + 8];
                let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
                let (word, flags) = (u32::from_be_bytes([h[0], h[1], h[2], h[3]]), h[4]);
                if word & 0x8000_0000 == 0 {
                    self.start += 8;
                    data = Some((word, len, flags));
                    continue;
                }
                if self.end - self.start < 8 + len {
                    break;
                }
                let body = self.start + 8..self.start + 8 + len;
                self.start += 8 + len;
                let kind = word & 0xffff;
                let target = self.buf.get(body.start..body.start + 4);
                let target = target.map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]));
                match kind {
                    3 if target.is_some_and(|t| open.contains(&(t & 0x7fff_ffff))) => {
                        bail!("stream {target:?} was reset")
                    }
                    7 => return Ok(()),
                    _ => {}
                }
            }
            if !open.is_empty() && !self.fill().await? {
                break;
            }
        }
        Ok(())
    }
}

/// Reads `r` to its end, counting the bytes.
async fn drain<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<u64> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        got += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two messages (stdout with a 16-bit length, then the status), a close, fed a few bytes at a
    /// time so that headers and the channel byte straddle the pieces.
    #[test]
    fn websocket_frames_in_pieces() {
        let out = vec![7u8; 300];
        let mut wire = vec![0x82, 126, 1, 45, 1];
        wire.extend_from_slice(&out);
        wire.extend_from_slice(&[0x82, 3, 3, b'o', b'k']);
        wire.extend_from_slice(&[0x88, 2, 3, 0xe8]);
        for step in [1, 2, 3, 7, 500] {
            let (mut got, mut status, mut closed) = (Vec::new(), Vec::new(), false);
            let mut frames = WsFrames::default();
            for piece in wire.chunks(step) {
                closed = frames
                    .feed(piece, |ch, d| match ch {
                        1 => got.extend_from_slice(d),
                        3 => status.extend_from_slice(d),
                        _ => panic!("channel {ch}"),
                    })
                    .unwrap();
                if closed {
                    break;
                }
            }
            assert!(closed, "step {step}");
            assert_eq!(got, out, "step {step}");
            assert_eq!(status, b"ok", "step {step}");
        }
    }
}
