//! `exec`: a new process inside a running container's namespaces and cgroups, with its own settings.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::create::wait_exit;
use super::handshake::Handshake;
use super::{io, ContainerError, Runtime};
use crate::cgroups::{self, join::SelfJoin, CgroupManager};
use crate::namespaces::{self, same_ns};
use crate::process::{exec_program, prepare_process};
use crate::spec::{NamespaceKind, Process};
use crate::state::{self, StateDir, Status};
use crate::sync::{self, ChildEnd, ToChild, ToParent};
use crate::terminal;

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
}

impl Runtime {
    /// The container's own process settings, the base that `exec` flags modify.
    pub fn exec_base(&self, id: &str) -> Result<Process, ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        Ok(st.config.process.clone().unwrap_or_default())
    }

    /// Starts the process; returns its exit status, or 0 once it runs when detached.
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32, ContainerError> {
        if opts.process.args.is_empty() {
            return Err(ContainerError::Usage("exec: no command given".into()));
        }
        if let Some(field) = crate::spec::unchanged_id_field(&opts.process.user) {
            return Err(ContainerError::Usage(format!(
                "exec: process.user.{field}: {}",
                crate::spec::UNCHANGED_ID_REASON
            )));
        }
        let relay = opts.process.terminal && opts.console_socket.is_none();
        if relay && opts.detach {
            return Err(ContainerError::Usage(
                "exec -t -d needs --console-socket".into(),
            ));
        }
        let dir = StateDir::open(&self.root, id)?;
        let st = dir.load()?;
        let status = st.status(&dir.path);
        if !matches!(status, Status::Running | Status::Created) {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                action: "cannot exec in it",
            });
        }
        let pidfd = pidfd_open(st.pid)?;
        // The pid could have been recycled between reading the state and opening the pidfd.
        if state::process_start_time(st.pid) != Some(st.pid_start_time) {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status: Status::Stopped,
                action: "cannot exec in it",
            });
        }
        let target = st.pid.to_string();
        let kinds: Vec<NamespaceKind> = NamespaceKind::ALL
            .into_iter()
            .filter(|k| !same_ns(*k, "self", &target))
            .collect();
        let cg = cgroups::from_state(&st.cgroup);
        let console = match &opts.console_socket {
            Some(p) if opts.process.terminal => Some(
                UnixStream::connect(p).map_err(io(format!("--console-socket {}", p.display())))?,
            ),
            _ => None,
        };
        let (parent_end, child_end) = sync::pair().map_err(io("socketpair"))?;
        let flags = kinds.iter().fold(0, |acc, k| acc | k.clone_flag());
        let self_join = cg.self_join()?;
        let stage = namespaces::clone3(0, self_join.as_ref().and_then(SelfJoin::clone_into))?;
        if stage == 0 {
            drop(parent_end);
            // SAFETY: closing our copy of the lock descriptor; the parent's copy keeps the lock.
            unsafe { libc::close(dir.lock_fd()) };
            first_stage(
                &child_end,
                self_join,
                pidfd.as_raw_fd(),
                flags,
                &opts.process,
                st.config.linux().and_then(|l| l.seccomp.as_ref()),
                console.as_ref().map(|c| c.as_raw_fd()),
                relay,
                opts.preserve_fds,
            );
        }
        drop(child_end);
        drop(console);
        drop(dir);
        let chan = Handshake::new(parent_end);
        let placer = match self_join {
            Some(_) => None,
            None => Some(cg.as_ref()),
        };
        let pid = place_first_stage(&chan, placer, stage)
            .and_then(|()| first_stage_result(&chan, stage))?;
        let result = drive(&chan, pid, relay, &st);
        let tty = match result {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: kill and reap our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        if let Some(p) = &opts.pid_file {
            state::write_pid_file(p, pid)?;
        }
        if opts.detach {
            return Ok(0);
        }
        if let Some(master) = &tty {
            terminal::attach_stdio(master);
        }
        Ok(wait_exit(pid))
    }
}

fn drive(
    chan: &Handshake,
    pid: i32,
    relay: bool,
    st: &state::ContainerState,
) -> Result<Option<OwnedFd>, ContainerError> {
    // The process waits until we know its pid: its messages must come after the first stage's.
    chan.go()?;
    chan.exec_outcome(relay, |fd| {
        let sc = st.config.linux().and_then(|l| l.seccomp.as_ref());
        let path = sc.and_then(|s| s.listener_path.as_deref()).unwrap_or("");
        let meta = sc
            .and_then(|s| s.listener_metadata.as_deref())
            .unwrap_or("");
        let oci = st.oci(Status::Running);
        crate::security::seccomp::send_to_listener(path, meta, pid, &oci, &fd)
            .map_err(|e| ContainerError::Init(e.to_string()))
    })
}

