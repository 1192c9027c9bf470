//! `skiff-monitor container`: creates one container with its stdio on pipes (or a pty), relays its
//! output into the CRI log file, reaps it and records how it ended.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skiff_runtime::cgroups::{self, CgroupState};
use skiff_runtime::container::{CreateOptions, Runtime};

use super::attach;
use super::log::{CriLog, LineBuf};
use super::protocol::{ContainerArgs, ExitRecord, Report};
use super::sys;

/// How long output is still relayed after the init died, for processes that hold the pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
const CONSOLE_SOCKET: &str = "console.sock";

pub fn run(a: &ContainerArgs) -> i32 {
    if let Some(fd) = a.status_fd {
        sys::set_cloexec(fd);
    }
    if !a.foreground {
        if let Err(e) = sys::daemonize() {
            report(a, &failure(format!("detach: {e}")));
            return 1;
        }
    }
    // Holding skiffd's working directory could keep a file system busy for as long as we live.
    let _ = std::env::set_current_dir("/");
    // Inits forked by a first stage are reparented to us, so we can reap them.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (streams, init_pid, cgroup) = match create(a) {
        Ok(x) => x,
        Err(e) => {
            report(a, &failure(e));
            return 1;
        }
    };
    // Open before the create is reported, so that the log exists for whoever reads it as soon as
    // the container has started.
    let log = CriLog::open(a.log.as_deref()).unwrap_or_else(|e| {
        eprintln!("skiff-monitor: open log: {e}");
        CriLog::discard()
    });
    // Bound before the create is reported too: an attach right after StartContainer must find it.
    let attach = attach::Attach::bind(&a.bundle)
        .map_err(|e| eprintln!("skiff-monitor: attach socket: {e}"))
        .ok();
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() };
    report(
        a,
        &Report {
            pid: Some(init_pid),
            monitor_pid: Some(me),
            error: None,
        },
    );
    close_status(a);
    let status = relay(a, streams, log, attach, init_pid);
    let (exit_code, signal) = match status {
        Some(s) => sys::decode_status(s),
        None => (255, 0),
    };
    let oom_killed = cgroups::from_state(&cgroup).oom_kills() > 0;
    let record = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at: crate::now_ns(),
        lost: false,
    };
    let data = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(e) = skiff_runtime::state::write_atomic(&a.exit_file, &data, 0o644) {
        eprintln!("skiff-monitor: {e}");
        return 1;
    }
    0
}

fn failure(e: impl std::fmt::Display) -> Report {
    Report {
        error: Some(e.to_string()),
        ..Default::default()
    }
}

fn report(a: &ContainerArgs, r: &Report) {
    if let Some(msg) = &r.error {
        eprintln!("skiff-monitor: container {}: {msg}", a.id);
    }
    let Some(fd) = a.status_fd else {
        return;
    };
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    // SAFETY: the descriptor was inherited for this purpose and is ours alone; ManuallyDrop keeps it
    // open for close_status.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let _ = f.write_all(&line);
}

fn close_status(a: &ContainerArgs) {
    if let Some(fd) = a.status_fd {
        // SAFETY: closing the inherited status descriptor, used by nothing else.
        unsafe { libc::close(fd) };
    }
}

/// The monitor's ends of the container's output.
enum Streams {
    Pipes {
        out: OwnedFd,
        err: OwnedFd,
        /// Held open so the container's stdin stays open for attach.
        _stdin: Option<OwnedFd>,
    },
    Tty(OwnedFd),
}

