//! A pod member that may ptrace (CAP_SYS_PTRACE added, not privileged) tries to leave its pod through the
//! processes it sees in the pod's shared PID namespace: the infra process that is PID 1 and every other
//! member, through `/proc/<pid>/root` and `/proc/<pid>/cwd` as `nsenter` would. A secret and a target
//! directory on the host tell a way out from a container's own files.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_tests::cri::{container_config, host_network, pod_config, v1 as cri, Pod, Skiffd};

/// Host files a container must never reach: a secret to read and a directory to create files in.
struct HostBait {
    dir: PathBuf,
    token: String,
}

impl HostBait {
    fn new(name: &str) -> HostBait {
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/escape-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let token = format!("host-secret-{}-{}", std::process::id(), nanos());
        std::fs::write(dir.join("secret"), format!("{token}\n")).unwrap();
        HostBait { dir, token }
    }

    fn secret(&self) -> String {
        self.dir.join("secret").to_string_lossy().into_owned()
    }

    /// Files a container managed to create in the bait directory.
    fn created(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "secret")
            .collect()
    }
}

impl Drop for HostBait {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A sleeping container of the busybox image with CAP_SYS_PTRACE added to the default set.
fn ptracer(name: &str) -> cri::ContainerConfig {
    let mut c = container_config(name, "exec sleep 3600");
    let linux = c.linux.get_or_insert_with(Default::default);
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_PTRACE".into()],
        ..Default::default()
    });
    c
}

/// A host-network pod whose containers share one PID namespace, with a ptrace-capable container.
async fn shared_pid_pod(d: &mut Skiffd, name: &str) -> (Pod, String) {
    d.pull_busybox().await;
    let mut config = host_network(pod_config(name, &d.log_dir()));
    let linux = config.linux.get_or_insert_with(Default::default);
    let ns = linux
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.pid = cri::NamespaceMode::Pod as i32;
    let pod = d.run_pod(config).await;
    let attacker = d.run_container(&pod, ptracer("attacker")).await;
    (pod, attacker)
}

async fn sh(d: &mut Skiffd, id: &str, script: &str) -> (String, String) {
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 30,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"))
        .into_inner();
    (
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

async fn infra_pid(d: &mut Skiffd, pod: &str) -> i32 {
    let s = d.pod_status(pod).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    info["infraPid"]
        .as_i64()
        .expect("the pod has an infra process") as i32
}

/// `Name:\tvalue` from /proc/<pid>/status.
fn status_field(pid: i32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Host pids of every process in the PID namespace of `pid`.
fn members(pid: i32) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l == ns))
        .collect()
}

/// The first line of the host's /etc/shadow (root's), if the host has one.
fn host_shadow_root() -> Option<String> {
    let text = std::fs::read_to_string("/etc/shadow").ok()?;
    text.lines().next().map(str::to_string)
}

