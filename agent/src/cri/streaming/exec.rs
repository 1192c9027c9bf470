//! Streaming exec: the command runs through `skiff-monitor exec` (the runtime forks, which skiffd's
//! threads must not), with its stdio on pipes to the client's streams or, with a TTY, on a pty
//! whose master the runtime sends to a console socket skiffd listens on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cri::Daemon;
use crate::execsync::{self, Outcome as Helper};
use crate::stream::channel::{Outcome, Resize};
use crate::stream::server::Io;
use crate::stream::token::ExecRequest;

/// How long output may keep flowing after the command ended (a child it left behind may hold the
/// pipe or the terminal open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Names concurrent TTY execs' console sockets.
static CONSOLE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `req` with `io`; the outcome carries the command's exit code.
pub async fn run(d: &Arc<Daemon>, req: ExecRequest, io: Io) -> Outcome {
    if let Err(e) = super::check_running(d, &req.container_id) {
        return Outcome::Failed(e.message().to_string());
    }
    let job = Job::new(d, &req);
    if let Some(dir) = job.result.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Outcome::Failed(format!("create {}: {e}", dir.display()));
        }
    }
    let outcome = if io.tty {
        job.run_tty(io).await
    } else {
        job.run_pipes(io).await
    };
    let _ = std::fs::remove_file(&job.result);
    outcome.unwrap_or_else(Outcome::Failed)
}

struct Job {
    monitor: PathBuf,
    root: PathBuf,
    /// Where the helper writes the exit code.
    result: PathBuf,
    /// Where a TTY exec's pty master is sent: short, as socket paths must be.
    console: PathBuf,
    id: String,
    cmd: Vec<String>,
}

