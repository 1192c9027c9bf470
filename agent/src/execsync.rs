//! `ExecSync`'s process: `skiff-monitor exec` runs a command in a container through the runtime
//! library with its output on pipes, so skiffd's threads never fork.
//!
//! skiffd starts `skiff-monitor exec --root R --id ID --timeout S --result FILE -- CMD...` with its
//! stdout and stderr on pipes that the exec'd process inherits. The helper waits for the process
//! (killing it at the timeout) and writes the outcome to FILE; skiffd answers with at most
//! [`MAX_OUTPUT`] bytes of output, says at the end of stderr what it cut, and holds at most
//! [`MAX_HELD`] bytes for all execs together. Streaming exec (`cri::streaming`) runs the same
//! helper with its stdin on a pipe too, or with `--console-socket PATH` to get the process a TTY
//! whose master is sent to PATH.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::cri::error::{full_id, invalid, not_found};
use crate::cri::{blocking, Daemon};

/// Output kept in all: the response must fit in one CRI message, which kubelet (and skiffd)
/// cap at 16 MiB; the rest is read and dropped.
pub const MAX_OUTPUT: usize = (16 << 20) - (16 << 10);

/// Output held at once by all `ExecSync` calls together; past it, output is dropped (and the
/// response says so) rather than skiffd's memory growing with the number of concurrent execs.
const MAX_HELD: usize = 128 << 20;

/// Bytes of output held now, against [`MAX_HELD`].
static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Tells concurrent execs' result files apart.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long output may keep arriving after the process ended (from children it left behind).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What the helper reports in its result file.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Exited(i32),
    TimedOut,
    Failed(String),
}

/// `ExecSync`: the command's exit code and (truncated) output.
pub async fn run(
    d: &Arc<Daemon>,
    mut r: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    r.container_id = full_id(&d.containers, "container", &r.container_id)?;
    if r.cmd.is_empty() || r.cmd[0].is_empty() {
        return Err(invalid("cmd: no command given"));
    }
    if r.timeout < 0 {
        return Err(invalid(format!(
            "timeout {}: must not be negative",
            r.timeout
        )));
    }
    if d.containers.get(&r.container_id).is_none() {
        return Err(not_found("container", &r.container_id));
    }
    let running = d
        .runtime
        .state(&r.container_id)
        .is_ok_and(|s| s.status == skiff_runtime::state::Status::Running);
    if !running {
        return Err(Status::failed_precondition(format!(
            "container {:?} is not running",
            r.container_id
        )));
    }
    let job = Job {
        monitor: d.config.monitor_path(),
        root: d.config.runtime_root(),
        result: result_path(&d.config.run_dir, &r.container_id),
        id: r.container_id,
        timeout: r.timeout,
        cmd: r.cmd,
    };
    blocking(move || job.run()).await
}

/// A fresh result file for one exec in container `id`.
pub(crate) fn result_path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join("exec").join(format!(
        "{id}-{}-{}.json",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

struct Job {
    monitor: PathBuf,
    root: PathBuf,
    result: PathBuf,
    id: String,
    timeout: i64,
    cmd: Vec<String>,
}

impl Job {
    fn run(self) -> Result<cri::ExecSyncResponse, Status> {
        if let Some(dir) = self.result.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Status::internal(format!("create {}: {e}", dir.display())))?;
        }
        let mut child = Command::new(&self.monitor)
            .arg("exec")
            .arg("--root")
            .arg(&self.root)
            .args(["--id", &self.id, "--timeout", &self.timeout.to_string()])
            .arg("--result")
            .arg(&self.result)
            .arg("--")
            .args(&self.cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Status::internal(format!("start {}: {e}", self.monitor.display())))?;
        let out = Capture::start(child.stdout.take());
        let err = Capture::start(child.stderr.take());
        let status = child
            .wait()
            .map_err(|e| Status::internal(format!("wait for exec helper: {e}")))?;
        let outcome = read_outcome(&self.result);
        let _ = std::fs::remove_file(&self.result);
        let (stdout, stderr) = fit(out.finish(), err.finish());
        match outcome {
            Some(Outcome::Exited(code)) => Ok(cri::ExecSyncResponse {
                stdout,
                stderr,
                exit_code: code,
            }),
            Some(Outcome::TimedOut) => Err(Status::deadline_exceeded(format!(
                "command {:?} timed out after {}s",
                crate::cri::error::truncate(&self.cmd.join(" ")),
                self.timeout
            ))),
            Some(Outcome::Failed(e)) => Err(Status::internal(format!("exec in {}: {e}", self.id))),
            None => Err(Status::internal(format!(
                "exec helper ended ({status}) without a result: {}",
                String::from_utf8_lossy(&stderr)
            ))),
        }
    }
}

