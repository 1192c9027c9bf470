//! Root-run tests of container security, driving the real `skiff` binary against the real kernel.
//!
//! Each case builds a busybox bundle in a temp dir, edits the config from `skiff spec` and runs it with
//! `skiff --root <tmp> run`. Where busybox has no applet for a syscall, this binary serves as a probe
//! inside the container (`SKIFF_SECURITY_PROBE=<what>`): the host's libraries are bound in read-only.
//!
//! Run: `cargo test -p skiff-runtime --test security` as root; an argument filters cases by name.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod harness;

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const PROBE_ENV: &str = "SKIFF_SECURITY_PROBE";

use harness::{Case, CaseResult};

const CASES: &[Case] = &[
    ("seccomp_errno_on_mkdir", seccomp_errno_on_mkdir),
    ("seccomp_arg_filters", seccomp_arg_filters),
    (
        "seccomp_default_profile_blocks_unshare_and_keyctl",
        seccomp_default_profile_blocks_unshare_and_keyctl,
    ),
    (
        "seccomp_default_profile_allows_busybox_workload",
        seccomp_default_profile_allows_busybox_workload,
    ),
    (
        "seccomp_flags_and_unknown_names",
        seccomp_flags_and_unknown_names,
    ),
    (
        "seccomp_architectures_i386_and_x32",
        seccomp_architectures_i386_and_x32,
    ),
    (
        "seccomp_listener_receives_notify_fd",
        seccomp_listener_receives_notify_fd,
    ),
    ("seccomp_applies_to_exec", seccomp_applies_to_exec),
    ("seccomp_listener_for_exec", seccomp_listener_for_exec),
    (
        "seccomp_bad_profile_fails_create",
        seccomp_bad_profile_fails_create,
    ),
    ("capability_sets_as_non_root", capability_sets_as_non_root),
    ("capability_sets_as_root", capability_sets_as_root),
    (
        "unknown_capability_is_skipped",
        unknown_capability_is_skipped,
    ),
    ("no_net_raw_ping_fails", no_net_raw_ping_fails),
    ("no_sys_admin_mount_fails", no_sys_admin_mount_fails),
    ("no_new_privs_blocks_setuid", no_new_privs_blocks_setuid),
    (
        "cve_2019_5736_runtime_binary_not_writable",
        cve_2019_5736_runtime_binary_not_writable,
    ),
    (
        "cve_2024_21626_leaked_fd_and_cwd",
        cve_2024_21626_leaked_fd_and_cwd,
    ),
    (
        "cve_2021_30465_symlink_swap_on_mount_target",
        cve_2021_30465_symlink_swap_on_mount_target,
    ),
    (
        "cve_2019_16884_mount_over_proc",
        cve_2019_16884_mount_over_proc,
    ),
    (
        "cve_2022_29162_no_inheritable_caps_on_exec",
        cve_2022_29162_no_inheritable_caps_on_exec,
    ),
    (
        "proc_sys_sysrq_and_firmware_protected_by_default",
        proc_sys_sysrq_and_firmware_protected_by_default,
    ),
    (
        "user_ns_root_is_unprivileged_host_uid",
        user_ns_root_is_unprivileged_host_uid,
    ),
    (
        "idmapped_bind_mount_in_user_ns",
        idmapped_bind_mount_in_user_ns,
    ),
    (
        "rootless_run_as_unprivileged_user",
        rootless_run_as_unprivileged_user,
    ),
    (
        "lsm_labels_and_intel_rdt_accepted",
        lsm_labels_and_intel_rdt_accepted,
    ),
    ("features_report", features_report),
];

fn main() {
    if let Ok(what) = std::env::var(PROBE_ENV) {
        probe(&what);
    }
    harness::run("security", CASES, || Ok(()));
}

/// Inside a container: try one operation and print what happened.
fn probe(what: &str) -> ! {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let r = match what {
        "keyctl" => {
            const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
            const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
            // SAFETY: keyctl with integer arguments only.
            unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_GET_KEYRING_ID,
                    KEY_SPEC_SESSION_KEYRING,
                    0,
                )
            }
        }
        // SAFETY: unshare takes flags only.
        "unshare" => (unsafe { libc::unshare(libc::CLONE_NEWUTS) }) as libc::c_long,
        "abi" => {
            let x32 = abi_x32_getpid();
            println!("x32={x32}");
            let i386 = abi_i386_getpid();
            println!("i386={i386}");
            std::process::exit(0);
        }
        "euid" => {
            // SAFETY: geteuid has no arguments.
            println!("euid={}", unsafe { libc::geteuid() });
            std::process::exit(0);
        }
        _ => -1,
    };
    if r < 0 {
        println!("{what}: errno={}", errno());
    } else {
        println!("{what}: ok");
    }
    std::process::exit(0);
}

