//! The container's init: the child `create` clones. It finishes the namespaces, builds the root
//! filesystem, reports ready, blocks on the exec fifo until `start`, and execs the user's program.
//!
//! Runs in a single-threaded copy of the runtime. It never returns: it execs or exits, after telling the
//! parent what went wrong.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::cgroups::join::SelfJoin;
use crate::hooks::{self, HookError};
use crate::namespaces::{self, NsError, NsPlan};
use crate::rootfs::{self, RootfsError, RootfsOptions};
use crate::security::SecurityError;
use crate::spec::{NamespaceKind, Process, Spec};
use crate::state::{OciState, Status};
use crate::sync::{ChildEnd, ToChild, ToParent};
use crate::terminal;

use super::{exec_program, prepare_process, ProcessError};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{0}")]
    Other(String),
}

fn other(what: &str, e: impl std::fmt::Display) -> InitError {
    InitError::Other(format!("{what}: {e}"))
}

pub struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub id: &'a str,
    pub rootfs: &'a Path,
    /// The bundle directory, against which relative bind-mount sources resolve.
    pub bundle: &'a Path,
    pub chan: &'a ChildEnd,
    pub plan: &'a NsPlan,
    /// O_PATH descriptor of `exec.fifo`.
    pub fifo: RawFd,
    /// Connected `--console-socket`, when the process has a terminal.
    pub console: Option<RawFd>,
    /// Hand the pty master to the parent instead (`skiff run` with a terminal and no console socket).
    pub relay_tty: bool,
    pub preserve_fds: u32,
    pub no_new_keyring: bool,
    /// The pid whose death must take us with it during setup; 0 when a first stage that exits on purpose
    /// forked us (its channel closing tells us enough).
    pub parent: i32,
    /// Set when the init joins the container's cgroups by itself rather than being put there.
    pub self_join: Option<SelfJoin>,
}

