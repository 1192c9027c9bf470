//! The container monitor's attach socket, `attach.sock` in the bundle: skiffd connects to it to
//! stream the container's output and to feed its stdin and terminal size.
//!
//! Frames both ways are one kind byte, a big-endian u32 length and the payload. Monitor to client:
//! [`STDOUT`], [`STDERR`]. Client to monitor: [`STDIN`] data, [`RESIZE`] (u16 width, u16 height,
//! big-endian), [`CLOSE_STDIN`] (no payload: the container's stdin pipe is closed for good, so it
//! reads EOF; kubelet's `stdinOnce`). A client that falls behind the container's output is
//! disconnected rather than allowed to hold the container back.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

pub const SOCKET: &str = "attach.sock";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;
pub const CLOSE_STDIN: u8 = 5;
/// Largest frame a client may send.
pub const MAX_FRAME: usize = 1 << 20;
/// Clients attached at once at most.
const MAX_CLIENTS: usize = 16;
/// Room each client's socket has for output not read yet.
const SEND_BUFFER: libc::c_int = 4 << 20;

/// Where client input goes.
pub struct Targets {
    /// The container's stdin: the pipe's write end or the pty master. [`CLOSE_STDIN`] puts
    /// `/dev/null` on this descriptor number, so whoever owns it still closes a valid descriptor.
    pub stdin: Option<RawFd>,
    /// The pty master, for resizes.
    pub tty: Option<RawFd>,
}

pub struct Attach {
    listener: UnixListener,
    clients: Vec<Client>,
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
}

impl Attach {
    /// Binds `attach.sock` in `bundle` (by a relative name: absolute bundle paths can exceed
    /// sun_path), reachable by root only.
    pub fn bind(bundle: &Path) -> io::Result<Attach> {
        std::env::set_current_dir(bundle)?;
        let _ = std::fs::remove_file(SOCKET);
        let bound = UnixListener::bind(SOCKET);
        if bound.is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(SOCKET, std::fs::Permissions::from_mode(0o600));
        }
        let _ = std::env::set_current_dir("/");
        let listener = bound?;
        listener.set_nonblocking(true)?;
        Ok(Attach {
            listener,
            clients: Vec::new(),
        })
    }

    /// Descriptors to poll for input: the listener, then each client.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.clients.iter().map(|c| c.stream.as_raw_fd()));
        fds
    }

    /// Serves what `revents` (for [`Attach::fds`], in order) says is ready.
    pub fn handle(&mut self, revents: &[i16], to: &Targets) {
        let mut gone = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            if revents.get(i + 1).is_some_and(|r| *r != 0) && !c.read(to) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.clients.remove(i);
        }
        if revents.first().is_some_and(|r| *r != 0) {
            self.accept();
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS {
                continue;
            }
            let _ = stream.set_nonblocking(true);
            // SAFETY: setsockopt with a pointer to a local int of the size given.
            unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&SEND_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            self.clients.push(Client {
                stream,
                input: Vec::new(),
            });
        }
    }

    /// Sends output to every client; drops those whose socket is full or closed.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let frame = frame(kind, data);
        self.clients
            .retain_mut(|c| matches!(c.stream.write(&frame), Ok(n) if n == frame.len()));
    }
}

impl Client {
    /// Reads and applies what the client sent; false once it is gone or misbehaved.
    fn read(&mut self, to: &Targets) -> bool {
        let mut buf = [0u8; 64 * 1024];
        // Frames that arrived ahead of the client's end are still applied: a client's last
        // words are often "close stdin", then goodbye.
        let mut open = true;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            if self.input.len() > MAX_FRAME + 5 {
                break;
            }
        }
        while self.input.len() >= 5 {
            let len =
                u32::from_be_bytes([self.input[1], self.input[2], self.input[3], self.input[4]])
                    as usize;
            if len > MAX_FRAME {
                return false;
            }
            if self.input.len() < 5 + len {
                break;
            }
            let kind = self.input[0];
            let payload: Vec<u8> = self.input.drain(..5 + len).skip(5).collect();
            apply(kind, &payload, to);
        }
        open
    }
}

