//! `create` and `run`: from a bundle to an init blocked on its exec fifo (and, for `run`, beyond).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::handshake::Handshake;
use super::{destroy, io, release, ContainerError, Runtime};
use crate::cgroups::{self, join::SelfJoin, CgroupManager};
use crate::hooks;
use crate::namespaces::{self, NsPlan};
use crate::process::init::{self, InitArgs};
use crate::spec::{NamespaceKind, Spec};
use crate::state::{self, ContainerState, OciState, StateDir, Status};
use crate::sync::{self, ChildEnd, ToChild, ToParent};
use crate::terminal;

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// The bundle was made for this container; `delete` removes it.
    pub owned_bundle: bool,
}

/// A container whose init is set up and waiting for `start`.
struct Launched {
    dir: StateDir,
    state: ContainerState,
    /// The pty master, when `run` relays the terminal itself.
    tty: Option<OwnedFd>,
}

impl Runtime {
    pub fn create(&self, opts: &CreateOptions) -> Result<(), ContainerError> {
        self.launch(opts, false).map(|_| ())
    }

    /// `create` + `start`; in the foreground, waits for the container and returns its exit status after
    /// deleting it (unless `keep`), as runc does.
    pub fn run(
        &self,
        opts: &CreateOptions,
        detach: bool,
        keep: bool,
    ) -> Result<i32, ContainerError> {
        if !detach {
            // Let the init be reparented to us even when a first stage forks it.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        let launched = self.launch(opts, !detach)?;
        let Launched { dir, state, tty } = launched;
        let started = release(&dir, &state);
        if let Err(e) = started {
            let _ = destroy(dir, &state);
            return Err(e);
        }
        let oci = state.oci(Status::Running);
        if let Err(e) = hooks::run_all("poststart", &state.config.hooks().poststart, &oci) {
            tracing::warn!("{e}");
        }
        if detach {
            return Ok(0);
        }
        // Release the lock while the container runs, so `state`, `kill` and `exec` work meanwhile.
        drop(dir);
        let code = wait_foreground(state.pid, tty);
        if !keep {
            let dir = StateDir::open(&self.root, &opts.id)?;
            destroy(dir, &state)?;
        }
        Ok(code)
    }

    fn launch(&self, opts: &CreateOptions, relay_tty: bool) -> Result<Launched, ContainerError> {
        let bundle =
            std::fs::canonicalize(&opts.bundle).map_err(|source| ContainerError::Bundle {
                path: opts.bundle.clone(),
                source,
            })?;
        let spec = Spec::load(&bundle)?;
        let rootfs = resolve_rootfs(&spec, &bundle)?;
        let terminal = spec.process().map(|p| p.terminal).unwrap_or(false);
        check_console(terminal, opts.console_socket.as_deref(), relay_tty)?;
        let plan = NsPlan::from_spec(&spec)?;
        let console = match &opts.console_socket {
            Some(p) if terminal => Some(
                UnixStream::connect(p).map_err(io(format!("--console-socket {}", p.display())))?,
            ),
            _ => None,
        };
        let dir = StateDir::create(&self.root, &opts.id)?;
        let made = if crate::security::rootless::is_rootless() {
            Ok(crate::security::rootless::no_cgroups(&spec))
        } else {
            cgroups::new_manager(&spec, &opts.id, self.systemd_cgroup)
        };
        let cg = match made {
            Ok(cg) => cg,
            Err(e) => {
                let _ = dir.remove();
                return Err(e.into());
            }
        };
        let mut launch = Launch {
            opts,
            spec: &spec,
            bundle: &bundle,
            rootfs: &rootfs,
            plan: &plan,
            relay_tty,
            dir: &dir,
            cg,
            child: None,
            armed: true,
        };
        let (state, tty) = launch.spawn(console)?;
        launch.armed = false;
        drop(launch);
        Ok(Launched { dir, state, tty })
    }
}

/// One `create` on its way up: what it reads, and what it has made so far. Until it is disarmed,
/// dropping it undoes the latter (kills and reaps the half-started child, removes the cgroup and the
/// state directory), so that every error path cleans up alike. The descriptors of the setup (the
/// channel, the fifo, the console socket) are locals of `spawn` and close with it.
struct Launch<'a> {
    opts: &'a CreateOptions,
    spec: &'a Spec,
    bundle: &'a Path,
    rootfs: &'a Path,
    plan: &'a NsPlan,
    relay_tty: bool,
    dir: &'a StateDir,
    cg: Box<dyn CgroupManager>,
    /// What to kill and reap if setup fails: the first stage, then the init.
    child: Option<i32>,
    armed: bool,
}

