//! Mounts, devices, masked and read-only paths, sysctls: observed from inside.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use skiff_tests::env::path_str;
use skiff_tests::{host, Bundle, TestEnv};
use std::fs;

/// One line of /proc/self/mountinfo as seen inside the container.
#[derive(Debug)]
struct Mount {
    point: String,
    opts: Vec<String>,
    fstype: String,
    super_opts: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let lf: Vec<&str> = left.split(' ').collect();
            let rf: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                point: lf.get(4)?.to_string(),
                opts: lf.get(5)?.split(',').map(String::from).collect(),
                fstype: rf.first()?.to_string(),
                super_opts: rf
                    .get(2)
                    .map(|s| s.split(',').map(String::from).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Runs `SCRIPT; echo ==MI==; cat /proc/self/mountinfo` and splits the two outputs.
fn run_with_mountinfo(env: &TestEnv, b: &mut Bundle, script: &str) -> (String, Vec<Mount>, String) {
    let out = env.run_sh(
        b,
        &format!("{script}\necho ==MI==; cat /proc/self/mountinfo"),
    );
    let (pre, mi) = out
        .stdout
        .split_once("==MI==\n")
        .unwrap_or_else(|| panic!("no marker{out}"));
    (pre.to_string(), parse_mountinfo(mi), out.to_string())
}

fn find<'a>(mounts: &'a [Mount], point: &str, ctx: &str) -> &'a Mount {
    // The last mount on a point is the visible one.
    mounts
        .iter()
        .rev()
        .find(|m| m.point == point)
        .unwrap_or_else(|| panic!("no mount at {point}: {mounts:#?}{ctx}"))
}

#[test]
fn default_mounts_have_the_right_types() {
    let env = TestEnv::new("mnt-default");
    let mut b = env.bundle();
    let (pre, mounts, ctx) = run_with_mountinfo(
        &env,
        &mut b,
        "[ -e /dev/ptmx ] && echo ptmx-ok; ls /dev/mqueue >/dev/null && echo mq-ok",
    );
    for (point, fstype) in [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
    ] {
        assert_eq!(find(&mounts, point, &ctx).fstype, fstype, "{point}{ctx}");
    }
    assert!(
        find(&mounts, "/sys", &ctx).opts.contains(&"ro".into()),
        "/sys should be ro{ctx}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.point.starts_with("/sys/fs/cgroup") && m.fstype.starts_with("cgroup")),
        "no cgroup filesystem under /sys/fs/cgroup{ctx}"
    );
    assert!(pre.contains("ptmx-ok") && pre.contains("mq-ok"), "{ctx}");
    let pts = find(&mounts, "/dev/pts", &ctx);
    assert!(
        pts.super_opts
            .iter()
            .any(|o| o == "ptmxmode=666" || o == "ptmxmode=0666"),
        "{pts:?}{ctx}"
    );
}

#[test]
fn tmpfs_with_size_and_mode() {
    let env = TestEnv::new("mnt-tmpfs");
    let mut b = env.bundle();
    b.mount(
        json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=1m", "mode=1777"]}),
    );
    let (pre, mounts, ctx) = run_with_mountinfo(&env, &mut b, "stat -c %a /mnt/t");
    assert_eq!(pre.trim(), "1777", "{ctx}");
    let m = find(&mounts, "/mnt/t", &ctx);
    assert_eq!(m.fstype, "tmpfs", "{ctx}");
    assert!(m.super_opts.contains(&"size=1024k".into()), "{m:?}{ctx}");
    assert!(
        m.opts.contains(&"nosuid".into()) && m.opts.contains(&"nodev".into()),
        "{m:?}{ctx}"
    );
}

#[test]
fn bind_mounts_honour_ro_nosuid_nodev_noexec() {
    let env = TestEnv::new("mnt-bind");
    let src = env.dir.join("bindsrc");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello"), "from-host").unwrap();
    let mut b = env.bundle();
    b.mount(
        json!({"destination": "/mnt/ro", "type": "bind", "source": path_str(&src),
        "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}),
    );
    b.mount(
        json!({"destination": "/mnt/rw", "type": "bind", "source": path_str(&src),
        "options": ["bind"]}),
    );
    let script = "cat /mnt/ro/hello; echo; touch /mnt/ro/new 2>/dev/null && echo RO-WRITABLE; \
                  echo written > /mnt/rw/fromcontainer";
    let (pre, mounts, ctx) = run_with_mountinfo(&env, &mut b, script);
    assert!(pre.contains("from-host"), "{ctx}");
    assert!(
        !pre.contains("RO-WRITABLE"),
        "write to a ro bind mount succeeded{ctx}"
    );
    let m = find(&mounts, "/mnt/ro", &ctx);
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(m.opts.contains(&o.into()), "/mnt/ro lacks {o}: {m:?}{ctx}");
    }
    assert!(
        find(&mounts, "/mnt/rw", &ctx).opts.contains(&"rw".into()),
        "{ctx}"
    );
    assert_eq!(
        fs::read_to_string(src.join("fromcontainer"))
            .unwrap_or_default()
            .trim(),
        "written",
        "{ctx}"
    );
    assert!(!src.join("new").exists());
}

#[test]
fn rbind_carries_submounts_and_bind_does_not() {
    let env = TestEnv::new("mnt-rbind");
    let src = env.dir.join("rbindsrc");
    host::mount_tmpfs(&src.join("sub"));
    fs::write(src.join("sub/inner"), "submount-file").unwrap();
    let mut b = env.bundle();
    b.mount(
        json!({"destination": "/mnt/r", "type": "bind", "source": path_str(&src),
        "options": ["rbind", "ro"]}),
    );
    b.mount(
        json!({"destination": "/mnt/nr", "type": "bind", "source": path_str(&src),
        "options": ["bind"]}),
    );
    let (pre, _mounts, ctx) = run_with_mountinfo(
        &env,
        &mut b,
        "cat /mnt/r/sub/inner; echo; ls /mnt/nr/sub | wc -l",
    );
    let lines: Vec<&str> = pre.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"submount-file"),
        "rbind lost the submount{ctx}"
    );
    assert_eq!(
        lines.get(1).map(|s| s.trim()),
        Some("0"),
        "plain bind carried the submount{ctx}"
    );
}

