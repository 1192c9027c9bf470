//! The container side of the rootfs tests and the fixtures the cases share.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};
use skiff_runtime::mountinfo;
use skiff_runtime::rootfs::{self, RootfsOptions};
use skiff_runtime::spec::Spec;
use tempfile::TempDir;

pub const SCENARIO_ENV: &str = "SKIFF_ROOTFS_SCENARIO";

/// Temp dirs on the host start with this, so that leaked mounts can be spotted.
const PREFIX: &str = "skiff-rt-";

#[derive(Serialize, Deserialize)]
struct Scenario {
    spec: Spec,
    rootfs: PathBuf,
    bundle: PathBuf,
    user_ns: bool,
    cgroup_ns: bool,
    /// Stay in the host's IPC namespace (which a user namespace then does not own).
    host_ipc: bool,
}

/// Entry of the re-executed test binary: the process is single-threaded here.
pub fn container_main(json: &str) -> ! {
    let sc: Scenario = serde_json::from_str(json).unwrap_or_else(|e| die(90, &format!("{e}")));
    if sc.user_ns {
        enter_user_ns().unwrap_or_else(|e| die(90, &format!("user namespace: {e}")));
    }
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS;
    if !sc.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if sc.cgroup_ns {
        flags |= CloneFlags::CLONE_NEWCGROUP;
    }
    unshare(flags).unwrap_or_else(|e| die(90, &format!("unshare: {e}")));
    // SAFETY: this process has a single thread (the test binary's own main, before any harness),
    // so the child may run arbitrary code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => container_init(sc),
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(other) => die(92, &format!("init ended with {other:?}")),
            Err(e) => die(92, &format!("waitpid: {e}")),
        },
        Err(e) => die(90, &format!("fork: {e}")),
    }
}

fn container_init(sc: Scenario) -> ! {
    let opts = RootfsOptions {
        in_user_ns: sc.user_ns,
        cgroup_ns: sc.cgroup_ns,
        bundle: sc.bundle,
        idmapped: Vec::new(),
        defer_proc: false,
    };
    let res = rootfs::prepare(&sc.spec, &sc.rootfs, &opts)
        .and_then(|_| rootfs::pivot(&sc.rootfs))
        .and_then(|()| rootfs::finish(&sc.spec, &opts));
    if let Err(e) = res {
        die(93, &format!("rootfs error: {e}"));
    }
    match std::env::current_dir() {
        Ok(d) if d == Path::new("/") => {}
        other => die(94, &format!("cwd after pivot: {other:?}")),
    }
    let args = sc.spec.process.map(|p| p.args).unwrap_or_default();
    let Some((prog, rest)) = args.split_first() else {
        die(94, "no process.args")
    };
    let err = Command::new(prog)
        .args(rest)
        .env_clear()
        .env("PATH", "/bin")
        .exec();
    die(95, &format!("exec {prog}: {err}"))
}

fn die(code: i32, msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(code)
}

/// A user namespace mapping root to root, set up from inside.
fn enter_user_ns() -> std::io::Result<()> {
    unshare(CloneFlags::CLONE_NEWUSER)?;
    fs::write("/proc/self/setgroups", "deny")?;
    fs::write("/proc/self/uid_map", "0 0 1")?;
    fs::write("/proc/self/gid_map", "0 0 1")
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> Result<(), String> {
        if self.ok {
            Ok(())
        } else {
            Err(format!(
                "container failed\nstdout: {}\nstderr: {}",
                self.stdout, self.stderr
            ))
        }
    }
}

/// A bundle directory with a busybox rootfs.
pub struct Bundle {
    pub dir: TempDir,
    pub rootfs: PathBuf,
}

fn applets() -> &'static Vec<String> {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let out = Command::new("/bin/busybox").arg("--list").output();
        let text = out.map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_owned)
            .filter(|a| !a.is_empty() && a != "busybox")
            .collect()
    })
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

impl Bundle {
    pub fn new() -> Result<Bundle, String> {
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in("/tmp")
            .map_err(io)?;
        let rootfs = fs::canonicalize(dir.path()).map_err(io)?.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).map_err(io)?;
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .map_err(|e| format!("copy /bin/busybox (apt-get install busybox-static): {e}"))?;
        for a in applets() {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).map_err(io)?;
        }
        Ok(Bundle { dir, rootfs })
    }

    /// A spec with the given mounts and `linux` section, running `sh -c script`.
    pub fn spec(
        &self,
        mounts: Vec<serde_json::Value>,
        linux: serde_json::Value,
        script: &str,
    ) -> Result<Spec, String> {
        let v = serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": self.rootfs},
            "process": {"args": ["/bin/sh", "-c", script], "cwd": "/"},
            "mounts": mounts,
            "linux": linux,
        });
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    pub fn run(&self, spec: &Spec, user_ns: bool, cgroup_ns: bool) -> Result<Output, String> {
        self.run_scenario(spec, user_ns, cgroup_ns, false)
    }

    /// A user-namespaced container left in the host's IPC namespace.
    pub fn run_user_ns_host_ipc(&self, spec: &Spec) -> Result<Output, String> {
        self.run_scenario(spec, true, false, true)
    }

    fn run_scenario(
        &self,
        spec: &Spec,
        user_ns: bool,
        cgroup_ns: bool,
        host_ipc: bool,
    ) -> Result<Output, String> {
        let sc = Scenario {
            spec: spec.clone(),
            rootfs: self.rootfs.clone(),
            bundle: self.dir.path().to_path_buf(),
            user_ns,
            cgroup_ns,
            host_ipc,
        };
        let json = serde_json::to_string(&sc).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(io)?;
        let out = Command::new(exe)
            .env(SCENARIO_ENV, json)
            .output()
            .map_err(io)?;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// A directory next to the rootfs (on the host, outside the container).
    pub fn host_dir(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).map_err(io)?;
        Ok(p)
    }

    pub fn write(&self, rel: &str, content: &str) -> Result<(), String> {
        let p = self.rootfs.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        fs::write(p, content).map_err(io)
    }

    pub fn mkdir(&self, rel: &str) -> Result<(), String> {
        fs::create_dir_all(self.rootfs.join(rel)).map_err(io)
    }

    pub fn symlink(&self, target: &str, rel: &str) -> Result<(), String> {
        std::os::unix::fs::symlink(target, self.rootfs.join(rel)).map_err(io)
    }
}

/// A directory in the host's /tmp that hostile symlinks in a rootfs point at.
pub fn host_target() -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix(PREFIX)
        .tempdir_in("/tmp")
        .map_err(io)
}

/// Every path below `dir`, to compare before and after.
pub fn tree(dir: &Path) -> Result<BTreeSet<PathBuf>, String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io)? {
            let p = e.map_err(io)?.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    Ok(out)
}

/// Fails when any mount on the host lives under one of the tests' temp dirs.
pub fn host_mount_leaks() -> Result<(), String> {
    let mounts = mountinfo::read_self().map_err(io)?;
    let leaked: Vec<_> = mounts
        .iter()
        .filter(|m| {
            m.mount_point.starts_with("/tmp") && m.mount_point.to_string_lossy().contains(PREFIX)
        })
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if leaked.is_empty() {
        Ok(())
    } else {
        Err(format!("mounts left on the host: {leaked:?}"))
    }
}
