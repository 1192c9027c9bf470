//! The way out of a streaming connection: the socket's write half, and the command output pipes
//! whose bytes go to it.
//!
//! Output is the bulk of what the streaming server moves, so it is copied as little as the
//! transport allows. A command's output pipe is read straight into a buffer that becomes a frame's
//! payload, as much as the pipe holds per read, and the frame header and payloads of a batch go out
//! in one gathered write, with no framing copy in between. Splicing the pipe into the socket
//! instead was measured slower on loopback TCP: the socket then carries the pipe's 4 KiB pages as
//! they are, and the receiver's copy out of them costs more than the copy saved here. Socket to
//! socket (port-forward), on plain TCP, the bytes are spliced through a pipe of skiffd's own: the
//! frame header goes out with `MSG_MORE`, then the payload from the pipe.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The capacity of the pipes skiffd makes, and the most one spliced frame carries: a whole pipe.
pub const PIPE_SIZE: usize = 1 << 20;
/// Slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// The read end of a command's output pipe, non-blocking and registered with tokio.
pub struct Pipe {
    fd: AsyncFd<OwnedFd>,
}

impl Pipe {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        // SAFETY: the descriptor is owned by the AsyncFd from here on, and neither replaced nor
        // closed while it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(Self { fd })
    }

    /// Reads what the pipe holds, up to `max` bytes, into `buf`'s spare capacity (grown as needed);
    /// 0 at the end of the output.
    pub async fn read_buf(&self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        loop {
            let mut guard = self.fd.readable().await?;
            let spare = buf.spare_capacity_mut();
            let want = spare.len().min(max);
            let result = guard.try_io(|fd| {
                // SAFETY: read(2) writes at most `want` bytes into `spare`, which has room for
                // them; MaybeUninit bytes may be written.
                let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => {
                    // SAFETY: the kernel initialised the first `n` spare bytes.
                    unsafe { buf.set_len(buf.len() + n) };
                    return Ok(n);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

/// A pipe to carry a socket's bytes on their way to another socket (splice needs a pipe on one
/// side): the read end, and the write end for [`splice_in`].
pub fn relay_pipe() -> io::Result<(Pipe, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // As large as an exec's output pipe, so each splice moves as much. Best effort.
    // SAFETY: F_SETPIPE_SZ on the pipe we just made; it only changes its capacity.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
    Ok((Pipe::new(r)?, w))
}

/// Moves what `tcp` has received (up to [`PIPE_SIZE`] bytes) into the pipe whose write end is
/// `pipe`, waiting for some; 0 at the end of the peer's data. The pipe must have been emptied.
pub async fn splice_in(tcp: &TcpStream, pipe: &OwnedFd) -> io::Result<usize> {
    loop {
        tcp.readable().await?;
        let moved = tcp.try_io(Interest::READABLE, || {
            splice(tcp.as_raw_fd(), pipe.as_raw_fd(), PIPE_SIZE)
        });
        match moved {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking splice(2) of up to `len` bytes from `src` to `dst`, one of them a pipe.
fn splice(src: RawFd, dst: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice(2) only reads its arguments; neither a pipe nor a socket takes offsets, so
    // both offset pointers are null. Bad descriptors come back as errors.
    let n = unsafe {
        libc::splice(
            src,
            std::ptr::null_mut(),
            dst,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own only change its status flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The write half of a streaming connection: plain TCP or another stream, carried bare or, for
/// SPDY tunnelled through WebSocket, in binary messages framed here.
pub struct Socket {
    raw: Raw,
    /// Every write becomes one WebSocket binary message.
    tunnel: bool,
    /// Messages the tunnel's reading side framed itself (pongs, the close reply), which go out as
    /// they are.
    control: Option<mpsc::Receiver<Bytes>>,
}

enum Raw {
    /// Plain TCP: pipes can be spliced into it.
    Tcp(OwnedWriteHalf),
    /// Anything else (TLS, a test's stream).
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Socket {
    pub fn tcp(w: OwnedWriteHalf) -> Self {
        Self {
            raw: Raw::Tcp(w),
            tunnel: false,
            control: None,
        }
    }

    pub fn stream(w: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self {
            raw: Raw::Stream(Box::new(w)),
            tunnel: false,
            control: None,
        }
    }

    /// The same socket carrying a byte stream in WebSocket binary messages; `control` brings the
    /// reading side's own messages.
    pub fn ws_tunnel(self, control: mpsc::Receiver<Bytes>) -> Self {
        Self {
            tunnel: true,
            control: Some(control),
            ..self
        }
    }

    /// Whether [`Socket::splice`] moves bytes without copying them through skiffd.
    pub fn can_splice(&self) -> bool {
        matches!(self.raw, Raw::Tcp(_))
    }

    /// The next message the tunnel's reading side wants sent; never resolves when there is none
    /// to wait for.
    pub async fn control(&mut self) -> Bytes {
        if let Some(rx) = self.control.as_mut() {
            if let Some(b) = rx.recv().await {
                return b;
            }
            self.control = None;
        }
        std::future::pending().await
    }

    /// Sends a message that is already framed, as it is.
    pub async fn write_framed(&mut self, msg: Bytes) -> io::Result<()> {
        self.raw.write_all(&mut vec![msg]).await
    }

    /// Writes `bufs` in order, gathered into as few system calls as the transport allows (and in
    /// one message through a tunnel), and leaves `bufs` empty.
    pub async fn write_all(&mut self, bufs: &mut Vec<Bytes>) -> io::Result<()> {
        bufs.retain(|b| !b.is_empty());
        if bufs.is_empty() {
            return Ok(());
        }
        if self.tunnel {
            let mut header = BytesMut::with_capacity(10);
            ws_binary_header(bufs.iter().map(Bytes::len).sum(), &mut header);
            bufs.insert(0, header.freeze());
        }
        self.raw.write_all(bufs).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        match &mut self.raw {
            Raw::Tcp(w) => w.flush().await,
            Raw::Stream(w) => w.flush().await,
        }
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        if self.tunnel {
            let _ = self.write_framed(Bytes::from_static(WS_CLOSE)).await;
        }
        match &mut self.raw {
            Raw::Tcp(w) => w.shutdown().await,
            Raw::Stream(w) => w.shutdown().await,
        }
    }

    /// Sends `header`, then `len` bytes that are queued in `pipe`, spliced from the pipe into the
    /// socket (in one message through a tunnel). Only on plain TCP; the caller must have seen
    /// `len` bytes queued and be the pipe's only reader, as the header already announced them.
    pub async fn splice(&mut self, header: &[u8], pipe: &Pipe, len: usize) -> io::Result<()> {
        let Raw::Tcp(w) = &mut self.raw else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "splice needs a plain TCP socket",
            ));
        };
        if self.tunnel {
            let mut framed = BytesMut::with_capacity(10 + header.len());
            ws_binary_header(header.len() + len, &mut framed);
            framed.extend_from_slice(header);
            return splice_tcp(w, &framed, pipe, len).await;
        }
        splice_tcp(w, header, pipe, len).await
    }
}

impl Raw {
    async fn write_all(&mut self, bufs: &mut Vec<Bytes>) -> io::Result<()> {
        if let Raw::Stream(w) = self {
            if !w.is_write_vectored() && bufs.len() > 1 {
                // A stream that takes one slice per write gets the batch whole.
                let mut whole = BytesMut::with_capacity(bufs.iter().map(Bytes::len).sum());
                bufs.drain(..).for_each(|b| whole.extend_from_slice(&b));
                return w.write_all(&whole).await;
            }
        }
        let mut first = 0;
        while first < bufs.len() {
            let slices: Vec<IoSlice<'_>> = bufs[first..]
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = match self {
                Raw::Tcp(w) => w.write_vectored(&slices).await?,
                Raw::Stream(w) => w.write_vectored(&slices).await?,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let len = bufs[first].len();
                if n >= len {
                    n -= len;
                    first += 1;
                } else {
                    bufs[first].advance(n);
                    n = 0;
                }
            }
        }
        bufs.clear();
        Ok(())
    }
}

async fn splice_tcp(
    w: &OwnedWriteHalf,
    header: &[u8],
    pipe: &Pipe,
    mut len: usize,
) -> io::Result<()> {
    let tcp = w.as_ref();
    let sock = tcp.as_raw_fd();
    let mut header = header;
    while !header.is_empty() {
        tcp.writable().await?;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            // SAFETY: send(2) reads `header.len()` bytes from a valid slice; MSG_MORE holds them
            // back to go out with the payload that follows.
            let n = unsafe {
                libc::send(
                    sock,
                    header.as_ptr().cast(),
                    header.len(),
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(n) => header = &header[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let src = pipe.fd.as_raw_fd();
    while len > 0 {
        tcp.writable().await?;
        // The pipe holds at least `len` bytes, so EAGAIN can only mean a full socket buffer.
        let moved = tcp.try_io(Interest::WRITABLE, || splice(src, sock, len));
        match moved {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the pipe ran dry before the announced bytes",
                ))
            }
            Ok(n) => len -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The header of a server-to-client (unmasked) WebSocket binary message of `len` bytes.
pub fn ws_binary_header(len: usize, out: &mut BytesMut) {
    out.extend_from_slice(&[0x82]);
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if let Ok(short) = u16::try_from(len) {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// A server's WebSocket close message, status 1000 (normal closure). client-go reads a close
/// without a status (1005) as a failed stream and loses the exit code it already received.
pub const WS_CLOSE: &[u8] = &[0x88, 0x02, 0x03, 0xe8];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_headers() {
        let mut b = BytesMut::new();
        ws_binary_header(5, &mut b);
        assert_eq!(&b[..], [0x82, 5]);
        b.clear();
        ws_binary_header(300, &mut b);
        assert_eq!(&b[..], [0x82, 126, 1, 44]);
        b.clear();
        ws_binary_header(1 << 20, &mut b);
        assert_eq!(&b[..], [0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0]);
    }

    #[tokio::test]
    async fn pipe_reads_and_splices_into_tcp() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut client, (server, _)) = (client.unwrap(), accepted.unwrap());
        let (_rd, wr) = server.into_split();
        let mut sock = Socket::tcp(wr);
        assert!(sock.can_splice());

        let (pipe, w) = relay_pipe().unwrap();
        let mut w = std::fs::File::from(w);
        let data: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut w, &data).unwrap();
        sock.splice(b"head", &pipe, 40_000).await.unwrap();
        let mut buf = BytesMut::new();
        let got = pipe.read_buf(&mut buf, PIPE_SIZE).await.unwrap();
        assert_eq!(got, 20_000);
        let mut bufs = vec![Bytes::from_static(b"tail"), buf.split().freeze()];
        sock.write_all(&mut bufs).await.unwrap();
        drop(w);
        assert_eq!(pipe.read_buf(&mut buf, PIPE_SIZE).await.unwrap(), 0);
        sock.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[4..40_004], &data[..40_000]);
        assert_eq!(&all[40_004..40_008], b"tail");
        assert_eq!(&all[40_008..], &data[40_000..]);
    }
}
