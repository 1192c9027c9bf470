//! Each namespace kind, observed from inside the container.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use skiff_tests::env::path_str;
use skiff_tests::{assert_failed_mentioning, host, is_runc, skip_on_runc, Bundle, TestEnv};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `readlink /proc/self/ns/<kind>` inside a container of bundle `b`, as an inode number.
fn inner_ns(env: &TestEnv, b: &mut Bundle, kind: &str) -> u64 {
    let out = env.run_sh(b, &format!("readlink /proc/self/ns/{kind}"));
    parse_ns_link(out.stdout.trim())
        .unwrap_or_else(|| panic!("cannot parse ns link of {kind}{out}"))
}

fn parse_ns_link(s: &str) -> Option<u64> {
    s.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

#[test]
fn pid_namespace_makes_the_process_pid_1() {
    let env = TestEnv::new("ns-pid");
    let mut b = env.bundle();
    let out = env.run_sh(&mut b, "echo pid=$$; ls /proc | grep -c '^[0-9]'");
    assert!(out.stdout.contains("pid=1"), "{out}");
    assert_ne!(inner_ns(&env, &mut b, "pid"), host::host_ns("pid"));
}

#[test]
fn uts_namespace_sets_hostname_and_domainname() {
    let env = TestEnv::new("ns-uts");
    let mut b = env.bundle();
    b.set("/hostname", json!("skiff-uts"));
    b.set("/domainname", json!("skiff.example"));
    let out = env.run_sh(&mut b, "hostname; cat /proc/sys/kernel/domainname");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"skiff-uts"), "{out}");
    if !skip_on_runc("runc 1.1 ignores `domainname` (runtime-spec 1.2)") {
        assert_eq!(lines.get(1), Some(&"skiff.example"), "{out}");
    }
    assert_ne!(inner_ns(&env, &mut b, "uts"), host::host_ns("uts"));
}

#[test]
fn ipc_mount_and_net_namespaces_are_new() {
    let env = TestEnv::new("ns-ipc-mnt-net");
    let mut b = env.bundle();
    for kind in ["ipc", "mnt", "net"] {
        assert_ne!(
            inner_ns(&env, &mut b, kind),
            host::host_ns(kind),
            "{kind} ns not new"
        );
    }
    // A fresh network namespace holds only the loopback device.
    let out = env.run_sh(&mut b, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    let devs: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(devs, vec!["lo"], "{out}");
}

#[test]
fn without_a_namespace_entry_the_host_one_is_shared() {
    let env = TestEnv::new("ns-shared");
    let mut b = env.bundle();
    b.remove_namespace("ipc");
    assert_eq!(inner_ns(&env, &mut b, "ipc"), host::host_ns("ipc"));
}

#[test]
fn cgroup_namespace_hides_the_host_hierarchy() {
    let env = TestEnv::new("ns-cgroup");
    let mut b = env.bundle();
    b.namespace("cgroup", None);
    assert_ne!(inner_ns(&env, &mut b, "cgroup"), host::host_ns("cgroup"));
    let out = env.run_sh(&mut b, "cat /proc/self/cgroup");
    for line in out.stdout.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("?");
        assert_eq!(
            path, "/",
            "cgroup path visible inside a cgroup namespace: {line}{out}"
        );
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let out = Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(dir)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_uid() {
    let env = TestEnv::new("ns-user");
    let mut b = env.bundle();
    chown_tree(&b.rootfs(), 100000, 100000);
    b.namespace("user", None);
    b.set(
        "/linux/uidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
    );
    b.set(
        "/linux/gidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
    );
    // cgroup v1 hierarchies are owned by host root; they cannot be mounted from the userns.
    b.remove_mount("/sys/fs/cgroup");
    b.sh("id -u; id -g; cat /proc/self/uid_map; while [ ! -e /go ]; do usleep 10000; done");
    let id = env.id();
    let create = env.must_create(&b, &id);
    let pid = env.pid(&id);
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("read uid_map");
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(
        fields,
        vec!["0", "100000", "65536"],
        "host view of uid_map: {map:?}"
    );
    let gmap = fs::read_to_string(format!("/proc/{pid}/gid_map")).expect("read gid_map");
    assert_eq!(
        gmap.split_whitespace().collect::<Vec<_>>(),
        vec!["0", "100000", "65536"]
    );
    assert_ne!(
        host::ns_inode(&format!("/proc/{pid}/ns/user")),
        host::host_ns("user")
    );
    env.must_start(&id);
    fs::write(b.rootfs().join("go"), "").unwrap();
    env.wait_status(&id, "stopped", Duration::from_secs(10));
    let out = create.stdout_now();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() >= 2 && lines[0] == "0" && lines[1] == "0",
        "inside, id -u / id -g should be 0: {out:?}{create}"
    );
}

/// A `sleep` that is PID 1 of a new PID namespace owned by a new user namespace mapping root to
/// `host_id`, as a pod's infra process is; its pid.
fn userns_pid1(env: &TestEnv, host_id: u32) -> u32 {
    let unshare = Command::new("unshare")
        .args(["--user", "--pid", "--fork", "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn unshare");
    let pid = unshare.id();
    env.on_drop(move || {
        let mut child = unshare;
        let _ = child.kill();
        let _ = child.wait();
    });
    let end = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        if let Some(c) = children.unwrap_or_default().split_whitespace().next() {
            break c.parse::<u32>().unwrap();
        }
        assert!(Instant::now() < end, "unshare never forked");
        std::thread::sleep(Duration::from_millis(10));
    };
    for f in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{pid}/{f}"), format!("0 {host_id} 65536\n")).unwrap();
    }
    sleeper
}

