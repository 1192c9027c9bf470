//! The netlink socket: send a request, collect acks or dump replies.

use super::{split_messages, Reply, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_MULTI};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("netlink {op}: {err}")]
    Kernel { op: String, err: io::Error },
    #[error("netlink {0}: truncated or unexpected reply")]
    Protocol(String),
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
}

pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens a netlink socket of `protocol` in the calling thread's netns.
    pub fn open(protocol: i32) -> Result<Socket, NlError> {
        // SAFETY: plain socket(2) call; the returned fd is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value of the right size.
        unsafe {
            // Extended acks are only a nicety; ignore failure on old kernels.
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_EXT_ACK,
                &one as *const libc::c_int as *const libc::c_void,
                4,
            );
        }
        Ok(Socket { fd, seq: 1 })
    }

    pub fn route() -> Result<Socket, NlError> {
        Self::open(libc::NETLINK_ROUTE)
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> Result<(), NlError> {
        // SAFETY: buf is a valid readable slice of the given length.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut Vec<u8>) -> Result<usize, NlError> {
        loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
    }

    /// Sends one message built with `seq` and waits for its ack.
    pub fn request(&mut self, op: &str, build: impl FnOnce(u32) -> Vec<u8>) -> Result<(), NlError> {
        let seq = self.next_seq();
        let msg = build(seq);
        self.send(&msg)?;
        self.wait_acks(op, &[seq])
    }

    /// Waits until every sequence number in `seqs` has been acknowledged,
    /// returning the first error the kernel reported.
    pub fn wait_acks(&mut self, op: &str, seqs: &[u32]) -> Result<(), NlError> {
        self.wait_acks_or_fail(op, seqs, None)
    }

    /// As [`Socket::wait_acks`]; an error acknowledging `fatal` (a message
    /// the kernel only answers when it refuses it, such as an nf_tables
    /// batch begin) ends the wait at once.
    pub fn wait_acks_or_fail(
        &mut self,
        op: &str,
        seqs: &[u32],
        fatal: Option<u32>,
    ) -> Result<(), NlError> {
        let mut pending: Vec<u32> = seqs.to_vec();
        let mut first_err = None;
        let mut buf = vec![0u8; 65536];
        while !pending.is_empty() {
            let n = self.recv(&mut buf)?;
            for r in split_messages(&buf[..n]) {
                if r.msg_type != NLMSG_ERROR {
                    continue;
                }
                pending.retain(|s| *s != r.seq);
                let code = r
                    .payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if let (Some(c), true) = (code, fatal == Some(r.seq)) {
                    if c != 0 {
                        return Err(NlError::Kernel {
                            op: op.to_string(),
                            err: io::Error::from_raw_os_error(-c),
                        });
                    }
                }
                match code {
                    Some(0) => {}
                    Some(c) if first_err.is_none() => {
                        first_err = Some(NlError::Kernel {
                            op: op.to_string(),
                            err: io::Error::from_raw_os_error(-c),
                        })
                    }
                    Some(_) => {}
                    None => return Err(NlError::Protocol(op.to_string())),
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends a dump request and collects every reply message until DONE.
    pub fn dump(
        &mut self,
        op: &str,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<Vec<Reply>, NlError> {
        let seq = self.next_seq();
        self.send(&build(seq))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.recv(&mut buf)?;
            for r in split_messages(&buf[..n]) {
                if r.seq != seq {
                    continue;
                }
                match r.msg_type {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = r
                            .payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(|| NlError::Protocol(op.to_string()))?;
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(NlError::Kernel {
                            op: op.to_string(),
                            err: io::Error::from_raw_os_error(-code),
                        });
                    }
                    _ => {
                        let multi = r.flags & NLM_F_MULTI != 0;
                        out.push(r);
                        if !multi {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

/// Flag value for requests that want an acknowledgement.
pub const ACK: u16 = NLM_F_ACK;

impl Socket {
    /// Bounds every receive so a lost reply can never hang the plugin.
    pub fn set_recv_timeout(&self, d: std::time::Duration) -> Result<(), NlError> {
        let tv = libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(d.subsec_micros() as i32),
        };
        // SAFETY: setsockopt with a timeval of the correct size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }
}
