//! The channel between `skiff` and the container process it is setting up: a SOCK_SEQPACKET socket pair
//! carrying small JSON messages, and file descriptors (the pty master) as SCM_RIGHTS. Each direction
//! has its own message type and each end its own type, so the runtime cannot send what only a child
//! says, nor wait for what only it says itself.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const MAX_MSG: usize = 64 * 1024;

/// What the runtime tells a process it is setting up (a stage, the init, an exec'd process).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToChild {
    /// The child is in its cgroup (and its id maps are written); carry on.
    Go,
    /// The prestart and createRuntime hooks are done; the state document for the container's own hooks.
    HooksDone(crate::state::OciState),
    /// The detached idmapped tree for `mounts[i]`, attached.
    IdmappedMount(usize),
}

/// What a process being set up tells the runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToParent {
    /// First stage: the user namespace exists; write its id maps.
    UserNs,
    /// First stage: the pid (in the parent's pid namespace) of the container init it forked.
    InitPid(i32),
    /// Init: mounts are prepared; run the prestart and createRuntime hooks.
    Mounted,
    /// Init: the seccomp user-notification descriptor, attached, for `linux.seccomp.listenerPath`.
    SeccompListener,
    /// Init: ready, about to wait for `start`.
    Ready,
    /// The pty master for the caller to relay, attached as SCM_RIGHTS.
    Console,
    /// Exec child: about to execve.
    Execing,
    /// Setup failed; the child exits after sending this.
    Error(String),
}

/// One end of the channel: it sends only `Out` and receives only `In`, so a message can only travel
/// the direction it was made for.
pub struct End<Out, In> {
    fd: OwnedFd,
    direction: PhantomData<fn(Out) -> In>,
}

/// The runtime's end.
pub type ParentEnd = End<ToChild, ToParent>;
/// The end of the process being set up.
pub type ChildEnd = End<ToParent, ToChild>;

/// A connected pair of ends (close-on-exec, so a successful execve closes the child's).
pub fn pair() -> io::Result<(ParentEnd, ChildEnd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((End::new(a), End::new(b)))
}

impl<Out: Serialize, In: DeserializeOwned> End<Out, In> {
    fn new(fd: OwnedFd) -> Self {
        End {
            fd,
            direction: PhantomData,
        }
    }

    pub fn send(&self, msg: &Out) -> io::Result<()> {
        let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
        send_with_fd(self.fd.as_raw_fd(), &data, None)
    }

    /// Sends a message with a descriptor attached.
    pub fn send_fd(&self, msg: &Out, fd: RawFd) -> io::Result<()> {
        let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
        send_with_fd(self.fd.as_raw_fd(), &data, Some(fd))
    }

    /// Receives one message; `Ok(None)` when the other side has closed.
    pub fn recv(&self) -> io::Result<Option<In>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// Receives one message and the descriptor sent with it, if any.
    pub fn recv_with_fd(&self) -> io::Result<Option<(In, Option<OwnedFd>)>> {
        let (data, fd) = recv_with_fd(self.fd.as_raw_fd())?;
        if data.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&data)
            .map(|m| Some((m, fd)))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Sends `data` and optionally one descriptor over a unix socket.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Aligned room for one cmsghdr carrying one int.
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `cbuf`, large enough for one header and one int, and aligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
        }
    }
    loop {
        // SAFETY: msg and everything it points to live until the call returns.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one datagram and the descriptor sent with it, if any.
pub fn recv_with_fd(sock: RawFd) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: msg points at buffers that outlive the call.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    buf.truncate(n);
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR/NXTHDR walk it within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((buf, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds() {
        let (parent, child) = pair().unwrap();
        child.send(&ToParent::InitPid(42)).unwrap();
        assert_eq!(parent.recv().unwrap(), Some(ToParent::InitPid(42)));
        parent.send(&ToChild::IdmappedMount(3)).unwrap();
        assert_eq!(child.recv().unwrap(), Some(ToChild::IdmappedMount(3)));
        let f = std::fs::File::open("/dev/null").unwrap();
        child.send_fd(&ToParent::Console, f.as_raw_fd()).unwrap();
        let (m, got) = parent.recv_with_fd().unwrap().unwrap();
        assert_eq!(m, ToParent::Console);
        assert!(got.unwrap().as_raw_fd() >= 0);
        drop(child);
        assert_eq!(parent.recv().unwrap(), None);
    }
}