#[tokio::test]
async fn infra_process_of_a_shared_pid_pod_holds_nothing_to_escape_with() {
    let bait = HostBait::new("infra");
    let mut d = Skiffd::start().await;
    let (pod, attacker) = shared_pid_pod(&mut d, "ptrace-infra").await;
    let infra = infra_pid(&mut d, &pod.id).await;

    // The attacker really holds CAP_SYS_PTRACE (bit 19) and sees the infra as PID 1.
    let (out, _) = sh(
        &mut d,
        &attacker,
        "grep CapEff /proc/self/status; cat /proc/1/cmdline | tr '\\0' ' '",
    )
    .await;
    let eff = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    assert_ne!(
        u64::from_str_radix(eff, 16).unwrap() & (1 << 19),
        0,
        "{out}"
    );
    assert!(
        out.contains("infra"),
        "PID 1 of the pod is not the infra: {out}"
    );

    let script = format!(
        "cat /proc/1/root/etc/shadow; cat /proc/1/root{s}; cat /proc/1/cwd{s}; \
         echo pwned > /proc/1/root{d}/via-root; echo pwned > /proc/1/cwd{d}/via-cwd; \
         mkdir /proc/1/root/{t}; ls -la /proc/1/root/ /proc/1/fd/; \
         : >> /proc/1/exe && echo EXE-WRITABLE",
        s = bait.secret(),
        d = bait.dir.display(),
        t = bait.token
    );
    let (out, err) = sh(&mut d, &attacker, &script).await;
    assert!(
        !out.contains(&bait.token),
        "host secret read through PID 1:\n{out}"
    );
    if let Some(root) = host_shadow_root() {
        assert!(
            !out.contains(&root),
            "host /etc/shadow read through PID 1:\n{out}"
        );
    }
    assert!(!out.contains("EXE-WRITABLE"), "{out}");
    assert!(
        bait.created().is_empty(),
        "files created on the host: {:?}\n{err}",
        bait.created()
    );
    let top = Path::new("/").join(&bait.token);
    let made = top.exists();
    let _ = std::fs::remove_dir(&top);
    assert!(!made, "{} made on the host", top.display());

    // What the infra holds: no capability in any set, not root, no_new_privs, a seccomp filter, no
    // descriptor, and an empty read-only root of its own.
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let v = status_field(infra, set);
        assert_eq!(
            u64::from_str_radix(&v, 16).unwrap(),
            0,
            "{set} of the infra: {v}"
        );
    }
    for ids in ["Uid", "Gid"] {
        let v = status_field(infra, ids);
        assert!(
            v.split_whitespace().all(|id| id != "0"),
            "{ids} of the infra: {v}"
        );
    }
    assert_eq!(status_field(infra, "Groups"), "");
    assert_eq!(status_field(infra, "NoNewPrivs"), "1");
    assert_eq!(status_field(infra, "Seccomp"), "2");
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{infra}/fd"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap_or_default())
        .collect();
    assert!(fds.is_empty(), "the infra holds descriptors: {fds:?}");
    let root = std::fs::metadata(format!("/proc/{infra}/root/")).unwrap();
    let host_root = std::fs::metadata("/").unwrap();
    assert_ne!((root.dev(), root.ino()), (host_root.dev(), host_root.ino()));
    let entries = std::fs::read_dir(format!("/proc/{infra}/root/"))
        .unwrap()
        .count();
    assert_eq!(entries, 0, "the infra's root is not empty");
    let write = std::fs::write(format!("/proc/{infra}/root/x"), "x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
    let cgroups = std::fs::read_to_string(format!("/proc/{infra}/cgroup")).unwrap();
    assert!(
        cgroups.contains(&pod.id),
        "the infra is not in the pod's cgroup:\n{cgroups}"
    );

    // It still does its job: orphans of the pod are reaped.
    sh(&mut d, &attacker, "sleep 0.2 & exit 0").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let zombies: Vec<i32> = members(infra)
            .into_iter()
            .filter(|p| status_field(*p, "State").starts_with('Z'))
            .collect();
        if zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombies left in the pod: {zombies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    d.restart().await;
    assert_eq!(
        infra_pid(&mut d, &pod.id).await,
        infra,
        "the infra was not adopted"
    );
    d.stop_and_remove_pod(&pod.id).await;
    let gone = std::fs::read_to_string(format!("/proc/{infra}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(gone, "the infra outlived its pod");
    let cg_dir = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(format!("/sys/fs/cgroup/unified{p}")));
    if let Some(dir) = cg_dir {
        assert!(!dir.exists(), "{} outlived the pod", dir.display());
    }
}

#[tokio::test]
async fn no_member_of_a_shared_pid_pod_reaches_the_host_root() {
    let bait = HostBait::new("members");
    let mut d = Skiffd::start().await;
    let (pod, attacker) = shared_pid_pod(&mut d, "ptrace-members").await;
    let other = d
        .run_container(&pod, container_config("other", "exec sleep 3600"))
        .await;
    // An exec'd process in the other container is a member too, while it runs.
    let mut rt = d.rt.clone();
    let other_id = other.clone();
    let running_exec = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: other_id,
            cmd: vec!["sleep".into(), "4".into()],
            timeout: 30,
        })
        .await
    });
    let infra = infra_pid(&mut d, &pod.id).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while members(infra).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the pod has {:?}",
            members(infra)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let script = format!(
        "seen=; for p in $(ls /proc | grep -E '^[0-9]+$'); do [ $p = $$ ] && continue; \
         [ -d /proc/$p/root ] || continue; seen=\"$seen $p\"; \
         for l in root cwd; do \
           cat /proc/$p/$l{s} 2>/dev/null && echo \" <- LEAK $p $l\"; \
           (echo pwned > /proc/$p/$l{d}/$p-$l) 2>/dev/null && echo \"WROTE $p $l\"; \
         done; done; echo \"seen:$seen\"",
        s = bait.secret(),
        d = bait.dir.display()
    );
    let (out, _) = sh(&mut d, &attacker, &script).await;
    assert!(
        !out.contains(&bait.token) && !out.contains("WROTE"),
        "{out}"
    );
    assert!(bait.created().is_empty(), "{:?}", bait.created());
    let seen = out.lines().find_map(|l| l.strip_prefix("seen:")).unwrap();
    assert!(
        seen.split_whitespace().count() >= 3,
        "too few members tried: {out}"
    );

    // From the host, nsenter-style: no member's root is the host's.
    let host_root = std::fs::metadata("/").unwrap();
    for p in members(infra) {
        if let Ok(root) = std::fs::metadata(format!("/proc/{p}/root/")) {
            assert_ne!(
                (root.dev(), root.ino()),
                (host_root.dev(), host_root.ino()),
                "member {p} ({}) has the host's root",
                status_field(p, "Name")
            );
        }
    }
    // Nor does any hold a descriptor of ours: only pipes, sockets, /dev/null and terminals.
    for p in members(infra) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let t = target.to_string_lossy();
            let harmless = ["pipe:", "socket:", "anon_inode:", "/dev/null", "/dev/pts/"]
                .iter()
                .any(|p| t.starts_with(p));
            assert!(harmless, "member {p} holds {}: {t}", fd.path().display());
        }
    }
    let r = running_exec.await.unwrap().unwrap().into_inner();
    assert_eq!(r.exit_code, 0);
    d.stop_and_remove_pod(&pod.id).await;
}