/// Puts the first stage in the container's cgroup, unless it joins by itself (`cg` is `None`), so
/// that the process it forks is born there.
fn place_first_stage(
    chan: &Handshake,
    cg: Option<&dyn CgroupManager>,
    stage: i32,
) -> Result<(), ContainerError> {
    let placed = cg
        .map_or(Ok(()), |cg| cg.add_process(stage))
        .map_err(ContainerError::from)
        .and_then(|()| chan.go());
    if placed.is_err() {
        // SAFETY: kill and reap our own child, the first stage.
        unsafe {
            libc::kill(stage, libc::SIGKILL);
            libc::waitpid(stage, std::ptr::null_mut(), 0);
        }
    }
    placed
}

/// Reaps the first stage and learns the pid (in our pid namespace) of the process it forked.
fn first_stage_result(chan: &Handshake, stage: i32) -> Result<i32, ContainerError> {
    let pid = chan.stage_result("exec: the first stage went away");
    // SAFETY: reaping our own child, the first stage, which exits once it has forked.
    unsafe { libc::waitpid(stage, std::ptr::null_mut(), 0) };
    pid
}

/// Joins the container's cgroups (or is put there), then every namespace of the container, then forks the process as a
/// sibling (our parent's child). The process is thus born in the container's mount namespace, pid
/// namespace and cgroup: no process of the container ever sees one of ours with the host's root
/// (`/proc/<pid>/root`, which it could open with CAP_SYS_PTRACE), and the process holds the runtime's
/// capabilities only while it sets itself up (and a message round trip), not while the runtime writes
/// cgroup files. This stage
/// itself never shows in the container's pid namespace.
#[allow(clippy::too_many_arguments)]
fn first_stage(
    chan: &ChildEnd,
    self_join: Option<SelfJoin>,
    pidfd: RawFd,
    flags: libc::c_int,
    process: &Process,
    seccomp: Option<&crate::spec::Seccomp>,
    console: Option<RawFd>,
    relay: bool,
    preserve_fds: u32,
) -> ! {
    let fail = |msg: String| -> ! { fail_with(chan, msg, 1) };
    shield();
    if let Err(e) = self_join.map_or(Ok(()), SelfJoin::join) {
        fail(format!("join the container's cgroups: {e}"));
    }
    // With CLONE_NEWPID among them, the pid namespace applies to our children only.
    if let Err(e) = join(pidfd, flags) {
        fail(e.to_string());
    }
    match chan.recv() {
        Ok(Some(ToChild::Go)) => {}
        _ => fail("runtime went away".into()),
    }
    match namespaces::clone_sibling() {
        Ok(0) => child(chan, process, seccomp, console, relay, preserve_fds),
        Ok(pid) => {
            let _ = chan.send(&ToParent::InitPid(pid));
            // SAFETY: _exit ends the first stage; the process lives on as our parent's child.
            unsafe { libc::_exit(0) }
        }
        Err(e) => fail(e.to_string()),
    }
}

fn child(
    chan: &ChildEnd,
    process: &Process,
    seccomp: Option<&crate::spec::Seccomp>,
    console: Option<RawFd>,
    relay: bool,
    preserve_fds: u32,
) -> ! {
    let fail = |msg: String| -> ! { fail_with(chan, msg, 127) };
    shield();
    match chan.recv() {
        Ok(Some(ToChild::Go)) => {}
        _ => fail("runtime went away".into()),
    }
    if process.terminal {
        let pty = match terminal::open_pty(process.console_size) {
            Ok(p) => p,
            Err(e) => fail(format!("terminal: {e}")),
        };
        let sent = match console {
            Some(sock) => terminal::send_master(sock, &pty),
            None if relay => chan.send_fd(&ToParent::Console, pty.master.as_raw_fd()),
            None => Ok(()),
        };
        if let Err(e) = sent.and_then(|_| terminal::become_session_leader(&pty.slave)) {
            fail(format!("terminal: {e}"));
        }
    }
    let mut prepared = match prepare_process(process, seccomp) {
        Ok(p) => p,
        Err(e) => fail(e.to_string()),
    };
    if let Some(fd) = prepared.listener.take() {
        if let Err(e) = chan.send_fd(&ToParent::SeccompListener, fd.as_raw_fd()) {
            fail(format!("send the seccomp listener: {e}"));
        }
    }
    let _ = chan.send(&ToParent::Execing);
    // SAFETY: prctl with integer arguments only; the exec'd program must not die with us.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    let err = exec_program(process, &prepared, preserve_fds);
    fail(err.to_string())
}

/// A forked stage is not dumpable (its `/proc` entries are root's alone) and dies with its parent.
fn shield() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
}

/// Reports `msg` to the runtime and ends a forked stage with `code`.
fn fail_with(chan: &ChildEnd, msg: String, code: i32) -> ! {
    let _ = chan.send(&ToParent::Error(msg));
    // SAFETY: _exit ends the forked stage without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

fn join(pidfd: RawFd, flags: libc::c_int) -> Result<(), ContainerError> {
    // SAFETY: setns with a pidfd and namespace flags.
    if unsafe { libc::setns(pidfd, flags) } != 0 {
        return Err(io("join the container's namespaces")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, ContainerError> {
    skiff_sys::fd::pidfd_open(pid).map_err(io(format!("pidfd_open {pid}")))
}
