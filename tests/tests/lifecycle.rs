//! Every CLI command and every state transition, observed through `state`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use skiff_tests::env::path_str;
use skiff_tests::{assert_failed_mentioning, assert_ok, host, TestEnv};
use std::fs;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A script that waits until the host creates `rootfs/go`, then exits with `code`.
fn wait_for_go(code: i32) -> String {
    format!("while [ ! -e /go ]; do usleep 10000; done; exit {code}")
}

#[test]
fn spec_writes_a_usable_config() {
    let env = TestEnv::new("spec");
    let dir = env.dir.join("specbundle");
    fs::create_dir_all(&dir).unwrap();
    let out = env.rt(&["spec", "--bundle", path_str(&dir)]);
    assert_ok(&out, "spec --bundle");
    let cfg: Value = serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap_or_else(|e| panic!("spec wrote invalid JSON: {e}{out}"));
    for key in ["ociVersion", "process", "root", "mounts", "linux"] {
        assert!(cfg.get(key).is_some(), "spec config lacks {key}: {cfg}");
    }
    assert!(cfg["process"]["args"].is_array(), "process.args: {cfg}");

    // Without --bundle it writes into the current directory.
    let cwd = env.dir.join("speccwd");
    fs::create_dir_all(&cwd).unwrap();
    let out = env.exec(env.command().arg("spec").current_dir(&cwd));
    assert_ok(&out, "spec in cwd");
    assert!(
        cwd.join("config.json").is_file(),
        "no config.json in cwd{out}"
    );

    // The generated config runs the busybox rootfs once the terminal is turned off.
    let mut b = env.bundle();
    b.config = cfg;
    b.set("/process/terminal", json!(false));
    b.sh("echo from-spec");
    let id = env.id();
    let out = env.run_fg(&b, &id);
    assert_ok(&out, "run with the spec config");
    assert!(out.stdout.contains("from-spec"), "{out}");
}

#[test]
fn features_describes_the_runtime() {
    let env = TestEnv::new("features");
    let out = env.rt(&["features"]);
    assert_ok(&out, "features");
    let f: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("features is not JSON ({e}){out}"));
    for key in ["ociVersionMin", "ociVersionMax"] {
        assert!(
            f[key].as_str().is_some_and(|v| v.starts_with("1.")),
            "{key}{out}"
        );
    }
    let hooks = f["hooks"]
        .as_array()
        .unwrap_or_else(|| panic!("hooks{out}"));
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.iter().any(|x| x == h), "hooks lacks {h}{out}");
    }
    let opts = f["mountOptions"]
        .as_array()
        .unwrap_or_else(|| panic!("mountOptions{out}"));
    for o in ["ro", "bind", "rbind", "nosuid", "nodev", "noexec"] {
        assert!(opts.iter().any(|x| x == o), "mountOptions lacks {o}{out}");
    }
    let ns = f["linux"]["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("linux.namespaces{out}"));
    for n in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
        assert!(ns.iter().any(|x| x == n), "linux.namespaces lacks {n}{out}");
    }
}

#[test]
fn created_running_stopped_then_deleted() {
    let env = TestEnv::new("lifecycle");
    let mut b = env.bundle();
    b.sh(&wait_for_go(0));
    b.set("/annotations", json!({"org.skiff.test": "lifecycle"}));
    let id = env.id();
    env.must_create(&b, &id);

    let st = env.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], id.as_str(), "{st}");
    assert!(
        st["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{st}"
    );
    assert_eq!(st["bundle"], path_str(&b.dir), "{st}");
    let pid = st["pid"].as_i64().unwrap_or_else(|| panic!("no pid: {st}"));
    assert!(
        pid > 0 && host::process_alive(pid),
        "init {pid} not alive: {st}"
    );
    if !skiff_tests::is_runc() {
        // runc 1.1 leaves annotations out of `state`; the spec puts them there.
        assert_eq!(st["annotations"]["org.skiff.test"], "lifecycle", "{st}");
    }

    env.must_start(&id);
    let st = env.wait_status(&id, "running", WAIT);
    assert_eq!(
        st["pid"].as_i64(),
        Some(pid),
        "pid changed across start: {st}"
    );

    fs::write(b.rootfs().join("go"), "").unwrap();
    let st = env.wait_status(&id, "stopped", WAIT);
    assert_eq!(st["id"], id.as_str(), "{st}");
    assert!(!host::process_alive(pid), "init {pid} alive while stopped");

    assert_ok(&env.rt(&["delete", &id]), "delete stopped");
    env.assert_clean(&id, &b.dir, Some(pid));
}