/// getpid through the x32 ABI: the x86_64 number with `__X32_SYSCALL_BIT`. The filter sees it
/// whether or not the kernel runs x32 programs.
fn abi_x32_getpid() -> String {
    // SAFETY: getpid takes no arguments, whatever the ABI.
    let r = unsafe { libc::syscall(libc::SYS_getpid | 0x4000_0000) };
    if r < 0 {
        format!(
            "errno{}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    } else {
        "ok".into()
    }
}

/// getpid (20) through the i386 ABI, `int 0x80`, which a 64-bit process may use too.
fn abi_i386_getpid() -> String {
    let ret: i64;
    // SAFETY: i386 getpid reads no arguments and touches no memory; the compat entry may clear r8-r11.
    unsafe {
        std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, options(nostack));
    }
    let ret = ret as i32;
    if ret < 0 {
        format!("errno{}", -ret)
    } else {
        "ok".into()
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique_id() -> String {
    format!(
        "sec-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> Result<&Self, String> {
        if self.code != 0 {
            return Err(format!(
                "exit {}; stdout: {}; stderr: {}",
                self.code, self.stdout, self.stderr
            ));
        }
        Ok(self)
    }
}

/// A bundle with a busybox rootfs and a state root, both in one temp dir.
struct Bundle {
    dir: tempfile::TempDir,
    base: Value,
}

impl Bundle {
    fn new() -> Result<Bundle, String> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-sec")
            .tempdir()
            .map_err(e2s)?;
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in [
            "bin", "proc", "sys", "dev", "tmp", "etc", "root", "lib", "lib64", "mnt",
        ] {
            fs::create_dir_all(rootfs.join(d)).map_err(e2s)?;
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(e2s)?;
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).map_err(e2s)?;
        let list = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .map_err(e2s)?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "busybox" {
                continue;
            }
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
        )
        .map_err(e2s)?;
        fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n").map_err(e2s)?;
        let out = Command::new(SKIFF)
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .map_err(e2s)?;
        check!(
            out.status.success(),
            "skiff spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = fs::read_to_string(bundle.join("config.json")).map_err(e2s)?;
        let mut base: Value = serde_json::from_str(&text).map_err(e2s)?;
        base["process"]["terminal"] = json!(false);
        base["root"]["readonly"] = json!(false);
        Ok(Bundle { dir, base })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    fn state_root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The default config running `sh -c script`.
    fn sh(&self, script: &str) -> Value {
        let mut c = self.base.clone();
        c["process"]["args"] = json!(["sh", "-c", script]);
        c
    }

    fn write_config(&self, cfg: &Value) -> Result<(), String> {
        let text = serde_json::to_string_pretty(cfg).map_err(e2s)?;
        fs::write(self.path().join("config.json"), text).map_err(e2s)
    }

    fn skiff(&self) -> Command {
        let mut c = Command::new(SKIFF);
        c.arg("--root").arg(self.state_root());
        c
    }

    /// `skiff run` in the foreground; the exit status is the container's.
    fn run(&self, cfg: &Value) -> Result<Out, String> {
        self.write_config(cfg)?;
        let mut c = self.skiff();
        c.args(["run", "--bundle"])
            .arg(self.path())
            .arg(unique_id());
        output(c)
    }

    /// Makes this binary runnable in the container as `/probe`, with the host's libraries.
    fn with_probe(&self, cfg: &mut Value, what: &str) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(e2s)?;
        fs::write(self.rootfs().join("probe"), b"").map_err(e2s)?;
        let mounts = cfg["mounts"].as_array_mut().ok_or("no mounts")?;
        mounts.push(
            json!({"destination": "/probe", "type": "bind", "source": exe,
                           "options": ["bind", "ro"]}),
        );
        for (src, dst) in [
            ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"),
            ("/usr/lib64", "/lib64"),
        ] {
            fs::create_dir_all(self.rootfs().join(&dst[1..])).map_err(e2s)?;
            mounts.push(json!({"destination": dst, "type": "bind", "source": src,
                               "options": ["rbind", "ro"]}));
        }
        let env = cfg["process"]["env"].as_array_mut().ok_or("no env")?;
        env.push(json!(format!("{PROBE_ENV}={what}")));
        Ok(())
    }
}

/// Runs a command to completion, killing it after a minute so a hang fails the case instead. Output
/// goes to files: a detached container keeps its copies of them open after `skiff` returns.
fn output(mut c: Command) -> Result<Out, String> {
    let mut so = tempfile::tempfile().map_err(e2s)?;
    let mut se = tempfile::tempfile().map_err(e2s)?;
    c.stdin(Stdio::null())
        .stdout(so.try_clone().map_err(e2s)?)
        .stderr(se.try_clone().map_err(e2s)?);
    let mut child = c.spawn().map_err(e2s)?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(e2s)? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("timed out after 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |f: &mut fs::File| -> String {
        use std::io::Seek;
        let mut s = String::new();
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = f.read_to_string(&mut s);
        s
    };
    Ok(Out {
        code: status.code().unwrap_or(128),
        stdout: read(&mut so),
        stderr: read(&mut se),
    })
}

fn caps(names: &[&str]) -> Value {
    json!(names)
}

fn seccomp_errno_on_mkdir() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("mkdir /tmp/a; echo rc=$?; mkdir /tmp/b 2>&1; touch /tmp/c && echo touched");
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]
    });
    let out = b.run(&cfg)?;
    out.ok()?;
    check!(
        out.stdout.contains("rc=1") && out.stdout.contains("No space left on device"),
        "mkdir was not refused with ENOSPC: {} / {}",
        out.stdout,
        out.stderr
    );
    check!(
        out.stdout.contains("touched"),
        "other calls broke: {}",
        out.stdout
    );
    // Without errnoRet the errno is EPERM.
    cfg["linux"]["seccomp"]["syscalls"][0]
        .as_object_mut()
        .ok_or("rule")?
        .remove("errnoRet");
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("Operation not permitted"),
        "default errno: {}",
        out.stdout
    );
    Ok(())
}

