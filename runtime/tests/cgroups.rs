//! Root-run tests of cgroup limits, usage, OOM reporting, pause and cleanup, through the `skiff`
//! binary and real containers. The same binary runs on the hybrid host (v1 controllers) and in a
//! pure cgroup v2 guest (`tests/vm/run.sh`), reading back whichever interface files the host has.
//!
//! Run: `cargo test -p skiff-runtime --test cgroups` as root. `SKIFF_BIN` overrides the binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skiff")))
}

fn require_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("cgroup tests need root; skipped");
    }
    root
}

/// Where the host mounts cgroups: v1 hierarchies by controller, and the cgroup2 mount.
struct Mounts {
    v1: Vec<(Vec<String>, PathBuf)>,
    v2: Option<PathBuf>,
}

fn mounts() -> Mounts {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut m = Mounts {
        v1: Vec::new(),
        v2: None,
    };
    for line in info.lines() {
        let Some((l, r)) = line.split_once(" - ") else {
            continue;
        };
        let mp = PathBuf::from(l.split(' ').nth(4).unwrap_or(""));
        let r: Vec<&str> = r.split(' ').collect();
        match r[0] {
            "cgroup2" if m.v2.is_none() => m.v2 = Some(mp),
            "cgroup" => {
                m.v1.push((r[2].split(',').map(str::to_owned).collect(), mp))
            }
            _ => {}
        }
    }
    m
}

fn unified_only() -> bool {
    mounts().v1.is_empty()
}

/// The container's directory for `ctrl`: its v1 hierarchy if the host has one, else cgroup2.
fn cg_dir(pid: i32, ctrl: &str) -> (PathBuf, bool) {
    let m = mounts();
    let procs = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/pid/cgroup");
    for line in procs.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == ctrl) {
            if let Some((_, mp)) = m.v1.iter().find(|(o, _)| o.iter().any(|c| c == ctrl)) {
                return (mp.join(rel), false);
            }
        }
    }
    for line in procs.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            let mp = m.v2.clone().expect("cgroup2 mount");
            return (mp.join(path.trim_start_matches('/')), true);
        }
    }
    panic!("pid {pid} has no cgroup for {ctrl}: {procs}");
}

/// Reads the v1 or the v2 file for `ctrl`, whichever the host uses.
fn read_cg(pid: i32, ctrl: &str, v1: &str, v2: &str) -> String {
    let (dir, is_v2) = cg_dir(pid, ctrl);
    let file = dir.join(if is_v2 { v2 } else { v1 });
    fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned()
}