#[test]
fn run_foreground_returns_the_exit_status() {
    let env = TestEnv::new("run-fg");
    let mut b = env.bundle();
    b.sh("echo hello-out; echo hello-err >&2; exit 7");
    let id = env.id();
    let out = env.run_fg(&b, &id);
    assert_eq!(
        out.code,
        Some(7),
        "run should exit with the container's status{out}"
    );
    assert!(out.stdout.contains("hello-out"), "container stdout{out}");
    assert!(out.stderr.contains("hello-err"), "container stderr{out}");
    // A foreground run deletes the container when it exits.
    env.assert_clean(&id, &b.dir, None);

    b.sh("exit 0");
    let id = env.id();
    let out = env.run_fg(&b, &id);
    assert_eq!(out.code, Some(0), "{out}");
}

#[test]
fn run_detach_with_pid_file() {
    let env = TestEnv::new("run-detach");
    let mut b = env.bundle();
    b.args(&["sleep", "1000"]);
    b.save();
    let id = env.id();
    let pidfile = env.dir.join("run.pid");
    let out = env.rt(&[
        "run",
        "--bundle",
        path_str(&b.dir),
        "--detach",
        "--pid-file",
        path_str(&pidfile),
        &id,
    ]);
    assert_ok(&out, "run --detach");
    let st = env.wait_status(&id, "running", WAIT);
    let text = fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("pid file: {e}{out}"));
    assert_eq!(
        text.trim().parse::<i64>().ok(),
        st["pid"].as_i64(),
        "pid file {text:?} vs {st}"
    );
    assert_ok(&env.rt(&["kill", &id, "KILL"]), "kill");
    env.wait_status(&id, "stopped", WAIT);
    assert_ok(&env.rt(&["delete", &id]), "delete");
    env.assert_clean(&id, &b.dir, st["pid"].as_i64());
}

#[test]
fn create_pid_file_holds_the_init_pid() {
    let env = TestEnv::new("pidfile");
    let b = env.bundle();
    let id = env.id();
    let pidfile = env.dir.join("sub").join("c.pid");
    fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
    let out = env.rt(&[
        "create",
        "--bundle",
        path_str(&b.dir),
        "--pid-file",
        path_str(&pidfile),
        &id,
    ]);
    assert_ok(&out, "create --pid-file");
    let text = fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("pid file: {e}{out}"));
    assert_eq!(
        text.trim().parse::<i64>().ok(),
        Some(env.pid(&id)),
        "pid file {text:?}"
    );
    assert_ok(
        &env.rt(&["delete", "--force", &id]),
        "delete --force created",
    );
    env.assert_clean(&id, &b.dir, None);
}

#[test]
fn list_in_json_and_quiet() {
    let env = TestEnv::new("list");
    let b = env.bundle();
    let (a, c) = (env.id(), env.id());
    env.must_create(&b, &a);
    env.must_create(&b, &c);
    let out = env.rt(&["list", "-q"]);
    assert_ok(&out, "list -q");
    let mut ids: Vec<&str> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![a.as_str(), c.as_str()], "list -q{out}");

    let out = env.rt(&["list", "--format", "json"]);
    assert_ok(&out, "list --format json");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}{out}"));
    let arr = v.as_array().unwrap_or_else(|| panic!("not an array{out}"));
    assert_eq!(arr.len(), 2, "{out}");
    for e in arr {
        assert_eq!(e["status"], "created", "{out}");
        assert!(e["pid"].as_i64().is_some_and(|p| p > 0), "{out}");
        assert_eq!(e["bundle"], path_str(&b.dir), "{out}");
    }
    let out = env.rt(&["list"]);
    assert_ok(&out, "list (table)");
    assert!(out.stdout.contains(&a) && out.stdout.contains(&c), "{out}");

    for id in [&a, &c] {
        assert_ok(&env.rt(&["delete", "--force", id]), "delete");
    }
    let out = env.rt(&["list", "-q"]);
    assert!(
        out.success() && out.stdout.trim().is_empty(),
        "list after delete{out}"
    );
}