impl Drop for Launch<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            // SAFETY: kill and waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        let _ = self.cg.destroy();
        // The caller's `StateDir` keeps the lock until it drops, as `StateDir::remove` does.
        let _ = std::fs::remove_dir_all(&self.dir.path);
    }
}

fn resolve_rootfs(spec: &Spec, bundle: &Path) -> Result<PathBuf, ContainerError> {
    let root = spec
        .root
        .as_ref()
        .map(|r| r.path.as_str())
        .unwrap_or("rootfs");
    let path = bundle.join(root);
    let canon = std::fs::canonicalize(&path).map_err(|source| ContainerError::RootPath {
        path: path.clone(),
        source,
    })?;
    if !canon.is_dir() {
        return Err(ContainerError::RootPath {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        });
    }
    Ok(canon)
}

fn check_console(terminal: bool, socket: Option<&Path>, relay: bool) -> Result<(), ContainerError> {
    match (terminal, socket) {
        (true, None) if !relay => Err(ContainerError::Usage(
            "process.terminal is true: --console-socket is required".into(),
        )),
        (false, Some(_)) => Err(ContainerError::Usage(
            "--console-socket given but process.terminal is false".into(),
        )),
        _ => Ok(()),
    }
}

impl Launch<'_> {
    /// Clones the container's init (through a first stage when namespaces must be made in order), leads
    /// it through the handshake and saves the state once it is ready; returns that state and, when
    /// `run` relays the terminal, the pty master.
    fn spawn(
        &mut self,
        console: Option<UnixStream>,
    ) -> Result<(ContainerState, Option<OwnedFd>), ContainerError> {
        let (spec, plan) = (self.spec, self.plan);
        let fifo_path = self.dir.fifo_path();
        mkfifo(&fifo_path, container_root_owner(spec))?;
        let fifo = open_path(&fifo_path)?;
        self.cg.create()?;
        let (parent_end, child_end) = sync::pair().map_err(io("socketpair"))?;
        let two_stage = plan.needs_two_stages();
        // A first stage is put in the cgroups by us, once it has its user namespace mapped.
        let self_join = if two_stage {
            None
        } else {
            self.cg.self_join()?
        };
        let placed_by_us = self_join.is_none();
        let own_pidns = open_path(Path::new("/proc/self/ns/pid_for_children")).ok();
        if !two_stage {
            plan.join_for_children()?;
        }
        let flags = if two_stage { 0 } else { plan.clone_flags() };
        // SAFETY: getpid has no arguments.
        let me = unsafe { libc::getpid() };
        let pid = namespaces::clone3(flags, self_join.as_ref().and_then(SelfJoin::clone_into))?;
        if pid == 0 {
            drop(parent_end);
            // SAFETY: closing our copy of the lock descriptor; the parent's copy keeps the lock.
            unsafe { libc::close(self.dir.lock_fd()) };
            let args = InitArgs {
                spec,
                id: &self.opts.id,
                rootfs: self.rootfs,
                bundle: self.bundle,
                chan: &child_end,
                plan,
                fifo: fifo.as_raw_fd(),
                console: console.as_ref().map(|c| c.as_raw_fd()),
                relay_tty: self.relay_tty,
                preserve_fds: self.opts.preserve_fds,
                no_new_keyring: self.opts.no_new_keyring,
                parent: me,
                self_join,
            };
            if two_stage {
                first_stage(args);
            }
            init::run(args);
        }
        self.child = Some(pid);
        if let Some(ns) = own_pidns {
            // Hooks and later children of ours belong in our own pid namespace.
            let _ = namespaces::setns(ns.as_raw_fd(), NamespaceKind::Pid);
        }
        drop(child_end);
        drop(console);
        let chan = Handshake::new(parent_end);
        let init_pid = if two_stage {
            let p = self.drive_first_stage(&chan, pid)?;
            self.child = Some(p);
            p
        } else {
            if placed_by_us {
                self.cg.add_process(pid)?;
            }
            pid
        };
        cgroups::apply_spec(self.cg.as_mut(), spec)?;
        send_idmapped_trees(&chan, spec, self.bundle)?;
        chan.go()?;
        let mut st = self.state(init_pid);
        chan.mounted()?;
        let small = self.run_create_hooks(&st)?;
        chan.hooks_done(small.clone())?;
        if plan.joins_pid_late() {
            st.pid = late_init_pid(&chan, init_pid)?;
            self.child = Some(st.pid);
            // The process that runs the container learns its own pid with the state it hands to hooks.
            chan.hooks_done(OciState {
                pid: st.pid,
                ..small
            })?;
        }
        let terminal = spec.process().map(|p| p.terminal).unwrap_or(false);
        let tty = if terminal && self.relay_tty {
            Some(chan.console()?)
        } else {
            None
        };
        chan.ready(|fd| to_seccomp_listener(spec, &st, &fd))?;
        st.pid_start_time = state::process_start_time(st.pid).unwrap_or(st.pid_start_time);
        self.dir.save(&st)?;
        if let Some(p) = &self.opts.pid_file {
            state::write_pid_file(p, st.pid)?;
        }
        Ok((st, tty))
    }

    /// The state of the container whose init is `pid`, as it will be saved.
    fn state(&self, pid: i32) -> ContainerState {
        ContainerState {
            oci_version: crate::spec::OCI_VERSION.into(),
            id: self.opts.id.clone(),
            pid,
            pid_start_time: state::process_start_time(pid).unwrap_or(0),
            bundle: self.bundle.to_owned(),
            rootfs: self.rootfs.to_owned(),
            created: state::now_rfc3339(),
            owner: String::new(),
            annotations: self.spec.annotations.clone(),
            cgroup: self.cg.state(),
            config: self.spec.clone(),
            owned_bundle: self.opts.owned_bundle,
        }
    }

    /// Runs the prestart and createRuntime hooks; returns the state the init was told they are done
    /// with (without annotations: the init has them in its copy of the spec, and they can be larger
    /// than a datagram).
    fn run_create_hooks(&self, st: &ContainerState) -> Result<OciState, ContainerError> {
        let creating = st.oci(Status::Creating);
        let h = self.spec.hooks();
        hooks::run_all("prestart", &h.prestart, &creating)?;
        hooks::run_all("createRuntime", &h.create_runtime, &creating)?;
        let small = OciState {
            annotations: Default::default(),
            ..creating
        };
        Ok(small)
    }

    /// Parent side of a two-stage spawn: map the new user namespace, place the stage in the cgroup,
    /// learn the init's pid.
    fn drive_first_stage(&mut self, chan: &Handshake, stage: i32) -> Result<i32, ContainerError> {
        if self.plan.creates(NamespaceKind::User) {
            chan.user_ns()?;
            let linux = self.spec.linux().cloned().unwrap_or_default();
            namespaces::write_id_maps(stage, &linux.uid_mappings, &linux.gid_mappings)?;
        }
        self.cg.add_process(stage)?;
        chan.go()?;
        let init_pid = chan.init_pid()?;
        // SAFETY: reaping our own child, the first stage, which exits once it has forked the init.
        unsafe { libc::waitpid(stage, std::ptr::null_mut(), 0) };
        Ok(init_pid)
    }
}