#[test]
fn joins_a_user_and_a_pid_namespace_by_path() {
    let env = TestEnv::new("ns-join-user");
    let holder = userns_pid1(&env, 100000);
    let (user, pid_ns) = (
        format!("/proc/{holder}/ns/user"),
        format!("/proc/{holder}/ns/pid"),
    );
    let mut b = env.bundle();
    chown_tree(&b.rootfs(), 100000, 100000);
    b.namespace("user", Some(&user));
    b.namespace("pid", Some(&pid_ns));
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.set("/linux/uidMappings", map.clone());
    b.set("/linux/gidMappings", map);
    b.remove_mount("/sys/fs/cgroup");
    b.sh("id -u; cat /proc/self/uid_map");
    let id = env.id();
    let create = env.must_create(&b, &id);
    // The pid the runtime reports is the init's in our namespace, inside both joined namespaces.
    let pid = env.pid(&id);
    assert_eq!(
        host::ns_inode(&format!("/proc/{pid}/ns/user")),
        host::ns_inode(&user)
    );
    assert_eq!(
        host::ns_inode(&format!("/proc/{pid}/ns/pid")),
        host::ns_inode(&pid_ns)
    );
    env.must_start(&id);
    env.wait_status(&id, "stopped", Duration::from_secs(10));
    let out = create.stdout_now();
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[..], ["0", "0", "100000", "65536"], "{out}{create}");
}

#[test]
fn time_namespace_applies_offsets() {
    if !Path::new("/proc/self/ns/time").exists() {
        eprintln!("note: skipped: this kernel has no time namespaces");
        return;
    }
    if skip_on_runc("runc 1.1 does not support time namespaces") {
        return;
    }
    let env = TestEnv::new("ns-time");
    let mut b = env.bundle();
    b.namespace("time", None);
    let year = 365 * 24 * 3600;
    b.set(
        "/linux/timeOffsets",
        json!({
            "monotonic": {"secs": year, "nanosecs": 0},
            "boottime": {"secs": year, "nanosecs": 0}
        }),
    );
    let out = env.run_sh(
        &mut b,
        "readlink /proc/self/ns/time; cut -d. -f1 /proc/uptime",
    );
    let mut lines = out.stdout.lines();
    let ns = lines.next().and_then(parse_ns_link);
    assert_ne!(ns, Some(host::host_ns("time")), "time ns not new{out}");
    let uptime: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        uptime >= year as u64,
        "boottime offset not applied (uptime {uptime}){out}"
    );
}

