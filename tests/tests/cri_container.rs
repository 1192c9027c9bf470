//! Containers through skiffd's real socket (create, start, stop, remove, status, list, logs, events,
//! restarts of the daemon), and the per-container monitor on its own.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

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
        ts.len() == 30
            && ts.ends_with('Z')
            && ts.as_bytes()[10] == b'T'
            && ts.as_bytes()[19] == b'.',
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
fn monitor_relays_a_terminal() {
    let s = Scratch::new("tty");
    let mut b = Bundle::new(&s.dir.join("bundle"));
    b.remove_mount("/sys/fs/cgroup");
    b.set("/process/terminal", serde_json::json!(true));
    b.sh("[ -t 1 ] && echo on-a-tty; exit 5");
    b.save();
    let log = s.dir.join("c.log");
    let exit = s.dir.join("exit.json");
    let st = spawn_monitor(&s, &b.dir, &log, &exit, &["--tty"]);
    assert!(st["pid"].as_i64().is_some(), "{st}");
    assert!(!b.dir.join("console.sock").exists());
    skiff_runtime::container::Runtime::new(s.root())
        .start(&s.id)
        .unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(&wait_for(&exit, Duration::from_secs(20))).unwrap();
    assert_eq!(rec["exit_code"], 5, "{rec}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().map(parse_cri_line).collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.0.as_str(), l.1.as_str(), l.2.as_str()))
            .collect::<Vec<_>>(),
        [("stdout", "F", "on-a-tty")],
        "{text:?}"
    );
}

