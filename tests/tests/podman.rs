//! podman with skiff as its OCI runtime (`podman --runtime target/debug/skiff`), the runc drop-in path:
//! run, exec, logs, stop, start, rm and a published port, through podman's own conmon and CNI.
//!
//! podman runs isolated: its own storage, run and tmp dirs, containers.conf, storage.conf and
//! registries.conf (by environment), its own CNI conf dir with a bridge and subnet of its own, and the
//! busybox image from a local registry. skiff keeps its state in its default root, as under podman's
//! runc; the containers are named by podman's ids.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use skiff_tests::cmd::{self, Output};
use skiff_tests::cri::{busybox_layout, kill_processes_mentioning};
use skiff_tests::peers::{http_get, require, RefBridge};
use skiff_tests::registry::{free_port, Registry};
use skiff_tests::{host, is_runc, runtime_bin};

/// Where the runtime keeps container state when podman gives it no `--root` (runc's when the suite
/// checks itself against runc).
fn state_root() -> &'static str {
    if is_runc() {
        "/run/runc"
    } else {
        "/run/skiff"
    }
}

struct Podman {
    dir: PathBuf,
    image: String,
    _net: RefBridge,
    _registry: Registry,
}

impl Podman {
    /// An isolated podman on network `n` (bridge `skpodman<n>`, 10.213.<n>.0/24) with busybox pulled.
    fn start(n: u8) -> Podman {
        require(
            "podman",
            "tests/run installs it (tests/apt-packages: podman)",
        );
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/podman-{}-{n}",
            std::process::id()
        ));
        clean(&dir);
        for sub in ["root", "runroot", "tmp", "net.d", "out"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let net = RefBridge::new(
            "skiff-podman",
            &format!("skpodman{n}"),
            &format!("10.213.{n}.0/24"),
            &dir.join("ipam"),
        );
        std::fs::write(dir.join("net.d/skiff-podman.conflist"), net.conflist()).unwrap();
        write_configs(&dir);
        let registry = Registry::start().expect("start the registry");
        registry
            .push(busybox_layout(), "latest", "library/busybox:latest", &[])
            .expect("push busybox");
        let p = Podman {
            image: format!("{}/library/busybox:latest", registry.host()),
            dir,
            _net: net,
            _registry: registry,
        };
        p.ok(&["pull", "--quiet", "--tls-verify=false", &p.image]);
        p
    }

    /// `podman` with the isolating flags and environment, and skiff as the runtime.
    fn command(&self) -> Command {
        let d = |sub: &str| self.dir.join(sub);
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d("registries.conf"))
            .arg("--root")
            .arg(d("root"))
            .arg("--runroot")
            .arg(d("runroot"))
            .arg("--tmpdir")
            .arg(d("tmp"))
            .arg("--network-config-dir")
            .arg(d("net.d"))
            .args(["--network-backend", "cni", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file", "--runtime"])
            .arg(runtime_bin());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        cmd::run(
            self.command().args(args),
            &self.dir.join("out"),
            Duration::from_secs(90),
        )
    }

    /// Runs `podman ARGS` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "podman {args:?} failed{out}");
        out.stdout
    }

    fn full_id(&self, name: &str) -> String {
        self.ok(&["inspect", "--format", "{{.Id}}", name])
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        clean(&self.dir);
    }
}