/// The init that built the root outside the container's pid namespace has forked the process that
/// runs the container into it (as our child) and exits: learn that process's pid and reap the stage.
fn late_init_pid(chan: &Handshake, stage: i32) -> Result<i32, ContainerError> {
    let pid = chan.init_pid()?;
    // SAFETY: reaping our own child, which exits once it has forked the init.
    unsafe { libc::waitpid(stage, std::ptr::null_mut(), 0) };
    Ok(pid)
}

/// Idmapped mounts are made here, on the host side, and attached by the init.
fn send_idmapped_trees(chan: &Handshake, spec: &Spec, bundle: &Path) -> Result<(), ContainerError> {
    let trees = crate::security::idmap::trees(spec, bundle)
        .map_err(|e| ContainerError::Init(e.to_string()))?;
    for (i, fd) in &trees {
        chan.idmapped_tree(*i, fd.as_raw_fd())?;
    }
    Ok(())
}

/// Hands the init's seccomp user-notification descriptor to `linux.seccomp.listenerPath`.
fn to_seccomp_listener(
    spec: &Spec,
    st: &ContainerState,
    fd: &OwnedFd,
) -> Result<(), ContainerError> {
    let sc = spec.linux().and_then(|l| l.seccomp.as_ref());
    let path = sc.and_then(|s| s.listener_path.as_deref()).unwrap_or("");
    let meta = sc
        .and_then(|s| s.listener_metadata.as_deref())
        .unwrap_or("");
    crate::security::seccomp::send_to_listener(path, meta, st.pid, &st.oci(Status::Creating), fd)
        .map_err(|e| ContainerError::Init(e.to_string()))
}