fn seccomp_arg_filters() -> CaseResult {
    let b = Bundle::new()?;
    // kill(pid > 1, SIGCONT) is refused; kill(1, SIGCONT) and kill(pid, 0) are not; umask(0o77) is
    // refused through a masked comparison while umask(0o22) passes.
    let mut cfg = b.sh(
        "sleep 100 & P=$!; \
         kill -CONT $P 2>/dev/null && echo cont-child=ok || echo cont-child=refused; \
         kill -CONT 1 && echo cont-init=ok; \
         kill -0 $P && echo zero-child=ok; \
         kill -9 $P; wait; \
         umask 022 && echo umask022=ok; umask 077 2>/dev/null && [ $(umask) = 0077 ] && echo umask077=ok || echo umask077=refused",
    );
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 1, "value": 18, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 1, "op": "SCMP_CMP_GT"}]},
            {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 0o70, "valueTwo": 0o70, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    let out = b.run(&cfg)?;
    for want in [
        "cont-child=refused",
        "cont-init=ok",
        "zero-child=ok",
        "umask022=ok",
        "umask077=refused",
    ] {
        check!(
            out.stdout.contains(want),
            "missing {want}: {} / {}",
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

fn default_profile() -> Result<Value, String> {
    serde_json::from_str(skiff_runtime::security::seccomp::DEFAULT_PROFILE_JSON).map_err(e2s)
}

fn seccomp_default_profile_blocks_unshare_and_keyctl() -> CaseResult {
    let b = Bundle::new()?;
    // Root with CAP_SYS_ADMIN, so that only seccomp stands in the way.
    let mut cfg =
        b.sh("/probe; SKIFF_SECURITY_PROBE=unshare /probe; unshare -u true; echo unshare-rc=$?");
    for set in ["bounding", "effective", "permitted"] {
        let list = cfg["process"]["capabilities"][set]
            .as_array_mut()
            .ok_or("caps")?;
        list.push(json!("CAP_SYS_ADMIN"));
    }
    b.with_probe(&mut cfg, "keyctl")?;
    let mut control = cfg.clone();
    cfg["linux"]["seccomp"] = default_profile()?;
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("keyctl: errno=1") && out.stdout.contains("unshare: errno=1"),
        "not blocked: {} / {}",
        out.stdout,
        out.stderr
    );
    check!(
        !out.stdout.contains("unshare-rc=0"),
        "busybox unshare ran: {}",
        out.stdout
    );
    // Without the profile the same calls work: the refusal above is the filter's.
    control["linux"]["seccomp"] = Value::Null;
    let out = b.run(&control)?;
    check!(
        out.stdout.contains("keyctl: ok") && out.stdout.contains("unshare: ok"),
        "control: {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

fn seccomp_default_profile_allows_busybox_workload() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh(
        "set -e; mkdir -p /tmp/w/x; cd /tmp/w; echo hello > f; cat f | tr a-z A-Z > g; \
         grep -q HELLO g; ln -s g h; ls -l >/dev/null; cp f x/; mv x/f x/k; rm -r x; \
         sleep 0.1 & wait; for i in 1 2 3; do echo $i; done | sort -r | head -1 > n; \
         [ $(cat n) = 3 ]; ps >/dev/null; date >/dev/null; id -u; sha256sum f >/dev/null; \
         wc -c < f; echo done",
    );
    cfg["linux"]["seccomp"] = default_profile()?;
    let out = b.run(&cfg)?;
    out.ok()?;
    check!(out.stdout.contains("done"), "workload: {}", out.stdout);
    Ok(())
}

fn seccomp_flags_and_unknown_names() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("grep Seccomp: /proc/self/status; mkdir /tmp/z 2>&1; true");
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["no_such_syscall_anywhere", "mkdir", "mkdirat"],
                      "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    let out = b.run(&cfg)?;
    out.ok()?;
    check!(
        out.stdout.contains("Seccomp:\t2"),
        "not filtered: {}",
        out.stdout
    );
    check!(
        out.stdout.contains("Permission denied"),
        "mkdir: {}",
        out.stdout
    );
    Ok(())
}

fn seccomp_architectures_i386_and_x32() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("/probe; echo status=$?");
    b.with_probe(&mut cfg, "abi")?;
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77}]
    });
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("x32=errno77") && out.stdout.contains("i386=errno77"),
        "per-ABI rules: {} / {}",
        out.stdout,
        out.stderr
    );
    // With only x86_64 named, the other ABIs are foreign architectures: the process is killed.
    cfg["linux"]["seccomp"]["architectures"] = json!(["SCMP_ARCH_X86_64"]);
    let out = b.run(&cfg)?;
    check!(
        !out.stdout.contains("x32=")
            && out
                .stdout
                .contains(&format!("status={}", 128 + libc::SIGSYS)),
        "an x32 call under an x86_64-only profile: {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// The seccomp agent: receives the descriptor and state, answers one mkdir with ENOSPC.
fn agent(listener: std::os::unix::net::UnixListener) -> Result<(Value, i32), String> {
    let (conn, _) = listener.accept().map_err(e2s)?;
    let (state, fd) = receive_listener(&conn)?;
    let mut req = Notif::default();
    // SAFETY: NOTIF_RECV fills the zeroed struct we pass, sized as the kernel expects.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_RECV, &mut req as *mut Notif) };
    check!(r == 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
    let resp = NotifResp {
        id: req.id,
        val: 0,
        error: -libc::ENOSPC,
        flags: 0,
    };
    // SAFETY: NOTIF_SEND reads the response struct we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp) };
    check!(r == 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
    Ok((state, req.nr))
}

/// One hand-off from the runtime: the state document and the descriptor sent with it.
fn receive_listener(conn: &std::os::unix::net::UnixStream) -> Result<(Value, OwnedFd), String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(e2s)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(e2s)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let n = msg.bytes;
    let fd = fd.ok_or("no descriptor with the state")?;
    // SAFETY: the descriptor just arrived through SCM_RIGHTS and is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let state: Value = serde_json::from_slice(&buf[..n]).map_err(e2s)?;
    Ok((state, fd))
}

fn seccomp_listener_receives_notify_fd() -> CaseResult {
    let b = Bundle::new()?;
    let sock = b.dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(e2s)?;
    let agent = std::thread::spawn(move || agent(listener));
    let mut cfg = b.sh("mkdir /tmp/n 2>&1; echo after");
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "skiff-test-meta",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let out = b.run(&cfg)?;
    let (state, nr) = agent.join().map_err(|_| "agent panicked")??;
    check!(state["fds"] == json!(["seccompFd"]), "fds: {state}");
    check!(state["metadata"] == "skiff-test-meta", "metadata: {state}");
    check!(state["pid"].as_i64().unwrap_or(0) > 0, "pid: {state}");
    check!(
        state["state"]["id"]
            .as_str()
            .is_some_and(|s| s.starts_with("sec-")),
        "state: {state}"
    );
    check!(state["ociVersion"].is_string(), "ociVersion: {state}");
    check!(
        nr == libc::SYS_mkdir as i32 || nr == libc::SYS_mkdirat as i32,
        "notified syscall {nr}"
    );
    check!(
        out.stdout.contains("No space left on device") && out.stdout.contains("after"),
        "the agent's answer did not reach mkdir: {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

fn seccomp_listener_for_exec() -> CaseResult {
    let b = Bundle::new()?;
    let sock = b.dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(e2s)?;
    let agent = std::thread::spawn(move || -> Result<_, String> {
        // The container's init hands its listener over first; its sleep never notifies.
        let (conn, _) = listener.accept().map_err(e2s)?;
        let (init_state, _fd) = receive_listener(&conn)?;
        let (exec_state, nr) = agent(listener)?;
        Ok((init_state, exec_state, nr))
    });
    let mut cfg = b.sh("sleep 100");
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let id = start_detached(&b, &cfg)?;
    let out = exec(&b, &id, &["sh", "-c", "mkdir /tmp/q 2>&1; echo after"]);
    remove(&b, &id);
    let out = out?;
    let (init_state, exec_state, nr) = agent.join().map_err(|_| "agent panicked")??;
    check!(
        nr == libc::SYS_mkdir as i32 || nr == libc::SYS_mkdirat as i32,
        "notified syscall {nr}"
    );
    check!(
        exec_state["pid"] != init_state["pid"] && exec_state["state"]["pid"] == init_state["pid"],
        "exec state: {exec_state} / init state: {init_state}"
    );
    check!(
        out.stdout.contains("No space left on device") && out.stdout.contains("after"),
        "exec'd mkdir: {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// Starts a detached container running `sleep`; the caller deletes it.
fn start_detached(b: &Bundle, cfg: &Value) -> Result<String, String> {
    b.write_config(cfg)?;
    let id = unique_id();
    let mut c = b.skiff();
    c.args(["run", "-d", "--bundle"]).arg(b.path()).arg(&id);
    output(c)?.ok()?;
    Ok(id)
}

fn remove(b: &Bundle, id: &str) {
    let mut c = b.skiff();
    c.args(["delete", "--force", id]);
    let _ = output(c);
}

fn exec(b: &Bundle, id: &str, args: &[&str]) -> Result<Out, String> {
    let mut c = b.skiff();
    c.arg("exec").arg(id).args(args);
    output(c)
}

fn seccomp_applies_to_exec() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("sleep 100");
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]
    });
    let id = start_detached(&b, &cfg)?;
    let out = exec(&b, &id, &["sh", "-c", "mkdir /tmp/e 2>&1"]);
    remove(&b, &id);
    let out = out?;
    check!(
        out.stdout.contains("No space left on device"),
        "exec'd process not filtered: {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

fn seccomp_bad_profile_fails_create() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("echo ran");
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [
            {"index": 0, "value": 1, "op": "SCMP_CMP_BOGUS"}]}]
    });
    let out = b.run(&cfg)?;
    check!(out.code != 0 && !out.stdout.contains("ran"), "ran anyway");
    check!(
        out.stderr.contains("SCMP_CMP_BOGUS") && out.stderr.contains("syscalls[0].args[0]"),
        "error does not name the field: {}",
        out.stderr
    );
    Ok(())
}