impl Job {
    fn new(d: &Daemon, req: &ExecRequest) -> Job {
        Job {
            monitor: d.config.monitor_path(),
            root: d.config.runtime_root(),
            result: execsync::result_path(&d.config.run_dir, &req.container_id),
            console: d.config.run_dir.join("tty").join(format!(
                "{}.sock",
                CONSOLE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            id: req.container_id.clone(),
            cmd: req.cmd.clone(),
        }
    }

    fn command(&self, console: Option<&Path>) -> Command {
        let mut c = Command::new(&self.monitor);
        c.arg("exec").arg("--root").arg(&self.root);
        c.args(["--id", &self.id, "--timeout", "0", "--result"]);
        c.arg(&self.result);
        if let Some(sock) = console {
            c.arg("--console-socket").arg(sock);
        }
        c.arg("--").args(&self.cmd);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn spawn(&self, mut c: Command) -> Result<Child, String> {
        c.spawn()
            .map_err(|e| format!("start {}: {e}", self.monitor.display()))
    }

    /// The exit code the helper recorded once it has ended.
    async fn finish(&self, mut child: Child) -> Result<Outcome, String> {
        let status = child
            .wait()
            .await
            .map_err(|e| format!("wait for the exec helper: {e}"))?;
        match execsync::read_outcome(&self.result) {
            Some(Helper::Exited(code)) => Ok(Outcome::from_code(code)),
            Some(Helper::Failed(e)) => Err(format!("exec in {}: {e}", self.id)),
            Some(Helper::TimedOut) => Err(format!("exec in {}: timed out", self.id)),
            None => Err(format!("the exec helper ended ({status}) without a result")),
        }
    }

    /// Without a TTY: the process inherits the helper's pipes.
    async fn run_pipes(&self, io: Io) -> Result<Outcome, String> {
        let mut c = self.command(None);
        if io.stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        if io.stdout.is_some() {
            c.stdout(Stdio::piped());
        }
        if io.stderr.is_some() {
            c.stderr(Stdio::piped());
        }
        let mut child = self.spawn(c)?;
        let stdin = pump(io.stdin, child.stdin.take());
        let outputs = [
            pump(child.stdout.take(), io.stdout),
            pump(child.stderr.take(), io.stderr),
        ];
        let outcome = self.finish(child).await;
        drain(outputs).await;
        stdin.abort();
        outcome
    }

    /// With a TTY: the pty master arrives on a console socket; resizes go to it.
    async fn run_tty(&self, io: Io) -> Result<Outcome, String> {
        let sock = &self.console;
        if let Some(dir) = sock.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let _ = std::fs::remove_file(sock);
        let listener =
            UnixListener::bind(sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
        let child = self.spawn(self.command(Some(sock)));
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(sock);
                return Err(e);
            }
        };
        let master = receive_master(&listener, child).await;
        let _ = std::fs::remove_file(sock);
        let (master, child) = match master {
            Ok(m) => m,
            Err(child) => return self.finish(child).await,
        };
        let resize = io
            .resize
            .map(|r| tokio::spawn(apply_resizes(r, master.clone())));
        let reader = master_file(&master)?;
        let writer = master_file(&master)?;
        let stdin = pump(io.stdin, Some(writer));
        let output = pump(Some(reader), io.stdout);
        let outcome = self.finish(child).await;
        drain([output]).await;
        stdin.abort();
        if let Some(r) = resize {
            r.abort();
        }
        outcome
    }
}

/// Waits for the runtime to send the pty master; gives the child back if it ends first.
async fn receive_master(
    listener: &UnixListener,
    mut child: Child,
) -> Result<(Arc<OwnedFd>, Child), Child> {
    let conn = tokio::select! {
        c = listener.accept() => c,
        _ = child.wait() => return Err(child),
    };
    let Ok((conn, _)) = conn else {
        return Err(child);
    };
    let conn = conn.into_std().and_then(|c| {
        c.set_nonblocking(false)?;
        Ok(c)
    });
    let Ok(conn) = conn else {
        return Err(child);
    };
    let got = tokio::task::spawn_blocking(move || {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
        skiff_runtime::sync::recv_with_fd(conn.as_raw_fd())
    })
    .await;
    match got {
        Ok(Ok((_, Some(fd)))) => Ok((Arc::new(fd), child)),
        _ => Err(child),
    }
}

/// A handle on the pty master for tokio (whose file I/O runs on its blocking threads, which suits
/// a pty: reads block until the terminal has output, then fail with EIO once it is hung up).
fn master_file(master: &OwnedFd) -> Result<tokio::fs::File, String> {
    let fd = master
        .try_clone()
        .map_err(|e| format!("duplicate the pty master: {e}"))?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(fd)))
}

async fn apply_resizes(mut sizes: mpsc::Receiver<Resize>, master: Arc<OwnedFd>) {
    while let Some(s) = sizes.recv().await {
        let ws = libc::winsize {
            ws_row: s.height,
            ws_col: s.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is owned by `master`.
        let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "resize the exec terminal");
        }
    }
}

/// How much one copy step of an exec stream moves at most.
const COPY_CHUNK: usize = 64 << 10;

/// Copies `from` into `to` until EOF (or an error, which ends a pty's output), then closes `to`.
fn pump<R, W>(from: Option<R>, to: Option<W>) -> JoinHandle<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let (Some(from), Some(mut to)) = (from, to) else {
            return;
        };
        // tokio's plain copy moves 8 KiB at a time; a pipe holds 64 KiB, and every chunk costs a
        // wake-up and a frame downstream.
        let mut from = tokio::io::BufReader::with_capacity(COPY_CHUNK, from);
        if let Err(e) = tokio::io::copy_buf(&mut from, &mut to).await {
            tracing::trace!(error = %e, "exec stream ended");
        }
        let _ = to.shutdown().await;
    })
}

/// Waits for the output copies, giving up [`DRAIN_GRACE`] after the command ended.
async fn drain<const N: usize>(outputs: [JoinHandle<()>; N]) {
    let aborts: Vec<_> = outputs.iter().map(|h| h.abort_handle()).collect();
    let all = futures_util::future::join_all(outputs);
    if tokio::time::timeout(DRAIN_GRACE, all).await.is_err() {
        aborts.iter().for_each(|a| a.abort());
    }
}