/// Child side of a two-stage spawn: join namespaces given by path, create the user namespace and wait
/// for its maps, create the rest, then fork the init into them.
fn first_stage(args: InitArgs) -> ! {
    let fail = |chan: &ChildEnd, msg: String| -> ! {
        let _ = chan.send(&ToParent::Error(msg));
        // SAFETY: _exit ends the process without running destructors of the parent's copy.
        unsafe { libc::_exit(1) }
    };
    let chan = args.chan;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // The pid namespace is joined for our children only, so this stage stays in ours and the pid it
    // reports for the init is one in our namespace.
    if let Err(e) = args
        .plan
        .join_own()
        .and_then(|()| args.plan.join_for_children())
    {
        fail(chan, e.to_string());
    }
    if args.plan.creates(NamespaceKind::User) {
        if let Err(e) = namespaces::unshare(libc::CLONE_NEWUSER, "create user namespace") {
            fail(chan, e.to_string());
        }
        // The maps are written by the parent; the child's dumpable flag gates access to /proc/<pid>.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        let _ = chan.send(&ToParent::UserNs);
    }
    match chan.recv() {
        Ok(Some(ToChild::Go)) => {}
        _ => fail(chan, "runtime went away during setup".into()),
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Become root of the new namespace, so the rest is created with its full rights.
    // SAFETY: setresgid/setresuid take ids by value.
    unsafe {
        libc::setresgid(0, 0, 0);
        libc::setresuid(0, 0, 0);
    }
    let flags = args
        .plan
        .new
        .iter()
        .filter(|k| {
            !matches!(
                k,
                NamespaceKind::User | NamespaceKind::Cgroup | NamespaceKind::Time
            )
        })
        .fold(0, |acc, k| acc | k.clone_flag());
    if let Err(e) = namespaces::unshare(flags, "create namespaces") {
        fail(chan, e.to_string());
    }
    // The init is forked as our parent's child, which waits for it.
    match namespaces::clone_sibling() {
        Ok(0) => init::run(InitArgs { parent: 0, ..args }),
        Ok(pid) => {
            // The init's first message must be from it, not us: we only report its pid.
            let _ = chan.send(&ToParent::InitPid(pid));
            // SAFETY: _exit ends the first stage; the init lives on.
            unsafe { libc::_exit(0) }
        }
        Err(e) => fail(chan, e.to_string()),
    }
}

/// The host ids of the container's root, which must be able to open the exec fifo from inside a user
/// namespace.
fn container_root_owner(spec: &Spec) -> (u32, u32) {
    let Some(l) = spec.linux() else {
        return (0, 0);
    };
    (
        namespaces::map_to_host(&l.uid_mappings, 0).unwrap_or(0),
        namespaces::map_to_host(&l.gid_mappings, 0).unwrap_or(0),
    )
}

fn mkfifo(path: &Path, (uid, gid): (u32, u32)) -> Result<(), ContainerError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let fail =
        |what: &str| io(format!("{what} {}", path.display()))(std::io::Error::last_os_error());
    // SAFETY: mkfifo, chmod and chown read a valid path.
    unsafe {
        if libc::mkfifo(c.as_ptr(), 0o622) != 0 {
            return Err(fail("mkfifo"));
        }
        // The umask must not take the write bit the container's user needs.
        if libc::chmod(c.as_ptr(), 0o622) != 0 {
            return Err(fail("chmod"));
        }
        if (uid, gid) != (0, 0) && libc::chown(c.as_ptr(), uid, gid) != 0 {
            return Err(fail("chown"));
        }
    }
    Ok(())
}

fn open_path(path: &Path) -> Result<OwnedFd, ContainerError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: open reads a valid path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io(format!("open {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits for the container's init, forwarding the signals a user sends to `skiff run` and relaying its
/// terminal; returns its exit status the way a shell reports it.
fn wait_foreground(pid: i32, tty: Option<OwnedFd>) -> i32 {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: installing an async-signal-safe handler.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    if let Some(master) = &tty {
        terminal::attach_stdio(master);
    }
    wait_exit(pid)
}

/// Reaps children until `pid` exits, returning its status as a shell would report it.
pub(crate) fn wait_exit(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return 255;
        }
        if r != pid {
            continue;
        }
        if libc::WIFEXITED(status) {
            return libc::WEXITSTATUS(status);
        }
        if libc::WIFSIGNALED(status) {
            return 128 + libc::WTERMSIG(status);
        }
    }
}