/// Creates the container with its stdio on fresh pipes: the pipes are put on our own descriptors 0-2
/// for the duration of the create, which the init inherits, then ours are put back.
fn create(a: &ContainerArgs) -> Result<(Streams, i32, CgroupState), String> {
    let bundle = std::fs::canonicalize(&a.bundle)
        .map_err(|e| format!("bundle {}: {e}", a.bundle.display()))?;
    let null = sys::dev_null().map_err(|e| format!("/dev/null: {e}"))?;
    let (child, streams, console) = if a.tty {
        // The socket is named relative to the bundle: absolute paths there can exceed sun_path.
        std::env::set_current_dir(&bundle)
            .map_err(|e| format!("chdir {}: {e}", bundle.display()))?;
        let _ = std::fs::remove_file(CONSOLE_SOCKET);
        let l = UnixListener::bind(CONSOLE_SOCKET).map_err(|e| format!("console socket: {e}"))?;
        let n = || null.try_clone().map_err(|e| e.to_string());
        ([n()?, n()?, n()?], None, Some(l))
    } else {
        let (out_r, out_w) = sys::pipe().map_err(|e| e.to_string())?;
        let (err_r, err_w) = sys::pipe().map_err(|e| e.to_string())?;
        let (stdin_child, stdin_keep) = if a.stdin {
            let (r, w) = sys::pipe().map_err(|e| e.to_string())?;
            (r, Some(w))
        } else {
            (null.try_clone().map_err(|e| e.to_string())?, None)
        };
        let s = Streams::Pipes {
            out: out_r,
            err: err_r,
            _stdin: stdin_keep,
        };
        ([stdin_child, out_w, err_w], Some(s), None)
    };
    let opts = CreateOptions {
        id: a.id.clone(),
        bundle: bundle.clone(),
        console_socket: console.as_ref().map(|_| PathBuf::from(CONSOLE_SOCKET)),
        ..Default::default()
    };
    let rt = Runtime::new(&a.root).with_systemd_cgroup(a.systemd_cgroup);
    with_stdio(&child, || rt.create(&opts))?.map_err(|e| e.to_string())?;
    drop(child);
    let streams = match (streams, console) {
        (Some(s), _) => s,
        (None, Some(l)) => {
            let master = receive_master(&l);
            let _ = std::fs::remove_file(CONSOLE_SOCKET);
            let _ = std::env::set_current_dir("/");
            match master {
                Ok(m) => Streams::Tty(m),
                Err(e) => {
                    let _ = rt.delete(&a.id, true);
                    return Err(e);
                }
            }
        }
        (None, None) => return Err("no stdio".into()),
    };
    let init = rt.observe(&a.id).map_err(|e| e.to_string())?;
    Ok((streams, init.pid, init.cgroup))
}

/// Runs `f` with `child` as descriptors 0, 1 and 2 and SIGPIPE at its default, as the container's
/// processes should inherit them.
fn with_stdio<T>(child: &[OwnedFd; 3], f: impl FnOnce() -> T) -> Result<T, String> {
    let saved = [0, 1, 2].map(sys::dup_cloexec);
    let saved: Vec<OwnedFd> = saved
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for (i, fd) in child.iter().enumerate() {
        sys::dup2(fd.as_raw_fd(), i as RawFd).map_err(|e| e.to_string())?;
    }
    sys::set_signal(libc::SIGPIPE, libc::SIG_DFL);
    let out = f();
    sys::set_signal(libc::SIGPIPE, libc::SIG_IGN);
    for (i, fd) in saved.iter().enumerate() {
        let _ = sys::dup2(fd.as_raw_fd(), i as RawFd);
    }
    Ok(out)
}

/// The pty master the container's init sent over the console socket during create.
fn receive_master(l: &UnixListener) -> Result<OwnedFd, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (conn, _) = l
        .accept()
        .map_err(|e| format!("the container sent no terminal: {e}"))?;
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    let (_, fd) = skiff_runtime::sync::recv_with_fd(conn.as_raw_fd())
        .map_err(|e| format!("receive the terminal: {e}"))?;
    fd.ok_or_else(|| "the container sent no terminal descriptor".to_string())
}