/// Entry point of the init process.
pub fn run(mut args: InitArgs) -> ! {
    let joined = match args.self_join.take() {
        Some(j) => j
            .join()
            .map_err(|e| other("join the container's cgroups", e)),
        None => Ok(()),
    };
    let err = match joined.and_then(|()| setup(&args)) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let started = STARTED.load(std::sync::atomic::Ordering::Relaxed);
    // After `start` nobody listens on the channel: the container's own stderr is where its owner looks,
    // with a shell's exit codes for a program that is missing or cannot run.
    if started {
        eprintln!("skiff: {err}");
    }
    let code = match &err {
        InitError::Process(ProcessError::Exec { source, .. }) if started => {
            if source.raw_os_error() == Some(libc::ENOENT) {
                127
            } else {
                126
            }
        }
        _ => 1,
    };
    let _ = args.chan.send(&ToParent::Error(err.to_string()));
    // SAFETY: _exit ends this process without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

enum Never {}

/// Set once `start` has released us; errors after it have no parent to report to.
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits for the state the runtime sends once the hooks before ours are done (`want` names the wait).
fn await_hooks_done(chan: &ChildEnd, want: &str) -> Result<OciState, InitError> {
    match chan.recv() {
        Ok(Some(ToChild::HooksDone(s))) => Ok(s),
        Ok(Some(m)) => Err(InitError::Other(format!("unexpected message {m:?}"))),
        Ok(None) => Err(InitError::Other(format!(
            "runtime went away while init waited for {want}"
        ))),
        Err(e) => Err(other("sync", e)),
    }
}

fn setup(a: &InitArgs) -> Result<Never, InitError> {
    guard_against_parent_death(a.parent)?;
    let idmapped = await_go(a.chan)?;
    enter_namespaces(a)?;
    let opts = RootfsOptions {
        in_user_ns: a.plan.creates(NamespaceKind::User) || a.plan.joins(NamespaceKind::User),
        cgroup_ns: a.plan.creates(NamespaceKind::Cgroup),
        bundle: a.bundle.to_owned(),
        idmapped: idmapped
            .iter()
            .map(|(i, fd)| (*i, fd.as_raw_fd()))
            .collect(),
        defer_proc: a.plan.joins_pid_late(),
    };
    let own_mount_ns = a.plan.creates(NamespaceKind::Mount);
    let mut deferred = rootfs::Deferred::default();
    if own_mount_ns {
        deferred = rootfs::prepare(a.spec, a.rootfs, &opts)?;
    }
    a.chan
        .send(&ToParent::Mounted)
        .map_err(|e| other("sync", e))?;
    let mut state = OciState {
        annotations: a.spec.annotations.clone(),
        ..await_hooks_done(a.chan, "hooks")?
    };
    hooks::run_all("createContainer", &a.spec.hooks().create_container, &state)?;
    set_names(a.spec)?;
    let process = a
        .spec
        .process()
        .ok_or_else(|| InitError::Other("no process".into()))?;
    if own_mount_ns {
        rootfs::pivot(a.rootfs)?;
        // As runc does; now that "/" is the container's root no link can lead out of it, and the
        // root is not read-only yet.
        let _ = std::fs::create_dir_all(&process.cwd);
        if a.plan.joins_pid_late() {
            state.pid = fork_into_pid_namespace(a)?;
            rootfs::mount_deferred(a.spec, deferred, &opts)?;
        }
        rootfs::finish(a.spec, &opts)?;
    }
    if process.terminal {
        attach_terminal(a, process)?;
    }
    if !a.no_new_keyring {
        join_session_keyring(a.id);
    }
    let seccomp = a.spec.linux().and_then(|l| l.seccomp.as_ref());
    let mut prepared = prepare_process(process, seccomp)?;
    if let Some(fd) = prepared.listener.take() {
        a.chan
            .send_fd(&ToParent::SeccompListener, fd.as_raw_fd())
            .map_err(|e| other("send the seccomp listener", e))?;
    }
    // The death signal served setup; from here the container outlives `create`, which may exit the
    // moment it reads Ready, so it must be gone before we say it.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    a.chan
        .send(&ToParent::Ready)
        .map_err(|e| other("sync", e))?;
    wait_for_start(a.fifo)?;
    state.status = Status::Created;
    hooks::run_all("startContainer", &a.spec.hooks().start_container, &state)?;
    Err(exec_program(process, &prepared, a.preserve_fds).into())
}

/// Joins the container's pid namespace and forks the process that will run the container into it,
/// as our parent's child; we only report its pid and exit. The child goes on once the parent has
/// recorded it, so that its messages follow ours, and returns its pid as the runtime sees it.
fn fork_into_pid_namespace(a: &InitArgs) -> Result<i32, InitError> {
    a.plan.join_pid()?;
    match namespaces::clone_sibling()? {
        0 => {}
        pid => {
            let _ = a.chan.send(&ToParent::InitPid(pid));
            // SAFETY: _exit ends this stage without running destructors; the child lives on.
            unsafe { libc::_exit(0) }
        }
    }
    guard_against_parent_death(a.parent)?;
    Ok(await_hooks_done(a.chan, "its state")?.pid)
}

/// Waits for `Go`, collecting the idmapped mount trees the runtime sends before it.
fn await_go(chan: &ChildEnd) -> Result<Vec<(usize, OwnedFd)>, InitError> {
    let mut trees = Vec::new();
    loop {
        match chan.recv_with_fd() {
            Ok(Some((ToChild::Go, _))) => return Ok(trees),
            Ok(Some((ToChild::IdmappedMount(i), Some(fd)))) => trees.push((i, fd)),
            Ok(Some((m, _))) => return Err(InitError::Other(format!("unexpected message {m:?}"))),
            Ok(None) => {
                return Err(InitError::Other(
                    "runtime went away while init waited for go".into(),
                ))
            }
            Err(e) => return Err(other("sync", e)),
        }
    }
}

/// Until the parent has recorded us, its death must be ours too: otherwise a killed `create` would leave a
/// half-made container behind.
fn guard_against_parent_death(parent: i32) -> Result<(), InitError> {
    // Nothing in the container may open /proc/<us>/exe or ptrace us before we exec.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if parent == 0 {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // In a new pid namespace the parent lives outside it and getppid() says 0.
    // SAFETY: getppid has no arguments.
    let ppid = unsafe { libc::getppid() };
    if ppid != parent && ppid != 0 {
        return Err(InitError::Other("runtime exited during setup".into()));
    }
    Ok(())
}

fn enter_namespaces(a: &InitArgs) -> Result<(), InitError> {
    // A two-stage spawn's first stage has joined them already; joining a user namespace one is
    // already in fails.
    if !a.plan.needs_two_stages() {
        a.plan.join_own()?;
    }
    if a.plan.creates(NamespaceKind::Cgroup) {
        // Only now, inside the container's cgroup, so that it becomes the namespace's root.
        namespaces::unshare(libc::CLONE_NEWCGROUP, "create cgroup namespace")?;
    }
    if a.plan.creates(NamespaceKind::Time) {
        // The offsets must be set before any process lives in the namespace; we enter it at execve.
        namespaces::unshare(libc::CLONE_NEWTIME, "create time namespace")?;
        write_time_offsets(a.spec)?;
    }
    Ok(())
}

fn write_time_offsets(spec: &Spec) -> Result<(), InitError> {
    let offsets = match spec.linux() {
        Some(l) if !l.time_offsets.is_empty() => &l.time_offsets,
        _ => return Ok(()),
    };
    let text: String = offsets
        .iter()
        .map(|(clock, o)| format!("{clock} {} {}\n", o.secs, o.nanosecs))
        .collect();
    super::with_dumpable(|| std::fs::write("/proc/self/timens_offsets", text))
        .map_err(|e| other("linux.timeOffsets", e))
}

fn set_names(spec: &Spec) -> Result<(), InitError> {
    if let Some(h) = &spec.hostname {
        // SAFETY: the pointer and length describe `h`.
        let r = unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
        if r != 0 {
            return Err(other("set hostname", std::io::Error::last_os_error()));
        }
    }
    if let Some(d) = &spec.domainname {
        // SAFETY: the pointer and length describe `d`.
        let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if r != 0 {
            return Err(other("set domainname", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn attach_terminal(a: &InitArgs, p: &Process) -> Result<(), InitError> {
    let pty = terminal::open_pty(p.console_size).map_err(|e| other("terminal", e))?;
    if let Some(sock) = a.console {
        terminal::send_master(sock, &pty).map_err(|e| other("console socket", e))?;
        // SAFETY: the console socket is ours to close; nothing else uses it.
        unsafe { libc::close(sock) };
    } else if a.relay_tty {
        a.chan
            .send_fd(&ToParent::Console, pty.master.as_raw_fd())
            .map_err(|e| other("terminal", e))?;
    }
    terminal::become_session_leader(&pty.slave).map_err(|e| other("terminal", e))?;
    Ok(())
}

/// A fresh session keyring keeps the container from reading the host's keys.
fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = std::ffi::CString::new(format!("_ses.{id}")).unwrap_or_default();
    // SAFETY: keyctl reads the name string we pass.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if r < 0 {
        // Kernels without keys, or a user namespace that may not create keyrings: go on without one.
        tracing::debug!("no session keyring: {}", std::io::Error::last_os_error());
    }
}

/// Blocks until `skiff start` opens the fifo's other end, then tells it we are going.
fn wait_for_start(fifo: RawFd) -> Result<(), InitError> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fifo}")).unwrap_or_default();
    // SAFETY: open of a path we built; blocks until a reader arrives.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(other("open exec fifo", std::io::Error::last_os_error()));
    }
    STARTED.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: writing one byte from a static buffer; fd is ours.
    unsafe {
        libc::write(fd, b"0".as_ptr().cast(), 1);
        // `fd` stays open: it is close-on-exec, so `start` sees the fifo's end exactly when the
        // user's program replaces us (or we die), and only then runs the poststart hooks.
        libc::close(fifo);
    }
    Ok(())
}
