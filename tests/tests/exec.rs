//! `exec` into a running container.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use skiff_tests::env::path_str;
use skiff_tests::{assert_ok, host, ConsoleSocket, TestEnv};
use std::fs;
use std::time::Duration;

/// A running container (`sleep`), returning its id and init pid.
fn running(env: &TestEnv) -> (String, i64) {
    let mut b = env.bundle();
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let pid = env.pid(&id);
    (id, pid)
}

#[test]
fn exec_args_and_exit_code() {
    let env = TestEnv::new("exec-args");
    let (id, _) = running(&env);
    let out = env.rt(&["exec", &id, "sh", "-c", "echo hi-$0-$1", "zero", "one"]);
    assert_ok(&out, "exec");
    assert_eq!(out.stdout.trim(), "hi-zero-one", "{out}");
    let out = env.rt(&["exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(
        out.code,
        Some(5),
        "exec should exit with the process's status{out}"
    );
    assert_eq!(env.status(&id), "running");
}

#[test]
fn exec_env_cwd_and_user() {
    let env = TestEnv::new("exec-opts");
    let (id, _) = running(&env);
    let out = env.rt(&[
        "exec",
        "-e",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g",
    ]);
    assert_ok(&out, "exec with -e/--cwd/--user");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["bar", "/tmp", "1000", "1000"],
        "{out}"
    );
}

#[test]
fn exec_runs_in_the_container_namespaces() {
    let env = TestEnv::new("exec-ns");
    let (id, pid) = running(&env);
    let kinds = ["pid", "net", "ipc", "uts", "mnt"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let out = env.rt(&["exec", &id, "sh", "-c", &format!("{script} hostname")]);
    assert_ok(&out, "exec");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for (i, k) in kinds.iter().enumerate() {
        let want = format!("{k}:[{}]", host::ns_inode(&format!("/proc/{pid}/ns/{k}")));
        assert_eq!(
            lines.get(i),
            Some(&want.as_str()),
            "exec'd process not in the {k} ns{out}"
        );
    }
    assert_eq!(lines.get(kinds.len()), Some(&"skiff-test"), "{out}");
}

#[test]
fn exec_detached_with_pid_file() {
    let env = TestEnv::new("exec-detach");
    let (id, pid) = running(&env);
    let pidfile = env.dir.join("exec.pid");
    let out = env.rt(&[
        "exec",
        "-d",
        "--pid-file",
        path_str(&pidfile),
        &id,
        "sleep",
        "999",
    ]);
    assert_ok(&out, "exec -d --pid-file");
    let text = fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("pid file: {e}{out}"));
    let epid: i64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file {text:?}{out}"));
    assert!(host::process_alive(epid), "exec'd process {epid} not alive");
    assert_ne!(epid, pid);
    assert_eq!(
        host::ns_inode(&format!("/proc/{epid}/ns/pid")),
        host::ns_inode(&format!("/proc/{pid}/ns/pid"))
    );
    let comm = fs::read_to_string(format!("/proc/{epid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "sleep");
    let ps = env.rt(&["ps", "--format", "json", &id]);
    assert!(
        ps.success() && ps.stdout.contains(&epid.to_string()),
        "exec'd pid not in ps{ps}"
    );
}

#[test]
fn exec_process_json() {
    let env = TestEnv::new("exec-process");
    let (id, _) = running(&env);
    let p = env.dir.join("process.json");
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh", "-c", "echo $A; pwd; id -u"],
        "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "A=from-json"],
        "cwd": "/etc"
    });
    fs::write(&p, process.to_string()).unwrap();
    let out = env.rt(&["exec", "--process", path_str(&p), &id]);
    assert_ok(&out, "exec --process");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["from-json", "/etc", "1000"],
        "{out}"
    );
}

#[test]
fn exec_with_a_terminal() {
    let env = TestEnv::new("exec-tty");
    let (id, _) = running(&env);
    let sock = ConsoleSocket::bind(&env.dir.join("exec-console.sock"));
    let out = env.rt(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        path_str(&sock.path),
        &id,
        "sh",
        "-c",
        "[ -t 0 ] && echo is-a-tty; read x; echo got-$x",
    ]);
    assert_ok(&out, "exec -t -d --console-socket");
    let mut pty = sock
        .recv_master(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}{out}"));
    pty.read_until("is-a-tty", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("exec'd process has no terminal: {e}"));
    pty.write_str("typed\n");
    pty.read_until("got-typed", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("input not delivered: {e}"));
}

#[test]
fn exec_enters_every_namespace_of_a_user_namespaced_container() {
    let env = TestEnv::new("exec-userns");
    let mut b = env.bundle();
    let out = std::process::Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(b.rootfs())
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {out:?}");
    b.namespace("user", None);
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.set("/linux/uidMappings", map.clone());
    b.set("/linux/gidMappings", map);
    b.remove_mount("/sys/fs/cgroup");
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let pid = env.pid(&id);
    let out = env.rt(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; for n in user mnt pid; do readlink /proc/self/ns/$n; done; echo $$; cat /proc/self/cgroup",
    ]);
    assert_ok(&out, "exec");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    for (i, ns) in ["user", "mnt", "pid"].iter().enumerate() {
        let want = fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(lines[1 + i], want.to_string_lossy(), "{ns}: {out}");
    }
    // Born in the container's pid namespace: a small pid there, not the host's.
    assert!(lines[4].parse::<i64>().unwrap() < 100, "{out}");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(lines[5..].join("\n"), cgroups.trim_end(), "cgroups: {out}");
}