#[tokio::test]
async fn exec_processes_never_show_the_host_root_to_the_container() {
    let bait = HostBait::new("exec");
    let mut d = Skiffd::start().await;
    let (_pod, attacker) = shared_pid_pod(&mut d, "ptrace-exec").await;
    // The attacker watches every process of its PID namespace as it appears (the shell's `read` opens
    // without forking, so it keeps up with new pids), while execs start in its container.
    let watch = format!(
        "exec 2>/dev/null; while [ ! -e /tmp/stop ]; do for p in /proc/[0-9]*; do \
         read -r l < $p/root{s} && echo \"LEAK $p $l\" >> /tmp/leaks; \
         read -r l < $p/cwd{s} && echo \"LEAK $p $l\" >> /tmp/leaks; \
         done; done; touch /tmp/stopped",
        s = bait.secret()
    );
    let mut rt = d.rt.clone();
    let (id, script) = (attacker.clone(), watch.clone());
    let watcher = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: vec!["sh".into(), "-c".into(), script],
            timeout: 120,
        })
        .await
    });
    for _ in 0..40 {
        let (out, _) = sh(&mut d, &attacker, "echo ok").await;
        assert_eq!(out, "ok\n");
    }
    sh(&mut d, &attacker, "touch /tmp/stop").await;
    watcher.await.unwrap().unwrap();
    let (leaks, _) = sh(&mut d, &attacker, "cat /tmp/leaks 2>/dev/null; ls /tmp").await;
    assert!(
        leaks.contains("stopped"),
        "the watcher did not run: {leaks}"
    );
    assert!(
        !leaks.contains("LEAK"),
        "an exec'd process showed the host's files:\n{leaks}"
    );
}

