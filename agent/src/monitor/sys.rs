//! The few system calls the monitor makes directly, each checked.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    skiff_sys::fd::pipe().map_err(|e| io::Error::new(e.kind(), format!("pipe: {e}")))
}

pub fn dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(f.into())
}

/// A close-on-exec copy of `fd` above the standard descriptors.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl duplicates a descriptor; the result is fresh and ours.
    let n = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) }, "dup")?;
    // SAFETY: n is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptors we hold; the standard ones are replaced on purpose.
    check(unsafe { libc::dup2(from, to) }, "dup2").map(|_| ())
}

pub fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor number; an invalid one just fails.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

pub fn set_nonblock(fd: RawFd) {
    // SAFETY: fcntl reads and sets the status flags of a descriptor we hold.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Leaves the caller's process group, session and parent: fork, setsid, fork. Only the grandchild
/// returns; the caller (skiffd's child) and the session leader exit at once.
pub fn daemonize() -> io::Result<()> {
    for round in 0..2 {
        // SAFETY: the monitor is single-threaded here, so the child may run any code.
        let pid = check(unsafe { libc::fork() }, "fork")?;
        if pid > 0 {
            // SAFETY: _exit skips destructors that belong to the child's copy.
            unsafe { libc::_exit(0) };
        }
        if round == 0 {
            // SAFETY: setsid has no arguments; a fresh child is never a group leader.
            check(unsafe { libc::setsid() }, "setsid")?;
        }
    }
    Ok(())
}

/// Blocks `signals` and returns a signalfd that receives them.
pub fn signalfd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sigset is a valid buffer for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    check(
        // SAFETY: set is initialized; the old mask is not needed.
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) },
        "sigprocmask",
    )?;
    let fd = check(
        // SAFETY: set is initialized; -1 asks for a new descriptor.
        unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) },
        "signalfd",
    )?;
    // SAFETY: fd is fresh.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The signals queued on a signalfd.
pub fn read_signals(fd: &OwnedFd) -> Vec<u32> {
    let mut out = Vec::new();
    loop {
        // SAFETY: an all-zero siginfo is a valid buffer.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading one siginfo into a buffer of its size.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return out;
        }
        out.push(info.ssi_signo);
    }
}

pub fn set_signal(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: installing SIG_DFL or SIG_IGN, which run no code of ours.
    unsafe { libc::signal(sig, handler) };
}

/// Reaps one exited child without blocking: `(pid, status)`.
pub fn reap() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// `(exit code, signal)` from a wait status, a signal death counting as 128 + the signal.
pub fn decode_status(status: i32) -> (i32, i32) {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, sig)
    } else {
        (libc::WEXITSTATUS(status), 0)
    }
}

/// Reads what is available; `Ok(0)` at end of stream (EIO on a pty whose other side closed).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EIO) => Ok(0),
        _ => Err(e),
    }
}

/// Waits for input on `fds` for up to `timeout_ms` (-1: forever); returns each one's revents.
pub fn poll(fds: &[RawFd], timeout_ms: i32) -> Vec<i16> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of pollfds of the given length.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return vec![0; fds.len()];
    }
    p.iter().map(|x| x.revents).collect()
}