#[test]
fn monitor_notices_an_oom_kill() {
    let s = Scratch::new("oom");
    let mut b = Bundle::new(&s.dir.join("bundle"));
    b.remove_mount("/sys/fs/cgroup");
    b.set("/linux/resources/memory/limit", serde_json::json!(32 << 20));
    b.set("/linux/resources/memory/swap", serde_json::json!(32 << 20));
    b.sh("tail /dev/zero");
    b.save();
    let exit = s.dir.join("exit.json");
    let st = spawn_monitor(&s, &b.dir, &s.dir.join("c.log"), &exit, &[]);
    assert!(st["pid"].as_i64().is_some(), "{st}");
    skiff_runtime::container::Runtime::new(s.root())
        .start(&s.id)
        .unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(&wait_for(&exit, Duration::from_secs(60))).unwrap();
    assert_eq!(rec["oom_killed"], true, "{rec}");
    assert_eq!(rec["exit_code"], 137, "{rec}");
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
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("one")
    {
        assert!(Instant::now() < deadline, "no first line");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::rename(&log, s.dir.join("c.log.1")).unwrap();
    // SAFETY: signalling the monitor we started.
    unsafe { libc::kill(monitor, libc::SIGUSR1) };
    assert_eq!(wait_for(&gen, Duration::from_secs(10)), "1");
    std::fs::write(b.rootfs().join("tmp/go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("two")
    {
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

// ---------------------------------------------------------------------------------------------
// Through skiffd's socket.

mod cri_tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use skiff_tests::cri::{
        command_lines, container_config, host_network, next_event, pod_config, v1 as cri, Pod,
        Skiffd,
    };
    use tonic::Code;

    use super::parse_cri_line;

    /// How long a test waits for an event it expects.
    const EVENT_WAIT: Duration = Duration::from_secs(30);

    /// A host-network pod (no CNI config needed).
    async fn pod(d: &mut Skiffd, name: &str) -> Pod {
        let config = host_network(pod_config(name, &d.log_dir()));
        d.run_pod(config).await
    }

    /// A started daemon with busybox pulled and one pod.
    async fn setup(name: &str) -> (Skiffd, Pod) {
        let mut d = Skiffd::start().await;
        let sb = pod(&mut d, name).await;
        d.pull_busybox().await;
        (d, sb)
    }

    fn log_file(d: &Skiffd, pod_name: &str, name: &str) -> PathBuf {
        d.log_dir().join(pod_name).join(format!("{name}.log"))
    }

    fn dir_entries(p: PathBuf) -> Vec<String> {
        std::fs::read_dir(&p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Nothing of any container is left: records, bundles, runtime states.
    fn assert_no_container_state(d: &Skiffd) {
        assert_eq!(
            dir_entries(d.dir.join("state/containers")),
            Vec::<String>::new()
        );
        let rt = skiff_runtime::container::Runtime::new(d.dir.join("run/runtime"));
        let left: Vec<_> = rt.list().unwrap().into_iter().map(|c| c.id).collect();
        assert!(left.is_empty(), "runtime containers left: {left:?}");
        let dir = d.dir.to_string_lossy().into_owned();
        let monitors: Vec<String> = command_lines()
            .into_iter()
            .filter(|c| {
                c.contains("skiff-monitor") && c.contains(" container ") && c.contains(&dir)
            })
            .collect();
        assert!(monitors.is_empty(), "monitors left: {monitors:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let state = format!("{dir}/state/containers");
        assert!(!mounts.contains(&state), "container mounts left:\n{mounts}");
    }

    #[tokio::test]
    async fn kubelet_sequence_with_events() {
        let (mut d, sb) = setup("seq").await;
        let mut events = d.container_events().await;
        let mut cfg = container_config(
            "web",
            "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        );
        cfg.labels.insert("tier".into(), "front".into());
        cfg.annotations.insert("note".into(), "n1".into());
        let id = d.create_container(&sb, cfg).await.unwrap();
        assert_eq!(id.len(), 64);
        let s = d.container_status(&id).await;
        assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
        assert!(s.created_at > 0 && s.started_at == 0);
        d.start_container(&id).await;
        let s = d
            .wait_container_state(&id, cri::ContainerState::ContainerRunning)
            .await;
        assert!(s.started_at >= s.created_at);
        assert_eq!(s.metadata.as_ref().unwrap().name, "web");
        assert_eq!(s.image.as_ref().unwrap().image, skiff_tests::cri::BUSYBOX);
        assert!(s.image_ref.starts_with("sha256:"), "{}", s.image_ref);
        assert_eq!(s.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(s.annotations.get("note").map(String::as_str), Some("n1"));
        let user = s.user.as_ref().and_then(|u| u.linux.as_ref()).unwrap();
        assert_eq!((user.uid, user.gid), (0, 0));
        let log = log_file(&d, "seq", "web");
        assert_eq!(PathBuf::from(&s.log_path), log);
        let verbose = d.verbose_container_status(&id).await;
        let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
        assert!(info["pid"].as_i64().unwrap() > 0, "{info}");
        assert!(info["runtimeSpec"]["process"].is_object(), "{info}");
        // The stop signal (SIGTERM) is handled: the container exits by itself, with status 0.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
        {
            assert!(Instant::now() < deadline, "no output in {}", log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d.stop_container(&id, 10).await.unwrap();
        let s = d.container_status(&id).await;
        assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
        assert!(s.finished_at >= s.started_at);
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains(" stdout F bye\n"));
        d.remove_container(&id).await.unwrap();
        assert!(d.list_containers(None).await.is_empty());
        d.stop_and_remove_pod(&sb.id).await;
        assert_no_container_state(&d);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let ev = next_event(&mut events, EVENT_WAIT).await;
            if ev.container_id == id {
                seen.push(ev.container_event_type);
            }
        }
        use cri::ContainerEventType as E;
        assert_eq!(
            seen,
            [
                E::ContainerCreatedEvent as i32,
                E::ContainerStartedEvent as i32,
                E::ContainerStoppedEvent as i32,
                E::ContainerDeletedEvent as i32
            ]
        );
    }

    #[tokio::test]
    async fn log_file_is_in_the_cri_format() {
        let (mut d, sb) = setup("logs").await;
        let script = "echo first; echo to-stderr >&2; head -c 20480 /dev/zero | tr '\\0' y; echo; \
                      printf 'no newline'";
        let id = d.run_container(&sb, container_config("out", script)).await;
        let s = d.wait_exited(&id).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
        let text = std::fs::read_to_string(log_file(&d, "logs", "out")).unwrap();
        let lines: Vec<_> = text.lines().map(parse_cri_line).collect();
        let get = |stream: &str| -> Vec<(String, String)> {
            lines
                .iter()
                .filter(|l| l.0 == stream)
                .map(|l| (l.1.clone(), l.2.clone()))
                .collect()
        };
        assert_eq!(get("stderr"), [("F".to_string(), "to-stderr".to_string())]);
        let out = get("stdout");
        assert_eq!(
            out,
            [
                ("F".to_string(), "first".to_string()),
                ("P".to_string(), "y".repeat(16384)),
                ("F".to_string(), "y".repeat(20480 - 16384)),
                ("F".to_string(), "no newline".to_string()),
            ]
        );
        assert!(text.ends_with('\n'));
    }

    /// A client may read the log as soon as the container starts (critest does, between
    /// StartContainer and its first status): the file exists once CreateContainer returns.
    #[tokio::test]
    async fn the_log_file_exists_once_created() {
        let (mut d, sb) = setup("logfile").await;
        for i in 0..10 {
            let name = format!("quiet{i}");
            let id = d
                .create_container(&sb, container_config(&name, "exec sleep 1000"))
                .await
                .unwrap();
            let log = log_file(&d, "logfile", &name);
            assert!(
                log.is_file(),
                "{} missing right after create",
                log.display()
            );
            d.remove_container(&id).await.unwrap();
        }
    }

    #[tokio::test]
    async fn tty_container_logs_its_terminal() {
        let (mut d, sb) = setup("tty").await;
        let mut cfg = container_config("t", "[ -t 1 ] && echo on-a-tty; echo more");
        cfg.tty = true;
        let id = d.run_container(&sb, cfg).await;
        let s = d.wait_exited(&id).await;
        assert_eq!(s.exit_code, 0, "{s:?}");
        let text = std::fs::read_to_string(log_file(&d, "tty", "t")).unwrap();
        let msgs: Vec<_> = text
            .lines()
            .map(parse_cri_line)
            .map(|l| format!("{} {} {}", l.0, l.1, l.2))
            .collect();
        assert_eq!(msgs, ["stdout F on-a-tty", "stdout F more"], "{text:?}");
        d.remove_container(&id).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_creates_of_one_name_make_one_container() {
        let (mut d, sb) = setup("race").await;
        let attempt = |mut rt: cri::runtime_service_client::RuntimeServiceClient<_>| {
            let sb = sb.id.clone();
            async move {
                rt.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sb,
                    config: Some(container_config("same", "true")),
                    sandbox_config: None,
                })
                .await
            }
        };
        let (a, b, c) = tokio::join!(
            attempt(d.rt.clone()),
            attempt(d.rt.clone()),
            attempt(d.rt.clone())
        );
        let results = [a, b, c];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            }
        }
        assert_eq!(d.list_containers(None).await.len(), 1);
    }

    #[tokio::test]
    async fn crash_looping_container_gets_a_new_attempt() {
        let (mut d, sb) = setup("crash").await;
        let first = d
            .run_container(&sb, container_config("c", "echo boom; exit 1"))
            .await;
        let s = d.wait_exited(&first).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (1, "Error"));
        // The same name and attempt again is refused; attempt 1 is a new container.
        let e = d
            .create_container(&sb, container_config("c", "exit 1"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let mut again = container_config("c", "echo boom; exit 1");
        again.metadata.as_mut().unwrap().attempt = 1;
        again.log_path = "c-1.log".into();
        let second = d.create_container(&sb, again).await.unwrap();
        assert_ne!(first, second);
        d.start_container(&second).await;
        let s = d.wait_exited(&second).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (1, "Error"));
        assert_eq!(s.metadata.unwrap().attempt, 1);
        // A started container cannot be started again.
        let e =
            d.rt.start_container(cri::StartContainerRequest {
                container_id: second.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        d.remove_container(&first).await.unwrap();
        d.remove_container(&second).await.unwrap();
        assert!(d.list_containers(None).await.is_empty());
    }

    #[tokio::test]
    async fn oom_killed_container_says_so() {
        let (mut d, sb) = setup("oom").await;
        let mut cfg = container_config("hog", "tail /dev/zero");
        cfg.linux.get_or_insert_with(Default::default).resources =
            Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                memory_swap_limit_in_bytes: 32 << 20,
                ..Default::default()
            });
        let id = d.run_container(&sb, cfg).await;
        let s = d.wait_exited(&id).await;
        assert_eq!(s.reason, "OOMKilled", "{s:?}");
        assert_eq!(s.exit_code, 137);
        assert_eq!(
            s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
            32 << 20
        );
        d.remove_container(&id).await.unwrap();
    }

    #[tokio::test]
    async fn stop_and_remove_are_idempotent_and_unknown_ids_are_named() {
        let (mut d, sb) = setup("idem").await;
        let id = d
            .create_container(&sb, container_config("s", "sleep 1000"))
            .await
            .unwrap();
        // Stopping a created (never started) container ends it.
        d.stop_container(&id, 5).await.unwrap();
        d.wait_exited(&id).await;
        d.stop_container(&id, 5).await.unwrap();
        let id2 = d
            .run_container(&sb, container_config("t", "trap '' TERM; sleep 1000"))
            .await;
        // SIGTERM is ignored: the timeout leads to SIGKILL.
        d.stop_container(&id2, 1).await.unwrap();
        let s = d.container_status(&id2).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
        d.stop_container(&id2, 1).await.unwrap();
        // Removing a running container kills it.
        let id3 = d
            .run_container(&sb, container_config("u", "sleep 1000"))
            .await;
        for c in [&id, &id2, &id3] {
            d.remove_container(c).await.unwrap();
            d.remove_container(c).await.unwrap();
        }
        assert_no_container_state(&d);
        // A container that is gone is stopped already (the CRI's idempotence, as critest checks).
        let unknown = "0".repeat(64);
        d.stop_container(&unknown, 1).await.unwrap();
        d.remove_container(&unknown).await.unwrap();
        for bad in ["", "../../etc", "a/b"] {
            assert_eq!(
                d.stop_container(bad, 1).await.unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
            assert_eq!(
                d.remove_container(bad).await.unwrap_err().code(),
                Code::InvalidArgument
            );
        }
        let e =
            d.rt.container_status(cri::ContainerStatusRequest {
                container_id: unknown.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e =
            d.rt.start_container(cri::StartContainerRequest {
                container_id: unknown,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }

    #[tokio::test]
    async fn list_filters() {
        let mut d = Skiffd::start().await;
        let sb1 = pod(&mut d, "fa").await;
        let sb2 = pod(&mut d, "fb").await;
        d.pull_busybox().await;
        let mut a = container_config("a", "sleep 1000");
        a.labels.insert("role".into(), "x".into());
        let a = d.create_container(&sb1, a).await.unwrap();
        let mut b = container_config("b", "sleep 1000");
        b.labels.insert("role".into(), "y".into());
        let b = d.run_container(&sb2, b).await;
        let ids = |v: Vec<cri::Container>| -> Vec<String> {
            let mut v: Vec<String> = v.into_iter().map(|c| c.id).collect();
            v.sort();
            v
        };
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(ids(d.list_containers(None).await), both);
        let f = |f: cri::ContainerFilter| Some(f);
        let by_id = d
            .list_containers(f(cri::ContainerFilter {
                id: a[..12].to_string(),
                ..Default::default()
            }))
            .await;
        assert_eq!(ids(by_id.clone()), vec![a.clone()]);
        assert_eq!(by_id[0].pod_sandbox_id, sb1.id);
        let running = d
            .list_containers(f(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }))
            .await;
        assert_eq!(ids(running), vec![b.clone()]);
        let in_pod = d
            .list_containers(f(cri::ContainerFilter {
                pod_sandbox_id: sb1.id.clone(),
                ..Default::default()
            }))
            .await;
        assert_eq!(ids(in_pod), vec![a.clone()]);
        let labelled = d
            .list_containers(f(cri::ContainerFilter {
                label_selector: [("role".to_string(), "y".to_string())].into(),
                ..Default::default()
            }))
            .await;
        assert_eq!(ids(labelled), vec![b.clone()]);
        let none = d
            .list_containers(f(cri::ContainerFilter {
                label_selector: [("role".to_string(), "z".to_string())].into(),
                ..Default::default()
            }))
            .await;
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn reopen_log_after_rotation() {
        let (mut d, sb) = setup("rot").await;
        let script = "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done";
        let id = d
            .create_container(&sb, container_config("r", script))
            .await
            .unwrap();
        let e =
            d.rt.reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        d.start_container(&id).await;
        let log = log_file(&d, "rot", "r");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("line1")
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rotated = log.with_extension("log.1");
        std::fs::rename(&log, &rotated).unwrap();
        d.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        assert!(
            log.exists(),
            "the new log file exists when the call returns"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("line")
        {
            assert!(Instant::now() < deadline, "nothing written to the new log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d.stop_container(&id, 0).await.unwrap();
    }

    #[tokio::test]
    async fn exits_while_the_daemon_is_down_are_picked_up() {
        let (mut d, sb) = setup("crash9").await;
        let quick = d
            .create_container(&sb, container_config("q", "sleep 2; exit 7"))
            .await
            .unwrap();
        let long = d
            .create_container(&sb, container_config("l", "sleep 1000"))
            .await
            .unwrap();
        d.start_container(&quick).await;
        d.start_container(&long).await;
        d.kill9();
        tokio::time::sleep(Duration::from_secs(3)).await;
        d.restart().await;
        let s = d.wait_exited(&quick).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));
        let s = d.container_status(&long).await;
        assert_eq!(
            s.state,
            cri::ContainerState::ContainerRunning as i32,
            "{s:?}"
        );
        // The watcher of the surviving monitor is armed again.
        let mut events = d.container_events().await;
        d.stop_container(&long, 0).await.unwrap();
        let ev = loop {
            let ev = next_event(&mut events, EVENT_WAIT).await;
            if ev.container_id == long {
                break ev;
            }
        };
        assert_eq!(
            ev.container_event_type,
            cri::ContainerEventType::ContainerStoppedEvent as i32
        );
        let s = d.container_status(&long).await;
        assert_eq!(s.exit_code, 137);
        d.remove_container(&quick).await.unwrap();
        d.remove_container(&long).await.unwrap();
        assert_no_container_state(&d);
    }

    #[tokio::test]
    async fn hostile_requests_change_nothing() {
        let (mut d, sb) = setup("hostile").await;
        let with_log = |p: &str| {
            let mut c = container_config("h", "true");
            c.log_path = p.into();
            c
        };
        for p in ["../x.log", "a/../../x.log", "/etc/x.log"] {
            let e = d.create_container(&sb, with_log(p)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{p}: {e:?}");
            assert!(e.message().contains("log_path"), "{e:?}");
        }
        let in_sandbox = |id: String| Pod { id, ..sb.clone() };
        let e = d
            .create_container(&in_sandbox(String::new()), container_config("h", "true"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = d
            .create_container(&in_sandbox("f".repeat(64)), container_config("h", "true"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let mut unknown_image = container_config("h", "true");
        unknown_image.image.as_mut().unwrap().image = "registry.skiff.test/none:latest".into();
        let e = d.create_container(&sb, unknown_image).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let mut nameless = container_config("", "true");
        nameless.metadata = None;
        let e = d.create_container(&sb, nameless).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e =
            d.rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb.id.clone(),
                config: None,
                sandbox_config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(d.list_containers(None).await.is_empty());
        assert_no_container_state(&d);
        assert!(!d.log_dir().join("x.log").exists());
    }
}