/// The Cap* lines of `/proc/self/status` as numbers.
fn cap_lines(stdout: &str) -> Result<std::collections::HashMap<String, u64>, String> {
    let mut m = std::collections::HashMap::new();
    for l in stdout.lines() {
        if let Some((k, v)) = l.split_once(':') {
            if k.starts_with("Cap") {
                let n = u64::from_str_radix(v.trim(), 16).map_err(e2s)?;
                m.insert(k.to_string(), n);
            }
        }
    }
    check!(m.len() == 5, "Cap lines: {stdout}");
    Ok(m)
}

const CHOWN: u64 = 1 << 0;
const KILL: u64 = 1 << 5;
const SETUID: u64 = 1 << 7;
const NET_RAW: u64 = 1 << 13;

fn set_caps(cfg: &mut Value) {
    cfg["process"]["capabilities"] = json!({
        "bounding": caps(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"]),
        "permitted": caps(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]),
        "effective": caps(&["CAP_CHOWN", "CAP_KILL"]),
        "inheritable": caps(&["CAP_CHOWN", "CAP_KILL"]),
        "ambient": caps(&["CAP_KILL"]),
    });
}

fn capability_sets_as_non_root() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("grep ^Cap /proc/self/status");
    set_caps(&mut cfg);
    cfg["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let out = b.run(&cfg)?;
    out.ok()?;
    let m = cap_lines(&out.stdout)?;
    // Across execve a non-root process keeps its bounding and inheritable sets; permitted and effective
    // become the ambient set.
    check!(
        m["CapBnd"] == CHOWN | KILL | NET_RAW | SETUID,
        "CapBnd {:x}",
        m["CapBnd"]
    );
    check!(m["CapInh"] == CHOWN | KILL, "CapInh {:x}", m["CapInh"]);
    check!(m["CapAmb"] == KILL, "CapAmb {:x}", m["CapAmb"]);
    check!(m["CapPrm"] == KILL, "CapPrm {:x}", m["CapPrm"]);
    check!(m["CapEff"] == KILL, "CapEff {:x}", m["CapEff"]);
    Ok(())
}

