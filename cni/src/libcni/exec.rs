//! Finding a plugin binary in CNI_PATH and executing it per the spec.

use crate::spec::env::format_args;
use crate::spec::{CniError, Command, ErrorCode};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

/// Everything a plugin execution needs besides its stdin.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub command: Option<Command>,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<String>,
}

/// A plugin type is a bare name; anything path-like is refused so a config
/// cannot make the runtime execute arbitrary files.
pub fn find_plugin(plugin_type: &str, dirs: &[String]) -> Result<PathBuf, CniError> {
    let bad = plugin_type.is_empty() || plugin_type.contains('/') || plugin_type.starts_with('.');
    if bad {
        return Err(CniError::config(format!(
            "invalid plugin type {plugin_type:?}"
        )));
    }
    for dir in dirs {
        let p = Path::new(dir).join(plugin_type);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(CniError::new(
        ErrorCode::Internal,
        format!("failed to find plugin {plugin_type:?} in path {dirs:?}"),
    ))
}

/// Runs the plugin, returning its stdout on success and its error object
/// (or a synthesised one) on failure.
pub fn run_plugin(plugin: &Path, inv: &Invocation, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let cmd = inv.command.map_or("", Command::as_str);
    let mut process = Process::new(plugin);
    die_with_caller(&mut process);
    let mut child = process
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", format_args(&inv.args))
        .env("CNI_PATH", inv.path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("failed to execute plugin {}", plugin.display()), e))?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin (VERSION); EPIPE is fine.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("plugin {} did not finish", plugin.display()), e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(plugin_error(plugin, &out.stdout, &out.stderr))
}

/// A plugin does not outlive the runtime that ran it: otherwise a runtime
/// killed mid-ADD restarts, garbage-collects, and the orphaned ADD reserves
/// its address afterwards, for a sandbox nobody knows. Killed with the runtime,
/// what it did half-way is for the next GC. The signal follows the calling
/// thread, which waits for the plugin, so it fires only when the caller dies.
fn die_with_caller(process: &mut Process) {
    // SAFETY: getpid has no preconditions.
    let caller = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // prctl and getppid, which are async-signal-safe and allocate nothing.
    unsafe {
        process.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The caller may have died before the prctl took effect.
            if libc::getppid() != caller {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn plugin_error(plugin: &Path, stdout: &[u8], stderr: &[u8]) -> CniError {
    if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
        if e.code != 0 || !e.msg.is_empty() {
            return e;
        }
    }
    CniError::new(
        ErrorCode::Internal,
        format!("plugin {} failed without an error object", plugin.display()),
    )
    .with_details(
        String::from_utf8_lossy(stderr)
            .chars()
            .take(4096)
            .collect::<String>(),
    )
}
