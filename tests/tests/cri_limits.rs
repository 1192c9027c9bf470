//! Where a CRI request meets a limit or a loss, skiffd says so: ExecSync output cut at the size of
//! a CRI message, a seccomp file that is not a profile (named, never shown), enum values the CRI
//! does not define, and a container whose monitor was killed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skiff_tests::cri::{container_config, host_network, pod_config, sleeper, v1 as cri, Skiffd};
use tonic::Code;

fn security(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test]
async fn exec_sync_says_when_it_cuts_the_output() {
    let (mut d, id) = sleeper("limits-exec").await;
    // As kubelet's client: 16 MiB messages.
    d.rt = d.rt.clone().max_decoding_message_size(16 << 20);
    let script = "head -c 20000000 /dev/zero; echo done >&2";
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 60,
        })
        .await
        .expect("ExecSync of 20 MB")
        .into_inner();
    assert_eq!(r.exit_code, 0);
    assert!(r.stdout.len() < 16 << 20, "{}", r.stdout.len());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.starts_with("done\n"), "{err:.300}");
    assert!(
        err.contains("truncated") && err.contains("of 20000000 bytes"),
        "the cut is not reported: {err:.300}"
    );
    // Output that fits comes back as it was, with no note.
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: vec!["sh".into(), "-c".into(), "echo out; echo err >&2".into()],
            timeout: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&r.stdout[..], &r.stderr[..]),
        (&b"out\n"[..], &b"err\n"[..])
    );
}

#[tokio::test]
async fn a_seccomp_file_that_is_no_profile_is_named_not_shown() {
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("limits-seccomp", &d.log_dir())))
        .await;
    let dir = PathBuf::from(format!(
        "/var/tmp/skiff-test/limits-seccomp-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = "hunter2-s3cr3t-token";
    let cases = [
        ("token.json", format!("\"{secret}\"")),
        (
            "config.json",
            format!("{{\"defaultAction\": \"{secret}\"}}"),
        ),
        ("shadow", format!("root:{secret}:19000:0:99999:7:::\n")),
        ("list.json", format!("[\"{secret}\"]")),
    ];
    for (name, content) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &content).unwrap();
        let mut c = container_config("c", "true");
        security(&mut c).seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.to_string_lossy().into_owned(),
        });
        let e = d.create_container(&pod, c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e}");
        assert!(
            e.message().contains(&*path.to_string_lossy()),
            "{name}: {e}"
        );
        assert!(!e.message().contains(secret), "{name}: content shown: {e}");
        assert!(!d.daemon_log().contains(secret), "{name}: content logged");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(d.list_containers(None).await.is_empty());
}

#[tokio::test]
async fn unknown_enum_values_are_refused() {
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("limits-enums", &d.log_dir())))
        .await;
    type Tweak = fn(&mut cri::ContainerConfig);
    let cases: [(&str, Tweak); 6] = [
        ("supplemental_groups_policy", |c| {
            security(c).supplemental_groups_policy = 9
        }),
        ("stop_signal", |c| c.stop_signal = 999),
        ("namespace_options.network", |c| {
            security(c).namespace_options = Some(cri::NamespaceOption {
                network: 7,
                ..Default::default()
            })
        }),
        ("namespace_options.ipc", |c| {
            security(c).namespace_options = Some(cri::NamespaceOption {
                ipc: -1,
                ..Default::default()
            })
        }),
        ("apparmor.profile_type", |c| {
            security(c).apparmor = Some(cri::SecurityProfile {
                profile_type: 5,
                ..Default::default()
            })
        }),
        ("mounts.propagation", |c| {
            c.mounts = vec![cri::Mount {
                container_path: "/mnt".into(),
                host_path: "/tmp".into(),
                propagation: 4,
                ..Default::default()
            }]
        }),
    ];
    for (field, tweak) in cases {
        let mut c = container_config("c", "true");
        tweak(&mut c);
        let e = d.create_container(&pod, c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e}");
        assert!(e.message().contains(field), "{field}: {e}");
    }
    assert!(d.list_containers(None).await.is_empty());
    // The known values still work.
    let mut c = container_config("strict", "true");
    security(&mut c).supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
    d.create_container(&pod, c).await.expect("Strict policy");
    let mut p = host_network(pod_config("limits-enums-pod", &d.log_dir()));
    p.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .supplemental_groups_policy = 9;
    let e = d.run_pod_sandbox(p).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("supplemental_groups_policy"), "{e}");
    assert_eq!(d.list_pods(None).await.len(), 1);
}

#[tokio::test]
async fn a_killed_monitor_reports_when_the_loss_was_noticed() {
    let (mut d, id) = sleeper("limits-monitor").await;
    let info = d.verbose_container_status(&id).await.info["info"].clone();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let (monitor, pid) = (
        info["monitorPid"].as_i64().unwrap() as i32,
        info["pid"].as_i64().unwrap() as i32,
    );
    assert!(monitor > 0 && pid > 0, "{info}");
    let before = now_ns();
    // SAFETY: kill with plain pids of processes this test's daemon started.
    unsafe {
        assert_eq!(libc::kill(monitor, libc::SIGKILL), 0);
        assert_eq!(libc::kill(pid, libc::SIGKILL), 0);
    }
    // skiffd watches the container once its monitor is gone: the end is noticed when it
    // happens, not when a status is asked for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = d.wait_exited(&id).await;
    let noticed = Duration::from_nanos((s.finished_at - before).max(0) as u64);
    assert!(
        s.finished_at >= before && noticed < Duration::from_millis(2500),
        "finished_at {} is not right after the kill at {before}: {s:?}",
        s.finished_at
    );
    assert_eq!(s.reason, "Unknown", "{s:?}");
    assert!(s.message.contains("monitor"), "{s:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = d.container_status(&id).await;
    assert_eq!(again.finished_at, s.finished_at, "the time moved");
    // It survives a restart of the daemon.
    d.restart().await;
    let s = d.container_status(&id).await;
    assert_eq!(s.finished_at, again.finished_at);
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
}
