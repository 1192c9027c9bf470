//! Root-run tests of `skiff_runtime::rootfs` against the real kernel.
//!
//! This file has its own `main` (harness = false) so that the container side runs in a
//! single-threaded process: each case re-executes this binary with a scenario in the environment;
//! that child unshares its namespaces, forks the container's init, which runs
//! prepare → pivot → finish and execs a busybox command whose output the case checks.
//!
//! Run: `cargo test -p skiff-runtime --test rootfs` as root; an argument filters cases by name.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

#[macro_use]
mod harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{host_mount_leaks, Bundle, Output};
use serde_json::json;
use skiff_runtime::mountinfo::{self, MountInfo};

use harness::{Case, CaseResult};

const CASES: &[Case] = &[
    ("mount_types", mount_types),
    ("cgroup_without_cgroup_ns", cgroup_without_cgroup_ns),
    ("bind_options", bind_options),
    ("recursive_readonly_bind", recursive_readonly_bind),
    ("propagation", propagation),
    ("devices", devices),
    ("devices_in_user_ns", devices_in_user_ns),
    (
        "mqueue_in_user_ns_falls_back_to_bind",
        mqueue_in_user_ns_falls_back_to_bind,
    ),
    ("masked_and_readonly_paths", masked_and_readonly_paths),
    ("mask_refused_over_fake_proc", mask_refused_over_fake_proc),
    ("readonly_root", readonly_root),
    ("readonly_root_in_user_ns", readonly_root_in_user_ns),
    (
        "default_root_propagation_is_slave",
        default_root_propagation_is_slave,
    ),
    ("sysctl", sysctl),
    ("hostile_symlink_destinations", hostile_symlink_destinations),
    ("hostile_parent_is_file", hostile_parent_is_file),
    (
        "symlink_swapped_in_during_setup",
        symlink_swapped_in_during_setup,
    ),
    ("dangling_symlink_destination", dangling_symlink_destination),
    ("device_through_symlinked_dir", device_through_symlinked_dir),
    ("idmap_not_supported", idmap_not_supported),
];

fn main() {
    if let Ok(scenario) = std::env::var(common::SCENARIO_ENV) {
        common::container_main(&scenario);
    }
    harness::run("rootfs", CASES, host_mount_leaks);
}

fn proc_mount() -> serde_json::Value {
    json!({"destination": "/proc", "type": "proc", "source": "proc",
           "options": ["nosuid", "noexec", "nodev"]})
}

fn dev_mounts() -> Vec<serde_json::Value> {
    vec![
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "mode=0620"]}),
    ]
}

fn std_mounts() -> Vec<serde_json::Value> {
    let mut m = vec![proc_mount()];
    m.extend(dev_mounts());
    m
}

fn find<'a>(mounts: &'a [MountInfo], point: &str) -> Result<&'a MountInfo, String> {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new(point))
        .ok_or_else(|| format!("no mount at {point} in:\n{mounts:#?}"))
}

fn has_opt(m: &MountInfo, opt: &str) -> bool {
    m.options.split(',').any(|o| o == opt)
}

/// The part of the output after the last "---" marker, as mountinfo.
fn mountinfo_section(out: &Output) -> Vec<MountInfo> {
    let text = out.stdout.rsplit("---\n").next().unwrap_or("");
    mountinfo::parse(text)
}

