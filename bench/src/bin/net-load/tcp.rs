//! The tool on both paths: a TCP bulk sender and receiver, and a request/response ping-pong, each end
//! on a thread that has entered a network namespace (a pod's, or one of the floor's).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context, Result};
use skiff_bench::sandbox::spawn_in;

/// Bytes per write and per read of the bulk transfer.
const CHUNK: usize = 128 * 1024;
/// Bytes of each request and each response in the ping-pong.
const MESSAGE: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(60);

fn joined<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow!("a benchmark thread panicked"))?
}

/// One end of a path: the namespace a socket is made in, and the address the other end dials.
#[derive(Clone, Debug)]
pub struct End {
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
}

/// A listener in `server`'s namespace that serves one connection with `serve`; its address.
fn serve<T: Send + 'static>(
    server: &End,
    serve: impl FnOnce(TcpStream) -> Result<T> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<Result<T>>)> {
    let ip = server.ip;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(&server.netns, move || {
        let l = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
        let _ = tx.send(l.local_addr()?);
        let (conn, _) = l.accept()?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        serve(conn)
    })?;
    let addr = rx
        .recv_timeout(TIMEOUT)
        .map_err(|_| anyhow!("the server in {} did not listen", server.netns.display()))?;
    Ok((addr, h))
}

fn dial(addr: SocketAddr) -> Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

/// TCP congestion control names fit in 16 bytes (`TCP_CA_NAME_MAX`).
const CA_NAME_MAX: usize = 16;

/// Makes `s` send with congestion control `name` (a sender's choice alone).
fn set_congestion(s: &TcpStream, name: &str) -> Result<()> {
    // SAFETY: setsockopt reads `name.len()` bytes from a live &str, on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "TCP congestion control {name:?}: {e} (see net.ipv4.tcp_available_congestion_control)"
        );
    }
    Ok(())
}

/// The congestion control `s` sends with.
fn congestion(s: &TcpStream) -> String {
    let mut buf = [0u8; CA_NAME_MAX];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`, which lives on this stack.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return String::new();
    }
    let name = &buf[..(len as usize).min(buf.len())];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

/// What one bulk transfer measured.
pub struct Transfer {
    /// The sender's congestion control.
    pub congestion: String,
    pub mib_s: f64,
    /// CPU time of the sending and the receiving thread together, per MiB moved.
    pub cpu_us_per_mib: f64,
}

/// The CPU time this thread has used. The kernel here does no separate IRQ time accounting, so the
/// softirqs it runs when this thread enables them again (a veth's receive side, whole hops of a
/// path) count too: the CPU a path costs, which other load on the machine moves far less than
/// wall time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Sends `bytes` from `client` to `server`, with congestion control `cc` (else the namespace's
/// default): MiB/s from the first byte written until the receiver has confirmed it read the last,
/// and the CPU both ends' threads used for it.
pub fn throughput(client: &End, server: &End, bytes: u64, cc: Option<&str>) -> Result<Transfer> {
    let cc = cc.map(str::to_owned);
    let (addr, srv) = serve(server, |mut conn| {
        let mut buf = vec![0u8; CHUNK];
        let start = thread_cpu();
        loop {
            if conn.read(&mut buf)? == 0 {
                break;
            }
        }
        let cpu = thread_cpu().saturating_sub(start);
        conn.write_all(b"k")?;
        Ok(cpu)
    })?;
    let cli = spawn_in(&client.netns, move || {
        let mut s = dial(addr)?;
        if let Some(cc) = &cc {
            set_congestion(&s, cc)?;
        }
        let used = congestion(&s);
        let buf = vec![0x5au8; CHUNK];
        let start = Instant::now();
        let cpu = thread_cpu();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            s.write_all(&buf[..n])?;
            left -= n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack)
            .context("the receiver's confirmation")?;
        Ok((start.elapsed(), thread_cpu().saturating_sub(cpu), used))
    })?;
    let (took, sender_cpu, congestion) = joined(cli)?;
    let receiver_cpu = joined(srv)?;
    let mib = bytes as f64 / (1024.0 * 1024.0);
    Ok(Transfer {
        congestion,
        mib_s: mib / took.as_secs_f64(),
        cpu_us_per_mib: (sender_cpu + receiver_cpu).as_secs_f64() * 1e6 / mib,
    })
}

/// `count` round trips of a 64-byte request and a 64-byte response on one connection (Nagle off);
/// each round trip's time in µs.
pub fn round_trips(client: &End, server: &End, count: usize) -> Result<Vec<f64>> {
    let (addr, srv) = serve(server, |mut conn| {
        conn.set_nodelay(true)?;
        let mut buf = [0u8; MESSAGE];
        loop {
            match conn.read_exact(&mut buf) {
                Ok(()) => conn.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    })?;
    let cli = spawn_in(&client.netns, move || {
        let mut s = dial(addr)?;
        s.set_nodelay(true)?;
        let mut buf = [0x5au8; MESSAGE];
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            s.write_all(&buf)?;
            s.read_exact(&mut buf)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(times)
    })?;
    let times = joined(cli)?;
    joined(srv)?;
    Ok(times)
}
