//! Bad input and wrong states: a non-zero exit, a message naming the problem, nothing left.
//!
//! Messages are matched loosely (case-insensitive substrings, any of a group) because
//! runtimes word errors differently; `skiff_also` groups are checked only for skiff.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use skiff_tests::env::path_str;
use skiff_tests::{assert_failed_mentioning, is_runc, Output, TestEnv};
use std::fs;
use std::time::Duration;

fn expect_error(out: &Output, what: &str, groups: &[&[&str]], skiff_also: &[&[&str]]) {
    assert_failed_mentioning(out, what, groups);
    if !is_runc() {
        assert_failed_mentioning(out, what, skiff_also);
    }
}

const MISSING: &[&str] = &["not exist", "not found", "no such"];

#[test]
fn missing_bundle_dir() {
    let env = TestEnv::new("err-nobundle");
    let id = env.id();
    let bundle = env.dir.join("no-such-bundle");
    let out = env.rt(&["create", "--bundle", path_str(&bundle), &id]);
    expect_error(
        &out,
        "create with a missing bundle",
        &[&["no-such-bundle"]],
        &[],
    );
    env.assert_clean(&id, &bundle, None);
}

#[test]
fn missing_config_json() {
    let env = TestEnv::new("err-noconfig");
    let b = env.bundle();
    fs::remove_file(b.config_path()).unwrap();
    let id = env.id();
    let out = env.rt(&["create", "--bundle", path_str(&b.dir), &id]);
    expect_error(&out, "create without config.json", &[&["config.json"]], &[]);
    env.assert_clean(&id, &b.dir, None);
}

#[test]
fn config_json_that_is_not_json() {
    let env = TestEnv::new("err-badjson");
    let b = env.bundle();
    for (n, text) in [
        "{bad",
        "",
        "[]",
        "null",
        "\"string\"",
        "{\"ociVersion\": \"1.2.0\"",
    ]
    .iter()
    .enumerate()
    {
        fs::write(b.config_path(), text).unwrap();
        let id = env.id();
        let out = env.rt(&["create", "--bundle", path_str(&b.dir), &id]);
        expect_error(
            &out,
            &format!("config.json #{n} = {text:?}"),
            &[&[
                "json",
                "invalid",
                "parse",
                "expected",
                "eof",
                "unmarshal",
                "missing",
                "process",
                "root",
            ]],
            &[&["config.json"]],
        );
        env.assert_clean(&id, &b.dir, None);
    }
}

#[test]
fn config_json_with_wrong_types() {
    let env = TestEnv::new("err-types");
    for (pointer, value, names) in [
        ("/process/args", json!("sh"), "args"),
        ("/process/env", json!({"A": "B"}), "env"),
        ("/process/user/uid", json!("root"), "uid"),
        ("/root", json!(5), "root"),
        ("/mounts", json!("proc"), "mounts"),
        ("/linux/namespaces", json!("pid"), "namespaces"),
    ] {
        let mut b = env.bundle();
        b.set(pointer, value.clone());
        let id = env.id();
        let out = env.create(&b, &id);
        expect_error(&out, &format!("{pointer} = {value}"), &[&[names]], &[]);
        env.assert_clean(&id, &b.dir, None);
    }
}

#[test]
fn missing_rootfs() {
    let env = TestEnv::new("err-norootfs");
    let mut b = env.bundle();
    b.set("/root/path", json!("no-such-rootfs"));
    let id = env.id();
    let out = env.create(&b, &id);
    expect_error(
        &out,
        "create with a missing rootfs",
        &[&["no-such-rootfs"]],
        &[],
    );
    env.assert_clean(&id, &b.dir, None);
}

#[test]
fn process_binary_not_found() {
    let env = TestEnv::new("err-noexe");
    let mut b = env.bundle();
    b.args(&["/no/such/binary"]);
    let id = env.id();
    let out = env.run_fg(&b, &id);
    expect_error(
        &out,
        "run of a missing executable",
        &[&["/no/such/binary"]],
        &[],
    );
    env.assert_clean(&id, &b.dir, None);
}

