//! The container's process: what happens between namespace setup and `execve`.

pub mod init;

use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::security::{self, SecurityError};
use crate::spec::{rlimit_resource, Process, Rlimit, Seccomp};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process.rlimits: {kind} soft={soft} hard={hard}: {source}")]
    Rlimit {
        kind: String,
        soft: u64,
        hard: u64,
        source: io::Error,
    },
    #[error("process.cwd {cwd:?}: {message}")]
    Cwd { cwd: String, message: String },
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("exec {path:?}: {source}")]
    Exec { path: String, source: io::Error },
    #[error("process.args/env: {0}")]
    TooBig(String),
    #[error("{0}: contains a NUL byte")]
    Nul(&'static str),
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// The program to exec, resolved and encoded before we wait for `start`, so that a missing binary is
/// reported by `create` rather than lost after it has returned.
pub struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Installed right before `execve`.
    filter: Option<security::seccomp::Filter>,
    /// The seccomp user-notification descriptor, when the profile has a listener.
    pub listener: Option<std::os::fd::OwnedFd>,
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Applies the process's limits and identity, enters its cwd and resolves its program; compiles the
/// seccomp profile.
pub fn prepare_process(p: &Process, seccomp: Option<&Seccomp>) -> Result<Prepared, ProcessError> {
    if let Some(adj) = p.oom_score_adj {
        set_oom_score_adj(adj);
    }
    set_rlimits(&p.rlimits)?;
    let applied = security::apply(p, seccomp)?;
    enter_cwd(&p.cwd)?;
    check_exec_size(&p.args, &p.env)?;
    let path = resolve(&p.args[0], &p.env)?;
    let cstrings = |v: &[String], what| {
        v.iter()
            .map(|s| CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul(what)))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Prepared {
        path: CString::new(path).map_err(|_| ProcessError::Nul("process.args"))?,
        argv: cstrings(&p.args, "process.args")?,
        envp: cstrings(&p.env, "process.env")?,
        filter: applied.filter,
        listener: applied.listener,
    })
}

/// Replaces the process image; returns only on failure.
pub fn exec_program(p: &Process, prep: &Prepared, preserve_fds: u32) -> ProcessError {
    // SAFETY: umask only sets a mask.
    unsafe { libc::umask(p.user.umask.unwrap_or(0o022) as libc::mode_t) };
    close_inherited_fds(preserve_fds);
    let mut argv: Vec<*const libc::c_char> = prep.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prep.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // The runtime ignores SIGPIPE for itself; the container's programs expect the default, which an
    // ignored disposition would override across execve (`yes | head` would never end).
    // SAFETY: setting a signal's disposition to SIG_DFL involves no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Err(e) = security::install_last(prep.filter.as_ref()) {
        return e.into();
    }
    // SAFETY: path, argv and envp are NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(prep.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    ProcessError::Exec {
        path: prep.path.to_string_lossy().into_owned(),
        source: io::Error::last_os_error(),
    }
}

/// Every descriptor above stdio and the caller's preserved ones closes at exec, whatever leaked in.
pub fn close_inherited_fds(preserve_fds: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let first = 3 + preserve_fds;
    // SAFETY: close_range only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= first as i32)
            .collect();
        for fd in fds {
            // SAFETY: setting FD_CLOEXEC on a descriptor number; a stale one just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Runs `f` with the process dumpable. A non-dumpable process's /proc files belong to the host's root,
/// which a process inside a user namespace cannot open even for itself; during setup nothing else runs
/// in the container, so the short window exposes nothing.
pub fn with_dumpable<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: prctl with integer arguments only.
    let was = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, was.max(0), 0, 0, 0) };
    out
}

/// Raising is always allowed; lowering needs CAP_SYS_RESOURCE, which some hosts withhold even from root.
/// Rather than fail the container, keep the current value and say so.
fn set_oom_score_adj(adj: i32) {
    if with_dumpable(|| std::fs::write("/proc/self/oom_score_adj", adj.to_string())).is_err() {
        let cur = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
        tracing::warn!(
            "process.oomScoreAdj {adj}: not permitted here; clamped to the current {}",
            cur.trim()
        );
    }
}

fn set_rlimits(limits: &[Rlimit]) -> Result<(), ProcessError> {
    for l in limits {
        let Some(res) = rlimit_resource(&l.kind) else {
            continue;
        };
        let rl = libc::rlimit {
            rlim_cur: l.soft,
            rlim_max: l.hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(res as _, &rl) } != 0 {
            return Err(ProcessError::Rlimit {
                kind: l.kind.clone(),
                soft: l.soft,
                hard: l.hard,
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Enters the cwd and proves it lies inside our root: a descriptor to a host directory leaked into the
/// container could otherwise make `/proc/self/fd/N` a way out (runc CVE-2024-21626).
pub fn enter_cwd(cwd: &str) -> Result<(), ProcessError> {
    let err = |message: String| ProcessError::Cwd {
        cwd: cwd.to_owned(),
        message,
    };
    std::env::set_current_dir(cwd).map_err(|e| err(e.to_string()))?;
    let real =
        std::env::current_dir().map_err(|e| err(format!("lies outside the container: {e}")))?;
    if !real.starts_with("/") || real.to_string_lossy().starts_with("(unreachable)") {
        return Err(err("lies outside the container's root".into()));
    }
    Ok(())
}

/// execve refuses arguments and environment larger than a quarter of the stack limit (at most 6 MiB,
/// at least 128 KiB, counting a pointer per string) or any one string over 128 KiB. Checked here, after
/// the container's own rlimits apply, so that `create` reports it instead of the program never running.
fn check_exec_size(args: &[String], env: &[String]) -> Result<(), ProcessError> {
    const MAX_ARG_STRLEN: usize = 128 * 1024;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into our struct.
    unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) };
    let limit = ((rl.rlim_cur / 4).min(6 << 20) as usize).max(128 * 1024);
    let strings = args.iter().chain(env);
    let mut total = 0usize;
    for s in strings {
        if s.len() + 1 > MAX_ARG_STRLEN {
            return Err(ProcessError::TooBig(format!(
                "one argument or variable is {} bytes; the kernel takes at most {MAX_ARG_STRLEN}",
                s.len() + 1
            )));
        }
        total += s.len() + 1 + std::mem::size_of::<usize>();
    }
    if total > limit {
        return Err(ProcessError::TooBig(format!(
            "{total} bytes of arguments and environment exceed the {limit}-byte limit of this container's stack size"
        )));
    }
    Ok(())
}

/// Finds `arg0` the way execvp would, using the container's PATH.
fn resolve(arg0: &str, env: &[String]) -> Result<String, ProcessError> {
    if arg0.contains('/') {
        let p = Path::new(arg0);
        if !p.exists() {
            return Err(ProcessError::Exec {
                path: arg0.to_owned(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        return Ok(arg0.to_owned());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(arg0);
        if is_executable(&cand) {
            return Ok(cand.to_string_lossy().into_owned());
        }
    }
    Err(ProcessError::NotFound(arg0.to_owned()))
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access reads a valid C string.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && p.is_file()
}