fn capability_sets_as_root() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("grep ^Cap /proc/self/status");
    set_caps(&mut cfg);
    let out = b.run(&cfg)?;
    out.ok()?;
    let m = cap_lines(&out.stdout)?;
    // For root the kernel treats the program as carrying every file capability (permitted becomes
    // inheritable ∪ bounding), but no_new_privs (on in this config) caps that at the permitted set the
    // runtime installed; root's effective set is its permitted set.
    check!(
        m["CapBnd"] == CHOWN | KILL | NET_RAW | SETUID,
        "CapBnd {:x}",
        m["CapBnd"]
    );
    check!(m["CapInh"] == CHOWN | KILL, "CapInh {:x}", m["CapInh"]);
    check!(m["CapAmb"] == KILL, "CapAmb {:x}", m["CapAmb"]);
    check!(
        m["CapPrm"] == CHOWN | KILL | NET_RAW,
        "CapPrm {:x}",
        m["CapPrm"]
    );
    check!(
        m["CapEff"] == CHOWN | KILL | NET_RAW,
        "CapEff {:x}",
        m["CapEff"]
    );
    Ok(())
}

fn unknown_capability_is_skipped() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("grep ^CapBnd /proc/self/status");
    cfg["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_FROM_THE_FUTURE"],
        "effective": ["CAP_KILL", "CAP_FROM_THE_FUTURE"],
        "permitted": ["CAP_KILL"],
    });
    let out = b.run(&cfg)?;
    out.ok()?;
    check!(
        out.stdout.contains(&format!("{KILL:016x}")),
        "CapBnd: {}",
        out.stdout
    );
    check!(
        out.stderr.contains("CAP_FROM_THE_FUTURE"),
        "no warning: {}",
        out.stderr
    );
    Ok(())
}

fn with_cap(cfg: &mut Value, cap: &str, present: bool) -> Result<(), String> {
    for set in ["bounding", "effective", "permitted"] {
        let list = cfg["process"]["capabilities"][set]
            .as_array_mut()
            .ok_or("caps")?;
        list.retain(|c| c != cap);
        if present {
            list.push(json!(cap));
        }
    }
    Ok(())
}

fn no_net_raw_ping_fails() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("ip link set lo up && ping -c 1 -W 2 127.0.0.1 2>&1; echo rc=$?");
    with_cap(&mut cfg, "CAP_NET_ADMIN", true)?;
    with_cap(&mut cfg, "CAP_NET_RAW", true)?;
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("rc=0"),
        "control ping failed: {} / {}",
        out.stdout,
        out.stderr
    );
    with_cap(&mut cfg, "CAP_NET_RAW", false)?;
    let out = b.run(&cfg)?;
    check!(
        !out.stdout.contains("rc=0") && out.stdout.contains("ermission denied")
            || out.stdout.contains("not permitted"),
        "ping worked without CAP_NET_RAW: {}",
        out.stdout
    );
    Ok(())
}

fn no_sys_admin_mount_fails() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("mount -t tmpfs none /mnt 2>&1; echo rc=$?");
    with_cap(&mut cfg, "CAP_SYS_ADMIN", false)?;
    let out = b.run(&cfg)?;
    check!(
        !out.stdout.contains("rc=0") && out.stdout.contains("ermission denied"),
        "mount worked without CAP_SYS_ADMIN: {}",
        out.stdout
    );
    with_cap(&mut cfg, "CAP_SYS_ADMIN", true)?;
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("rc=0"),
        "control mount failed: {}",
        out.stdout
    );
    Ok(())
}