/// Relays output until the init has exited and its output is drained; returns its wait status.
fn relay(
    a: &ContainerArgs,
    streams: Streams,
    mut log: CriLog,
    mut attach: Option<attach::Attach>,
    init_pid: i32,
) -> Option<i32> {
    let signals = [
        libc::SIGCHLD,
        libc::SIGUSR1,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
    ];
    let sfd = match sys::signalfd(&signals) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("skiff-monitor: {e}");
            return wait_blocking(init_pid);
        }
    };
    let (mut outputs, stdin, tty): (Vec<(OwnedFd, &'static str, LineBuf)>, _, _) = match streams {
        Streams::Pipes { out, err, _stdin } => (
            vec![
                (out, "stdout", LineBuf::default()),
                (err, "stderr", LineBuf::default()),
            ],
            _stdin,
            None,
        ),
        Streams::Tty(m) => {
            // Kept apart from the output, which is dropped once the terminal hangs up.
            let keep = sys::dup_cloexec(m.as_raw_fd()).ok();
            (vec![(m, "stdout", LineBuf::default())], None, keep)
        }
    };
    for (fd, _, _) in &outputs {
        sys::set_nonblock(fd.as_raw_fd());
    }
    if let Some(fd) = &stdin {
        sys::set_nonblock(fd.as_raw_fd());
    }
    let targets = attach::Targets {
        stdin: match (&stdin, &tty) {
            (Some(p), _) => Some(p.as_raw_fd()),
            (None, Some(t)) if a.stdin => Some(t.as_raw_fd()),
            _ => None,
        },
        tty: tty.as_ref().map(|t| t.as_raw_fd()),
    };
    let mut status = None;
    let mut exited_at: Option<Instant> = None;
    let mut reopens = 0u64;
    let mut buf = vec![0u8; 32 * 1024];
    // The init may have died before the signalfd existed.
    reap_all(init_pid, &mut status, &mut exited_at);
    super::memory::shed();
    loop {
        if let Some(t) = exited_at {
            if outputs.is_empty() || t.elapsed() >= DRAIN_GRACE {
                break;
            }
        }
        let mut fds = vec![sfd.as_raw_fd()];
        fds.extend(outputs.iter().map(|(fd, _, _)| fd.as_raw_fd()));
        let attach_at = fds.len();
        if let Some(at) = &attach {
            fds.extend(at.fds());
        }
        let timeout = match exited_at {
            Some(t) => DRAIN_GRACE.saturating_sub(t.elapsed()).as_millis() as i32 + 1,
            None => -1,
        };
        let revents = sys::poll(&fds, timeout);
        if revents[0] != 0 {
            for sig in sys::read_signals(&sfd) {
                match sig as i32 {
                    libc::SIGCHLD => reap_all(init_pid, &mut status, &mut exited_at),
                    libc::SIGUSR1 => {
                        reopens += 1;
                        reopen(a, &mut log, reopens);
                    }
                    _ => {}
                }
            }
        }
        // Before any broadcast, which may drop clients and shift their positions.
        if let Some(at) = attach.as_mut() {
            at.handle(&revents[attach_at..], &targets);
        }
        let mut closed = Vec::new();
        for (i, (fd, stream, lines)) in outputs.iter_mut().enumerate() {
            if revents[i + 1] == 0 {
                continue;
            }
            match sys::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    lines.feed(&buf[..n], &mut |m, p| log.record(stream, m, p));
                    if let Some(at) = attach.as_mut() {
                        let kind = match *stream {
                            "stderr" => attach::STDERR,
                            _ => attach::STDOUT,
                        };
                        at.broadcast(kind, &buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            let (_, stream, mut lines) = outputs.remove(i);
            lines.finish(&mut |m, p| log.record(stream, m, p));
        }
    }
    for (_, stream, lines) in outputs.iter_mut() {
        lines.finish(&mut |m, p| log.record(stream, m, p));
    }
    // Attached clients see the end of the stream; nobody can attach any more.
    drop(attach);
    let _ = std::fs::remove_file(a.bundle.join(attach::SOCKET));
    status
}

fn reap_all(init_pid: i32, status: &mut Option<i32>, exited_at: &mut Option<Instant>) {
    while let Some((pid, st)) = sys::reap() {
        if pid == init_pid {
            *status = Some(st);
            *exited_at = Some(Instant::now());
        }
    }
}

fn wait_blocking(pid: i32) -> Option<i32> {
    let mut st = 0;
    // SAFETY: waitpid writes the status into a local.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    (r == pid).then_some(st)
}

/// Reopens the log, then confirms it by writing how many reopens are done.
fn reopen(a: &ContainerArgs, log: &mut CriLog, n: u64) {
    if let Err(e) = log.reopen() {
        eprintln!("skiff-monitor: reopen log: {e}");
    }
    if let Some(p) = &a.reopen_file {
        if let Err(e) = skiff_runtime::state::write_atomic(p, n.to_string().as_bytes(), 0o644) {
            eprintln!("skiff-monitor: {e}");
        }
    }
}