fn mount_types() -> CaseResult {
    let b = Bundle::new()?;
    let mut mounts = std_mounts();
    mounts.extend([
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "options": ["size=1m"]}),
    ]);
    let spec = b.spec(
        mounts,
        json!({}),
        "echo pid=$$; ls /sys/fs/cgroup; echo ---; cat /proc/self/mountinfo",
    )?;
    let out = b.run(&spec, false, true)?;
    out.success()?;
    check!(out.stdout.contains("pid=1\n"), "not pid 1: {}", out.stdout);
    check!(
        out.stdout.contains("memory") && out.stdout.contains("cpu"),
        "cgroup dirs missing: {}",
        out.stdout
    );
    let mi = mountinfo_section(&out);
    for (point, fstype) in [
        ("/", ""),
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/tmp", "tmpfs"),
    ] {
        let m = find(&mi, point)?;
        check!(fstype.is_empty() || m.fstype == fstype, "{point}: {m:?}");
    }
    let pts = find(&mi, "/dev/pts")?;
    check!(
        pts.super_options.contains("ptmxmode=666"),
        "devpts without ptmxmode: {pts:?}"
    );
    check!(has_opt(find(&mi, "/sys")?, "ro"), "/sys not ro");
    let cg = find(&mi, "/sys/fs/cgroup")?;
    if cg.fstype == "tmpfs" {
        check!(has_opt(cg, "ro"), "cgroup tmpfs not ro: {cg:?}");
        let mem = find(&mi, "/sys/fs/cgroup/memory")?;
        check!(mem.fstype == "cgroup", "{mem:?}");
        // In its own cgroup namespace the container sees its cgroup as the root.
        check!(mem.root == Path::new("/"), "memory root: {mem:?}");
        check!(has_opt(mem, "ro"), "memory hierarchy not ro: {mem:?}");
    } else {
        check!(cg.fstype == "cgroup2", "{cg:?}");
    }
    check!(
        mi.len() < 40,
        "host mounts leaked into the container: {}",
        mi.len()
    );
    Ok(())
}

fn cgroup_without_cgroup_ns() -> CaseResult {
    let b = Bundle::new()?;
    let mut mounts = vec![proc_mount()];
    mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "ro"]}));
    let spec = b.spec(mounts, json!({}), "echo ---; cat /proc/self/mountinfo")?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    let mi = mountinfo_section(&out);
    let cg = find(&mi, "/sys/fs/cgroup")?;
    if cg.fstype != "tmpfs" {
        return Ok(()); // a pure v2 host: covered by mount_types
    }
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let mem_path = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))
        .ok_or("no memory hierarchy on this host")?;
    let mem = find(&mi, "/sys/fs/cgroup/memory")?;
    check!(
        mem.root == Path::new(&mem_path),
        "memory bind root {:?}, expected {mem_path}",
        mem.root
    );
    Ok(())
}

