//! The container process: args, env, cwd, user, umask, rlimits, oom score, capabilities, terminal.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use skiff_tests::env::path_str;
use skiff_tests::{skip_on_runc, ConsoleSocket, TestEnv};
use std::time::Duration;

#[test]
fn args_env_and_cwd() {
    let env = TestEnv::new("proc-args");
    let mut b = env.bundle();
    b.args(&[
        "sh",
        "-c",
        "echo \"$FOO\"; pwd; echo \"$0|$1\"",
        "zero",
        "one two",
    ]);
    b.push("/process/env", json!("FOO=bar baz"));
    b.set("/process/cwd", json!("/tmp"));
    let id = env.id();
    let out = env.run_fg(&b, &id);
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, vec!["bar baz", "/tmp", "zero|one two"], "{out}");
}

#[test]
fn sigpipe_has_its_default_disposition() {
    let env = TestEnv::new("proc-sigpipe");
    let mut b = env.bundle();
    let out = env.run_sh(&mut b, "grep SigIgn /proc/self/status");
    let mask = out
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|m| u64::from_str_radix(m, 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn line{out}"));
    assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored{out}");
}

#[test]
fn missing_cwd_is_created() {
    let env = TestEnv::new("proc-newcwd");
    let mut b = env.bundle();
    b.set("/process/cwd", json!("/does/not/exist/yet"));
    let out = env.run_sh(&mut b, "pwd");
    assert_eq!(out.stdout.trim(), "/does/not/exist/yet", "{out}");
}

#[test]
fn user_group_and_additional_gids() {
    let env = TestEnv::new("proc-user");
    let mut b = env.bundle();
    b.set(
        "/process/user",
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 29]}),
    );
    let out = env.run_sh(&mut b, "id -u; id -g; id -G");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..2], &["1000", "1000"], "{out}");
    let groups: Vec<&str> = lines
        .get(2)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    for g in ["10", "29"] {
        assert!(groups.contains(&g), "additional gid {g} missing{out}");
    }
    assert!(!groups.contains(&"0"), "root group kept{out}");
}

#[test]
fn umask_is_applied() {
    let env = TestEnv::new("proc-umask");
    let mut b = env.bundle();
    b.set("/process/user/umask", json!(0o077));
    let out = env.run_sh(&mut b, "umask; touch /tmp/f; stat -c %a /tmp/f");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["0077", "600"],
        "{out}"
    );
}

#[test]
fn rlimits_are_applied() {
    let env = TestEnv::new("proc-rlimits");
    let mut b = env.bundle();
    b.set(
        "/process/rlimits",
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 1234, "hard": 2345},
            {"type": "RLIMIT_NPROC", "soft": 777, "hard": 777}
        ]),
    );
    let out = env.run_sh(&mut b, "ulimit -n; ulimit -Hn; ulimit -u");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["1234", "2345", "777"],
        "{out}"
    );
}

#[test]
fn oom_score_adj_can_be_raised() {
    let env = TestEnv::new("proc-oom");
    let mut b = env.bundle();
    b.set("/process/oomScoreAdj", json!(500));
    let out = env.run_sh(&mut b, "cat /proc/self/oom_score_adj");
    assert_eq!(out.stdout.trim(), "500", "{out}");
}

#[test]
fn oom_score_adj_below_the_current_value_is_clamped() {
    // Root here lacks CAP_SYS_RESOURCE, so lowering fails; skiff clamps and warns.
    if skip_on_runc("runc fails the container when lowering oom_score_adj is refused") {
        return;
    }
    let env = TestEnv::new("proc-oomlow");
    let mut b = env.bundle();
    b.set("/process/oomScoreAdj", json!(-500));
    let out = env.run_sh(&mut b, "cat /proc/self/oom_score_adj");
    let v: i64 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out}"));
    assert!((-500..=1000).contains(&v), "{out}");
}

#[test]
fn capabilities_and_no_new_privileges() {
    let env = TestEnv::new("proc-caps");
    let mut b = env.bundle();
    let out = env.run_sh(
        &mut b,
        "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status",
    );
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    let mask = format!("{:016x}", (1u64 << 5) | (1 << 10) | (1 << 29));
    for key in ["CapEff", "CapBnd", "CapPrm"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or("");
        assert!(line.ends_with(&mask), "{key} should be {mask}{out}");
    }
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{out}"
    );
}

#[test]
fn terminal_through_the_console_socket() {
    let env = TestEnv::new("proc-tty");
    let sock = ConsoleSocket::bind(&env.dir.join("console.sock"));
    let mut b = env.bundle();
    b.set("/process/terminal", json!(true));
    b.set("/process/consoleSize", json!({"height": 40, "width": 120}));
    b.sh("[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; read line; echo got-$line; exit 3");
    b.save();
    let id = env.id();
    let out = env.rt(&[
        "create",
        "--bundle",
        path_str(&b.dir),
        "--console-socket",
        path_str(&sock.path),
        &id,
    ]);
    assert!(out.success(), "create with --console-socket{out}");
    let mut pty = sock
        .recv_master(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}{out}"));
    env.must_start(&id);
    let text = pty
        .read_until("40 120", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("consoleSize not applied: {e}"));
    assert!(
        text.contains("is-a-tty"),
        "stdio is not the terminal: {text:?}"
    );
    pty.write_str("typed-input\n");
    pty.read_until("got-typed-input", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("input not delivered: {e}"));
    env.wait_status(&id, "stopped", Duration::from_secs(10));
}
