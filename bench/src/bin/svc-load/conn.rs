//! The tool on both ends: a server that answers each connection with one byte and closes it, and a
//! client that opens such connections one after another on several threads for a fixed time. Each
//! end runs on threads that have entered a network namespace (a pod's, or a node's).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use skiff_bench::sandbox::spawn_in;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves on `port` of every address in `netns` until the process ends: each connection gets one
/// byte, then the server's FIN. Returns once the port is bound.
pub fn serve(netns: &Path, port: u16) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let _detached = spawn_in(netns, move || {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port));
        let l = match l {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return Ok(());
            }
        };
        for mut conn in l.incoming().flatten() {
            let _ = conn.write_all(b"k");
        }
        Ok(())
    })?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the server in {} did not start", netns.display()))?
        .with_context(|| format!("bind :{port} in {}", netns.display()))
}

/// One connection from the current thread's namespace: connect, read the server's byte and its FIN,
/// close with a reset (SO_LINGER 0), so that neither end keeps the connection in TIME_WAIT and
/// conntrack forgets it within seconds: the rate stays the same however long the run.
pub fn once(to: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut buf = [0u8; 2];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
        if got == buf.len() {
            break;
        }
    }
    if &buf[..got] != b"k" {
        bail!("{to} answered {:?}", &buf[..got]);
    }
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` (alive for the call, of the length given) on an open fd.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!("SO_LINGER: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// What one run of the client saw.
pub struct Run {
    pub connections: usize,
    pub errors: usize,
    pub seconds: f64,
    /// Each successful connection's time, connect to close, µs, sorted.
    pub times_us: Vec<f64>,
    pub first_error: Option<String>,
}

/// `threads` threads in `netns`, each opening connections to `to` one after another for `run`.
pub fn rate(netns: &Path, to: SocketAddr, threads: usize, run: Duration) -> Result<Run> {
    let start = Instant::now();
    let deadline = start + run;
    let workers = (0..threads)
        .map(|_| {
            spawn_in(netns, move || {
                let mut times = Vec::new();
                let (mut errors, mut first) = (0, None);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match once(to) {
                        Ok(()) => times.push(t.elapsed().as_secs_f64() * 1e6),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                Ok((times, errors, first))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = Run {
        connections: 0,
        errors: 0,
        seconds: 0.0,
        times_us: Vec::new(),
        first_error: None,
    };
    for w in workers {
        let (times, errors, first) = w
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
        out.times_us.extend(times);
        out.errors += errors;
        out.first_error = out.first_error.or(first);
    }
    out.seconds = start.elapsed().as_secs_f64();
    out.connections = out.times_us.len();
    out.times_us.sort_by(f64::total_cmp);
    Ok(out)
}

/// Until one connection from `netns` to `to` succeeds (kube-proxy has written the Service's rules).
pub fn wait_answer(netns: &Path, to: SocketAddr, within: Duration) -> Result<()> {
    let netns: PathBuf = netns.to_path_buf();
    let h = spawn_in(&netns, move || {
        let deadline = Instant::now() + within;
        loop {
            match once(to) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("no answer from {to} within {within:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })?;
    h.join().map_err(|_| anyhow!("a client thread panicked"))?
}