/// Both streams within [`MAX_OUTPUT`]: stderr keeps at least half of it when it has that much.
/// Whatever is cut is said at the end of stderr: output is never dropped silently.
fn fit(out: Output, err: Output) -> (Vec<u8>, Vec<u8>) {
    let keep_err = err.data.len().min(MAX_OUTPUT / 2);
    let (out_seen, err_seen) = (out.seen, err.seen);
    let stdout = out.into_data(MAX_OUTPUT - keep_err);
    let mut stderr = err.into_data(MAX_OUTPUT - stdout.len());
    let cut = |seen: u64, kept: usize| (seen > kept as u64).then_some((seen, kept));
    let (cut_out, cut_err) = (cut(out_seen, stdout.len()), cut(err_seen, stderr.len()));
    if cut_out.is_some() || cut_err.is_some() {
        let part = |name: &str, c: Option<(u64, usize)>| {
            c.map(|(seen, kept)| format!(" {name}: {kept} of {seen} bytes kept;"))
                .unwrap_or_default()
        };
        let note = format!(
            "\n[skiffd: exec output truncated (an ExecSync response holds {MAX_OUTPUT} bytes at \
             most);{}{} a streaming exec gives all of it]\n",
            part("stdout", cut_out),
            part("stderr", cut_err),
        );
        stderr.extend_from_slice(note.as_bytes());
    }
    (stdout, stderr)
}

pub(crate) fn read_outcome(path: &Path) -> Option<Outcome> {
    let data = std::fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

/// What one stream produced: the bytes kept (at most [`MAX_OUTPUT`], counted in [`HELD`] until
/// dropped) and how many came.
#[derive(Default)]
struct Output {
    data: Vec<u8>,
    seen: u64,
}

impl Output {
    /// Keeps what fits under both limits; counts everything.
    fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        let want = bytes.len().min(MAX_OUTPUT - self.data.len());
        let take = reserve_held(want);
        if take == 0 {
            return;
        }
        if self.data.capacity() < self.data.len() + take {
            // Grow by doubling but never past the limit: a full stream holds MAX_OUTPUT, not twice it.
            let target = (self.data.capacity() * 2)
                .max(self.data.len() + take)
                .min(MAX_OUTPUT);
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend_from_slice(&bytes[..take]);
    }

    /// The first `keep` bytes, no longer counted as held: they are the response now.
    fn into_data(mut self, keep: usize) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.data);
        HELD.fetch_sub(data.len(), std::sync::atomic::Ordering::Relaxed);
        data.truncate(keep);
        data
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        HELD.fetch_sub(self.data.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Takes up to `want` bytes of [`MAX_HELD`]; returns how many it got.
fn reserve_held(want: usize) -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let mut got = 0;
    let _ = HELD.fetch_update(Relaxed, Relaxed, |held| {
        got = want.min(MAX_HELD.saturating_sub(held));
        Some(held + got)
    });
    got
}

/// One output pipe, read on its own thread up to [`MAX_OUTPUT`] bytes.
struct Capture {
    buf: Arc<Mutex<Output>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Capture {
        let buf = Arc::new(Mutex::new(Output::default()));
        let (tx, done) = std::sync::mpsc::channel();
        if let Some(pipe) = pipe {
            let b = buf.clone();
            std::thread::spawn(move || {
                read_limited(pipe, &b);
                let _ = tx.send(());
            });
        }
        Capture { buf, done }
    }

    /// What was read; a pipe still held open by a left-behind child is given up on after a grace.
    fn finish(self) -> Output {
        let _ = self.done.recv_timeout(DRAIN_GRACE);
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *b)
    }
}