#[test]
fn ps_lists_the_container_pids() {
    let env = TestEnv::new("ps");
    let mut b = env.bundle();
    b.sh("sleep 1000 & sleep 1000 & wait");
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let pid = env.pid(&id);
    let mut pids = Vec::new();
    for _ in 0..200 {
        let out = env.rt(&["ps", "--format", "json", &id]);
        assert_ok(&out, "ps --format json");
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}{out}"));
        pids = v
            .as_array()
            .unwrap_or_else(|| panic!("ps json is not an array{out}"))
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        if pids.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pids.contains(&pid), "ps lacks init {pid}: {pids:?}");
    assert_eq!(pids.len(), 3, "sh + 2 sleeps expected: {pids:?}");
    let out = env.rt(&["ps", &id]);
    assert_ok(&out, "ps (table)");
    assert!(out.stdout.contains(&pid.to_string()), "{out}");
}

#[test]
fn kill_by_name_number_default_and_all() {
    let env = TestEnv::new("kill");
    let mut b = env.bundle();
    b.sh(
        "trap 'echo USR1 >> /sig' USR1; trap 'echo TERM >> /sig; exit 0' TERM; \
          while true; do usleep 20000; done",
    );
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let sig = b.rootfs().join("sig");
    let read_sig = || fs::read_to_string(&sig).unwrap_or_default();
    // The trap is set by the shell after start; give it a moment, then signal until seen.
    let mut seen = false;
    for _ in 0..100 {
        assert_ok(&env.rt(&["kill", &id, "10"]), "kill by number 10 (USR1)");
        for _ in 0..10 {
            if read_sig().contains("USR1") {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if seen {
            break;
        }
    }
    assert!(
        seen && read_sig().contains("USR1"),
        "USR1 not delivered: {:?}",
        read_sig()
    );
    assert_eq!(env.status(&id), "running");
    assert_ok(&env.rt(&["kill", &id, "SIGUSR1"]), "kill by SIG name");
    assert_ok(&env.rt(&["kill", &id, "USR1"]), "kill by short name");
    assert_ok(&env.rt(&["kill", &id]), "kill with the default signal");
    env.wait_status(&id, "stopped", WAIT);
    assert!(
        read_sig().contains("TERM"),
        "default signal should be TERM: {:?}",
        read_sig()
    );

    // --all reaches every process, not just init.
    let mut b = env.bundle();
    b.sh("sleep 1000 & sleep 1000 & wait");
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let out = env.rt(&["kill", "--all", &id, "KILL"]);
    assert_ok(&out, "kill --all");
    env.wait_status(&id, "stopped", WAIT);
    let out = env.rt(&["ps", "--format", "json", &id]);
    if out.success() {
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or(json!([]));
        let live: Vec<i64> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_i64)
                    .filter(|p| host::process_alive(*p))
                    .collect()
            })
            .unwrap_or_default();
        assert!(live.is_empty(), "processes survived kill --all: {live:?}");
    }
}

#[test]
fn delete_running_needs_force() {
    let env = TestEnv::new("delete");
    let mut b = env.bundle();
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let pid = env.pid(&id);
    let out = env.rt(&["delete", &id]);
    assert_failed_mentioning(
        &out,
        "delete of a running container",
        &[&["running", "force", "stop"]],
    );
    assert_eq!(
        env.status(&id),
        "running",
        "failed delete must not touch the container"
    );
    assert_ok(&env.rt(&["delete", "--force", &id]), "delete --force");
    env.assert_clean(&id, &b.dir, Some(pid));
}

#[test]
fn global_log_flags() {
    let env = TestEnv::new("logflags");
    let b = env.bundle();
    let id = env.id();
    let log = env.dir.join("runtime.log");
    let out = env.rt(&[
        "--log",
        path_str(&log),
        "--log-format",
        "json",
        "--debug",
        "create",
        "--bundle",
        path_str(&b.dir),
        &id,
    ]);
    assert_ok(&out, "create with --log/--log-format json/--debug");
    let text =
        fs::read_to_string(&log).unwrap_or_else(|e| panic!("log file {}: {e}{out}", log.display()));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "--debug wrote nothing to the log{out}");
    for l in &lines {
        assert!(
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {l}"
        );
    }
    let out = env.rt(&[
        "--log",
        path_str(&log),
        "--log-format",
        "text",
        "delete",
        "--force",
        &id,
    ]);
    assert_ok(&out, "delete with --log-format text");
    // --systemd-cgroup is a global flag every command accepts.
    let out = env.rt(&["--systemd-cgroup", "list", "-q"]);
    assert_ok(&out, "--systemd-cgroup list");
    env.assert_clean(&id, &b.dir, None);
}

