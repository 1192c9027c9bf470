//! Containers through skiffd's real socket (create, start, stop, remove, status, list, logs, events,
//! restarts of the daemon), and the per-container monitor on its own.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::bundle::Bundle;
use skiff_tests::cri::target_bin;

/// A scratch directory for one monitor test, removed (with its runtime state) at the end.
struct Scratch {
    dir: PathBuf,
    id: String,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let id = format!("mon-{name}-{}", std::process::id());
        let dir = PathBuf::from(format!("/var/tmp/skiff-test/monitor/{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir, id }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let rt = skiff_runtime::container::Runtime::new(self.root());
        let _ = rt.delete(&self.id, true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are fresh and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs `skiff-monitor container` as skiffd does and returns its status line.
fn spawn_monitor(
    s: &Scratch,
    bundle: &Path,
    log: &Path,
    exit: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let (r, w) = pipe();
    let wfd = w.as_raw_fd();
    let mut cmd = Command::new(target_bin("skiff-monitor"));
    cmd.arg("container")
        .args(["--id", &s.id, "--status-fd", "3"])
        .arg("--bundle")
        .arg(bundle)
        .arg("--root")
        .arg(s.root())
        .arg("--log")
        .arg(log)
        .arg("--exit-file")
        .arg(exit)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it puts the status pipe on descriptor 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn skiff-monitor");
    drop(w);
    // The first process returns at once: the monitor detaches.
    assert!(child.wait().unwrap().success());
    let mut line = String::new();
    BufReader::new(std::fs::File::from(r))
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("status line {line:?}: {e}"))
}

fn wait_for(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not appear in {limit:?}", path.display());
}

/// Splits a CRI log line into (stream, tag, message), checking the timestamp.
fn parse_cri_line(line: &str) -> (String, String, String) {
    let mut parts = line.splitn(4, ' ');
    let ts = parts.next().unwrap();
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
        "timestamp {ts:?} in {line:?}"
    );
    let stream = parts.next().unwrap().to_string();
    let tag = parts.next().unwrap().to_string();
    let msg = parts.next().unwrap_or("").to_string();
    (stream, tag, msg)
}

#[test]
fn monitor_writes_the_cri_log_and_the_exit_record() {
    let s = Scratch::new("log");
    let mut b = Bundle::new(&s.dir.join("bundle"));
    b.remove_mount("/sys/fs/cgroup");
    b.sh("echo hello; echo oops >&2; head -c 20480 /dev/zero | tr '\\0' x; echo; printf tail; exit 3");
    b.save();
    let log = s.dir.join("logs/c.log");
    let exit = s.dir.join("exit.json");
    let st = spawn_monitor(&s, &b.dir, &log, &exit, &[]);
    let pid = st["pid"].as_i64().unwrap_or_else(|| panic!("{st}"));
    let monitor = st["monitor_pid"].as_i64().unwrap();
    assert!(pid > 0 && monitor > 0 && pid != monitor);
    // The monitor left our session and process group.
    // SAFETY: getsid/getpgid read process attributes.
    unsafe {
        assert_ne!(libc::getsid(monitor as i32), libc::getsid(0));
    }
    let rt = skiff_runtime::container::Runtime::new(s.root());
    rt.start(&s.id).unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(&wait_for(&exit, Duration::from_secs(20))).unwrap();
    assert_eq!(rec["exit_code"], 3, "{rec}");
    assert_eq!(rec["signal"], 0);
    assert_eq!(rec["oom_killed"], false);
    assert!(rec["finished_at"].as_i64().unwrap() > 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().map(parse_cri_line).collect();
    let out: Vec<_> = lines.iter().filter(|l| l.0 == "stdout").collect();
    let err: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").collect();
    assert_eq!(err.len(), 1, "{text}");
    assert_eq!((err[0].1.as_str(), err[0].2.as_str()), ("F", "oops"));
    assert_eq!(out.len(), 4, "{lines:?}");
    assert_eq!((out[0].1.as_str(), out[0].2.as_str()), ("F", "hello"));
    assert_eq!(out[1].1, "P");
    assert_eq!(out[1].2, "x".repeat(16384));
    assert_eq!(out[2].1, "F");
    assert_eq!(out[2].2, "x".repeat(20480 - 16384));
    assert_eq!((out[3].1.as_str(), out[3].2.as_str()), ("F", "tail"));
    rt.delete(&s.id, true).unwrap();
}

#[test]
fn monitor_reports_a_failed_create_and_leaves_nothing() {
    let s = Scratch::new("fail");
    let mut b = Bundle::new(&s.dir.join("bundle"));
    b.remove_mount("/sys/fs/cgroup");
    b.args(&["/no/such/program"]);
    b.save();
    let st = spawn_monitor(
        &s,
        &b.dir,
        &s.dir.join("c.log"),
        &s.dir.join("exit.json"),
        &[],
    );
    let err = st["error"].as_str().unwrap_or_else(|| panic!("{st}"));
    assert!(err.contains("/no/such/program"), "{err}");
    let rt = skiff_runtime::container::Runtime::new(s.root());
    assert!(rt.list().unwrap().is_empty());
}

#[test]
fn monitor_reopens_the_log_on_sigusr1_and_records_signals() {
    let s = Scratch::new("reopen");
    let mut b = Bundle::new(&s.dir.join("bundle"));
    b.remove_mount("/sys/fs/cgroup");
    b.sh("echo one; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two; sleep 1000");
    b.save();
    let log = s.dir.join("c.log");
    let exit = s.dir.join("exit.json");
    let gen = s.dir.join("gen");
    let st = spawn_monitor(
        &s,
        &b.dir,
        &log,
        &exit,
        &["--reopen-file", gen.to_str().unwrap()],
    );
    let pid = st["pid"].as_i64().unwrap() as i32;
    let monitor = st["monitor_pid"].as_i64().unwrap() as i32;
    let rt = skiff_runtime::container::Runtime::new(s.root());
    rt.start(&s.id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("one") {
        assert!(Instant::now() < deadline, "no first line");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::rename(&log, s.dir.join("c.log.1")).unwrap();
    // SAFETY: signalling the monitor we started.
    unsafe { libc::kill(monitor, libc::SIGUSR1) };
    assert_eq!(wait_for(&gen, Duration::from_secs(10)), "1");
    std::fs::write(b.rootfs().join("tmp/go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("two") {
        assert!(Instant::now() < deadline, "no second line in the new log");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!std::fs::read_to_string(s.dir.join("c.log.1"))
        .unwrap()
        .contains("two"));
    // SAFETY: killing the container's init, which we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let rec: serde_json::Value =
        serde_json::from_str(&wait_for(&exit, Duration::from_secs(20))).unwrap();
    assert_eq!(rec["exit_code"], 137, "{rec}");
    assert_eq!(rec["signal"], 9);
}