#[test]
fn readonly_rootfs() {
    let env = TestEnv::new("mnt-rootro");
    let mut b = env.bundle();
    b.set("/root/readonly", json!(true));
    let (pre, mounts, ctx) = run_with_mountinfo(
        &env,
        &mut b,
        "touch /x 2>/dev/null && echo ROOT-WRITABLE; touch /dev/shm/ok && echo shm-ok",
    );
    assert!(!pre.contains("ROOT-WRITABLE"), "{ctx}");
    assert!(pre.contains("shm-ok"), "{ctx}");
    assert!(
        find(&mounts, "/", &ctx).opts.contains(&"ro".into()),
        "{ctx}"
    );
    assert!(!b.rootfs().join("x").exists());
}

#[test]
fn default_devices_exist_with_the_right_numbers() {
    let env = TestEnv::new("mnt-devices");
    let mut b = env.bundle();
    let out = env.run_sh(
        &mut b,
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d; done; \
         head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok",
    );
    for (dev, nums) in [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ] {
        let want = format!("/dev/{dev} character special file {nums}");
        assert!(
            out.stdout.lines().any(|l| l == want),
            "missing `{want}`{out}"
        );
    }
    assert!(out.stdout.contains("null-ok"), "{out}");
    assert!(
        out.stdout.lines().any(|l| l.trim() == "4"),
        "reading /dev/zero{out}"
    );
}

#[test]
fn dev_fd_and_stdio_links() {
    let env = TestEnv::new("mnt-devfd");
    let mut b = env.bundle();
    let out = env.run_sh(
        &mut b,
        "for l in fd stdin stdout stderr; do readlink /dev/$l; done",
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "/proc/self/fd",
            "/proc/self/fd/0",
            "/proc/self/fd/1",
            "/proc/self/fd/2"
        ],
        "{out}"
    );
}

#[test]
fn extra_linux_device() {
    let env = TestEnv::new("mnt-extradev");
    let mut b = env.bundle();
    b.push(
        "/linux/devices",
        json!({"path": "/dev/skiffnull", "type": "c", "major": 1, "minor": 3,
        "fileMode": 0o666, "uid": 0, "gid": 0}),
    );
    b.push(
        "/linux/resources/devices",
        json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
    );
    let out = env.run_sh(
        &mut b,
        "stat -c '%F %t:%T %a' /dev/skiffnull; echo x > /dev/skiffnull && echo write-ok",
    );
    assert!(
        out.stdout.contains("character special file 1:3 666"),
        "{out}"
    );
    assert!(out.stdout.contains("write-ok"), "{out}");
}

#[test]
fn masked_paths_read_empty() {
    let env = TestEnv::new("mnt-masked");
    let mut b = env.bundle();
    fs::create_dir_all(b.rootfs().join("opt/secretdir")).unwrap();
    fs::write(b.rootfs().join("opt/secret"), "topsecret").unwrap();
    fs::write(b.rootfs().join("opt/secretdir/f"), "topsecret").unwrap();
    b.push("/linux/maskedPaths", json!("/opt/secret"));
    b.push("/linux/maskedPaths", json!("/opt/secretdir"));
    b.push("/linux/maskedPaths", json!("/opt/does-not-exist"));
    let out = env.run_sh(
        &mut b,
        "echo [$(cat /opt/secret)]; echo [$(ls /opt/secretdir)]; echo kcore=$(head -c 16 /proc/kcore | wc -c)",
    );
    assert!(
        out.stdout.contains("[]\n[]\n"),
        "masked paths not empty{out}"
    );
    assert!(
        out.stdout.contains("kcore=0"),
        "/proc/kcore not masked{out}"
    );
    assert!(!out.stdout.contains("topsecret"), "{out}");
}

#[test]
fn readonly_paths_refuse_writes() {
    let env = TestEnv::new("mnt-ropaths");
    let mut b = env.bundle();
    fs::create_dir_all(b.rootfs().join("opt/rodir")).unwrap();
    b.push("/linux/readonlyPaths", json!("/opt/rodir"));
    let out = env.run_sh(
        &mut b,
        "touch /opt/rodir/x 2>/dev/null && echo RODIR-WRITABLE; touch /opt/ok && echo rest-ok; \
         grep -q ' /proc/sys ro,' /proc/self/mountinfo && echo procsys-ro",
    );
    assert!(!out.stdout.contains("RODIR-WRITABLE"), "{out}");
    assert!(
        out.stdout.contains("rest-ok") && out.stdout.contains("procsys-ro"),
        "{out}"
    );
}

#[test]
fn sysctls_are_applied_inside_only() {
    let env = TestEnv::new("mnt-sysctl");
    let host_fwd = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shm = fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let mut b = env.bundle();
    let want_fwd = if host_fwd.trim() == "1" { "0" } else { "1" };
    let want_shm = if host_shm.trim() == "1" { "0" } else { "1" };
    b.set(
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": want_fwd, "kernel.shm_rmid_forced": want_shm}),
    );
    let out = env.run_sh(
        &mut b,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced",
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, vec![want_fwd, want_shm], "{out}");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_fwd,
        "host sysctl changed"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_shm,
        "host sysctl changed"
    );
}
