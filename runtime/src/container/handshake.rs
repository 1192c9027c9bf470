//! The runtime's side of the setup channel: each step of the `create` and `exec` handshakes is a call
//! that sends, or waits for, exactly that step's message. A child's `Error` becomes the error of
//! whichever step was waiting, and a message out of turn is a protocol error naming the step.

use std::os::fd::{OwnedFd, RawFd};

use super::{io, ContainerError};
use crate::state::OciState;
use crate::sync::{ParentEnd, ToChild, ToParent};

pub(crate) struct Handshake {
    end: ParentEnd,
}

impl Handshake {
    pub fn new(end: ParentEnd) -> Self {
        Handshake { end }
    }

    /// The child may carry on (it is in its cgroup, its id maps are written).
    pub fn go(&self) -> Result<(), ContainerError> {
        self.send(&ToChild::Go, None)
    }

    /// The prestart and createRuntime hooks are done; `state` is what the container's own hooks get.
    pub fn hooks_done(&self, state: OciState) -> Result<(), ContainerError> {
        self.send(&ToChild::HooksDone(state), None)
    }

    /// The detached idmapped tree for `mounts[index]`.
    pub fn idmapped_tree(&self, index: usize, tree: RawFd) -> Result<(), ContainerError> {
        self.send(&ToChild::IdmappedMount(index), Some(tree))
    }

    /// Waits until the first stage has created the user namespace whose maps we write.
    pub fn user_ns(&self) -> Result<(), ContainerError> {
        match self.step()? {
            (ToParent::UserNs, _) => Ok(()),
            (m, _) => Err(unexpected(m, "UserNs")),
        }
    }

    /// Waits for the pid (in our pid namespace) of the process a stage forked.
    pub fn init_pid(&self) -> Result<i32, ContainerError> {
        match self.step()? {
            (ToParent::InitPid(pid), _) => Ok(pid),
            (m, _) => Err(unexpected(m, "InitPid")),
        }
    }

    /// Waits until the init has prepared its mounts, the moment for the prestart hooks.
    pub fn mounted(&self) -> Result<(), ContainerError> {
        match self.step()? {
            (ToParent::Mounted, _) => Ok(()),
            (m, _) => Err(unexpected(m, "Mounted")),
        }
    }

    /// Waits for the pty master the init hands over for us to relay.
    pub fn console(&self) -> Result<OwnedFd, ContainerError> {
        match self.step()? {
            (ToParent::Console, Some(fd)) => Ok(fd),
            (m, _) => Err(unexpected(m, "Console")),
        }
    }

    /// Waits for `Ready`, passing each seccomp listener descriptor sent before it to `listener`.
    pub fn ready(
        &self,
        mut listener: impl FnMut(OwnedFd) -> Result<(), ContainerError>,
    ) -> Result<(), ContainerError> {
        loop {
            match self.step()? {
                (ToParent::Ready, _) => return Ok(()),
                (ToParent::SeccompListener, Some(fd)) => listener(fd)?,
                (m, _) => return Err(unexpected(m, "Ready")),
            }
        }
    }

    /// The pid a first stage reports before it exits; `gone` names the failure if it closes instead.
    pub fn stage_result(&self, gone: &str) -> Result<i32, ContainerError> {
        match self.next()? {
            Some((ToParent::InitPid(pid), _)) => Ok(pid),
            Some((m, _)) => Err(unexpected(m, "InitPid")),
            None => Err(ContainerError::Init(gone.into())),
        }
    }

    /// Follows an exec'd process to its execve, which closes its end (close-on-exec): returns the pty
    /// master it sent when `relay`, and passes a seccomp listener descriptor to `listener`.
    pub fn exec_outcome(
        &self,
        relay: bool,
        mut listener: impl FnMut(OwnedFd) -> Result<(), ContainerError>,
    ) -> Result<Option<OwnedFd>, ContainerError> {
        let mut tty = None;
        loop {
            match self.next()? {
                Some((ToParent::Console, fd)) if relay => tty = fd,
                Some((ToParent::Execing, _)) => {}
                Some((ToParent::SeccompListener, Some(fd))) => listener(fd)?,
                Some((m, _)) => return Err(unexpected(m, "Execing")),
                None => return Ok(tty),
            }
        }
    }

    /// Sends to the child; if it has gone, its last words explain why better than EPIPE does.
    fn send(&self, msg: &ToChild, fd: Option<RawFd>) -> Result<(), ContainerError> {
        let sent = match fd {
            Some(fd) => self.end.send_fd(msg, fd),
            None => self.end.send(msg),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {
                match self.end.recv() {
                    Ok(Some(ToParent::Error(m))) => Err(ContainerError::Init(m)),
                    _ => Err(io("sync")(e)),
                }
            }
            Err(e) => Err(io("sync")(e)),
        }
    }

    /// The next message, `None` once the child has closed its end; its `Error` is ours.
    fn next(&self) -> Result<Option<(ToParent, Option<OwnedFd>)>, ContainerError> {
        match self.end.recv_with_fd().map_err(io("sync"))? {
            Some((ToParent::Error(e), _)) => Err(ContainerError::Init(e)),
            m => Ok(m),
        }
    }

    /// The next message of a handshake that is not over yet.
    fn step(&self) -> Result<(ToParent, Option<OwnedFd>), ContainerError> {
        self.next()?
            .ok_or_else(|| ContainerError::Init("the container's init exited during setup".into()))
    }
}

fn unexpected(m: ToParent, want: &str) -> ContainerError {
    ContainerError::Init(format!("protocol: got {m:?}, expected {want}"))
}
