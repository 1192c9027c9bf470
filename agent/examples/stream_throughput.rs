//! Throughput of the streaming server against a plain loopback socket (the floor): a handler writes
//! N bytes to stdout of an exec, a SPDY client on 127.0.0.1 reads them, and the same N bytes go
//! through a bare TCP connection. Run: `cargo run --release -p skiff-agent --example stream_throughput [MiB]`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use flate2::{Compress, Compression, FlushCompress};
use skiff_agent::stream::channel::Outcome;
use skiff_agent::stream::server::{BoxFuture, Config, Handler, Io, Server};
use skiff_agent::stream::spdy::headers::DICTIONARY;
use skiff_agent::stream::token::{AttachRequest, ExecRequest, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

struct Emit;

impl Handler for Emit {
    fn exec(&self, req: ExecRequest, mut io: Io) -> BoxFuture<Outcome> {
        Box::pin(async move {
            let total: usize = req.cmd[0].parse().unwrap_or(0);
            let block = vec![7u8; CHUNK];
            let Some(out) = io.stdout.as_mut() else {
                return Outcome::Failed("no stdout".into());
            };
            let mut left = total;
            while left > 0 {
                let n = left.min(CHUNK);
                if out.write_all(&block[..n]).await.is_err() {
                    return Outcome::Failed("stdout closed".into());
                }
                left -= n;
            }
            Outcome::Success
        })
    }

    fn attach(&self, _req: AttachRequest, _io: Io) -> BoxFuture<Outcome> {
        Box::pin(async { Outcome::Failed("not used".into()) })
    }

    fn port_forward(&self, _: String, _: u16, _: DuplexStream) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Err("not used".into()) })
    }
}

fn syn_stream(z: &mut Compress, id: u32, kind: &str) -> Vec<u8> {
    let mut raw = 1u32.to_be_bytes().to_vec();
    for s in ["streamtype", kind] {
        raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
        raw.extend_from_slice(s.as_bytes());
    }
    let mut block = Vec::with_capacity(256);
    z.compress_vec(&raw, &mut block, FlushCompress::Sync)
        .expect("deflate");
    let mut f = vec![0x80, 3, 0, 1];
    f.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&block);
    f
}

async fn via_spdy(server: &Server, total: usize) -> anyhow::Result<f64> {
    let url = server.url(Request::Exec(ExecRequest {
        container_id: "bench".into(),
        cmd: vec![total.to_string()],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: false,
    }))?;
    let path = url.split_once("//").context("url")?.1;
    let (host, path) = path.split_at(path.find('/').context("path")?);
    let mut tcp = TcpStream::connect(host).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut resp = Vec::new();
    let mut b = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await? == 0 {
            bail!("connection closed during upgrade");
        }
        resp.push(b[0]);
    }
    let start = Instant::now();
    let mut z = Compress::new(Compression::default(), true);
    z.set_dictionary(&DICTIONARY)?;
    tcp.write_all(&syn_stream(&mut z, 1, "error")).await?;
    tcp.write_all(&syn_stream(&mut z, 3, "stdout")).await?;
    let mut got = 0usize;
    let mut head = [0u8; 8];
    let mut body = vec![0u8; 1 << 20];
    loop {
        if tcp.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > body.len() {
            body.resize(len, 0);
        }
        tcp.read_exact(&mut body[..len]).await?;
        let is_stdout = head[0] & 0x80 == 0 && u32::from_be_bytes(head[..4].try_into()?) == 3;
        if is_stdout {
            got += len;
        }
    }
    if got != total {
        bail!("received {got} of {total} bytes");
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn floor(total: usize) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sender = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let block = vec![7u8; CHUNK];
        let mut left = total;
        while left > 0 {
            let n = left.min(CHUNK);
            s.write_all(&block[..n]).await?;
            left -= n;
        }
        anyhow::Ok(())
    });
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    sender.await??;
    if got != total {
        bail!("floor received {got} of {total}");
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let server = Server::start(Config::default(), Arc::new(Emit)).await?;
    let floor = floor(total).await? / 1048576.0;
    let spdy = via_spdy(&server, total).await? / 1048576.0;
    println!("stream_throughput bytes={total} floor_mib_s={floor:.0} spdy_exec_mib_s={spdy:.0} ratio={:.2}", spdy / floor);
    Ok(())
}