#[test]
fn invalid_container_ids() {
    let env = TestEnv::new("err-badid");
    let b = env.bundle();
    for id in ["../evil-id", "a/b", ".", ""] {
        let out = env.rt(&["create", "--bundle", path_str(&b.dir), id]);
        assert!(!out.success(), "create with id {id:?} succeeded{out}");
        if !id.is_empty() {
            expect_error(&out, &format!("id {id:?}"), &[&["id"]], &[&[id]]);
        }
    }
    assert!(
        !env.root.join("../evil-id").exists(),
        "an id escaped the state root"
    );
    let list = env.rt(&["list", "-q"]);
    assert!(list.success() && list.stdout.trim().is_empty(), "{list}");
}

#[test]
fn duplicate_id() {
    let env = TestEnv::new("err-dup");
    let b = env.bundle();
    let id = env.id();
    env.must_create(&b, &id);
    let pid = env.pid(&id);
    let out = env.create(&b, &id);
    expect_error(
        &out,
        "create with a duplicate id",
        &[&["exist", "already", "in use"]],
        &[&[&id]],
    );
    let st = env.state(&id);
    assert_eq!(
        st["status"], "created",
        "the first container was disturbed: {st}"
    );
    assert_eq!(st["pid"].as_i64(), Some(pid), "{st}");
}

#[test]
fn unknown_id_for_every_command() {
    let env = TestEnv::new("err-unknown");
    let id = format!("no-such-container-{}", std::process::id());
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
        vec!["ps", &id],
        vec!["exec", &id, "true"],
    ] {
        let out = env.rt(&args);
        expect_error(
            &out,
            &format!("{} of an unknown id", args[0]),
            &[MISSING],
            &[&[&id]],
        );
    }
    // --force on an unknown id is not an error for runc-compatible callers.
    let out = env.rt(&["delete", "--force", &id]);
    assert!(!out.timed_out, "{out}");
}

#[test]
fn unknown_signal() {
    let env = TestEnv::new("err-signal");
    let mut b = env.bundle();
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let out = env.rt(&["kill", &id, "SIGFOO"]);
    expect_error(&out, "kill with an unknown signal name", &[&["foo"]], &[]);
    let out = env.rt(&["kill", &id, "99"]);
    expect_error(
        &out,
        "kill with signal 99",
        &[&["99", "invalid", "signal"]],
        &[&["99"]],
    );
    assert_eq!(
        env.status(&id),
        "running",
        "a bad kill must not stop the container"
    );
}

#[test]
fn start_of_a_running_or_stopped_container() {
    let env = TestEnv::new("err-start");
    let mut b = env.bundle();
    b.sh("while [ ! -e /go ]; do usleep 10000; done");
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    let out = env.rt(&["start", &id]);
    expect_error(
        &out,
        "start of a running container",
        &[&["running", "not created"]],
        &[],
    );
    fs::write(b.rootfs().join("go"), "").unwrap();
    env.wait_status(&id, "stopped", Duration::from_secs(10));
    let out = env.rt(&["start", &id]);
    expect_error(
        &out,
        "start of a stopped container",
        &[&["stopped", "not created"]],
        &[],
    );
    let out = env.rt(&["exec", &id, "true"]);
    expect_error(
        &out,
        "exec into a stopped container",
        &[&["stopped", "not running"]],
        &[],
    );
}

/// runc's callers (containerd's shim, podman) tell "it had already exited" from a failure by runc's
/// words "container not running", and kill `--all` after every exit, which must succeed.
#[test]
fn kill_of_a_stopped_container() {
    let env = TestEnv::new("err-kill-stopped");
    let mut b = env.bundle();
    b.args(&["true"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    env.wait_status(&id, "stopped", Duration::from_secs(10));
    let out = env.rt(&["kill", &id, "KILL"]);
    assert_failed_mentioning(
        &out,
        "kill of a stopped container",
        &[&["container not running"]],
    );
    let out = env.rt(&["kill", "--all", &id, "KILL"]);
    assert!(
        out.success(),
        "kill --all of a stopped container failed{out}"
    );
    assert_eq!(env.status(&id), "stopped");
}