fn bind_options() -> CaseResult {
    let b = Bundle::new()?;
    let host = b.host_dir("data")?;
    fs::write(host.join("hello"), "hi\n").map_err(|e| e.to_string())?;
    let script = host.join("run.sh");
    fs::write(&script, "#!/bin/sh\necho ran\n").map_err(|e| e.to_string())?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let file = b.dir.path().join("single");
    fs::write(&file, "file-content").map_err(|e| e.to_string())?;
    let h = host.display().to_string();
    let mounts = vec![
        proc_mount(),
        json!({"destination": "/ro", "type": "bind", "source": h, "options": ["bind", "ro"]}),
        json!({"destination": "/noexec", "source": h,
               "options": ["rbind", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/etc/single", "type": "bind", "source": file, "options": ["bind", "ro"]}),
        json!({"destination": "/rw", "type": "bind", "source": h, "options": ["bind"]}),
        // Relative to the bundle directory.
        json!({"destination": "/relative", "type": "bind", "source": "data", "options": ["bind", "ro"]}),
    ];
    let spec = b.spec(
        mounts,
        json!({}),
        "cat /ro/hello; cat /relative/hello; touch /ro/x 2>/dev/null; echo ro_write=$?; \
         /noexec/run.sh 2>/dev/null; echo noexec_run=$?; /rw/run.sh; cat /etc/single; echo; \
         echo ---; cat /proc/self/mountinfo",
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    for want in [
        "hi\nhi\n",
        "ro_write=1\n",
        "noexec_run=126\n",
        "ran\n",
        "file-content\n",
    ] {
        check!(
            out.stdout.contains(want),
            "missing {want:?} in {}",
            out.stdout
        );
    }
    let mi = mountinfo_section(&out);
    check!(has_opt(find(&mi, "/ro")?, "ro"), "/ro not ro");
    let ne = find(&mi, "/noexec")?;
    for o in ["noexec", "nosuid", "nodev"] {
        check!(has_opt(ne, o), "/noexec lacks {o}: {ne:?}");
    }
    check!(
        has_opt(find(&mi, "/etc/single")?, "ro"),
        "/etc/single not ro"
    );
    check!(has_opt(find(&mi, "/rw")?, "rw"), "/rw not rw");
    let entries = fs::read_dir(&host).map_err(|e| e.to_string())?.count();
    check!(entries == 2, "host dir changed: {entries} entries");
    Ok(())
}

fn recursive_readonly_bind() -> CaseResult {
    let b = Bundle::new()?;
    let source = b.rootfs.join("r").display().to_string();
    let mounts = vec![
        proc_mount(),
        json!({"destination": "/r", "type": "tmpfs"}),
        json!({"destination": "/r/sub", "type": "tmpfs"}),
        json!({"destination": "/rr", "type": "bind", "source": source, "options": ["rbind", "rro"]}),
    ];
    let spec = b.spec(
        mounts,
        json!({}),
        "touch /rr/sub/x 2>/dev/null; echo sub=$?; touch /rr/y 2>/dev/null; echo top=$?; \
         touch /r/sub/z; echo orig=$?",
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    for want in ["sub=1\n", "top=1\n", "orig=0\n"] {
        check!(
            out.stdout.contains(want),
            "missing {want:?} in {}",
            out.stdout
        );
    }
    Ok(())
}

fn propagation() -> CaseResult {
    let b = Bundle::new()?;
    let mounts = vec![
        proc_mount(),
        json!({"destination": "/shared", "type": "tmpfs", "options": ["rshared"]}),
        json!({"destination": "/priv", "type": "tmpfs", "options": ["private"]}),
        json!({"destination": "/unb", "type": "tmpfs", "options": ["unbindable"]}),
    ];
    let spec = b.spec(
        mounts,
        json!({"rootfsPropagation": "private"}),
        "echo ---; cat /proc/self/mountinfo",
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    let mi = mountinfo_section(&out);
    let tags = |p: &str| find(&mi, p).map(|m| m.optional.join(" "));
    check!(
        tags("/shared")?.contains("shared:"),
        "/shared: {:?}",
        tags("/shared")
    );
    check!(
        tags("/unb")?.contains("unbindable"),
        "/unb: {:?}",
        tags("/unb")
    );
    check!(tags("/priv")?.is_empty(), "/priv: {:?}", tags("/priv"));
    check!(tags("/")?.is_empty(), "/ not private: {:?}", tags("/"));
    Ok(())
}

/// By default the container's root is a slave of the host's mount (rslave): host mounts and
/// unmounts reach it, nothing flows back.
fn default_root_propagation_is_slave() -> CaseResult {
    let host = mountinfo::read_self().map_err(|e| e.to_string())?;
    let host_root_shared = host
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/"))
        .is_some_and(|m| m.is_shared());
    let b = Bundle::new()?;
    let spec = b.spec(
        vec![proc_mount()],
        json!({}),
        "echo ---; cat /proc/self/mountinfo",
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    let root = find(&mountinfo_section(&out), "/")?.optional.join(" ");
    check!(
        !root.contains("shared:"),
        "container root is shared: {root}"
    );
    if host_root_shared {
        check!(
            root.contains("master:"),
            "container root not a slave: {root}"
        );
    }
    Ok(())
}

const STAT: &str = "stat -c '%n %F %t:%T %a %u:%g'";

fn devices() -> CaseResult {
    let b = Bundle::new()?;
    let linux = json!({"devices": [
        {"type": "c", "path": "/dev/mynull", "major": 1, "minor": 3, "fileMode": 0o620,
         "uid": 1000, "gid": 1001},
        {"type": "p", "path": "/dev/fifo"},
        {"type": "b", "path": "/dev/myloop", "major": 7, "minor": 0, "fileMode": 0o600},
        {"type": "c", "path": "/dev/sub/dir/node", "major": 1, "minor": 5},
    ]});
    let script = format!(
        "{STAT} /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/mynull \
         /dev/fifo /dev/myloop /dev/sub/dir/node; for l in fd stdin stdout stderr ptmx; do \
         readlink /dev/$l; done; echo x > /dev/null && echo null_ok; head -c 4 /dev/zero | wc -c; \
         readlink /dev/core || echo no-core"
    );
    let spec = b.spec(std_mounts(), linux, &script)?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    for want in [
        "/dev/null character special file 1:3 666 0:0\n",
        "/dev/zero character special file 1:5 666 0:0\n",
        "/dev/full character special file 1:7 666 0:0\n",
        "/dev/random character special file 1:8 666 0:0\n",
        "/dev/urandom character special file 1:9 666 0:0\n",
        "/dev/tty character special file 5:0 666 0:0\n",
        "/dev/mynull character special file 1:3 620 1000:1001\n",
        "/dev/fifo fifo 0:0 666 0:0\n",
        "/dev/myloop block special file 7:0 600 0:0\n",
        "/dev/sub/dir/node character special file 1:5 666 0:0\n",
        "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\npts/ptmx\n",
        "null_ok\n",
        "4\n",
    ] {
        check!(
            out.stdout.contains(want),
            "missing {want:?} in {}",
            out.stdout
        );
    }
    let core = Path::new("/proc/kcore").exists();
    check!(
        out.stdout
            .contains(if core { "/proc/kcore\n" } else { "no-core" }),
        "/dev/core: {}",
        out.stdout
    );
    Ok(())
}

fn devices_in_user_ns() -> CaseResult {
    let b = Bundle::new()?;
    let mut mounts = std_mounts();
    mounts.push(
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]}),
    );
    let script = format!(
        "{STAT} /dev/null /dev/zero /dev/tty; echo x > /dev/null && echo null_ok; \
         ls /sys/kernel >/dev/null && echo sys_ok; echo ---; cat /proc/self/mountinfo"
    );
    let spec = b.spec(mounts, json!({}), &script)?;
    let out = b.run(&spec, true, false)?;
    out.success()?;
    for want in [
        "/dev/null character special file 1:3",
        "/dev/zero character special file 1:5",
        "/dev/tty character special file 5:0",
        "null_ok\n",
        "sys_ok\n",
    ] {
        check!(
            out.stdout.contains(want),
            "missing {want:?} in {}",
            out.stdout
        );
    }
    let mi = mountinfo_section(&out);
    find(&mi, "/dev/null")?;
    check!(has_opt(find(&mi, "/sys")?, "ro"), "/sys not ro");
    Ok(())
}

fn mqueue_in_user_ns_falls_back_to_bind() -> CaseResult {
    let b = Bundle::new()?;
    let mut mounts = std_mounts();
    mounts.push(
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                       "options": ["nosuid", "noexec", "nodev"]}),
    );
    let spec = b.spec(mounts, json!({}), "echo ---; cat /proc/self/mountinfo")?;
    let out = b.run_user_ns_host_ipc(&spec)?;
    let host = mountinfo::read_self().map_err(|e| e.to_string())?;
    if !host
        .iter()
        .any(|m| m.mount_point == Path::new("/dev/mqueue"))
    {
        // Nothing to bind: the refusal must be reported, naming the mount.
        check!(!out.ok, "mqueue without a host /dev/mqueue succeeded");
        check!(
            out.stderr.contains("mount /dev/mqueue"),
            "stderr: {}",
            out.stderr
        );
        return Ok(());
    }
    out.success()?;
    let mi = mountinfo_section(&out);
    let mq = find(&mi, "/dev/mqueue")?;
    check!(mq.fstype == "mqueue", "{mq:?}");
    check!(has_opt(mq, "noexec"), "bind lost its flags: {mq:?}");
    Ok(())
}

fn masked_and_readonly_paths() -> CaseResult {
    let b = Bundle::new()?;
    b.write("etc/secret", "top secret")?;
    b.write("secretdir/file", "x")?;
    let mut mounts = std_mounts();
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs"}));
    let linux = json!({
        "maskedPaths": ["/etc/secret", "/secretdir", "/proc/kcore", "/proc/nonexistent", "/nope/x"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/missing", "/etc"],
    });
    let spec = b.spec(
        mounts,
        linux,
        "cat /etc/secret | wc -c; ls -A /secretdir | wc -l; touch /secretdir/x 2>/dev/null; \
         echo mdir_write=$?; (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null; \
         echo sys_write=$?; touch /etc/new 2>/dev/null; echo etc_write=$?; touch /tmp/t; \
         echo tmp_write=$?; echo ---; cat /proc/self/mountinfo",
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    let want = "0\n0\nmdir_write=1\nsys_write=1\netc_write=1\ntmp_write=0\n";
    check!(out.stdout.starts_with(want), "got {}", out.stdout);
    let mi = mountinfo_section(&out);
    let sys = find(&mi, "/proc/sys")?;
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        check!(has_opt(sys, o), "/proc/sys lacks {o}: {sys:?}");
    }
    check!(
        find(&mi, "/secretdir")?.fstype == "tmpfs",
        "/secretdir not masked"
    );
    check!(
        !mi.iter().any(|m| m.mount_point == Path::new("/missing")),
        "mounted /missing"
    );
    Ok(())
}

fn mask_refused_over_fake_proc() -> CaseResult {
    let b = Bundle::new()?;
    let fake = b.host_dir("fakeproc")?;
    fs::write(fake.join("kcore"), "fake").map_err(|e| e.to_string())?;
    let mut mounts = vec![json!({"destination": "/proc", "type": "bind",
                                 "source": fake, "options": ["bind"]})];
    mounts.extend(dev_mounts());
    let spec = b.spec(mounts, json!({"maskedPaths": ["/proc/kcore"]}), "echo ran")?;
    let out = b.run(&spec, false, false)?;
    check!(
        !out.ok,
        "masking over a fake /proc succeeded: {}",
        out.stdout
    );
    check!(
        out.stderr.contains("/proc/kcore") && out.stderr.contains("not on procfs"),
        "stderr: {}",
        out.stderr
    );
    Ok(())
}

fn readonly_root() -> CaseResult {
    readonly_root_with(false)
}

fn readonly_root_in_user_ns() -> CaseResult {
    readonly_root_with(true)
}

fn readonly_root_with(user_ns: bool) -> CaseResult {
    let b = Bundle::new()?;
    let mut mounts = vec![proc_mount()];
    mounts.push(
        json!({"destination": "/dev", "type": "tmpfs", "options": ["nosuid", "ro", "mode=755"]}),
    );
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs"}));
    let mut spec = b.spec(
        mounts,
        json!({}),
        "touch /newfile 2>/dev/null; echo root_write=$?; touch /dev/newdev 2>/dev/null; \
         echo dev_write=$?; touch /tmp/ok; echo tmp_write=$?; stat -c '%t:%T' /dev/null",
    )?;
    if let Some(root) = spec.root.as_mut() {
        root.readonly = true;
    }
    let out = b.run(&spec, user_ns, false)?;
    out.success()?;
    let want = "root_write=1\ndev_write=1\ntmp_write=0\n1:3\n";
    check!(out.stdout == want, "got {:?}", out.stdout);
    Ok(())
}

fn sysctl() -> CaseResult {
    let b = Bundle::new()?;
    let host_domain =
        fs::read_to_string("/proc/sys/kernel/domainname").map_err(|e| e.to_string())?;
    let linux = json!({"sysctl": {"kernel.domainname": "skiff.test", "kernel.shmmax": "12345678"}});
    let spec = b.spec(
        vec![proc_mount()],
        linux,
        "cat /proc/sys/kernel/domainname /proc/sys/kernel/shmmax",
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    check!(
        out.stdout == "skiff.test\n12345678\n",
        "got {:?}",
        out.stdout
    );
    let after = fs::read_to_string("/proc/sys/kernel/domainname").map_err(|e| e.to_string())?;
    check!(after == host_domain, "host domainname changed to {after:?}");
    Ok(())
}

/// Destinations through absolute and `..` symlinks, and under a symlinked parent, land inside the
/// rootfs; the host directory they point at is left alone.
fn hostile_symlink_destinations() -> CaseResult {
    let b = Bundle::new()?;
    let host = common::host_target()?;
    let h = host.path().display().to_string();
    for d in ["a", "b"] {
        fs::create_dir(host.path().join(d)).map_err(|e| e.to_string())?;
    }
    fs::write(host.path().join("marker"), "host").map_err(|e| e.to_string())?;
    let before = common::tree(host.path())?;
    b.mkdir("etc")?;
    b.symlink(&format!("{h}/a"), "etc/abs")?;
    b.symlink(&format!("../../../../../../..{h}/b"), "etc/rel")?;
    b.symlink(&h, "link")?;
    b.symlink(&format!("{h}/marker"), "etc/hostname")?;
    let file = b.dir.path().join("payload");
    fs::write(&file, "payload").map_err(|e| e.to_string())?;
    let mounts = vec![
        proc_mount(),
        json!({"destination": "/etc/abs", "type": "tmpfs"}),
        json!({"destination": "/etc/rel", "type": "tmpfs"}),
        json!({"destination": "/link/sub/mnt", "type": "tmpfs"}),
        json!({"destination": "/link/file", "type": "bind", "source": file, "options": ["bind"]}),
        json!({"destination": "/etc/hostname", "type": "bind", "source": file, "options": ["bind", "ro"]}),
    ];
    let spec = b.spec(
        mounts,
        json!({}),
        &format!(
            "echo pwned > /etc/abs/pwned; cat {h}/file; echo; echo ---; cat /proc/self/mountinfo"
        ),
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    check!(out.stdout.starts_with("payload\n"), "got {}", out.stdout);
    let mi = mountinfo_section(&out);
    for p in ["a", "b", "sub/mnt", "file", "marker"] {
        find(&mi, &format!("{h}/{p}"))?;
    }
    let after = common::tree(host.path())?;
    check!(before == after, "host dir changed: {before:?} -> {after:?}");
    let marker = fs::read_to_string(host.path().join("marker")).map_err(|e| e.to_string())?;
    check!(marker == "host", "host file changed: {marker:?}");
    check!(
        b.rootfs
            .join(h.trim_start_matches('/'))
            .join("sub/mnt")
            .is_dir(),
        "mount point not created inside the rootfs"
    );
    Ok(())
}

/// CVE-2021-30465 style: while the container sets up its mounts, another process keeps swapping
/// a directory on the mount path with a symlink to a host directory. Whatever wins each race,
/// every mount and mount point stays inside the rootfs.
fn symlink_swapped_in_during_setup() -> CaseResult {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    use std::sync::atomic::{AtomicBool, Ordering};

    let b = Bundle::new()?;
    let host = common::host_target()?;
    let h = host.path().display().to_string();
    let before = common::tree(host.path())?;
    b.mkdir("x")?;
    b.symlink(&h, "y")?;
    let mounts: Vec<_> = (0..40)
        .map(|i| json!({"destination": format!("/x/m{i}"), "type": "tmpfs"}))
        .collect();
    let spec = b.spec(mounts, json!({}), "true")?;
    let (x, y) = (b.rootfs.join("x"), b.rootfs.join("y"));
    let stop = AtomicBool::new(false);
    let swaps = std::thread::scope(|scope| {
        let swapper = scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if renameat2(AT_FDCWD, &x, AT_FDCWD, &y, RenameFlags::RENAME_EXCHANGE).is_ok() {
                    n += 1;
                }
            }
            n
        });
        let mut runs = Vec::new();
        for _ in 0..8 {
            runs.push(b.run(&spec, false, false));
        }
        stop.store(true, Ordering::Relaxed);
        let n = swapper.join().unwrap_or(0);
        (runs, n)
    });
    let (runs, n) = swaps;
    check!(n > 0, "the swapper never ran");
    for out in runs {
        // A run may fail closed (a path changed under it); it must never escape.
        let out = out?;
        check!(
            out.ok || out.stderr.contains("rootfs error"),
            "unexpected failure: {}",
            out.stderr
        );
    }
    let after = common::tree(host.path())?;
    check!(before == after, "host dir changed: {after:?}");
    Ok(())
}

fn hostile_parent_is_file() -> CaseResult {
    let b = Bundle::new()?;
    b.write("afile", "not a dir")?;
    let mounts = vec![json!({"destination": "/afile/mnt", "type": "tmpfs"})];
    let spec = b.spec(mounts, json!({}), "echo ran")?;
    let out = b.run(&spec, false, false)?;
    check!(!out.ok, "mount under a file succeeded");
    check!(
        out.stderr.contains("/afile/mnt") && out.stderr.contains("Not a directory"),
        "stderr: {}",
        out.stderr
    );
    Ok(())
}

fn dangling_symlink_destination() -> CaseResult {
    let b = Bundle::new()?;
    b.mkdir("var")?;
    b.symlink("/run", "var/run")?;
    let mounts = vec![
        proc_mount(),
        json!({"destination": "/var/run/foo", "type": "tmpfs"}),
    ];
    let spec = b.spec(mounts, json!({}), "echo ---; cat /proc/self/mountinfo")?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    find(&mountinfo_section(&out), "/run/foo")?;
    Ok(())
}

fn device_through_symlinked_dir() -> CaseResult {
    let b = Bundle::new()?;
    let host = common::host_target()?;
    let h = host.path().display().to_string();
    let before = common::tree(host.path())?;
    b.symlink(&h, "devlink")?;
    b.mkdir("dev")?;
    b.symlink(&format!("{h}/evil"), "dev/evil")?;
    let linux = json!({"devices": [
        {"type": "c", "path": "/devlink/node", "major": 1, "minor": 3},
        {"type": "c", "path": "/dev/evil", "major": 1, "minor": 5},
    ]});
    let spec = b.spec(
        vec![proc_mount()],
        linux,
        &format!("{STAT} {h}/node /dev/evil"),
    )?;
    let out = b.run(&spec, false, false)?;
    out.success()?;
    check!(
        out.stdout.contains("character special file 1:3")
            && out.stdout.contains("/dev/evil character special file 1:5"),
        "got {}",
        out.stdout
    );
    check!(common::tree(host.path())? == before, "host dir changed");
    Ok(())
}

fn idmap_not_supported() -> CaseResult {
    let b = Bundle::new()?;
    let mounts = vec![json!({"destination": "/x", "type": "bind",
                             "source": "/tmp", "options": ["bind", "idmap"]})];
    let spec = b.spec(mounts, json!({}), "echo ran")?;
    let out = b.run(&spec, false, false)?;
    check!(!out.ok, "idmap accepted");
    check!(
        out.stderr.contains("/x") && out.stderr.contains("not supported yet"),
        "stderr: {}",
        out.stderr
    );
    Ok(())
}
