//! Container specs, `ExecSync` and `UpdateContainerResources`, end to end.
//!
//! The `skiff-monitor exec` tests drive the exec helper against containers made by the `skiff` CLI.
//! The CRI tests go through the real socket: pod, image, container, then what the container's spec
//! made of it, seen from inside with `ExecSync`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_tests::cri::{
    container_config, host_network, pod_config, target_bin, v1 as cri, Pod, Skiffd,
};
use skiff_tests::TestEnv;
use tonic::Code;

// ---- the exec helper, on containers made by the runtime CLI ----

/// A running `sleep` container with the default bundle config.
fn sleeping(env: &TestEnv) -> String {
    let mut b = env.bundle_light();
    b.args(&["sleep", "1000"]);
    b.set(
        "/process/env",
        serde_json::json!(["PATH=/bin:/usr/bin", "FROM_SPEC=yes"]),
    );
    b.set("/process/cwd", serde_json::json!("/tmp"));
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    id
}

struct HelperRun {
    stdout: String,
    stderr: String,
    result: serde_json::Value,
    took: Duration,
}

fn helper(env: &TestEnv, id: &str, timeout: u64, cmd: &[&str]) -> HelperRun {
    let result = env.dir.join(format!("exec-{}.json", cmd.len()));
    let _ = std::fs::remove_file(&result);
    let t = Instant::now();
    let out = Command::new(target_bin("skiff-monitor"))
        .arg("exec")
        .arg("--root")
        .arg(&env.root)
        .args(["--id", id, "--timeout", &timeout.to_string()])
        .arg("--result")
        .arg(&result)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run skiff-monitor exec");
    let took = t.elapsed();
    assert!(out.status.success(), "helper failed: {out:?}");
    let text = std::fs::read_to_string(&result).expect("helper result file");
    HelperRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        result: serde_json::from_str(&text).expect("result is JSON"),
        took,
    }
}