fn no_new_privs_blocks_setuid() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("/suid-probe");
    b.with_probe(&mut cfg, "euid")?;
    // A root-owned setuid copy of the probe, inside the rootfs.
    let exe = std::env::current_exe().map_err(e2s)?;
    let suid = b.rootfs().join("suid-probe");
    fs::copy(&exe, &suid).map_err(e2s)?;
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).map_err(e2s)?;
    check!(
        fs::metadata(&suid).map_err(e2s)?.uid() == 0,
        "probe not root-owned"
    );
    cfg["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    cfg["process"]["noNewPrivileges"] = json!(true);
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("euid=1000"),
        "no_new_privs: {} / {}",
        out.stdout,
        out.stderr
    );
    cfg["process"]["noNewPrivileges"] = json!(false);
    let out = b.run(&cfg)?;
    check!(
        out.stdout.contains("euid=0"),
        "control (setuid works without it): {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

fn file_digest(p: &Path) -> Result<(u64, Vec<u8>), String> {
    let data = fs::read(p).map_err(e2s)?;
    Ok((data.len() as u64, data))
}

fn cve_2019_5736_runtime_binary_not_writable() -> CaseResult {
    let b = Bundle::new()?;
    let before = file_digest(Path::new(SKIFF))?;
    // `create` leaves the init blocked before its execve: it still runs the runtime's image.
    let cfg = b.sh("true");
    b.write_config(&cfg)?;
    let id = unique_id();
    let mut c = b.skiff();
    c.args(["create", "--bundle"]).arg(b.path()).arg(&id);
    let created = output(c)?;
    let result = (|| -> CaseResult {
        created.ok()?;
        let st = b.skiff().args(["state", &id]).output().map_err(e2s)?;
        let st: Value = serde_json::from_slice(&st.stdout).map_err(e2s)?;
        let pid = st["pid"].as_i64().ok_or("no pid")?;
        let exe = format!("/proc/{pid}/exe");
        let link = fs::read_link(&exe).map_err(e2s)?;
        let image = fs::File::open(&exe).map_err(e2s)?;
        // SAFETY: statvfs is plain data, filled by fstatvfs on a descriptor we own.
        let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::fstatvfs(image.as_raw_fd(), &mut sv) };
        let readonly = r == 0 && sv.f_flag & libc::ST_RDONLY != 0;
        check!(
            link.to_string_lossy().starts_with("/memfd:") || readonly,
            "the init runs a writable image {link:?}"
        );
        let w = fs::OpenOptions::new().write(true).open(&exe);
        check!(w.is_err(), "the runtime image is writable through {exe}");
        // From inside the container: the classic attack through /proc/<init>/exe.
        let out = exec(
            &b,
            &id,
            &[
                "sh",
                "-c",
                "echo pwned > /proc/1/exe && echo WROTE; readlink /proc/1/exe; true",
            ],
        )?;
        check!(
            !out.stdout.contains("WROTE"),
            "container overwrote /proc/1/exe"
        );
        // And a `#!/proc/self/exe` program run by `exec` only reaches the sealed copy.
        fs::write(b.rootfs().join("tmp/evil"), "#!/proc/self/exe\n").map_err(e2s)?;
        fs::set_permissions(
            b.rootfs().join("tmp/evil"),
            fs::Permissions::from_mode(0o755),
        )
        .map_err(e2s)?;
        let _ = exec(&b, &id, &["/tmp/evil"]);
        Ok(())
    })();
    remove(&b, &id);
    result?;
    check!(
        file_digest(Path::new(SKIFF))? == before,
        "the skiff binary changed"
    );
    Ok(())
}

fn cve_2024_21626_leaked_fd_and_cwd() -> CaseResult {
    let b = Bundle::new()?;
    let host_dir = fs::File::open("/").map_err(e2s)?;
    let raw = host_dir.as_raw_fd();
    // A descriptor to a host directory leaks into skiff as fd 7 ...
    let with_leak = |cfg: &Value| -> Result<Out, String> {
        b.write_config(cfg)?;
        let mut c = b.skiff();
        c.args(["run", "--bundle"]).arg(b.path()).arg(unique_id());
        // SAFETY: dup2 between fork and exec, async-signal-safe, on a descriptor we own.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        output(c)
    };
    // ... and must not be reachable from the container.
    let out = with_leak(&b.sh("ls /proc/self/fd; ls /proc/self/fd/7/ 2>&1; echo end"))?;
    out.ok()?;
    let fds: Vec<&str> = out
        .stdout
        .lines()
        .take_while(|l| l.trim().parse::<u32>().is_ok())
        .collect();
    check!(
        !fds.contains(&"7"),
        "fd 7 leaked into the container: {}",
        out.stdout
    );
    check!(
        !out.stdout.contains("etc\nhome"),
        "host root listed: {}",
        out.stdout
    );
    for fd in 3..10 {
        let mut cfg = b.sh("pwd; ls ..");
        cfg["process"]["cwd"] = json!(format!("/proc/self/fd/{fd}"));
        let out = with_leak(&cfg)?;
        check!(
            out.code != 0,
            "cwd /proc/self/fd/{fd} was accepted: {}",
            out.stdout
        );
    }
    Ok(())
}

fn mounted_at(path: &Path) -> Result<bool, String> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(e2s)?;
    let p = path.to_string_lossy();
    Ok(info.lines().any(|l| l.split(' ').nth(4) == Some(&*p)))
}