fn read_limited(mut pipe: impl Read, buf: &Mutex<Output>) {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The helper's arguments.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    root: PathBuf,
    id: String,
    timeout: u64,
    result: PathBuf,
    /// With a TTY: where the pty master is sent (streaming exec).
    console_socket: Option<PathBuf>,
    /// With a TTY: its size from the start, as (height, width).
    console_size: Option<(u16, u16)>,
    cmd: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut root, mut id, mut timeout, mut result) = (None, None, 0u64, None);
    let (mut console_socket, mut console_size) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--root" => root = Some(PathBuf::from(value()?)),
            "--id" => id = Some(value()?),
            "--timeout" => {
                let v = value()?;
                timeout = v.parse().map_err(|_| format!("--timeout {v:?}"))?
            }
            "--result" => result = Some(PathBuf::from(value()?)),
            "--console-socket" => console_socket = Some(PathBuf::from(value()?)),
            "--console-size" => {
                let v = value()?;
                console_size = Some(parse_size(&v).ok_or(format!("--console-size {v:?}"))?);
            }
            "--" => break,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let cmd: Vec<String> = it.cloned().collect();
    if cmd.is_empty() {
        return Err("no command after --".into());
    }
    Ok(Args {
        root: root.ok_or("--root is required")?,
        id: id.ok_or("--id is required")?,
        timeout,
        result: result.ok_or("--result is required")?,
        console_socket,
        console_size,
        cmd,
    })
}

/// `ROWSxCOLS`, both non-zero.
fn parse_size(v: &str) -> Option<(u16, u16)> {
    let (rows, cols) = v.split_once('x')?;
    let size = (rows.parse().ok()?, cols.parse().ok()?);
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// `skiff-monitor exec ...`
pub fn main(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skiff-monitor exec: {e}");
            return 2;
        }
    };
    let outcome = exec(&args).unwrap_or_else(Outcome::Failed);
    let data = serde_json::to_vec(&outcome).unwrap_or_default();
    if let Err(e) = skiff_runtime::state::write_atomic(&args.result, &data, 0o600) {
        eprintln!("skiff-monitor exec: write {}: {e}", args.result.display());
        return 1;
    }
    0
}

/// Starts the command with the container's own process settings (user, environment, working
/// directory, capabilities, LSM labels, no_new_privs) and waits for it.
fn exec(args: &Args) -> Result<Outcome, String> {
    use skiff_runtime::container::{ExecOptions, Runtime};
    let rt = Runtime::new(&args.root);
    let mut process = rt.exec_base(&args.id).map_err(|e| e.to_string())?;
    process.args = args.cmd.clone();
    process.terminal = args.console_socket.is_some();
    process.console_size = args
        .console_size
        .filter(|_| process.terminal)
        .map(|(height, width)| skiff_runtime::spec::ConsoleSize { height, width });
    process.command_line = None;
    let pid_file = args.result.with_extension("pid");
    let opts = ExecOptions {
        process,
        console_socket: args.console_socket.clone(),
        pid_file: Some(pid_file.clone()),
        detach: true,
        preserve_fds: 0,
    };
    // Rust ignores SIGPIPE and an ignored signal stays ignored across exec: the command must get
    // it as usual (`yes | head` ends only through it).
    // SAFETY: setting a standard disposition; this helper has no handler of its own for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    rt.exec(&args.id, &opts).map_err(|e| e.to_string())?;
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or("the exec'd process's pid was not recorded")?;
    let _ = std::fs::remove_file(&pid_file);
    Ok(wait(pid, args.timeout))
}

