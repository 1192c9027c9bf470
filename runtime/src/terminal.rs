//! The container's terminal: a pty allocated inside the container, its master handed to whoever asked
//! (the caller's `--console-socket`, or `skiff run` itself, which then relays it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::spec::ConsoleSize;

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: String,
}

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

/// Opens a pty from `/dev/ptmx` as seen by the calling process (inside the container after pivot_root).
pub fn open_pty(size: Option<ConsoleSize>) -> io::Result<Pty> {
    let m = check(
        // SAFETY: plain open of a constant path.
        unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        },
        "open /dev/ptmx",
    )?;
    // SAFETY: m is a fresh descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    check(
        // SAFETY: TIOCSPTLCK reads an int from the pointer.
        unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) },
        "unlock pty",
    )?;
    // TIOCGPTPEER opens the peer through the master itself, so no path lookup can be redirected.
    let s = check(
        // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
        unsafe {
            libc::ioctl(
                m,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        },
        "open pty peer",
    )?;
    // SAFETY: s is a fresh descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    let mut n: libc::c_uint = 0;
    check(
        // SAFETY: TIOCGPTN writes an unsigned int.
        unsafe { libc::ioctl(m, libc::TIOCGPTN, &mut n) },
        "pty number",
    )?;
    if let Some(sz) = size {
        set_size(s, sz.height, sz.width)?;
    }
    Ok(Pty {
        master,
        slave,
        name: format!("/dev/pts/{n}"),
    })
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    check(
        // SAFETY: TIOCSWINSZ reads a winsize.
        unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) },
        "set window size",
    )?;
    Ok(())
}

pub fn get_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: an all-zero winsize is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Makes the pty the calling process's controlling terminal and its stdio.
pub fn become_session_leader(slave: &OwnedFd) -> io::Result<()> {
    // SAFETY: setsid has no arguments; it fails harmlessly if we already lead a session.
    unsafe { libc::setsid() };
    let s = slave.as_raw_fd();
    check(
        // SAFETY: TIOCSCTTY takes an int by value.
        unsafe { libc::ioctl(s, libc::TIOCSCTTY, 0) },
        "set controlling terminal",
    )?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; s stays valid.
        check(unsafe { libc::dup2(s, target) }, "dup2 pty")?;
    }
    Ok(())
}

/// Sends the pty master over a console socket, with the pty's name as the message, as runc does.
pub fn send_master(console: RawFd, pty: &Pty) -> io::Result<()> {
    crate::sync::send_with_fd(console, pty.name.as_bytes(), Some(pty.master.as_raw_fd()))
}

/// Puts a terminal in raw mode, returning the settings to restore.
pub fn make_raw(fd: RawFd) -> Option<libc::termios> {
    // SAFETY: an all-zero termios is a valid buffer for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into t; fd may not be a tty, which it reports.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return None;
    }
    let saved = t;
    // SAFETY: cfmakeraw edits the struct in place.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: t is a valid termios.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    Some(saved)
}

pub fn restore(fd: RawFd, saved: &libc::termios) {
    // SAFETY: saved came from tcgetattr.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, saved) };
}

/// Connects our own terminal to the container's: its size, raw mode for the duration, and the relay.
pub fn attach_stdio(master: &OwnedFd) {
    if let Some((rows, cols)) = get_size(0) {
        let _ = set_size(master.as_raw_fd(), rows, cols);
    }
    let saved = make_raw(0);
    relay(master);
    if let Some(s) = saved {
        restore(0, &s);
    }
}

/// Copies our stdin to the pty master and the master to our stdout until the container side closes.
pub fn relay(master: &OwnedFd) {
    let m = master.as_raw_fd();
    let mut fds = [
        libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: m,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut buf = [0u8; 32 * 1024];
    loop {
        // SAFETY: fds is a valid array of two pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            write_all(1, &buf[..n as usize]);
        }
        if fds[0].revents != 0 {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // Our stdin ended: stop watching it, keep draining the container's output.
                fds[0].fd = -1;
            } else {
                write_all(m, &buf[..n as usize]);
            }
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}
