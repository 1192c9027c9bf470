//! `ExecSync`: a command run to its end in a container by `skiff-monitor exec`, its exit code and
//! output answered in one message.
//!
//! skiffd starts the helper with its stdout and stderr on pipes that the exec'd process inherits
//! and answers with at most [`MAX_OUTPUT`] bytes of output, says at the end of stderr what it cut,
//! and holds at most [`MAX_HELD`] bytes for all execs together. Streaming exec (`cri::streaming`)
//! runs the same helper with its stdin on a pipe too, or with a console socket to get the process
//! a TTY whose master is sent there.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_api::v1 as cri;
use tonic::Status;

use crate::cri::error::{full_id, invalid, not_found};
use crate::cri::{blocking, Daemon};
use crate::monitor::protocol::{ExecArgs, ExecOutcome};

/// Output kept in all: the response must fit in one CRI message, which kubelet (and skiffd)
/// cap at 16 MiB; the rest is read and dropped.
pub const MAX_OUTPUT: usize = (16 << 20) - (16 << 10);

/// Output held at once by all `ExecSync` calls together; past it, output is dropped (and the
/// response says so) rather than skiffd's memory growing with the number of concurrent execs.
const MAX_HELD: usize = 128 << 20;

/// The output all `ExecSync` calls of one daemon hold now, against [`MAX_HELD`]; the daemon owns it.
#[derive(Debug, Default)]
pub struct OutputBudget {
    held: std::sync::atomic::AtomicUsize,
}

impl OutputBudget {
    /// Takes up to `want` bytes of [`MAX_HELD`]; returns how many it got.
    fn reserve(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let mut got = 0;
        let _ = self.held.fetch_update(Relaxed, Relaxed, |held| {
            got = want.min(MAX_HELD.saturating_sub(held));
            Some(held + got)
        });
        got
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Tells concurrent execs' result files apart.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long output may keep arriving after the process ended (from children it left behind).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

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
        .oci
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
        // Not negative: checked above.
        timeout: r.timeout.unsigned_abs(),
        cmd: r.cmd,
        budget: d.exec_output.clone(),
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
    timeout: u64,
    cmd: Vec<String>,
    budget: Arc<OutputBudget>,
}

impl Job {
    fn run(self) -> Result<cri::ExecSyncResponse, Status> {
        if let Some(dir) = self.result.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Status::internal(format!("create {}: {e}", dir.display())))?;
        }
        let args = ExecArgs {
            root: self.root.clone(),
            id: self.id.clone(),
            timeout: self.timeout,
            result: self.result.clone(),
            console_socket: None,
            console_size: None,
            cmd: self.cmd.clone(),
        };
        let mut child = Command::new(&self.monitor)
            .arg("exec")
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Status::internal(format!("start {}: {e}", self.monitor.display())))?;
        let out = Capture::start(child.stdout.take(), &self.budget);
        let err = Capture::start(child.stderr.take(), &self.budget);
        let status = child
            .wait()
            .map_err(|e| Status::internal(format!("wait for exec helper: {e}")))?;
        let outcome = ExecOutcome::read(&self.result);
        let _ = std::fs::remove_file(&self.result);
        let (stdout, stderr) = fit(out.finish(), err.finish());
        match outcome {
            Some(ExecOutcome::Exited(code)) => Ok(cri::ExecSyncResponse {
                stdout,
                stderr,
                exit_code: code,
            }),
            Some(ExecOutcome::TimedOut) => Err(Status::deadline_exceeded(format!(
                "command {:?} timed out after {}s",
                crate::cri::error::truncate(&self.cmd.join(" ")),
                self.timeout
            ))),
            Some(ExecOutcome::Failed(e)) => {
                Err(Status::internal(format!("exec in {}: {e}", self.id)))
            }
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

/// What one stream produced: the bytes kept (at most [`MAX_OUTPUT`], counted in the daemon's
/// [`OutputBudget`] until dropped) and how many came.
struct Output {
    data: Vec<u8>,
    seen: u64,
    budget: Arc<OutputBudget>,
}

impl Output {
    fn new(budget: &Arc<OutputBudget>) -> Output {
        Output {
            data: Vec::new(),
            seen: 0,
            budget: budget.clone(),
        }
    }

    /// Keeps what fits under both limits; counts everything.
    fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        let want = bytes.len().min(MAX_OUTPUT - self.data.len());
        let take = self.budget.reserve(want);
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
        self.budget.release(data.len());
        data.truncate(keep);
        data
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.budget.release(self.data.len());
    }
}

/// One output pipe, read on its own thread up to [`MAX_OUTPUT`] bytes.
struct Capture {
    buf: Arc<Mutex<Output>>,
    done: std::sync::mpsc::Receiver<()>,
    budget: Arc<OutputBudget>,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>, budget: &Arc<OutputBudget>) -> Capture {
        let buf = Arc::new(Mutex::new(Output::new(budget)));
        let (tx, done) = std::sync::mpsc::channel();
        if let Some(pipe) = pipe {
            let b = buf.clone();
            std::thread::spawn(move || {
                read_limited(pipe, &b);
                let _ = tx.send(());
            });
        }
        Capture {
            buf,
            done,
            budget: budget.clone(),
        }
    }

    /// What was read; a pipe still held open by a left-behind child is given up on after a grace.
    fn finish(self) -> Output {
        let _ = self.done.recv_timeout(DRAIN_GRACE);
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *b, Output::new(&self.budget))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn output(budget: &Arc<OutputBudget>, data: &[u8]) -> Output {
        let mut o = Output::new(budget);
        o.push(data);
        o
    }

    #[test]
    fn output_is_truncated_at_the_limit_and_says_so() {
        let budget = Arc::new(OutputBudget::default());
        let output = |data: &[u8]| output(&budget, data);
        let data = vec![b'x'; MAX_OUTPUT + 12345];
        let buf = Mutex::new(Output::new(&budget));
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
        let budget = Arc::new(OutputBudget::default());
        let output = |data: &[u8]| output(&budget, data);
        let held: Vec<Output> = (0..MAX_HELD / MAX_OUTPUT + 2)
            .map(|_| output(&vec![b'y'; MAX_OUTPUT]))
            .collect();
        let kept: usize = held.iter().map(|o| o.data.len()).sum();
        assert_eq!(kept, MAX_HELD);
        assert!(held.iter().all(|o| o.seen == MAX_OUTPUT as u64));
        let (o, e) = fit(output(b"late"), Output::new(&budget));
        assert!(o.is_empty() && String::from_utf8_lossy(&e).contains("stdout: 0 of 4"));
        drop(held);
        assert_eq!(budget.held(), 0);
    }
}