/// Waits for our child `pid`; at the timeout (0: none) kills it.
fn wait(pid: i32, timeout: u64) -> Outcome {
    let deadline = (timeout > 0).then(|| std::time::Instant::now() + Duration::from_secs(timeout));
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG; status is a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Outcome::Exited(exit_code(status));
        }
        if r < 0 {
            return Outcome::Failed(format!(
                "wait for {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            // SAFETY: kill and reap our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell-style exit code: the status, or 128 + the signal that ended it.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_helper_arguments() {
        let a = parse_args(&s(&[
            "--root",
            "/r",
            "--id",
            "c1",
            "--timeout",
            "5",
            "--result",
            "/x.json",
            "--",
            "sh",
            "-c",
            "echo --id",
        ]))
        .unwrap();
        assert_eq!(a.root, PathBuf::from("/r"));
        assert_eq!(a.id, "c1");
        assert_eq!(a.timeout, 5);
        assert_eq!(a.cmd, s(&["sh", "-c", "echo --id"]));
        assert_eq!(a.console_socket, None);
        let a = parse_args(&s(&[
            "--root",
            "/r",
            "--id",
            "c1",
            "--result",
            "/x.json",
            "--console-socket",
            "/c.sock",
            "--",
            "sh",
        ]))
        .unwrap();
        assert_eq!(a.console_socket, Some(PathBuf::from("/c.sock")));
        let sized = [
            "--root",
            "/r",
            "--id",
            "c",
            "--result",
            "/x",
            "--console-size",
        ];
        let a = parse_args(&s(&[&sized[..], &["37x111", "--", "sh"]].concat())).unwrap();
        assert_eq!(a.console_size, Some((37, 111)));
        for bad in ["0x80", "37", "37x", "x80", "-1x80", "37x70000"] {
            assert!(parse_args(&s(&[&sized[..], &[bad, "--", "sh"]].concat())).is_err());
        }
        assert!(parse_args(&s(&["--root", "/r", "--id", "c", "--result", "/x"])).is_err());
        assert!(parse_args(&s(&["--id"])).is_err());
        assert!(parse_args(&s(&["--timeout", "-1"])).is_err());
        assert!(parse_args(&s(&["--bogus"])).is_err());
    }

    /// The tests that fill the shared [`HELD`] budget run one at a time.
    static HELD_BY_TESTS: Mutex<()> = Mutex::new(());

    fn output(data: &[u8]) -> Output {
        let mut o = Output::default();
        o.push(data);
        o
    }

    #[test]
    fn output_is_truncated_at_the_limit_and_says_so() {
        let _g = HELD_BY_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let data = vec![b'x'; MAX_OUTPUT + 12345];
        let buf = Mutex::new(Output::default());
        read_limited(&data[..], &buf);
        let o = buf.into_inner().unwrap();
        assert_eq!(o.data.len(), MAX_OUTPUT);
        assert_eq!(o.data.capacity(), MAX_OUTPUT);
        assert_eq!(o.seen, data.len() as u64);
        let big = || output(&vec![b'x'; MAX_OUTPUT]);
        let (o, e) = fit(big(), big());
        assert_eq!(o.len(), MAX_OUTPUT / 2);
        let note = String::from_utf8_lossy(&e[MAX_OUTPUT / 2..]).into_owned();
        assert!(
            note.contains("truncated") && note.contains("stdout: 8380416 of"),
            "{note}"
        );
        let (o, e) = fit(big(), output(b"err"));
        assert_eq!(o.len(), MAX_OUTPUT - 3);
        assert!(e.starts_with(b"err\n[skiffd: exec output truncated"));
        let (o, e) = fit(output(b"out"), big());
        assert_eq!((o.len(), e.len() > MAX_OUTPUT - 3), (3, true));
        assert!(o.len() + e.len() < 16 << 20);
        let (o, e) = fit(output(b"out"), output(b"err"));
        assert_eq!((&o[..], &e[..]), (&b"out"[..], &b"err"[..]));
    }

    #[test]
    fn all_execs_together_hold_at_most_max_held() {
        let _g = HELD_BY_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let held: Vec<Output> = (0..MAX_HELD / MAX_OUTPUT + 2)
            .map(|_| output(&vec![b'y'; MAX_OUTPUT]))
            .collect();
        let kept: usize = held.iter().map(|o| o.data.len()).sum();
        assert_eq!(kept, MAX_HELD);
        assert!(held.iter().all(|o| o.seen == MAX_OUTPUT as u64));
        let (o, e) = fit(output(b"late"), Output::default());
        assert!(o.is_empty() && String::from_utf8_lossy(&e).contains("stdout: 0 of 4"));
        drop(held);
        assert_eq!(HELD.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    // `wait` reaps each child through waitpid.
    #[allow(clippy::zombie_processes)]
    fn helper_timeout_kills_and_reports() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let t = std::time::Instant::now();
        assert_eq!(wait(child.id() as i32, 1), Outcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(20));
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        assert_eq!(wait(child.id() as i32, 0), Outcome::Exited(7));
        let child = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(wait(child.id() as i32, 0), Outcome::Exited(137));
    }
}