fn applets() -> Vec<String> {
    let out = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("/bin/busybox (apt-get install busybox-static)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(str::to_owned)
        .collect()
}

/// A container with a busybox rootfs in a temp bundle, deleted on drop.
struct Ctr {
    dir: tempfile::TempDir,
    id: String,
}

impl Ctr {
    fn new(name: &str) -> Ctr {
        let dir = tempfile::Builder::new()
            .prefix("skiff-cg-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("bundle/rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for a in applets() {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a));
        }
        let ctr = Ctr {
            dir,
            id: format!("cg-{name}-{}", std::process::id()),
        };
        let out = ctr.skiff(&["spec", "-b", ctr.bundle().to_str().unwrap_or(".")]);
        assert!(out.status.success(), "skiff spec: {out:?}");
        ctr
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    /// Runs skiff with its output in files: a detached container inherits them and would hold
    /// pipes open.
    fn skiff(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("state");
        let out = self.dir.path().join("out");
        let err = self.dir.path().join("err");
        let file = |p: &Path| fs::File::create(p).expect("output file");
        let status = Command::new(skiff_bin())
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err))
            .status()
            .expect("run skiff");
        Output {
            status,
            stdout: fs::read(&out).unwrap_or_default(),
            stderr: fs::read(&err).unwrap_or_default(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        assert!(
            out.status.success(),
            "skiff {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes config.json running `sh -c script` with `resources`, then `edit`s the rest.
    fn config(&self, script: &str, resources: Value, edit: impl FnOnce(&mut Value)) {
        let path = self.bundle().join("config.json");
        let mut c: Value = serde_json::from_slice(&fs::read(&path).expect("config")).expect("json");
        c["process"]["args"] = json!(["sh", "-c", script]);
        c["process"]["terminal"] = json!(false);
        let devices = c["linux"]["resources"]["devices"].clone();
        c["linux"]["resources"] = resources;
        if c["linux"]["resources"].get("devices").is_none() {
            c["linux"]["resources"]["devices"] = devices;
        }
        edit(&mut c);
        fs::write(&path, serde_json::to_vec(&c).expect("json")).expect("write config");
    }

    fn run_detached(&self) -> i32 {
        let b = self.bundle();
        self.ok(&["run", "-d", "-b", b.to_str().unwrap_or("."), &self.id]);
        self.pid()
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.ok(&["state", &self.id])).expect("state json")
    }

    fn pid(&self) -> i32 {
        self.state()["pid"].as_i64().expect("pid") as i32
    }

    fn stats(&self) -> Value {
        let v: Value =
            serde_json::from_str(&self.ok(&["events", "--stats", &self.id])).expect("stats json");
        assert_eq!(v["type"], "stats");
        v["data"].clone()
    }

    fn ps(&self) -> Vec<i64> {
        let v: Value =
            serde_json::from_str(&self.ok(&["ps", "--format", "json", &self.id])).expect("ps json");
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = self.skiff(&["delete", "--force", &self.id]);
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn limits_are_written_and_read_back() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("limits");
    let res = json!({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 64 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 32},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]
    });
    c.config("sleep 1000", res, |_| {});
    let pid = c.run_detached();
    let mem = read_cg(pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(mem, (64 << 20).to_string());
    let low = read_cg(pid, "memory", "memory.soft_limit_in_bytes", "memory.low");
    assert_eq!(low, (32 << 20).to_string());
    let (dir, v2) = cg_dir(pid, "memory");
    if v2 && dir.join("memory.swap.max").exists() {
        assert_eq!(read_cg(pid, "memory", "", "memory.swap.max"), "0");
    } else if !v2 && dir.join("memory.memsw.limit_in_bytes").exists() {
        let sw = read_cg(pid, "memory", "memory.memsw.limit_in_bytes", "");
        assert_eq!(sw, (64 << 20).to_string());
    }
    if cg_dir(pid, "cpu").1 {
        assert_eq!(read_cg(pid, "cpu", "", "cpu.weight"), "20");
        assert_eq!(read_cg(pid, "cpu", "", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(read_cg(pid, "cpu", "cpu.shares", ""), "512");
        assert_eq!(read_cg(pid, "cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(read_cg(pid, "cpu", "cpu.cfs_period_us", ""), "100000");
    }
    assert_eq!(read_cg(pid, "cpuset", "cpuset.cpus", "cpuset.cpus"), "0");
    assert_eq!(read_cg(pid, "pids", "pids.max", "pids.max"), "32");
    let huge = read_cg(
        pid,
        "hugetlb",
        "hugetlb.2MB.limit_in_bytes",
        "hugetlb.2MB.max",
    );
    assert_eq!(huge, (4 << 20).to_string());
}

/// The first real block device, as `major:minor`.
fn block_device() -> Option<String> {
    let mut devs: Vec<_> = fs::read_dir("/sys/block").ok()?.flatten().collect();
    devs.sort_by_key(|e| e.file_name());
    devs.iter()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with("loop") && !n.starts_with("ram")
        })
        .find_map(|e| fs::read_to_string(e.path().join("dev")).ok())
        .map(|s| s.trim().to_owned())
}

#[test]
fn block_io_throttle_is_written() {
    if !require_root() {
        return;
    }
    let Some(dev) = block_device() else {
        eprintln!("no block device; skipped");
        return;
    };
    let (major, minor) = dev.split_once(':').expect("major:minor");
    let (major, minor): (i64, i64) = (major.parse().expect("major"), minor.parse().expect("minor"));
    let c = Ctr::new("blkio");
    let t = json!([{"major": major, "minor": minor, "rate": 1048576}]);
    let res = json!({"blockIO": {"throttleReadBpsDevice": t, "throttleWriteIOPSDevice": [
        {"major": major, "minor": minor, "rate": 100}
    ]}});
    c.config("sleep 1000", res, |_| {});
    let pid = c.run_detached();
    let (dir, v2) = cg_dir(
        pid,
        if mounts().v1.is_empty() {
            "io"
        } else {
            "blkio"
        },
    );
    if v2 {
        let max = fs::read_to_string(dir.join("io.max")).unwrap_or_default();
        assert!(
            max.contains(&format!("{dev} rbps=1048576")),
            "io.max: {max}"
        );
        assert!(max.contains("wiops=100"), "io.max: {max}");
    } else {
        let r = fs::read_to_string(dir.join("blkio.throttle.read_bps_device")).unwrap_or_default();
        assert_eq!(r.trim(), format!("{dev} 1048576"));
        let w =
            fs::read_to_string(dir.join("blkio.throttle.write_iops_device")).unwrap_or_default();
        assert_eq!(w.trim(), format!("{dev} 100"));
    }
}

#[test]
fn update_changes_limits() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("update");
    let res = json!({"memory": {"limit": 64 << 20, "swap": 64 << 20}, "pids": {"limit": 10}});
    c.config("sleep 1000", res, |_| {});
    let pid = c.run_detached();
    c.ok(&["update", "--memory", "128m", "--pids-limit", "20", &c.id]);
    let mem = read_cg(pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(mem, (128 << 20).to_string());
    assert_eq!(read_cg(pid, "pids", "pids.max", "pids.max"), "20");
    let file = c.dir.path().join("res.json");
    fs::write(&file, r#"{"cpu": {"shares": 2048}, "pids": {"limit": 30}}"#).expect("write");
    c.ok(&["update", "-r", file.to_str().unwrap_or(""), &c.id]);
    assert_eq!(read_cg(pid, "pids", "pids.max", "pids.max"), "30");
    let weight = read_cg(pid, "cpu", "cpu.shares", "cpu.weight");
    assert!(weight == "2048" || weight == "79", "cpu weight {weight}");
    // The new limits are remembered.
    assert_eq!(c.state()["pid"], pid);
    let bad = c.skiff(&["update", "--memory", "lots", &c.id]);
    assert!(!bad.status.success());
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("oom");
    let res = json!({"memory": {"limit": 32 << 20, "swap": 32 << 20}});
    let hog = "sleep 1; while true; do dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1; done";
    c.config(hog, res, |_| {});
    c.run_detached();
    let mut child = Command::new(skiff_bin())
        .arg("--root")
        .arg(c.dir.path().join("state"))
        .args(["events", "--interval", "1s", &c.id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("skiff events");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(30);
    let mut saw_oom = false;
    let mut saw_stats = false;
    while Instant::now() < end && !(saw_oom && saw_stats) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).expect("event json");
        assert_eq!(v["id"], c.id.as_str());
        saw_oom |= v["type"] == "oom";
        saw_stats |= v["type"] == "stats";
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(saw_oom, "no oom event");
    assert!(saw_stats, "no stats event");
    let kills = c.stats()["memory"]["raw"]["oom_kill"].as_u64().unwrap_or(0);
    assert!(kills >= 1, "oom_kill count {kills}");
}

#[test]
fn pids_limit_is_enforced() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("pids");
    // The forking shell dies at its first refused fork; the init then becomes a sleep itself.
    let script = "(i=0; while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done); exec sleep 1000";
    c.config(script, json!({"pids": {"limit": 8}}), |_| {});
    let pid = c.run_detached();
    let refused = || {
        let events = read_cg(pid, "pids", "pids.events", "pids.events");
        events
            .strip_prefix("max ")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || refused() > 0),
        "no fork refused"
    );
    std::thread::sleep(Duration::from_millis(300));
    let n = c.ps().len();
    assert!((2..=8).contains(&n), "{n} processes under a limit of 8");
    let current = c.stats()["pids"]["current"].as_u64().unwrap_or(0);
    assert_eq!(current, n as u64);
}

#[test]
fn pause_and_resume_stop_and_restart_the_processes() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("pause");
    c.config("while :; do :; done", json!({}), |_| {});
    c.run_detached();
    let usage = || c.stats()["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    c.ok(&["pause", &c.id]);
    assert_eq!(c.state()["status"], "paused");
    let a = usage();
    std::thread::sleep(Duration::from_millis(300));
    let b = usage();
    assert_eq!(a, b, "cpu time grew while paused");
    c.ok(&["resume", &c.id]);
    assert_eq!(c.state()["status"], "running");
    assert!(
        wait_until(Duration::from_secs(5), || usage() > b),
        "cpu time did not grow after resume"
    );
}

#[test]
fn stats_are_reported() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("stats");
    let script = "dd if=/dev/zero of=/tmp/f bs=1M count=8; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000";
    let res = json!({"memory": {"limit": 256 << 20}, "pids": {"limit": 100}});
    c.config(script, res, |_| {});
    c.run_detached();
    std::thread::sleep(Duration::from_millis(500));
    let s = c.stats();
    assert!(s["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(
        s["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    assert_eq!(s["memory"]["usage"]["limit"], 256u64 << 20);
    assert!(s["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(s["pids"]["limit"], 100);
}

fn mknod(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mknod reads a NUL-terminated path.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(r, 0, "mknod {}", path.display());
}

/// Opens a device node the container's rules may deny; returns the shell's error output.
fn open_device(allow: bool) -> String {
    let c = Ctr::new(if allow { "dev-allow" } else { "dev-deny" });
    // fuse's numbers: nothing in the default rules covers them.
    mknod(&c.rootfs().join("fusedev"), 10, 229);
    let mut res = json!({});
    if allow {
        res["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}
        ]);
    }
    c.config(": < /fusedev; echo done", res, |_| {});
    let b = c.bundle();
    let out = c.skiff(&["run", "-b", b.to_str().unwrap_or("."), &c.id]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn device_rules_deny_and_allow() {
    if !require_root() {
        return;
    }
    let denied = open_device(false);
    assert!(denied.contains("Operation not permitted"), "{denied}");
    let allowed = open_device(true);
    assert!(!allowed.contains("Operation not permitted"), "{allowed}");
}

#[test]
fn kill_all_and_delete_with_lingering_processes() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("killall");
    let script = "(trap '' TERM; sleep 1000) & (trap '' TERM; sleep 1000) & sleep 1000";
    c.config(script, json!({}), |_| {});
    let pid = c.run_detached();
    assert!(wait_until(Duration::from_secs(5), || c.ps().len() >= 3));
    let dirs: Vec<PathBuf> = ["memory", "pids", "cpu"]
        .iter()
        .map(|ctrl| cg_dir(pid, ctrl).0)
        .collect();
    c.ok(&["kill", "--all", &c.id, "KILL"]);
    assert!(wait_until(Duration::from_secs(5), || c.ps().is_empty()));
    c.ok(&["delete", "--force", &c.id]);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    // A container deleted while its processes ignore SIGTERM.
    let c = Ctr::new("linger");
    c.config(script, json!({}), |_| {});
    let pid = c.run_detached();
    let dir = cg_dir(pid, "pids").0;
    c.ok(&["delete", "--force", &c.id]);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn delete_keeps_a_cgroup_it_did_not_create() {
    if !require_root() {
        return;
    }
    let rel = format!("skiff-pre-{}", std::process::id());
    let m = mounts();
    let mut made = Vec::new();
    for mp in m.v1.iter().map(|(_, p)| p).chain(m.v2.iter()) {
        let d = mp.join(&rel);
        fs::create_dir_all(&d).expect("precreate cgroup");
        made.push(d);
    }
    let c = Ctr::new("preexisting");
    c.config("sleep 1000", json!({}), |v| {
        v["linux"]["cgroupsPath"] = json!(format!("/{rel}"));
    });
    let pid = c.run_detached();
    assert_eq!(cg_dir(pid, "pids").0, cg_dir(pid, "pids").0);
    c.ok(&["delete", "--force", &c.id]);
    for d in &made {
        assert!(d.exists(), "{} was removed", d.display());
        let _ = fs::remove_dir(d);
    }
}

#[test]
fn init_is_born_in_its_cgroup_on_v2() {
    if !require_root() {
        return;
    }
    if !unified_only() {
        eprintln!("host is not cgroup v2 only: CLONE_INTO_CGROUP not used; skipped");
        return;
    }
    let c = Ctr::new("clone-into");
    c.config("sleep 1000", json!({"pids": {"limit": 5}}), |_| {});
    let log = c.dir.path().join("log");
    let b = c.bundle();
    let l = log.to_str().unwrap_or("");
    c.ok(&[
        "--debug",
        "--log",
        l,
        "run",
        "-d",
        "-b",
        b.to_str().unwrap_or("."),
        &c.id,
    ]);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("CLONE_INTO_CGROUP"), "log: {text}");
    assert_eq!(read_cg(c.pid(), "pids", "", "pids.max"), "5");
}

#[test]
fn an_exec_is_in_every_cgroup_of_its_container() {
    if !require_root() {
        return;
    }
    let c = Ctr::new("exec-joins");
    c.config("exec sleep 1000", json!({"pids": {"limit": 16}}), |_| {});
    c.run_detached();
    // The exec'd shell's cgroups against the init's (pid 1 in the container), each line a hierarchy.
    let out = c.ok(&[
        "exec",
        &c.id,
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup",
    ]);
    let (own, init) = out.split_once("--\n").unwrap_or((&out, ""));
    assert!(!own.trim().is_empty(), "no cgroups listed: {out}");
    assert_eq!(
        own.trim(),
        init.trim(),
        "the exec's cgroups differ from the init's"
    );
}