#[test]
fn joins_a_network_namespace_by_path() {
    let env = TestEnv::new("ns-join-net");
    let name = format!("skiff-test-{}-{}", std::process::id(), env.ids().len());
    env.host("ip", &["netns", "add", &name]);
    let dir = env.dir.clone();
    let n2 = name.clone();
    env.on_drop(move || {
        let _ = skiff_tests::cmd::run(
            Command::new("ip").args(["netns", "delete", &n2]),
            &dir,
            Duration::from_secs(10),
        );
    });
    let path = format!("/run/netns/{name}");
    let mut b = env.bundle();
    b.namespace("network", Some(&path));
    assert_eq!(inner_ns(&env, &mut b, "net"), host::ns_inode(&path));
}

#[test]
fn joins_the_uts_namespace_of_another_process() {
    let env = TestEnv::new("ns-join-uts");
    let child = Command::new("unshare")
        .args([
            "--uts",
            "sh",
            "-c",
            "hostname joined-uts && exec sleep 1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn unshare");
    let pid = child.id();
    env.on_drop(move || {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    });
    let end = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        != "sleep"
    {
        assert!(Instant::now() < end, "unshare helper never reached sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = format!("/proc/{pid}/ns/uts");
    let want = host::ns_inode(&path);
    let mut b = env.bundle();
    b.namespace("uts", Some(&path));
    b.remove("/hostname");
    assert_eq!(inner_ns(&env, &mut b, "uts"), want);
    let out = env.run_sh(&mut b, "hostname");
    assert_eq!(out.stdout.trim(), "joined-uts", "{out}");
}

/// Pins a new ipc and a new network namespace on files in the test's dir, as a pod's pinned
/// namespaces are; the env unmounts them on drop.
fn pinned_ipc_and_net(env: &TestEnv) -> (String, String) {
    let ipc = env.dir.join("pinned-ipc");
    let net = env.dir.join("pinned-net");
    for f in [&ipc, &net] {
        fs::write(f, "").unwrap();
    }
    let (ipc, net) = (path_str(&ipc).to_string(), path_str(&net).to_string());
    env.host(
        "unshare",
        &[&format!("--ipc={ipc}"), &format!("--net={net}"), "true"],
    );
    (ipc, net)
}

#[test]
fn sysctls_apply_in_namespaces_joined_by_path() {
    let env = TestEnv::new("ns-join-sysctl");
    let (ipc, net) = pinned_ipc_and_net(&env);
    let host_shm = fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let want_shm = if host_shm.trim() == "1" { "0" } else { "1" };
    let mut b = env.bundle();
    b.namespace("ipc", Some(&ipc));
    b.namespace("network", Some(&net));
    b.set(
        "/linux/sysctl",
        json!({"kernel.shm_rmid_forced": want_shm, "net.ipv4.ping_group_range": "0 2147483647"}),
    );
    let out = env.run_sh(
        &mut b,
        "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ping_group_range",
    );
    let lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, vec![want_shm, "0 2147483647"], "{out}");
    // Written into the pinned namespaces, which outlive the container; the host's are untouched.
    let inside = env.host(
        "nsenter",
        &[
            &format!("--ipc={ipc}"),
            "cat",
            "/proc/sys/kernel/shm_rmid_forced",
        ],
    );
    assert_eq!(inside.stdout.trim(), want_shm, "{inside}");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_shm,
        "host sysctl changed"
    );
}

#[test]
fn sysctls_are_refused_in_the_hosts_namespace_joined_by_path() {
    let env = TestEnv::new("ns-join-host-sysctl");
    // The host's namespaces by two routes: this process's /proc entry, and a file the host's ipc
    // namespace is bind-mounted on (what matters is the namespace, not the path's shape).
    let host_net = format!("/proc/{}/ns/net", std::process::id());
    let host_ipc = env.dir.join("host-ipc");
    fs::write(&host_ipc, "").unwrap();
    let host_ipc = path_str(&host_ipc).to_string();
    env.host("mount", &["--bind", "/proc/self/ns/ipc", &host_ipc]);
    let mut cases = vec![(
        "network",
        host_net.as_str(),
        "net.ipv4.ping_group_range",
        "0 2147483647",
    )];
    // runc 1.1 compares only the network namespace with its own.
    if !skip_on_runc("runc 1.1 sets IPC sysctls in any ipc namespace named by path") {
        cases.push(("ipc", host_ipc.as_str(), "kernel.shm_rmid_forced", "1"));
    }
    for (kind, path, key, value) in cases {
        let mut b = env.bundle();
        b.namespace(kind, Some(path));
        b.set("/linux/sysctl", json!({ key: value }));
        let id = env.id();
        let out = env.create(&b, &id);
        let what = format!("{key} in the host's {kind} namespace");
        assert_failed_mentioning(&out, &what, &[&[key]]);
        if !is_runc() {
            assert_failed_mentioning(&out, &what, &[&["not the host's"]]);
        }
        env.assert_clean(&id, &b.dir, None);
    }
}

/// A process that is PID 1 of a new pid namespace on the host, killed when the test ends; its pid.
fn pid_namespace_holder(env: &TestEnv) -> u32 {
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn unshare");
    let parent = child.id();
    env.on_drop(move || {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    });
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: u32 = pid.parse().unwrap();
            if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
                return pid;
            }
        }
        assert!(
            Instant::now() < end,
            "the pid namespace holder never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn joins_a_pid_namespace_by_path_with_its_proc_and_the_mounts_under_it() {
    let env = TestEnv::new("ns-join-pid");
    let holder = pid_namespace_holder(&env);
    let path = format!("/proc/{holder}/ns/pid");
    let bound = env.dir.join("uptime");
    fs::write(&bound, "bound-over-proc\n").unwrap();
    let mut b = env.bundle();
    b.namespace("pid", Some(&path));
    b.mount(json!({
        "destination": "/proc/uptime",
        "type": "bind",
        "source": bound.to_str().unwrap(),
        "options": ["bind", "ro"],
    }));
    // /proc is the namespace's (PID 1 is the holder), with the bind over it, masked paths and
    // read-only paths applied to it.
    let out = env.run_sh(
        &mut b,
        "cat /proc/1/comm; echo pid=$$; cat /proc/uptime; wc -c < /proc/timer_list; \
         awk '$2 == \"/proc/sys\" {print $4}' /proc/mounts",
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"sleep"), "{out}");
    assert!(lines.get(1).is_some_and(|l| *l != "pid=1"), "{out}");
    assert_eq!(lines.get(2), Some(&"bound-over-proc"), "{out}");
    assert_eq!(lines.get(3).map(|l| l.trim()), Some("0"), "{out}");
    assert!(lines.get(4).is_some_and(|l| l.starts_with("ro")), "{out}");

    // The pid `state` reports is the created init's: in the namespace, with the container's root.
    b.args(&["sleep", "100"]);
    let id = env.id();
    env.must_create(&b, &id);
    let pid = env.pid(&id);
    assert_eq!(
        host::ns_inode(&format!("/proc/{pid}/ns/pid")),
        host::ns_inode(&path)
    );
    let root = fs::metadata(format!("/proc/{pid}/root/")).unwrap();
    let host_root = fs::metadata("/").unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!((root.dev(), root.ino()), (host_root.dev(), host_root.ino()));
    env.must_start(&id);
    assert_eq!(env.status(&id), "running");
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "sleep"
    );
}
