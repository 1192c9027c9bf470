//! The receiving end of `--console-socket`: the runtime sends the pty master over a unix
//! socket with SCM_RIGHTS; the test reads the container's output from it and types into it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> ConsoleSocket {
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("bind console socket {}: {e}", path.display()));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        ConsoleSocket {
            path: path.to_path_buf(),
            listener,
        }
    }

    /// Accepts one connection and receives the pty master fd from it.
    pub fn recv_master(&self, timeout: Duration) -> Result<Pty, String> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= end {
                        return Err("no connection on the console socket".into());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept on console socket: {e}")),
            }
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let fd = recv_fd(stream.as_raw_fd())?;
        // SAFETY: recv_fd returned a fresh descriptor that nothing else owns.
        Ok(Pty(unsafe { File::from_raw_fd(fd) }))
    }
}

fn recv_fd(sock: RawFd) -> Result<RawFd, String> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 64];
    // SAFETY: msghdr is plain old data; all-zero is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points at live buffers (iov, cbuf) of the sizes it declares.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(format!("recvmsg: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: msg was filled by recvmsg; CMSG_* walk only within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and inside the control buffer.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: an SCM_RIGHTS payload holds at least one int fd.
            let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd) };
            return Ok(fd);
        }
        // SAFETY: advancing within the same control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Err(format!(
        "no SCM_RIGHTS fd in the {n}-byte console socket message"
    ))
}

/// The pty master of a container's terminal.
pub struct Pty(pub File);

impl Pty {
    /// Reads until the accumulated output contains `needle`; returns everything read.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let end = Instant::now() + timeout;
        let mut acc = Vec::new();
        let fd = self.0.as_raw_fd();
        loop {
            let text = String::from_utf8_lossy(&acc).into_owned();
            if text.contains(needle) {
                return Ok(text);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out waiting for {needle:?}; got {text:?}"));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is a valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            if rc <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.0.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // EIO once the container side closed: nothing more will come.
                    return Err(format!("pty closed before {needle:?}; got {text:?}"));
                }
                Ok(n) => acc.extend_from_slice(&buf[..n]),
            }
        }
    }

    pub fn write_str(&mut self, s: &str) {
        self.0.write_all(s.as_bytes()).expect("write to pty master");
    }
}

/// Sets the terminal size of the pty `fd`.
pub fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: fd is an open pty; ws outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

/// A new pty pair, `rows`×`cols`: (master, slave).
pub fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: both out-pointers are valid; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    let pair = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    set_size(&pair.0, rows, cols);
    pair
}
