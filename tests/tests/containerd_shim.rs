//! containerd 1.6 with its runc shim (`io.containerd.runc.v2`) running skiff as its `BinaryName`, driven
//! through the CRI by the real crictl: runp, create, start, exec, logs, stop, rm, stopp, rmp.
//!
//! containerd runs with its own config, root, state, socket and CNI conf dir (the reference bridge
//! plugin on a bridge and subnet of its own), and pulls from a local registry through its mirror
//! config. The shim keeps skiff's state under a root in the test's dir, where the test looks for it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::cmd::{self, Output};
use skiff_tests::cri::{busybox_layout, kill_processes_mentioning, BUSYBOX};
use skiff_tests::peers::{k8s_bin, on_terminal, require, RefBridge};
use skiff_tests::registry::{self, Registry};
use skiff_tests::{host, runtime_bin};

const PAUSE: &str = "registry.skiff.test/library/pause:skiff";

struct Containerd {
    dir: PathBuf,
    crictl: PathBuf,
    child: Child,
    /// Network namespaces containerd pinned for pods, released on drop if a failure left them.
    netns: RefCell<Vec<String>>,
    _net: RefBridge,
    _registry: Registry,
}

impl Containerd {
    fn start(n: u8) -> Containerd {
        require(
            "containerd",
            "tests/run installs it (tests/apt-packages: containerd)",
        );
        require(
            "containerd-shim-runc-v2",
            "tests/run installs it (tests/apt-packages: containerd)",
        );
        let crictl = k8s_bin("crictl");
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/containerd-{}-{n}",
            std::process::id()
        ));
        clean(&dir);
        for sub in ["net.d", "out", "logs", "certs.d/registry.skiff.test"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let registry = serve_images(&dir);
        std::fs::write(
            dir.join("certs.d/registry.skiff.test/hosts.toml"),
            format!(
                "server = \"http://{h}\"\n[host.\"http://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                h = registry.host()
            ),
        )
        .unwrap();
        let net = RefBridge::new(
            "skiff-containerd",
            &format!("skctrd{n}"),
            &format!("10.213.{n}.0/24"),
            &dir.join("ipam"),
        );
        std::fs::write(dir.join("net.d/10-skiff.conflist"), net.conflist()).unwrap();
        std::fs::write(dir.join("config.toml"), config(&dir)).unwrap();
        std::fs::write(dir.join("crictl.yaml"), "").unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir,
            crictl,
            child,
            netns: RefCell::new(Vec::new()),
            _net: net,
            _registry: registry,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.crictl(&["version"]).success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn crictl_command(&self, args: &[&str]) -> Command {
        let sock = format!("unix://{}", self.dir.join("containerd.sock").display());
        let mut c = Command::new(&self.crictl);
        c.arg("--config")
            .arg(self.dir.join("crictl.yaml"))
            .args(["--runtime-endpoint", &sock, "--image-endpoint", &sock])
            .args(["--timeout", "60s"])
            .args(args);
        c
    }

    fn crictl(&self, args: &[&str]) -> Output {
        let mut c = self.crictl_command(args);
        cmd::run(&mut c, &self.dir.join("out"), Duration::from_secs(90))
    }

    fn crictl_on_terminal(&self, args: &[&str]) -> Output {
        on_terminal(&self.crictl_command(args), &self.dir.join("out"))
    }

    /// `crictl ARGS` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.crictl(args);
        assert!(out.success(), "crictl {args:?} failed{out}");
        out.stdout
    }

    /// Writes a JSON config for crictl; its path.
    fn json(&self, name: &str, v: Value) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// `crictl inspect -o json ID`'s status.
    fn status(&self, id: &str) -> Value {
        let out = self.ok(&["inspect", "-o", "json", id]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["status"].clone()
    }

    fn wait_exited(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status(id);
            if st["state"] == "CONTAINER_EXITED" {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never seen exited: {st}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `crictl runp CONFIG`: the pod's id. Its network namespace is remembered for cleanup.
    fn runp(&self, config: &str) -> String {
        let id = self.ok(&["runp", config]).trim().to_string();
        let info: Value = serde_json::from_str(&self.ok(&["inspectp", "-o", "json", &id]))
            .expect("inspectp JSON");
        let spaces = &info["info"]["runtimeSpec"]["linux"]["namespaces"];
        if let Some(path) = spaces
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
        {
            self.netns.borrow_mut().push(path.to_string());
        }
        id
    }

    /// Where the shim has skiff keep its containers (`Root` joined with the containerd namespace).
    fn skiff_root(&self) -> PathBuf {
        self.dir.join("skiff-root/k8s.io")
    }

    /// `skiff state ID` in the shim's root, as skiff itself reports it.
    fn skiff_state(&self, id: &str) -> Value {
        let out = cmd::run(
            Command::new(runtime_bin())
                .arg("--root")
                .arg(self.skiff_root())
                .args(["state", id]),
            &self.dir.join("out"),
            Duration::from_secs(30),
        );
        assert!(out.success(), "skiff has no container {id}{out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}{out}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Through containerd first, so that CNI and the pinned network namespaces are released.
        let _ = self.crictl(&["rmp", "--force", "--all"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_processes_mentioning(&self.dir);
        let root = self.skiff_root();
        for id in host::list_dir(&root) {
            let _ = Command::new(runtime_bin())
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .output();
        }
        for ns in self.netns.borrow().iter() {
            host::unmount_below(Path::new(ns));
            let _ = std::fs::remove_file(ns);
        }
        clean(&self.dir);
    }
}

fn clean(dir: &Path) {
    kill_processes_mentioning(dir);
    host::unmount_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// A registry with busybox, and busybox sleeping forever as the pause image containerd needs.
fn serve_images(dir: &Path) -> Registry {
    let registry = Registry::start().expect("start the registry");
    registry
        .push(busybox_layout(), "latest", "library/busybox:latest", &[])
        .expect("push busybox");
    let layout = dir.join("pause-layout");
    registry::run(
        Command::new("cp")
            .arg("-a")
            .arg(busybox_layout())
            .arg(&layout),
    )
    .expect("copy the busybox layout");
    registry::run(
        Command::new("umoci")
            .args(["config", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .args(["--tag", "pause", "--config.cmd", "sleep"])
            .args(["--config.cmd", "2147483647"]),
    )
    .expect("make the pause image");
    registry
        .push(&layout, "pause", "library/pause:skiff", &[])
        .expect("push the pause image");
    registry
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
  [{cri}.registry]
    config_path = "{d}/certs.d"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "skiff"
    [{cri}.containerd.runtimes.skiff]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.skiff.options]
        BinaryName = "{bin}"
        Root = "{d}/skiff-root"
"#,
        bin = runtime_bin().display()
    )
}

fn pod_json(c: &Containerd) -> String {
    c.json(
        "pod.json",
        serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web", "attempt": 0},
            "log_directory": c.dir.join("logs/web"),
            "linux": {}
        }),
    )
}

fn container_json(c: &Containerd, name: &str, script: &str) -> String {
    c.json(
        &format!("{name}.json"),
        serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": BUSYBOX},
            "command": ["sh", "-c", script],
            "log_path": format!("{name}.log"),
            "linux": {}
        }),
    )
}

/// The command name of `pid`'s parent.
fn parent_comm(pid: i64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_default();
    std::fs::read_to_string(format!("/proc/{ppid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn pod_lifecycle_through_the_runc_shim_runs_on_skiff() {
    let c = Containerd::start(11);
    c.ok(&["pull", BUSYBOX]);
    let pod_cfg = pod_json(&c);
    let pod = c.runp(&pod_cfg);
    // The pause container is skiff's.
    assert_eq!(c.skiff_state(&pod)["status"], "running");

    let script = "echo started; trap 'echo got-term; exit 0' TERM; while :; do sleep 0.2; done";
    let app_cfg = container_json(&c, "app", script);
    let app = c
        .ok(&["create", &pod, &app_cfg, &pod_cfg])
        .trim()
        .to_string();
    c.ok(&["start", &app]);
    let st = c.skiff_state(&app);
    assert_eq!(st["status"], "running", "{st}");
    // The shim is the subreaper that sees the init exit, as under runc.
    let pid = st["pid"].as_i64().expect("pid");
    assert_eq!(parent_comm(pid), "containerd-shim");

    let out = c.ok(&["exec", "--sync", &app, "sh", "-c", "echo sync; id -u"]);
    // crictl prints a newline after stdout and after stderr.
    assert_eq!(out.trim_end(), "sync\n0");
    assert_eq!(c.ok(&["exec", &app, "echo", "streamed"]).trim(), "streamed");
    // On a terminal: the shim's `exec --console-socket`.
    let out = c.crictl_on_terminal(&["exec", "-it", &app, "tty"]);
    assert!(out.success() && out.stdout.contains("/dev/pts/"), "{out}");
    // Resources through the shim's `update --resources`, stats from the shim's cgroup reading.
    c.ok(&["update", "--memory", "209715200", &app]);
    let read_limit = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                      || cat /sys/fs/cgroup/memory.max";
    let limit = c.ok(&["exec", "--sync", &app, "sh", "-c", read_limit]);
    assert_eq!(limit.trim(), "209715200");
    let stats: Value = serde_json::from_str(&c.ok(&["stats", "-o", "json", &app])).unwrap();
    let memory = &stats["stats"][0]["memory"]["workingSetBytes"]["value"];
    assert!(memory.as_str().is_some_and(|m| m != "0"), "{stats}");
    let out = c.crictl(&["exec", "--sync", &app, "sh", "-c", "exit 3"]);
    assert!(out.stderr.contains("exited with 3"), "{out}");

    // SIGTERM through the shim's `kill`; the exit is seen long before the grace period ends.
    let started = Instant::now();
    c.ok(&["stop", "--timeout", "60", &app]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stop waited for the grace period"
    );
    let st = c.status(&app);
    assert_eq!(
        (&st["state"], &st["exitCode"]),
        (&"CONTAINER_EXITED".into(), &0.into()),
        "{st}"
    );
    assert_eq!(c.ok(&["logs", &app]), "started\ngot-term\n");

    // A container that exits by itself is reported with its code (the shim's kill --all afterwards
    // must not turn that into an error).
    let short_cfg = container_json(&c, "short", "exit 3");
    let short = c
        .ok(&["create", &pod, &short_cfg, &pod_cfg])
        .trim()
        .to_string();
    c.ok(&["start", &short]);
    assert_eq!(c.wait_exited(&short)["exitCode"], 3);

    c.ok(&["rm", &app, &short]);
    assert!(c.crictl(&["inspect", &app]).code != Some(0));
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
    let left = host::list_dir(&c.skiff_root());
    assert!(left.is_empty(), "skiff containers left: {left:?}");
    for ns in c.netns.borrow().iter() {
        assert!(!Path::new(ns).exists(), "pod network namespace {ns} left");
    }
}