fn cve_2021_30465_symlink_swap_on_mount_target() -> CaseResult {
    let b = Bundle::new()?;
    let host = tempfile::tempdir().map_err(e2s)?;
    fs::write(host.path().join("marker"), "host").map_err(e2s)?;
    let target = b.rootfs().join("data");
    let mut cfg = b.sh("echo inside > /data/written 2>/dev/null; true");
    let mounts = cfg["mounts"].as_array_mut().ok_or("mounts")?;
    mounts.push(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs"}));
    // Static case: the target is a symlink pointing at a host path.
    std::os::unix::fs::symlink(host.path(), &target).map_err(e2s)?;
    let _ = b.run(&cfg)?;
    check!(!mounted_at(host.path())?, "tmpfs landed on the host path");
    check!(
        !host.path().join("written").exists(),
        "the container wrote to the host"
    );
    // Racing case: a thread swaps the target between a directory and the symlink during runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (t, s, h) = (target.clone(), stop.clone(), host.path().to_owned());
    let swapper = std::thread::spawn(move || {
        let tmp = t.with_extension("new");
        while !s.load(Ordering::Relaxed) {
            let _ = fs::remove_dir_all(&tmp);
            let _ = fs::remove_file(&tmp);
            let _ = fs::create_dir(&tmp);
            let _ = fs::rename(&tmp, &t);
            let _ = std::os::unix::fs::symlink(&h, &tmp);
            let _ = fs::rename(&tmp, &t);
        }
    });
    let mut result = Ok(());
    for _ in 0..15 {
        let _ = b.run(&cfg);
        if mounted_at(host.path())? || host.path().join("written").exists() {
            result = Err("a swapped symlink redirected the mount to the host".to_string());
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = swapper.join();
    result?;
    check!(
        fs::read_to_string(host.path().join("marker")).map_err(e2s)? == "host",
        "host marker changed"
    );
    Ok(())
}

fn cve_2019_16884_mount_over_proc() -> CaseResult {
    let b = Bundle::new()?;
    let fake = b.dir.path().join("fakeproc");
    fs::create_dir_all(fake.join("sys")).map_err(e2s)?;
    fs::write(fake.join("sysrq-trigger"), "").map_err(e2s)?;
    let mut cfg = b.sh("echo ran");
    let mounts = cfg["mounts"].as_array_mut().ok_or("mounts")?;
    for m in mounts.iter_mut() {
        if m["destination"] == "/proc" {
            *m = json!({"destination": "/proc", "type": "bind", "source": fake,
                        "options": ["rbind"]});
        }
    }
    let out = b.run(&cfg)?;
    check!(
        out.code != 0 && !out.stdout.contains("ran"),
        "masked/readonly paths were applied over a fake /proc: {}",
        out.stdout
    );
    check!(out.stderr.contains("/proc"), "error: {}", out.stderr);
    Ok(())
}

fn cve_2022_29162_no_inheritable_caps_on_exec() -> CaseResult {
    let b = Bundle::new()?;
    let cfg = b.sh("sleep 100");
    let id = start_detached(&b, &cfg)?;
    let r = (|| -> CaseResult {
        let init = exec(&b, &id, &["grep", "^Cap", "/proc/1/status"])?;
        let m = cap_lines(&init.ok()?.stdout)?;
        check!(m["CapInh"] == 0, "init CapInh {:x}", m["CapInh"]);
        let out = exec(&b, &id, &["grep", "^Cap", "/proc/self/status"])?;
        let m = cap_lines(&out.ok()?.stdout)?;
        check!(m["CapInh"] == 0, "exec CapInh {:x}", m["CapInh"]);
        let out = exec(
            &b,
            &id,
            &["-u", "1000", "grep", "^Cap", "/proc/self/status"],
        );
        let out = match out {
            Ok(o) if o.code == 0 => o,
            _ => exec(
                &b,
                &id,
                &["--user", "1000", "grep", "^Cap", "/proc/self/status"],
            )?,
        };
        let m = cap_lines(&out.ok()?.stdout)?;
        check!(
            m["CapInh"] == 0 && m["CapPrm"] == 0 && m["CapEff"] == 0,
            "non-root exec gained capabilities: {m:?}"
        );
        Ok(())
    })();
    remove(&b, &id);
    r
}

fn proc_sys_sysrq_and_firmware_protected_by_default() -> CaseResult {
    let b = Bundle::new()?;
    let cfg = b.sh(
        "echo skiffhost > /proc/sys/kernel/hostname 2>/dev/null && echo sys=writable; \
         echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq=writable; \
         ls -A /sys/firmware | wc -l | sed s/^/firmware=/; \
         grep -E ' /proc/(sys|sysrq-trigger) ' /proc/self/mountinfo",
    );
    let out = b.run(&cfg)?;
    check!(
        !out.stdout.contains("sys=writable"),
        "/proc/sys writable: {}",
        out.stdout
    );
    check!(
        !out.stdout.contains("sysrq=writable"),
        "/proc/sysrq-trigger writable: {}",
        out.stdout
    );
    check!(
        out.stdout.contains("firmware=0"),
        "/sys/firmware visible: {}",
        out.stdout
    );
    for l in out.stdout.lines().filter(|l| l.contains(" /proc/sys")) {
        check!(
            l.split(' ').nth(5).is_some_and(|o| o.starts_with("ro")),
            "not read-only: {l}"
        );
    }
    Ok(())
}

fn user_ns_root_is_unprivileged_host_uid() -> CaseResult {
    let b = Bundle::new()?;
    let shared = b.dir.path().join("shared");
    fs::create_dir(&shared).map_err(e2s)?;
    // Without idmapped mounts the rootfs belongs to the mapped root on the host.
    let st = Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(b.rootfs())
        .arg(&shared)
        .status()
        .map_err(e2s)?;
    check!(st.success(), "chown");
    let mut cfg = b.sh("id -u; cat /proc/self/uid_map; touch /shared/made && echo made");
    cfg["linux"]["namespaces"]
        .as_array_mut()
        .ok_or("namespaces")?
        .push(json!({"type": "user"}));
    cfg["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    cfg["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    cfg["mounts"].as_array_mut().ok_or("mounts")?.push(
        json!({"destination": "/shared", "type": "bind", "source": shared,
                     "options": ["bind"]}),
    );
    fs::create_dir_all(b.rootfs().join("shared")).map_err(e2s)?;
    let _ = Command::new("chown")
        .args(["100000:100000"])
        .arg(b.rootfs().join("shared"))
        .status();
    // The cgroup mount of the default config needs a cgroup namespace the user namespace owns.
    let out = b.run(&cfg)?;
    out.ok()?;
    check!(out.stdout.starts_with("0\n"), "id -u: {}", out.stdout);
    check!(out.stdout.contains("100000"), "uid_map: {}", out.stdout);
    let made = fs::metadata(shared.join("made")).map_err(e2s)?;
    check!(
        made.uid() == 100000,
        "file made by container root is owned by host uid {}",
        made.uid()
    );
    Ok(())
}

/// A host directory owned by host root, bound with `idmap` into a container whose root is host uid
/// 100000: inside, the files belong to root and root can write there; what it writes is owned by root
/// on the host. Without `idmap` the same files are nobody's and the write is refused.
fn idmapped_bind_mount_in_user_ns() -> CaseResult {
    let b = Bundle::new()?;
    let data = b.dir.path().join("data");
    fs::create_dir(&data).map_err(e2s)?;
    fs::write(data.join("f"), "host").map_err(e2s)?;
    let st = Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .map_err(e2s)?;
    check!(st.success(), "chown");
    let mut cfg = b.sh("stat -c %u:%g /data/f; echo x > /data/new && echo wrote");
    cfg["linux"]["namespaces"]
        .as_array_mut()
        .ok_or("namespaces")?
        .push(json!({"type": "user"}));
    cfg["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    cfg["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let mut plain = cfg.clone();
    cfg["mounts"].as_array_mut().ok_or("mounts")?.push(json!({
        "destination": "/data", "type": "bind", "source": data, "options": ["bind", "idmap"]}));
    let out = b.run(&cfg)?;
    out.ok()?;
    check!(
        out.stdout.starts_with("0:0\n") && out.stdout.contains("wrote"),
        "idmapped: {} / {}",
        out.stdout,
        out.stderr
    );
    let made = fs::metadata(data.join("new")).map_err(e2s)?;
    check!(
        made.uid() == 0 && made.gid() == 0,
        "written as {}:{} on the host",
        made.uid(),
        made.gid()
    );
    // Per-mount mappings: on-disk uid 0 becomes host uid 101000, which is 1000 in the container.
    cfg["mounts"]
        .as_array_mut()
        .ok_or("mounts")?
        .last_mut()
        .ok_or("mount")?["uidMappings"] = json!([{"containerID": 0, "hostID": 101000, "size": 1}]);
    let out = b.run(&cfg)?;
    check!(
        out.stdout.starts_with("1000:0\n"),
        "per-mount mapping: {} / {}",
        out.stdout,
        out.stderr
    );
    plain["mounts"].as_array_mut().ok_or("mounts")?.push(json!({
        "destination": "/data", "type": "bind", "source": data, "options": ["bind"]}));
    fs::remove_file(data.join("new")).map_err(e2s)?;
    let out = b.run(&plain)?;
    check!(
        out.stdout.starts_with("65534:65534\n") && !out.stdout.contains("wrote"),
        "control without idmap: {}",
        out.stdout
    );
    Ok(())
}

fn rootless_run_as_unprivileged_user() -> CaseResult {
    const NOBODY: u32 = 65534;
    let b = Bundle::new()?;
    fs::remove_file(b.path().join("config.json")).map_err(e2s)?;
    let out = Command::new(SKIFF)
        .args(["spec", "--rootless", "--bundle"])
        .arg(b.path())
        .output()
        .map_err(e2s)?;
    check!(out.status.success(), "skiff spec --rootless");
    let text = fs::read_to_string(b.path().join("config.json")).map_err(e2s)?;
    let mut cfg: Value = serde_json::from_str(&text).map_err(e2s)?;
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!([
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; echo hi > /tmp/x && cat /tmp/x"
    ]);
    cfg["root"]["readonly"] = json!(false);
    cfg["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": NOBODY, "size": 1}]);
    cfg["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": NOBODY, "size": 1}]);
    b.write_config(&cfg)?;
    fs::create_dir_all(b.state_root()).map_err(e2s)?;
    fs::set_permissions(b.dir.path(), fs::Permissions::from_mode(0o755)).map_err(e2s)?;
    let st = Command::new("chown")
        .args(["-R", "-h", &format!("{NOBODY}:{NOBODY}")])
        .arg(b.dir.path())
        .status()
        .map_err(e2s)?;
    check!(st.success(), "chown");
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        SKIFF,
        "--root",
    ])
    .arg(b.state_root())
    .args(["run", "--bundle"])
    .arg(b.path())
    .arg(unique_id());
    let out = output(c)?;
    out.ok()?;
    check!(
        out.stdout.starts_with("0\n") && out.stdout.contains("65534") && out.stdout.contains("hi"),
        "rootless container: {} / {}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// This host runs neither AppArmor nor SELinux: the settings are accepted with a warning (and applied
/// where the LSM exists); `linux.intelRdt` is accepted.
fn lsm_labels_and_intel_rdt_accepted() -> CaseResult {
    let b = Bundle::new()?;
    let mut cfg = b.sh("echo ran");
    cfg["process"]["apparmorProfile"] = json!("skiff-default");
    cfg["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0:c1,c2");
    cfg["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0:c1,c2");
    cfg["linux"]["intelRdt"] = json!({"closID": "skiff", "l3CacheSchema": "L3:0=f"});
    let out = b.run(&cfg)?;
    let apparmor = Path::new("/sys/module/apparmor/parameters/enabled").exists();
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    if !apparmor && !selinux {
        out.ok()?;
        check!(out.stdout.contains("ran"), "{}", out.stdout);
        check!(
            out.stderr.contains("apparmorProfile") && out.stderr.contains("selinuxLabel"),
            "no warning: {}",
            out.stderr
        );
    }
    Ok(())
}

fn features_report() -> CaseResult {
    let out = output({
        let mut c = Command::new(SKIFF);
        c.arg("features");
        c
    })?;
    let f: Value = serde_json::from_str(&out.ok()?.stdout).map_err(e2s)?;
    let l = &f["linux"];
    check!(l["seccomp"]["enabled"] == true, "seccomp: {l}");
    for flag in ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"] {
        check!(
            l["seccomp"]["supportedFlags"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(flag))),
            "{flag} not supported here? {l}"
        );
    }
    check!(
        l["capabilities"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("CAP_NET_RAW"))),
        "capabilities: {l}"
    );
    let apparmor = Path::new("/sys/module/apparmor/parameters/enabled").exists();
    check!(l["apparmor"]["enabled"] == apparmor, "apparmor: {l}");
    Ok(())
}
