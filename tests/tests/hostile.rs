//! Malformed and adversarial bundles: each is refused with a clear error or safely
//! contained, and leaves no mount, process or state behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use skiff_tests::env::path_str;
use skiff_tests::{assert_ok, host, is_runc, mentions, runtime_bin, Bundle, Output, TestEnv};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::time::Duration;

/// What happened to one hostile bundle.
struct Attempt {
    create: Output,
    /// The container's output when it was accepted and ran.
    ran: Option<String>,
}

/// Creates the container; if accepted, runs it to completion and deletes it. Either way
/// asserts that nothing of it is left.
fn attempt(env: &TestEnv, b: &Bundle) -> Attempt {
    let id = env.id();
    let create = env.create(b, &id);
    assert!(!create.timed_out, "create hung{create}");
    let mut ran = None;
    let mut pid = None;
    if create.success() {
        pid = Some(env.pid(&id));
        assert_ok(
            &env.rt(&["start", &id]),
            "start of an accepted hostile bundle",
        );
        env.wait_status(&id, "stopped", Duration::from_secs(20));
        assert_ok(&env.rt(&["delete", &id]), "delete");
        ran = Some(create.stdout_now());
    }
    env.assert_clean(&id, &b.dir, pid);
    match &ran {
        Some(_) => eprintln!("{id}: accepted and ran"),
        None => eprintln!(
            "{id}: refused: {}",
            create.stderr.trim_end().lines().last().unwrap_or("")
        ),
    }
    Attempt { create, ran }
}