#[test]
fn exec_helper_runs_with_the_container_process_settings() {
    let env = TestEnv::new("cri-exec-helper");
    let id = sleeping(&env);
    let r = helper(
        &env,
        &id,
        10,
        &["sh", "-c", "echo out-$FROM_SPEC; pwd; echo err >&2; exit 4"],
    );
    assert_eq!(r.stdout, "out-yes\n/tmp\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(r.result, serde_json::json!({"exited": 4}));
    let r = helper(&env, &id, 0, &["sh", "-c", "kill -9 $$"]);
    assert_eq!(r.result, serde_json::json!({"exited": 137}));
}

#[test]
fn exec_helper_kills_at_the_timeout() {
    let env = TestEnv::new("cri-exec-timeout");
    let id = sleeping(&env);
    let r = helper(&env, &id, 1, &["sleep", "60"]);
    assert_eq!(r.result, serde_json::json!("timed_out"));
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
    // Only the container's init is left.
    let ps = env.rt(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_str(ps.stdout.trim()).unwrap_or_default();
    assert_eq!(pids.len(), 1, "the timed-out process survived: {ps}");
}

#[test]
fn exec_helper_reports_a_missing_container() {
    let env = TestEnv::new("cri-exec-missing");
    let r = helper(&env, "no-such-container", 5, &["true"]);
    assert!(r.result.get("failed").is_some(), "{}", r.result);
}

// ---- the CRI, over the socket ----

/// A pod on the host's network (these tests need no CNI).
async fn pod(d: &mut Skiffd, name: &str) -> Pod {
    let config = host_network(pod_config(name, &d.log_dir()));
    d.run_pod(config).await
}

/// A daemon with busybox pulled and one pod running `config`.
async fn setup(name: &str, config: cri::ContainerConfig) -> (Skiffd, String) {
    let mut d = Skiffd::start().await;
    let pod = pod(&mut d, name).await;
    d.pull_busybox().await;
    let id = d.run_container(&pod, config).await;
    (d, id)
}

fn sleeper(name: &str) -> cri::ContainerConfig {
    container_config(name, "sleep 1000")
}

fn security(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

async fn exec(
    d: &mut Skiffd,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    d.rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

async fn sh(d: &mut Skiffd, id: &str, script: &str) -> (String, String, i32) {
    let r = exec(d, id, &["sh", "-c", script], 30)
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"));
    (
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
        r.exit_code,
    )
}

#[tokio::test]
async fn exec_sync_output_and_exit_codes() {
    let mut c = sleeper("exec");
    c.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hello".into(),
    }];
    c.working_dir = "/tmp".into();
    let (mut d, id) = setup("exec", c).await;
    let (out, err, code) = sh(&mut d, &id, "echo $GREETING; pwd; echo oops >&2; exit 3").await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("hello\n/tmp\n", "oops\n", 3)
    );
    let (_, _, code) = sh(&mut d, &id, "true").await;
    assert_eq!(code, 0);
    let e = exec(&mut d, "no-such-container", &["true"], 5)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = exec(&mut d, &id, &[], 5).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

#[tokio::test]
async fn exec_sync_timeout_is_deadline_exceeded() {
    let (mut d, id) = setup("exec-timeout", sleeper("t")).await;
    let t = Instant::now();
    let e = exec(&mut d, &id, &["sleep", "60"], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(t.elapsed() < Duration::from_secs(30));
    let (out, _, _) = sh(&mut d, &id, "ps -o args | grep -c '^sleep 60' || true").await;
    assert_eq!(out.trim(), "0", "the timed-out command is still running");
}

#[tokio::test]
async fn exec_sync_truncates_output_at_16_mib() {
    let (mut d, id) = setup("exec-big", sleeper("big")).await;
    // As kubelet's client: 16 MiB messages.
    d.rt = d.rt.clone().max_decoding_message_size(16 << 20);
    let r = exec(&mut d, &id, &["sh", "-c", "head -c 20000000 /dev/zero"], 60)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    // Cut to what fits in one 16 MiB CRI message, kubelet's limit.
    assert!(r.stdout.len() < 16 << 20, "{}", r.stdout.len());
    assert!(
        r.stdout.len() >= (16 << 20) - (64 << 10),
        "{}",
        r.stdout.len()
    );
    assert!(r.stdout.iter().all(|b| *b == 0));
}

#[tokio::test]
async fn exec_sync_in_a_stopped_container_is_a_failed_precondition() {
    let (mut d, id) = setup("exec-stopped", container_config("done", "true")).await;
    d.wait_exited(&id).await;
    let e = exec(&mut d, &id, &["true"], 5).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
}

#[tokio::test]
async fn run_as_user_group_and_supplemental_groups() {
    let mut c = sleeper("user");
    let sc = security(&mut c);
    sc.run_as_user = Some(cri::Int64Value { value: 1000 });
    sc.run_as_group = Some(cri::Int64Value { value: 2000 });
    sc.supplemental_groups = vec![3000];
    let (mut d, id) = setup("user", c).await;
    let (out, _, code) = sh(&mut d, &id, "id -u; id -g; id -G").await;
    assert_eq!(code, 0);
    assert_eq!(out, "1000\n2000\n2000 3000\n");
}

#[tokio::test]
async fn run_as_group_without_a_user_is_refused() {
    let mut d = Skiffd::start().await;
    let pod = pod(&mut d, "group-only").await;
    d.pull_busybox().await;
    let mut c = sleeper("group-only");
    security(&mut c).run_as_group = Some(cri::Int64Value { value: 2000 });
    let e = d.create_container(&pod, c.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("run_as_group"), "{e}");
    let left = d.list_containers(None).await;
    assert!(left.is_empty(), "a refused container was kept: {left:?}");
    // With a user by name the same group is fine.
    security(&mut c).run_as_username = "root".into();
    let id = d.run_container(&pod, c).await;
    let (out, _, code) = sh(&mut d, &id, "id -u; id -g").await;
    assert_eq!((code, out.as_str()), (0, "0\n2000\n"));
}

#[tokio::test]
async fn readonly_rootfs_refuses_writes() {
    let mut c = sleeper("ro");
    security(&mut c).readonly_rootfs = true;
    let (mut d, id) = setup("ro", c).await;
    let (_, err, code) = sh(&mut d, &id, "touch /new-file").await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // The kernel file systems and the pod's shared memory stay writable.
    let (_, err, code) = sh(&mut d, &id, "touch /dev/shm/ok").await;
    assert_eq!(code, 0, "{err}");
}

/// The capability bits of `CapBnd` in /proc/self/status.
fn bounding(status: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .expect("CapBnd line");
    u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).expect("hex caps")
}

#[tokio::test]
async fn dropped_and_added_capabilities_show_in_proc_status() {
    const CHOWN: u64 = 1 << 0;
    const KILL: u64 = 1 << 5;
    const NET_ADMIN: u64 = 1 << 12;
    const NET_RAW: u64 = 1 << 13;
    let mut c = container_config(
        "caps",
        "grep CapBnd /proc/self/status > /tmp/init-caps; sleep 1000",
    );
    security(&mut c).capabilities = Some(cri::Capability {
        add_capabilities: vec!["NET_ADMIN".into()],
        drop_capabilities: vec!["CAP_NET_RAW".into(), "chown".into()],
        add_ambient_capabilities: vec![],
    });
    let (mut d, id) = setup("caps", c).await;
    let (out, _, _) = sh(&mut d, &id, "cat /proc/self/status").await;
    let caps = bounding(&out);
    assert_eq!(
        caps & (CHOWN | NET_RAW),
        0,
        "dropped caps present: {caps:x}"
    );
    assert_eq!(caps & (KILL | NET_ADMIN), KILL | NET_ADMIN, "{caps:x}");
    let (out, _, _) = sh(&mut d, &id, "cat /tmp/init-caps").await;
    assert_eq!(
        bounding(&out),
        caps,
        "the container's process and ExecSync have the same capabilities"
    );
}

fn host_dir(d: &Skiffd, name: &str) -> PathBuf {
    let p = d.dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn bind(host: &Path, container: &str, readonly: bool) -> cri::Mount {
    cri::Mount {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.into(),
        readonly,
        ..Default::default()
    }
}

#[tokio::test]
async fn bind_mounts_readonly_and_writable() {
    let mut d = Skiffd::start().await;
    let ro = host_dir(&d, "ro-data");
    let rw = host_dir(&d, "rw-data");
    std::fs::write(ro.join("greeting"), "from the host\n").unwrap();
    let mut c = sleeper("mounts");
    c.mounts = vec![bind(&ro, "/data", true), bind(&rw, "/out", false)];
    let pod = pod(&mut d, "mounts").await;
    d.pull_busybox().await;
    let id = d.run_container(&pod, c).await;
    let (out, _, _) = sh(&mut d, &id, "cat /data/greeting").await;
    assert_eq!(out, "from the host\n");
    let (_, err, code) = sh(&mut d, &id, "touch /data/nope").await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (_, err, code) = sh(&mut d, &id, "echo written > /out/file").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(rw.join("file")).unwrap(),
        "written\n"
    );
}

#[tokio::test]
async fn hostile_mounts_are_invalid_arguments() {
    let mut d = Skiffd::start().await;
    let pod = pod(&mut d, "hostile").await;
    d.pull_busybox().await;
    let host = host_dir(&d, "h");
    for (m, needle) in [
        (bind(&host, "relative", false), "relative"),
        (bind(&host, "/a/../../etc", false), ".."),
        (
            bind(Path::new("/nonexistent/skiff-src"), "/x", false),
            "skiff-src",
        ),
    ] {
        let mut c = sleeper("bad");
        c.mounts = vec![m];
        match d.create_container(&pod, c).await {
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e}");
                assert!(e.message().contains(needle), "{needle:?} not in {e}");
            }
            Ok(_) => panic!("mount to {needle} accepted"),
        }
    }
}