#[test]
fn preserve_fds_and_no_new_keyring() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new("preservefds");
    let mut b = env.bundle();
    b.sh("cat <&3");
    b.save();
    let id = env.id();
    let payload = env.dir.join("payload");
    fs::write(&payload, "passed-through-fd-3").unwrap();
    let file = fs::File::open(&payload).unwrap();
    let raw = file.as_raw_fd();
    let mut c = env.command();
    c.args([
        "run",
        "--bundle",
        path_str(&b.dir),
        "--preserve-fds",
        "1",
        "--no-new-keyring",
        &id,
    ]);
    // SAFETY: dup2 and fcntl are async-signal-safe; raw stays open until after spawn.
    unsafe {
        c.pre_exec(move || {
            // dup2(3, 3) would keep O_CLOEXEC, so clear it explicitly.
            if libc::dup2(raw, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = env.exec(&mut c);
    drop(file);
    assert_ok(&out, "run --preserve-fds 1 --no-new-keyring");
    assert!(
        out.stdout.contains("passed-through-fd-3"),
        "fd 3 not passed{out}"
    );
}

/// Cgroup dirs named `name` whose cgroup.procs lists `pid`.
fn cgroups_holding(name: &str, pid: i64) -> Vec<std::path::PathBuf> {
    host::cgroup_dirs_named(name)
        .into_iter()
        .filter(|d| {
            fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == pid.to_string())
        })
        .collect()
}

#[test]
fn cgroups_are_created_and_removed() {
    let env = TestEnv::new("cgroups");
    // Without linux.cgroupsPath the cgroup is named after the id (as runc does).
    let b = env.bundle();
    let id = env.id();
    env.must_create(&b, &id);
    let pid = env.pid(&id);
    let held = cgroups_holding(&id, pid);
    let made = host::cgroup_dirs_named(&id);
    assert!(
        !held.is_empty(),
        "no cgroup named {id} holds init {pid}: {made:?}"
    );
    // The init is in its directory of every hierarchy (v1 and cgroup2 alike), from its start.
    assert_eq!(
        held.len(),
        made.len(),
        "init {pid} is not in all of {made:?}"
    );
    assert_ok(&env.rt(&["delete", "--force", &id]), "delete --force");
    env.assert_clean(&id, &b.dir, Some(pid));

    // An explicit cgroupsPath is used as given.
    let mut b = env.bundle();
    let id = env.id();
    let name = format!("skifftest-{id}");
    b.set("/linux/cgroupsPath", json!(format!("/{name}")));
    env.must_create(&b, &id);
    let pid = env.pid(&id);
    assert!(
        !cgroups_holding(&name, pid).is_empty(),
        "cgroupsPath /{name} not used"
    );
    assert_ok(&env.rt(&["delete", "--force", &id]), "delete --force");
    let left = host::cgroup_dirs_named(&name);
    assert!(left.is_empty(), "cgroups left after delete: {left:?}");
}

#[test]
fn busybox_bundle_script_makes_a_runnable_bundle() {
    // The README's first container: the bundle script, then `run -b DIR ID`.
    let env = TestEnv::new("bundle-script");
    let dir = env.dir.join("hello");
    let script = skiff_tests::binary::workspace_dir().join("tests/images/busybox-bundle.sh");
    let out = env.exec(std::process::Command::new(&script).arg(&dir));
    assert_ok(&out, "busybox-bundle.sh");
    let cfg: Value = serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap_or_else(|e| panic!("bundle config.json: {e}"));
    assert_eq!(cfg["process"]["args"], json!(["sh"]), "{cfg}");
    // sh reads its commands from stdin, which is /dev/null here: it exits 0 at once.
    let id = env.id();
    let out = env.rt(&["run", "-b", path_str(&dir), &id]);
    assert_ok(&out, "run -b of the script's bundle");
    env.assert_clean(&id, &dir, None);
}

#[test]
fn state_notices_an_init_killed_from_outside() {
    // The init may linger as a zombie (its reaper is not the runtime): that is "stopped".
    let env = TestEnv::new("outside-kill");
    let mut b = env.bundle();
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let pid = env.pid(&id);
    // SAFETY: plain kill(2) of the container's init pid, which we just read from `state`.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    env.wait_status(&id, "stopped", WAIT);
    assert_ok(&env.rt(&["delete", &id]), "delete after an outside kill");
    env.assert_clean(&id, &b.dir, Some(pid));
}