#[test]
fn wrong_types_for_every_major_field() {
    let env = TestEnv::new("hostile-types");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/ociVersion", json!(5), "ociVersion"),
        ("/process", json!("sh"), "process"),
        ("/process/args", json!([1, 2]), "args"),
        ("/process/env", json!("A=B"), "env"),
        ("/process/cwd", json!(1), "cwd"),
        ("/process/terminal", json!("yes"), "terminal"),
        ("/process/user", json!([]), "user"),
        ("/process/user/uid", json!(-1), "uid"),
        ("/process/user/gid", json!(1.5), "gid"),
        (
            "/process/user/additionalGids",
            json!("10"),
            "additionalGids",
        ),
        ("/process/rlimits", json!({}), "rlimits"),
        ("/process/rlimits/0/soft", json!("many"), "soft"),
        ("/process/capabilities", json!("all"), "capabilities"),
        (
            "/process/capabilities/bounding",
            json!("CAP_KILL"),
            "bounding",
        ),
        ("/process/noNewPrivileges", json!("true"), "noNewPrivileges"),
        ("/process/oomScoreAdj", json!("high"), "oomScoreAdj"),
        ("/root", json!("rootfs"), "root"),
        ("/root/path", json!([]), "path"),
        ("/root/readonly", json!("no"), "readonly"),
        ("/hostname", json!(7), "hostname"),
        ("/mounts", json!({}), "mounts"),
        ("/mounts/0", json!("proc"), "mounts"),
        ("/mounts/0/destination", json!(1), "destination"),
        ("/mounts/0/options", json!("ro"), "options"),
        ("/linux", json!([]), "linux"),
        ("/linux/namespaces/0", json!("pid"), "namespaces"),
        ("/linux/namespaces/0/type", json!(1), "type"),
        ("/linux/uidMappings", json!({}), "uidMappings"),
        ("/linux/resources", json!("x"), "resources"),
        ("/linux/resources/devices", json!({}), "devices"),
        ("/linux/maskedPaths", json!("/proc/kcore"), "maskedPaths"),
        ("/linux/readonlyPaths", json!(3), "readonlyPaths"),
        ("/linux/sysctl", json!([]), "sysctl"),
        ("/linux/devices", json!({}), "devices"),
        ("/linux/cgroupsPath", json!(5), "cgroupsPath"),
        ("/hooks", json!([]), "hooks"),
        ("/hooks/prestart", json!({}), "prestart"),
        ("/annotations", json!([]), "annotations"),
    ];
    let mut problems = Vec::new();
    for (pointer, value, name) in cases {
        let mut b = env.bundle_light();
        b.set(pointer, value.clone());
        let a = attempt(&env, &b);
        let o = &a.create;
        if o.success() {
            problems.push(format!("{pointer} = {value}: accepted{o}"));
        } else if !mentions(o, name) {
            problems.push(format!(
                "{pointer} = {value}: error does not name `{name}`{o}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} wrong-type cases misbehaved:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn invalid_values_are_refused() {
    let env = TestEnv::new("hostile-values");
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("/linux/namespaces/0/type", json!("bogus-ns"), &["bogus-ns"]),
        (
            "/process/rlimits/0/type",
            json!("RLIMIT_BOGUS"),
            &["RLIMIT_BOGUS"],
        ),
        (
            "/process/capabilities/bounding",
            json!(["CAP_BOGUS"]),
            &["CAP_BOGUS"],
        ),
        (
            "/linux/namespaces/0/path",
            json!("/no/such/nsfile"),
            &["/no/such/nsfile"],
        ),
        // /mounts/3 is /dev/shm.
        (
            "/mounts/3/type",
            json!("no-such-fs-type"),
            &["no-such-fs-type", "/dev/shm"],
        ),
        ("/process/args", json!([]), &["args"]),
    ];
    let mut problems = Vec::new();
    for (pointer, value, names) in cases {
        let mut b = env.bundle_light();
        b.set(pointer, value.clone());
        let a = attempt(&env, &b);
        let o = &a.create;
        if o.success() {
            // Some runtimes only fail at start (e.g. exec); that is fine if it failed there.
            if a.ran.as_deref().is_some_and(|r| !r.is_empty()) {
                problems.push(format!("{pointer} = {value}: accepted and ran{o}"));
            }
        } else if !names.iter().any(|n| mentions(o, n)) {
            problems.push(format!(
                "{pointer} = {value}: error names none of {names:?}{o}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} invalid-value cases misbehaved:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn huge_arrays_fail_cleanly_or_work() {
    let env = TestEnv::new("hostile-huge");
    // runc 1.1 needs ~30 s for 100k env entries (quadratic); skiff gets the full size.
    let n_env = if is_runc() { 10_000 } else { 100_000 };
    let cases: Vec<(&str, Value)> = vec![
        (
            "/process/env",
            json!(std::iter::once("PATH=/bin:/sbin:/usr/bin".to_string())
                .chain((0..n_env).map(|i| format!("K{i}=v{i}")))
                .collect::<Vec<_>>()),
        ),
        (
            "/process/args",
            json!(std::iter::once("echo".to_string())
                .chain((0..100_000).map(|i| format!("a{i}")))
                .collect::<Vec<_>>()),
        ),
        (
            "/process/user/additionalGids",
            json!((0..100_000).collect::<Vec<u32>>()),
        ),
        (
            "/linux/maskedPaths",
            json!((0..20_000)
                .map(|i| format!("/none/{i}"))
                .collect::<Vec<_>>()),
        ),
        (
            "/linux/readonlyPaths",
            json!((0..20_000)
                .map(|i| format!("/none/{i}"))
                .collect::<Vec<_>>()),
        ),
        (
            "/annotations",
            Value::Object(
                (0..100_000)
                    .map(|i| (format!("k{i}"), json!("v")))
                    .collect(),
            ),
        ),
    ];
    let mut mounts = skiff_tests::bundle::default_config()["mounts"]
        .as_array()
        .unwrap()
        .clone();
    mounts.extend((0..1_000).map(|i| {
        json!({"destination": format!("/mnt/m{i}"),
        "type": "tmpfs", "source": "tmpfs", "options": ["size=4k"]})
    }));
    let cases = cases.into_iter().chain([("/mounts", Value::Array(mounts))]);
    for (pointer, value) in cases {
        let mut b = env.bundle_light();
        b.set(pointer, value);
        if pointer != "/process/args" {
            b.sh("echo huge-ok");
        }
        let t = std::time::Instant::now();
        let a = attempt(&env, &b);
        eprintln!(
            "{pointer}: {} in {:?}",
            if a.create.success() {
                "accepted"
            } else {
                "refused"
            },
            t.elapsed()
        );
        let want = if pointer == "/process/args" {
            "a99999"
        } else {
            "huge-ok"
        };
        if let Some(ran) = &a.ran {
            assert!(
                ran.contains(want),
                "{pointer}: accepted but did not run properly: {ran:?}{}",
                a.create
            );
        }
    }
}

/// A marker dir on the host, outside any rootfs, that must never change.
fn host_target(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let t = env.dir.join(name);
    fs::create_dir_all(&t).unwrap();
    fs::write(t.join("marker"), "host").unwrap();
    t
}

fn assert_untouched(target: &Path, ctx: &Output) {
    assert_eq!(
        host::list_dir(target),
        vec!["marker"],
        "host dir {} was written to{ctx}",
        target.display()
    );
    assert_eq!(fs::read_to_string(target.join("marker")).unwrap(), "host");
    let m = host::mounts_mentioning(target);
    assert!(
        m.is_empty(),
        "host dir {} got mounts {m:#?}{ctx}",
        target.display()
    );
}

#[test]
fn dotdot_in_mount_destination_stays_inside() {
    let env = TestEnv::new("hostile-dotdot");
    let mut b = env.bundle_light();
    // rootfs is <dir>/bundle-N/rootfs, so ../../ from it is the test dir itself.
    let outside = env.dir.join("dotdot-outside");
    b.mount(
        json!({"destination": "/../../dotdot-outside/sub", "type": "tmpfs", "source": "tmpfs"}),
    );
    b.sh("echo pwned > /../../dotdot-outside/sub/pwn 2>/dev/null; echo done");
    let a = attempt(&env, &b);
    assert!(
        !outside.exists(),
        "a `..` mount destination created {} on the host{}",
        outside.display(),
        a.create
    );
}

#[test]
fn absolute_symlink_in_mount_destination_stays_inside() {
    let env = TestEnv::new("hostile-abslink");
    let target = host_target(&env, "abs-target");
    let target2 = host_target(&env, "abs-target2");
    let src = host_target(&env, "bind-src");
    let mut b = env.bundle_light();
    symlink(&target, b.rootfs().join("evil")).unwrap();
    symlink(&target2, b.rootfs().join("evil2")).unwrap();
    // A mount below the symlink (the runtime must mkdir it) and one on the symlink itself.
    b.mount(json!({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"}));
    b.mount(json!({"destination": "/evil2", "type": "bind", "source": path_str(&src), "options": ["rbind"]}));
    b.sh("echo pwned > /evil/pwn; echo pwned > /evil2/pwn; ls /evil2; true");
    let a = attempt(&env, &b);
    assert_untouched(&target, &a.create);
    assert_untouched(&target2, &a.create);
    assert_eq!(
        host::list_dir(&src),
        vec!["marker"]
            .into_iter()
            .chain(a.ran.as_ref().filter(|r| r.contains("pwn")).map(|_| "pwn"))
            .collect::<Vec<_>>(),
        "bind source changed unexpectedly{}",
        a.create
    );
}

#[test]
fn relative_symlink_escaping_the_rootfs_stays_inside() {
    let env = TestEnv::new("hostile-rellink");
    let target = host_target(&env, "rel-target");
    let mut b = env.bundle_light();
    let up = "../".repeat(20);
    let rel = format!("{up}{}", path_str(&target).trim_start_matches('/'));
    symlink(&rel, b.rootfs().join("rel")).unwrap();
    let file_src = env.dir.join("file-src");
    fs::write(&file_src, "file").unwrap();
    b.mount(json!({"destination": "/rel/sub", "type": "tmpfs", "source": "tmpfs"}));
    b.mount(json!({"destination": "/rel/file", "type": "bind", "source": path_str(&file_src), "options": ["bind"]}));
    b.sh("true");
    let a = attempt(&env, &b);
    assert_untouched(&target, &a.create);
}

#[test]
fn symlinked_parent_dir_of_a_file_mount_stays_inside() {
    let env = TestEnv::new("hostile-parent");
    let target = host_target(&env, "parent-target");
    let mut b = env.bundle_light();
    fs::create_dir_all(b.rootfs().join("etc/deep")).unwrap();
    symlink(&target, b.rootfs().join("etc/deep/link")).unwrap();
    let file_src = env.dir.join("file-src");
    fs::write(&file_src, "file").unwrap();
    b.mount(
        json!({"destination": "/etc/deep/link/newfile", "type": "bind",
        "source": path_str(&file_src), "options": ["bind", "ro"]}),
    );
    b.mount(json!({"destination": "/etc/deep/link/newdir/x", "type": "tmpfs", "source": "tmpfs"}));
    b.sh("true");
    let a = attempt(&env, &b);
    assert_untouched(&target, &a.create);
}

#[test]
fn masked_and_readonly_paths_through_symlinks_stay_inside() {
    let env = TestEnv::new("hostile-masklink");
    let target = host_target(&env, "mask-target");
    let mut b = env.bundle_light();
    symlink(&target, b.rootfs().join("masklink")).unwrap();
    b.push("/linux/maskedPaths", json!("/masklink/marker"));
    b.push("/linux/readonlyPaths", json!("/masklink"));
    b.sh("true");
    let a = attempt(&env, &b);
    assert_untouched(&target, &a.create);
}

#[test]
fn no_runtime_fd_leaks_into_the_container() {
    let env = TestEnv::new("hostile-fds");
    let mut b = env.bundle_light();
    b.sh("ls /proc/self/fd | tr '\\n' ' '");
    let id = env.id();
    let out = env.run_fg(&b, &id);
    assert_ok(&out, "run");
    assert_eq!(
        out.stdout.trim(),
        "0 1 2 3",
        "fds other than stdio (and ls's own dir fd){out}"
    );

    // The same for a process started by create/start and for exec.
    let mut b = env.bundle_light();
    b.sh("ls /proc/self/fd | tr '\\n' ' '; echo; sleep 1000");
    let id = env.id();
    let create = env.must_create(&b, &id);
    env.must_start(&id);
    let out = env.rt(&["exec", &id, "sh", "-c", "ls /proc/self/fd | tr '\\n' ' '"]);
    assert_ok(&out, "exec");
    assert_eq!(out.stdout.trim(), "0 1 2 3", "fds leaked into exec{out}");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while create.stdout_now().trim().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        create.stdout_now().trim(),
        "0 1 2 3",
        "fds leaked into init{create}"
    );
}

#[test]
fn cwd_cannot_point_outside_the_rootfs() {
    // CVE-2024-21626: a cwd of /proc/self/fd/N could resolve through a leaked host fd.
    let env = TestEnv::new("hostile-cwd");
    for n in 3..=9 {
        let mut b = env.bundle_light();
        b.set("/process/cwd", json!(format!("/proc/self/fd/{n}")));
        b.sh("readlink /proc/self/cwd; ls ../../../../..");
        let id = env.id();
        let out = env.run_fg(&b, &id);
        assert!(!out.timed_out, "{out}");
        if out.success() {
            assert!(
                !out.stdout.contains("unreachable"),
                "cwd outside the container root{out}"
            );
            assert!(
                !out.stdout.contains("skiff-test"),
                "host tree visible from cwd{out}"
            );
        }
        env.assert_clean(&id, &b.dir, None);
    }
    let mut b = env.bundle_light();
    let out = env.run_sh(
        &mut b,
        "readlink /proc/self/cwd; readlink /proc/1/cwd; readlink /proc/1/root",
    );
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["/", "/", "/"],
        "{out}"
    );
}

#[test]
fn init_exe_does_not_expose_the_runtime_binary() {
    // CVE-2019-5736: while init still runs runtime code (between create and start), a
    // container process can grab /proc/<init>/exe with O_PATH and, once the runtime has
    // exec'd away, reopen it for writing to overwrite the host's runtime binary.
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let env = TestEnv::new("hostile-exe");
    let mut b = env.bundle_light();
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    let pid = env.pid(&id);
    let exe = std::ffi::CString::new(format!("/proc/{pid}/exe")).unwrap();
    // SAFETY: exe is a valid C string; the returned fd is owned below.
    let raw = unsafe { libc::open(exe.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    assert!(
        raw >= 0,
        "open O_PATH {exe:?}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: raw is a fresh fd owned by nobody else.
    let held = unsafe { OwnedFd::from_raw_fd(raw) };
    env.must_start(&id);
    env.wait_status(&id, "running", Duration::from_secs(10));
    let via = format!("/proc/self/fd/{}", held.as_raw_fd());
    let target = fs::metadata(&via).unwrap();
    let real = fs::metadata(runtime_bin()).unwrap();
    if (target.dev(), target.ino()) != (real.dev(), real.ino()) {
        // A private copy (memfd or similar): writing it cannot reach the host binary.
        return;
    }
    // The same inode is fine only behind a read-only mount (runc's ro bind of itself).
    let path = std::ffi::CString::new(via.clone()).unwrap();
    // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid C string and sv a valid out-pointer.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut sv) };
    assert_eq!(rc, 0, "statvfs {via}: {}", std::io::Error::last_os_error());
    assert!(
        sv.f_flag & libc::ST_RDONLY != 0,
        "init's exe is the runtime binary itself on a writable mount: a container could \
         reopen it for writing once no runtime process executes it"
    );
}