/// Leftover conmons and mounts of an earlier run in `dir`, then the dir itself.
fn clean(dir: &Path) {
    kill_processes_mentioning(dir);
    host::unmount_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

fn write_configs(dir: &Path) {
    // The file replaces Debian's /usr/share/containers/containers.conf, so its default sysctl is
    // restated. podman asks for RLIMIT_NOFILE/NPROC of 1048576 by default; root without
    // CAP_SYS_RESOURCE (as on some CI machines) cannot raise a hard limit that far, so any runtime,
    // runc too, would fail.
    let containers = format!(
        "[containers]\nlog_driver = \"k8s-file\"\n\
         default_ulimits = [\"nofile=4096:4096\", \"nproc=16384:16384\"]\n\
         default_sysctls = [\"net.ipv4.ping_group_range=0 0\"]\n\
         [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{d}/net.d\"\n\
         cni_plugin_dirs = [\"/usr/lib/cni\"]\ndefault_network = \"skiff-podman\"\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
         events_logfile_path = \"{d}/events.log\"\ntmp_dir = \"{d}/tmp\"\n",
        d = dir.display()
    );
    let storage = format!(
        "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n",
        d = dir.display()
    );
    std::fs::write(dir.join("containers.conf"), containers).unwrap();
    std::fs::write(dir.join("storage.conf"), storage).unwrap();
    std::fs::write(
        dir.join("registries.conf"),
        "unqualified-search-registries = []\n",
    )
    .unwrap();
}

#[test]
fn run_exec_logs_stop_start_and_rm() {
    let p = Podman::start(1);
    // podman's default sysctl lands in the network namespace it made and pinned for the container.
    let out = p.ok(&[
        "run",
        "--rm",
        &p.image,
        "cat",
        "/proc/sys/net/ipv4/ping_group_range",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "{out}"
    );
    assert_eq!(p.ok(&["run", "--rm", &p.image, "echo", "hi"]), "hi\n");
    // The container's own terminal, through skiff's console socket.
    let out = p.ok(&["run", "--rm", "-t", &p.image, "tty"]);
    assert_eq!(out.trim(), "/dev/pts/0");

    let script = "trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.2; done";
    p.ok(&["run", "-d", "--name", "app", &p.image, "sh", "-c", script]);
    let id = p.full_id("app");
    let runtime = p.ok(&["inspect", "--format", "{{.OCIRuntime}}", "app"]);
    assert_eq!(Path::new(runtime.trim()), runtime_bin());
    let state = Path::new(state_root()).join(&id);
    assert!(
        state.is_dir(),
        "no runtime state for {id} in {}",
        state_root()
    );

    let out = p.ok(&[
        "exec",
        "app",
        "sh",
        "-c",
        "id -u; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("0\nsh -c trap"), "{out}");
    // A terminal for the exec'd process: skiff's console socket path under conmon.
    assert_eq!(p.ok(&["exec", "-t", "app", "tty"]).trim(), "/dev/pts/0");
    let out = p.run(&["exec", "app", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, Some(3), "{out}");
    p.ok(&["pause", "app"]);
    let status = p.ok(&["inspect", "--format", "{{.State.Status}}", "app"]);
    assert_eq!(status.trim(), "paused");
    p.ok(&["unpause", "app"]);
    let out = p.ok(&["exec", "app", "echo", "resumed"]);
    assert_eq!(out, "resumed\n");

    // SIGTERM reaches the container's init: it exits long before the 60 s grace period.
    let started = std::time::Instant::now();
    p.ok(&["stop", "--time", "60", "app"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stop waited for the grace period"
    );
    let status = p.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "app",
    ]);
    assert_eq!(status.trim(), "exited 0");
    let logs = p.ok(&["logs", "app"]);
    assert_eq!(logs, "started\ngot-term\n");

    // Started again in a new skiff container of the same id, then removed with everything.
    p.ok(&["start", "app"]);
    let status = p.ok(&["inspect", "--format", "{{.State.Status}}", "app"]);
    assert_eq!(status.trim(), "running");
    p.ok(&["rm", "--force", "--time", "0", "app"]);
    assert!(!state.exists(), "skiff state of {id} left behind");
    assert_eq!(p.ok(&["ps", "--all", "--quiet"]), "");
}

#[test]
fn published_port_reaches_busybox_httpd() {
    let p = Podman::start(2);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let script =
        "mkdir -p /www && echo hello-from-skiff > /www/index.html && exec httpd -f -p 80 -h /www";
    p.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, &p.image, "sh", "-c", script,
    ]);
    let ip = p.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        "web",
    ]);
    assert!(ip.starts_with("10.213.2."), "{ip}");
    let body = http_get(&format!("127.0.0.1:{port}"), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("GET on the published port failed: {e}"));
    assert_eq!(body, "hello-from-skiff\n");
    p.ok(&["rm", "--force", "--time", "0", "web"]);
    assert!(
        http_get(&format!("127.0.0.1:{port}"), Duration::ZERO).is_err(),
        "the port still answers after rm"
    );
}
