//! Timed child processes and waiting for container processes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{last_os_error, Result};
use crate::fail;

/// One timed process: wall time from spawn to reaped, and its peak RSS.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub elapsed: Duration,
    /// `ru_maxrss` from wait4(): the largest resident set, in KiB, of the process
    /// and of every descendant it waited for itself.
    pub maxrss_kib: i64,
}

/// Captures a child's stderr in a file, so a failure can be explained and a
/// detached container holding the descriptor never blocks a reader.
pub struct StderrLog {
    file: File,
}

impl StderrLog {
    pub fn create(path: &Path) -> Result<StderrLog> {
        let file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| fail!("creating stderr log {}: {e}", path.display()))?;
        Ok(StderrLog { file })
    }

    fn stdio(&self) -> Result<Stdio> {
        self.file
            .set_len(0)
            .map_err(|e| fail!("truncating stderr log: {e}"))?;
        let dup = self
            .file
            .try_clone()
            .map_err(|e| fail!("dup stderr log: {e}"))?;
        Ok(Stdio::from(dup))
    }

    /// The last lines written, for an error message.
    pub fn tail(&self) -> String {
        let mut text = String::new();
        let mut file = &self.file;
        if file.seek(SeekFrom::Start(0)).is_err() || file.read_to_string(&mut text).is_err() {
            return String::from("(stderr unreadable)");
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(5);
        lines[start..].join(" | ")
    }
}

/// Spawns `cmd`, waits for it with wait4(), and fails unless it exited 0.
pub fn run_timed(cmd: &mut Command, log: &StderrLog) -> Result<Timed> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.stdio()?);
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| fail!("spawning {cmd:?}: {e}"))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| fail!("pid out of range"))?;
    let (status, usage) = wait4(pid)?;
    let elapsed = start.elapsed();
    if let Some(problem) = exit_problem(status) {
        return Err(fail!("{cmd:?} {problem}: {}", log.tail()));
    }
    Ok(Timed {
        elapsed,
        maxrss_kib: usage.ru_maxrss,
    })
}

/// Runs `cmd` untimed and returns its stdout.
pub fn output(cmd: &mut Command, log: &StderrLog) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(log.stdio()?)
        .output()
        .map_err(|e| fail!("spawning {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(fail!("{cmd:?} failed ({}): {}", out.status, log.tail()));
    }
    String::from_utf8(out.stdout).map_err(|_| fail!("{cmd:?} printed non-UTF-8 output"))
}

fn wait4(pid: libc::pid_t) -> Result<(libc::c_int, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live locals of the right types.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok((status, usage));
        }
        let err = last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(fail!("wait4({pid}): {err}"));
        }
    }
}

fn exit_problem(status: libc::c_int) -> Option<String> {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => None,
            code => Some(format!("exited with status {code}")),
        }
    } else if libc::WIFSIGNALED(status) {
        Some(format!("was killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Some(format!("ended with wait status {status:#x}"))
    }
}

/// Makes orphaned descendants (detached container processes) children of the
/// benchmark, so it can wait for them and reap them.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(fail!("prctl(PR_SET_CHILD_SUBREAPER): {}", last_os_error()));
    }
    Ok(())
}

/// Waits until process `pid` has exited, reaping it if it is our child.
pub fn wait_gone(pid: libc::pid_t, timeout: Duration) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(fail!("pidfd_open({pid}): {err}"));
    }
    let fd = fd as libc::c_int;
    let ready = poll_readable(fd, timeout);
    // SAFETY: `fd` was returned by pidfd_open above and is closed once.
    unsafe { libc::close(fd) };
    if !ready? {
        // SAFETY: kill takes plain integers; the process is ours to stop.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap(pid);
        return Err(fail!(
            "container process {pid} still running after {timeout:?}"
        ));
    }
    reap(pid);
    Ok(())
}

fn poll_readable(fd: libc::c_int, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `pfd` is one live pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(fail!("poll on pidfd: {err}"));
        }
    }
}

/// Reaps `pid` if it is a child of ours (it is when reparented to the subreaper).
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `status` is a live local; ECHILD (not our child) is fine to ignore.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Reaps any exited orphans handed to the subreaper, without blocking.
pub fn reap_strays() {
    let mut status = 0;
    // SAFETY: `status` is a live local; WNOHANG never blocks.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}