#[tokio::test]
async fn the_infra_of_a_pod_lost_in_a_crash_goes_with_its_cgroup() {
    let mut d = Skiffd::start().await;
    let mut config = host_network(pod_config("lost", &d.log_dir()));
    let parent = format!("skiff-escape-test-{}", std::process::id());
    config
        .linux
        .get_or_insert_with(Default::default)
        .cgroup_parent = format!("/{parent}");
    let pod = d.run_pod(config).await;
    let infra = infra_pid(&mut d, &pod.id).await;
    let cgroups = std::fs::read_to_string(format!("/proc/{infra}/cgroup")).unwrap();
    let dirs: Vec<PathBuf> = cgroups
        .lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(format!("/sys/fs/cgroup/unified{p}")))
        .collect();
    assert!(
        !dirs.is_empty() && dirs.iter().all(|d| d.ends_with(&pod.id)),
        "{cgroups}"
    );
    assert!(dirs[0].exists());

    // A crash before the record was saved: skiffd comes back knowing nothing of the pod.
    d.kill9();
    std::fs::remove_file(d.dir.join(format!("state/sandboxes/{}.json", pod.id))).unwrap();
    d.restart().await;
    let gone = std::fs::read_to_string(format!("/proc/{infra}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(gone, "the unknown pod's infra still runs");
    let left = dirs[0].exists();
    // The pod cgroup itself is kubelet's to remove; here the test's.
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(&parent));
    }
    assert!(!left, "{} outlived its infra", dirs[0].display());
}

#[tokio::test]
async fn new_containers_never_show_the_host_root_to_the_pod() {
    let bait = HostBait::new("create");
    let mut d = Skiffd::start().await;
    let (pod, attacker) = shared_pid_pod(&mut d, "ptrace-create").await;
    // The attacker watches every process of the pod as it appears while new containers are created
    // and started in it: an init whose root is still the host's would show the secret.
    let watch = format!(
        "exec 2>/dev/null; while [ ! -e /tmp/stop ]; do for p in /proc/[0-9]*; do \
         read -r l < $p/root{s} && echo \"LEAK $p $l\" >> /tmp/leaks; \
         read -r l < $p/cwd{s} && echo \"LEAK $p $l\" >> /tmp/leaks; \
         done; done; touch /tmp/stopped",
        s = bait.secret()
    );
    let mut rt = d.rt.clone();
    let (id, script) = (attacker.clone(), watch.clone());
    let watcher = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: vec!["sh".into(), "-c".into(), script],
            timeout: 120,
        })
        .await
    });
    let infra = infra_pid(&mut d, &pod.id).await;
    for i in 0..10 {
        let c = d
            .run_container(
                &pod,
                container_config(&format!("new{i}"), "exec sleep 3600"),
            )
            .await;
        // The new container still is a pod member, with the pod's /proc, masked and read-only.
        let (out, _) = sh(
            &mut d,
            &c,
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; wc -c < /proc/timer_list; \
             awk '$2 == \"/proc/sys\" {print $4}' /proc/mounts",
        )
        .await;
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains("infra"), "{out}");
        assert_eq!(lines.get(1).map(|l| l.trim()), Some("0"), "{out}");
        assert!(lines.get(2).is_some_and(|l| l.starts_with("ro")), "{out}");
        // The pid reported for it is its process's, in the pod's namespace.
        let status = d.verbose_container_status(&c).await;
        let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
        let pid = info["pid"].as_i64().unwrap() as i32;
        assert!(members(infra).contains(&pid), "pid {pid} is not in the pod");
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(cmdline.starts_with("sleep\0"), "{cmdline:?}");
    }
    sh(&mut d, &attacker, "touch /tmp/stop").await;
    watcher.await.unwrap().unwrap();
    let (leaks, _) = sh(&mut d, &attacker, "cat /tmp/leaks 2>/dev/null; ls /tmp").await;
    assert!(
        leaks.contains("stopped"),
        "the watcher did not run: {leaks}"
    );
    assert!(
        !leaks.contains("LEAK"),
        "a new container's init showed the host's files:\n{leaks}"
    );
    d.stop_and_remove_pod(&pod.id).await;
}