/// The host path of the container's memory cgroup, from what the container itself sees.
async fn memory_cgroup(d: &mut Skiffd, id: &str) -> PathBuf {
    let (out, _, _) = sh(d, id, "cat /proc/self/cgroup").await;
    let rel = out
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no memory cgroup in {out}"));
    PathBuf::from("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'))
}

#[tokio::test]
async fn update_container_resources_changes_the_memory_limit() {
    let mut c = sleeper("update");
    c.linux.get_or_insert_with(Default::default).resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let (mut d, id) = setup("update", c).await;
    let cg = memory_cgroup(&mut d, &id).await;
    let limit = || {
        std::fs::read_to_string(cg.join("memory.limit_in_bytes"))
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(limit(), 64 << 20);
    d.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(limit(), 128 << 20);
    let e =
        d.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: -3,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(limit(), 128 << 20, "a refused update changes nothing");
    let e =
        d.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: "no-such".into(),
            linux: Some(Default::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

#[tokio::test]
async fn target_pid_namespace_sees_the_target_container() {
    let mut d = Skiffd::start().await;
    let pod = pod(&mut d, "target").await;
    d.pull_busybox().await;
    let mut a = container_config("app", "sleep 4242");
    security(&mut a).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    });
    let app = d.run_container(&pod, a).await;
    let mut b = sleeper("debug");
    security(&mut b).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Target as i32,
        target_id: app.clone(),
        ..Default::default()
    });
    let debug = d.run_container(&pod, b).await;
    let (out, _, _) = sh(&mut d, &debug, "ps -o pid,args").await;
    assert!(out.contains("sleep 4242"), "{out}");
    // The target's own namespace starts at its init.
    let (out, _, _) = sh(&mut d, &app, "cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert_eq!(out.trim(), "sleep 4242");
    let mut c = sleeper("orphan");
    security(&mut c).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Target as i32,
        target_id: "no-such-container".into(),
        ..Default::default()
    });
    let e = d.create_container(&pod, c).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("no-such-container"), "{e}");
}

