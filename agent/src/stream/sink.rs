//! The way out of a streaming connection: the socket's write half, and the command output pipes
//! whose bytes go to it.
//!
//! Output is the bulk of what the streaming server moves, so it is copied as little as the
//! transport allows. A pipe is read straight into a buffer that becomes a frame's payload, and the
//! frame header and payloads of a batch go out in one gathered write, with no framing copy in
//! between. On plain TCP a pipe's bytes need not enter skiffd's memory at all: the frame header is
//! sent with `MSG_MORE`, then the payload is spliced from the pipe into the socket. Over TLS the
//! bytes must be encrypted in user space, so the gathered write is the best there is.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;

/// How much one read from a pipe takes at most: the whole of a grown pipe.
pub const PIPE_READ: usize = 1 << 20;
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

    /// Waits until the pipe has something to say; the bytes queued in it then. Zero means the
    /// writers are gone or the wake-up was spurious: [`Pipe::read_buf`] tells which.
    pub async fn ready(&self) -> io::Result<usize> {
        let guard = self.fd.readable().await?;
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the bytes queued in the pipe, to a valid pointer.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut queued) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // The readiness stays set: a read then tells an end from a spurious wake-up.
        drop(guard);
        Ok(usize::try_from(queued).unwrap_or(0))
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

/// The write half of a streaming connection.
pub enum Socket {
    /// Plain TCP: pipes can be spliced into it.
    Tcp(OwnedWriteHalf),
    /// Anything else (TLS, a test's stream).
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Socket {
    /// Whether [`Socket::splice`] moves bytes without copying them through skiffd.
    pub fn can_splice(&self) -> bool {
        matches!(self, Socket::Tcp(_))
    }

    /// Writes `bufs` in order, gathered into as few system calls as the transport allows, and
    /// leaves `bufs` empty.
    pub async fn write_all(&mut self, bufs: &mut Vec<Bytes>) -> io::Result<()> {
        bufs.retain(|b| !b.is_empty());
        if let Socket::Stream(w) = self {
            if !w.is_write_vectored() && bufs.len() > 1 {
                // A stream that takes one slice per write (a WebSocket tunnel makes a message of
                // each) gets the batch whole.
                let mut whole = BytesMut::with_capacity(bufs.iter().map(Bytes::len).sum());
                bufs.drain(..).for_each(|b| whole.extend_from_slice(&b));
                w.write_all(&whole).await?;
                return Ok(());
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
                Socket::Tcp(w) => w.write_vectored(&slices).await?,
                Socket::Stream(w) => w.write_vectored(&slices).await?,
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

    pub async fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(w) => w.flush().await,
            Socket::Stream(w) => w.flush().await,
        }
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(w) => w.shutdown().await,
            Socket::Stream(w) => w.shutdown().await,
        }
    }

    /// Sends `header`, then `len` bytes that are queued in `pipe`, spliced from the pipe into the
    /// socket. Only for [`Socket::Tcp`]; the caller must have seen `len` bytes queued and be the
    /// pipe's only reader, as the header already announced them.
    pub async fn splice(&mut self, header: &[u8], pipe: &Pipe, mut len: usize) -> io::Result<()> {
        let Socket::Tcp(w) = self else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "splice needs a plain TCP socket",
            ));
        };
        let tcp = w.as_ref();
        let sock = tcp.as_raw_fd();
        let mut header = header;
        while !header.is_empty() {
            tcp.writable().await?;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                // SAFETY: send(2) reads `header.len()` bytes from a valid slice; MSG_MORE holds
                // them back to go out with the payload that follows.
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
            let moved = tcp.try_io(Interest::WRITABLE, || {
                // SAFETY: splice(2) between two descriptors we hold, no offsets (a pipe and a
                // socket have none). The pipe holds at least `len` bytes, so EAGAIN can only
                // mean a full socket buffer.
                let n = unsafe {
                    libc::splice(
                        src,
                        std::ptr::null_mut(),
                        sock,
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
            });
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

/// A server's WebSocket close message (no status).
pub const WS_CLOSE: &[u8] = &[0x88, 0x00];

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
        let mut sock = Socket::Tcp(wr);
        assert!(sock.can_splice());

        let (r, w) = std::io::pipe().unwrap();
        let pipe = Pipe::new(OwnedFd::from(r)).unwrap();
        let mut w = std::fs::File::from(OwnedFd::from(w));
        let data: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut w, &data).unwrap();
        let n = pipe.ready().await.unwrap();
        assert_eq!(n, data.len());
        sock.splice(b"head", &pipe, 40_000).await.unwrap();
        let mut buf = BytesMut::new();
        let got = pipe.read_buf(&mut buf, PIPE_READ).await.unwrap();
        assert_eq!(got, 20_000);
        let mut bufs = vec![Bytes::from_static(b"tail"), buf.split().freeze()];
        sock.write_all(&mut bufs).await.unwrap();
        drop(w);
        assert_eq!(pipe.read_buf(&mut buf, PIPE_READ).await.unwrap(), 0);
        sock.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[4..40_004], &data[..40_000]);
        assert_eq!(&all[40_004..40_008], b"tail");
        assert_eq!(&all[40_008..], &data[40_000..]);
    }
}
