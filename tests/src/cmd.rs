//! Running commands with a deadline, output captured to files.
//!
//! Output goes to files rather than pipes: a container started by `create` or
//! `run --detach` inherits the runtime's stdout and would keep a pipe open forever.

use std::fmt;
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Deadline for one runtime command, so a hang fails the test instead of blocking CI:
/// 30 s, or `SKIFF_TEST_TIMEOUT` seconds.
pub fn default_timeout() -> Duration {
    let secs = std::env::var("SKIFF_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// What a finished (or killed) command did.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// stdout and stderr together, for substring checks.
    pub fn all_text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Re-reads stdout: a detached container keeps writing to the file after the command exits.
    pub fn stdout_now(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Re-reads stderr (see [`Output::stdout_now`]).
    pub fn stderr_now(&self) -> String {
        read_lossy(&self.stderr_path)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.timed_out {
            "TIMED OUT (killed)".to_string()
        } else if let Some(c) = self.code {
            format!("exit code {c}")
        } else {
            format!("killed by signal {}", self.signal.unwrap_or(0))
        };
        write!(
            f,
            "\n  command: {}\n  status: {status}\n  stdout: {}\n  stderr: {}\n",
            self.cmdline,
            indent(&self.stdout_now()),
            indent(&self.stderr_now())
        )
    }
}

fn indent(s: &str) -> String {
    if s.trim().is_empty() {
        return "<empty>".into();
    }
    let s = if s.len() > 8000 { &s[..8000] } else { s };
    format!("\n    | {}", s.trim_end().replace('\n', "\n    | "))
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs `cmd` with stdin from /dev/null and output captured in files under `out_dir`.
/// After `timeout` the whole process group is killed and the output marked timed out.
pub fn run(cmd: &mut Command, out_dir: &Path, timeout: Duration) -> Output {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let stdout_path = out_dir.join(format!("cmd-{n}.out"));
    let stderr_path = out_dir.join(format!("cmd-{n}.err"));
    let cmdline = describe(cmd);
    let so = fs::File::create(&stdout_path).expect("create stdout capture file");
    let se = fs::File::create(&stderr_path).expect("create stderr capture file");
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(out_dir);
    }
    cmd.stdin(Stdio::null())
        .stdout(so)
        .stderr(se)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // SAFETY: kill on our own child's process group; the pid is still ours (not reaped).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            break child.wait().expect("wait for killed child");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        cmdline,
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: read_lossy(&stdout_path),
        stderr: read_lossy(&stderr_path),
        stdout_path,
        stderr_path,
    }
}

/// A shell-like rendering of a command for failure messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '$', '\n']) {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a host helper command (ip, unshare, ...) and panics with its output on failure.
pub fn host(out_dir: &Path, prog: &str, args: &[&str]) -> Output {
    let out = run(Command::new(prog).args(args), out_dir, default_timeout());
    assert!(out.success(), "host command failed:{out}");
    out
}