#[tokio::test]
async fn localhost_seccomp_profile_is_enforced() {
    let profile = PathBuf::from(format!(
        "/var/tmp/skiff-test/seccomp-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut c = sleeper("seccomp");
    security(&mut c).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: profile.to_string_lossy().into_owned(),
    });
    let setup = setup("seccomp", c).await;
    let _ = std::fs::remove_file(&profile);
    let (mut d, id) = setup;
    let (_, err, code) = sh(&mut d, &id, "mkdir /tmp/blocked").await;
    assert_ne!(code, 0, "mkdir was allowed");
    assert!(err.contains("not permitted"), "{err}");
    let (_, err, code) = sh(&mut d, &id, "touch /tmp/allowed").await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn privileged_containers_see_host_devices_and_writable_sys() {
    let mut c = sleeper("priv");
    security(&mut c).privileged = true;
    let (mut d, id) = setup("priv", c).await;
    let (out, _, _) = sh(&mut d, &id, "grep CapBnd /proc/self/status").await;
    let caps = bounding(&out);
    assert_ne!(caps & (1 << 21), 0, "no CAP_SYS_ADMIN: {caps:x}");
    let (_, err, code) = sh(&mut d, &id, "test -c /dev/kmsg || test -c /dev/tty0").await;
    assert_eq!(code, 0, "host devices missing {err}");
    let (out, _, _) = sh(&mut d, &id, "grep ' /sys ' /proc/self/mounts").await;
    assert!(out.contains(" rw,"), "{out}");
}

#[tokio::test]
async fn image_defaults_and_pod_hostname_reach_the_process() {
    let (mut d, id) = setup("envs", sleeper("envs")).await;
    let (out, _, _) = sh(&mut d, &id, "echo $HOSTNAME; echo $PATH; pwd; id -u").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "envs");
    assert!(lines[1].contains("/bin"), "{out}");
    assert_eq!(&lines[2..], ["/", "0"]);
}
