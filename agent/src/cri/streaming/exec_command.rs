//! Streaming exec: the command runs through `skiff-monitor exec` (the runtime forks, which skiffd's
//! threads must not), with its stdio on pipes to the client's streams or, with a TTY, on a pty
//! whose master the runtime sends to a console socket skiffd listens on.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cri::container::result_path;
use crate::cri::Daemon;
use crate::monitor::protocol::{ExecArgs, ExecOutcome as Helper};
use crate::stream::channel::{Outcome, Resize};
use crate::stream::server::{Io, Output};
use crate::stream::sink::Pipe;
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
            result: result_path(&d.config.run_dir, &req.container_id),
            console: d.config.run_dir.join("tty").join(format!(
                "{}.sock",
                CONSOLE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            id: req.container_id.clone(),
            cmd: req.cmd.clone(),
        }
    }

    fn command(&self, console: Option<&Path>, size: Option<Resize>) -> Command {
        let args = ExecArgs {
            root: self.root.clone(),
            id: self.id.clone(),
            timeout: 0,
            result: self.result.clone(),
            console_socket: console.map(Path::to_path_buf),
            console_size: size
                .filter(|r| r.width > 0 && r.height > 0)
                .map(|r| (r.height, r.width)),
            cmd: self.cmd.clone(),
        };
        let mut c = Command::new(&self.monitor);
        c.arg("exec").args(args.to_args());
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn spawn(&self, mut c: Command) -> Result<Child, String> {
        c.spawn()
            .map_err(|e| format!("start {}: {e}", self.monitor.display()))
    }

    /// The exit code the helper recorded once it has ended. A client that goes away first has the
    /// command killed, as kubelet's runtimes do when an exec's context is cancelled.
    async fn finish(
        &self,
        mut child: Child,
        client_gone: &CancellationToken,
    ) -> Result<Outcome, String> {
        let status = tokio::select! {
            s = child.wait() => s,
            _ = client_gone.cancelled() => {
                tracing::debug!(container = %self.id, cmd = ?self.cmd, "exec client gone: killing the command");
                kill_command(&mut child).await;
                child.wait().await
            }
        };
        let status = status.map_err(|e| format!("wait for the exec helper: {e}"))?;
        match Helper::read(&self.result) {
            Some(Helper::Exited(code)) => Ok(Outcome::from_code(code)),
            Some(Helper::Failed(e)) => Err(format!("exec in {}: {e}", self.id)),
            Some(Helper::TimedOut) => Err(format!("exec in {}: timed out", self.id)),
            None => Err(format!("the exec helper ended ({status}) without a result")),
        }
    }

    /// Without a TTY: the process inherits the helper's pipes.
    async fn run_pipes(&self, io: Io) -> Result<Outcome, String> {
        let mut c = self.command(None, None);
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
        for fd in [
            child.stdout.as_ref().map(|p| p.as_raw_fd()),
            child.stderr.as_ref().map(|p| p.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            grow_pipe(fd);
        }
        let stdin = pump(io.stdin, child.stdin.take());
        let outputs = [
            pump_pipe(child.stdout.take().map(|p| p.into_owned_fd()), io.stdout),
            pump_pipe(child.stderr.take().map(|p| p.into_owned_fd()), io.stderr),
        ];
        let outcome = self.finish(child, &io.client_gone).await;
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
        // Clients send the terminal's size first thing; a command started before it arrives sees
        // a 0x0 terminal (`stty size` fails, full-screen programs draw at the wrong size).
        let mut sizes = io.resize;
        let first = match sizes.as_mut() {
            Some(rx) => tokio::time::timeout(FIRST_SIZE_WAIT, rx.recv())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let child = self.spawn(self.command(Some(sock), first));
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
            Err(child) => return self.finish(child, &io.client_gone).await,
        };
        let resize = sizes.map(|r| tokio::spawn(apply_resizes(r, master.clone())));
        let reader = master_file(&master)?;
        let writer = master_file(&master)?;
        let stdin = pump(io.stdin, Some(writer));
        let output = pump(Some(reader), io.stdout);
        let outcome = self.finish(child, &io.client_gone).await;
        drain([output]).await;
        stdin.abort();
        if let Some(r) = resize {
            r.abort();
        }
        outcome
    }
}

/// How long a TTY exec waits for the client's first terminal size before starting its command.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);

/// How long to go on killing the helper's children (the command may still be being set up)
/// before the helper itself is killed.
const KILL_PATIENCE: Duration = Duration::from_secs(10);

/// SIGKILLs the command the helper started, which then records its end and exits; the helper
/// itself if it has not exited in time.
async fn kill_command(helper: &mut Child) {
    let Some(pid) = helper.id() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + KILL_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        // Not only once: the runtime's first stage, killed between forking the command (the
        // helper's child too) and reporting its pid, leaves the helper waiting for that report
        // and the command waiting for the helper, both for ever.
        if let Err(e) = kill_children(pid) {
            tracing::debug!(helper = pid, error = %e, "kill the exec'd command");
        }
        tokio::select! {
            _ = helper.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let _ = helper.start_kill();
}

/// The pids `/proc` lists as children of `pid` (a single-threaded process: its main thread's).
fn children(pid: u32) -> std::io::Result<Vec<i32>> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    Ok(list
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// SIGKILLs every child of `helper` (our own unreaped child, so its pid is stable). Each child is
/// pinned with a pidfd, then confirmed to still be the helper's child: a pid the helper reaped in
/// between and the system reused is not the helper's child.
fn kill_children(helper: u32) -> std::io::Result<()> {
    for pid in children(helper)? {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: the descriptor was just returned to us and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !children(helper)?.contains(&pid) {
            continue;
        }
        // A child that has exited meanwhile (ESRCH) needs no signal.
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    Ok(())
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
const COPY_CHUNK: usize = 256 << 10;
/// The capacity asked for the command's output pipes (the default is 64 KiB, and
/// `/proc/sys/fs/pipe-max-size` is 1 MiB unless raised).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Lets a fast writer run ahead of the reader by [`PIPE_SIZE`]: each side then sleeps and wakes
/// far less often than with a 64 KiB pipe, and each read takes more at once. Best effort.
fn grow_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we hold; it only changes the pipe's capacity.
    if unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE) } < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "grow the exec output pipe");
    }
}

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
        // tokio's plain copy moves 8 KiB at a time; the output pipe holds up to 1 MiB, and every
        // chunk costs a wake-up and a frame downstream.
        let mut from = tokio::io::BufReader::with_capacity(COPY_CHUNK, from);
        if let Err(e) = tokio::io::copy_buf(&mut from, &mut to).await {
            tracing::trace!(error = %e, "exec stream ended");
        }
        let _ = to.shutdown().await;
    })
}

/// Hands an output pipe to its channel, which moves the bytes with as few copies as its transport
/// allows; the channel is closed at the pipe's end.
fn pump_pipe(from: Option<std::io::Result<OwnedFd>>, to: Option<Output>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (Some(from), Some(to)) = (from, to) else {
            return;
        };
        let pipe = match from.and_then(Pipe::new) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "take the exec output pipe");
                return;
            }
        };
        if let Err(e) = to.copy_pipe(pipe).await {
            tracing::trace!(error = %e, "exec stream ended");
        }
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