fn apply(kind: u8, payload: &[u8], to: &Targets) {
    match kind {
        STDIN => {
            if let Some(fd) = to.stdin {
                write_all(fd, payload);
            }
        }
        CLOSE_STDIN => {
            // A terminal is not closed: its master is also the container's output.
            if let (Some(fd), None) = (to.stdin, to.tty) {
                close_pipe(fd);
            }
        }
        RESIZE if payload.len() == 4 => {
            if let Some(fd) = to.tty {
                let ws = libc::winsize {
                    ws_col: u16::from_be_bytes([payload[0], payload[1]]),
                    ws_row: u16::from_be_bytes([payload[2], payload[3]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer on a pty we hold.
                unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
            }
        }
        _ => {}
    }
}

/// Writes stdin for the container, waiting briefly while it does not read: input it never reads is
/// dropped rather than allowed to stall the monitor.
fn write_all(fd: RawFd, mut data: &[u8]) {
    let mut stalls = 0;
    while !data.is_empty() && stalls < 100 {
        // SAFETY: writing from a live buffer of the given length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}

/// Closes the pipe end `fd` in place: `/dev/null` takes its descriptor number, which drops the
/// monitor's only reference to the pipe's write end, and the container reads EOF.
fn close_pipe(fd: RawFd) {
    let null = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skiff-monitor: close stdin: /dev/null: {e}");
            return;
        }
    };
    // SAFETY: dup3 onto a descriptor this process owns (the stdin pipe's write end); its owner
    // keeps a valid descriptor, now /dev/null, and closes it as before.
    if unsafe { libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) } < 0 {
        eprintln!("skiff-monitor: close stdin: {}", io::Error::last_os_error());
    }
}

/// One frame: kind, big-endian length, payload.
pub fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + data.len());
    f.push(kind);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_feed_stdin_and_receive_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attach::bind(dir.path()).unwrap();
        let mut c = UnixStream::connect(dir.path().join(SOCKET)).unwrap();
        let (r, w) = crate::monitor::sys::pipe().unwrap();
        crate::monitor::sys::set_nonblock(w.as_raw_fd());
        let to = Targets {
            stdin: Some(w.as_raw_fd()),
            tty: None,
        };
        a.handle(&[libc::POLLIN, 0], &to);
        assert_eq!(a.fds().len(), 2);
        c.write_all(&frame(STDIN, b"typed")).unwrap();
        c.write_all(&frame(RESIZE, &[0, 80, 0, 24])).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        a.handle(&[0, libc::POLLIN], &to);
        let mut got = [0u8; 5];
        let r = {
            let mut f = std::fs::File::from(r);
            f.read_exact(&mut got).unwrap();
            std::os::fd::OwnedFd::from(f)
        };
        assert_eq!(&got, b"typed");
        a.broadcast(STDOUT, b"out");
        let mut f = [0u8; 8];
        c.read_exact(&mut f).unwrap();
        assert_eq!(f, [STDOUT, 0, 0, 0, 3, b'o', b'u', b't']);
        // Closing stdin, then hanging up at once: the frame is still applied, and the reader sees
        // the write end hang up while `w` is still held.
        c.write_all(&frame(CLOSE_STDIN, &[])).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        a.handle(&[0, libc::POLLIN], &to);
        assert_eq!(a.fds().len(), 1, "the client that hung up is dropped");
        let mut p = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
        assert!(p.revents & libc::POLLHUP != 0, "revents {:#x}", p.revents);
        let mut rest = Vec::new();
        std::fs::File::from(r).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        drop(w);
        // An oversized frame disconnects the client.
        let mut c = UnixStream::connect(dir.path().join(SOCKET)).unwrap();
        a.handle(&[libc::POLLIN], &to);
        assert_eq!(a.fds().len(), 2);
        c.write_all(&[STDIN, 0xff, 0xff, 0xff, 0xff]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        a.handle(&[0, libc::POLLIN], &to);
        assert_eq!(a.fds().len(), 1);
    }
}
