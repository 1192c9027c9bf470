//! The real crictl against skiffd, for the everyday commands the README lists: info, version, pull,
//! images, runp, create, start, ps, pods, inspect, inspectp, logs, stats, exec, stop, rm, stopp, rmp,
//! rmi. Ids are typed back as crictl shows them (13 characters).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_tests::cmd::{self, Output};
use skiff_tests::cri::{Skiffd, BUSYBOX};
use skiff_tests::peers::{k8s_bin, on_terminal};

struct Crictl {
    bin: PathBuf,
    socket: String,
    dir: PathBuf,
}

impl Crictl {
    fn new(d: &Skiffd) -> Crictl {
        let dir = d.dir.join("crictl");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("crictl.yaml"), "").unwrap();
        Crictl {
            bin: k8s_bin("crictl"),
            socket: format!("unix://{}", d.socket.display()),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config")
            .arg(self.dir.join("crictl.yaml"))
            .args(["--runtime-endpoint", &self.socket])
            .args(["--image-endpoint", &self.socket, "--timeout", "30s"])
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        cmd::run(&mut self.command(args), &self.dir, Duration::from_secs(60))
    }

    /// `crictl ARGS` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "crictl {args:?} failed{out}");
        out.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {args:?}: {e}: {out}"))
    }

    fn file(&self, name: &str, v: Value) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn shown(id: &str) -> &str {
    &id[..13]
}

#[tokio::test]
async fn everyday_commands() {
    let d = Skiffd::start().await;
    let c = Crictl::new(&d);

    let info = c.json(&["info"]);
    let conditions = info["status"]["conditions"].as_array().cloned();
    let ready = conditions
        .into_iter()
        .flatten()
        .any(|x| x["type"] == "RuntimeReady" && x["status"] == true);
    assert!(ready, "{info}");
    let version = c.ok(&["version"]);
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");

    assert!(c
        .ok(&["pull", BUSYBOX])
        .contains("Image is up to date for sha256:"));
    let images = c.ok(&["images"]);
    assert!(
        images.contains("registry.skiff.test/library/busybox"),
        "{images}"
    );
    let image_id = c.ok(&["images", "-q"]).trim().to_string();
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    // crictl's docs' configs, on the node's network.
    let pod_cfg = c.file(
        "pod.json",
        json!({
            "metadata": {"name": "web", "namespace": "default", "attempt": 1, "uid": "uid-web"},
            "log_directory": d.log_dir().join("web"),
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        }),
    );
    let script = "echo started; trap 'echo got-term; exit 0' TERM; while :; do sleep 0.2; done";
    let ctr_cfg = c.file(
        "container.json",
        json!({
            "metadata": {"name": "app"},
            "image": {"image": BUSYBOX},
            "command": ["sh", "-c", script],
            "log_path": "app.log",
            "linux": {}
        }),
    );
    let pod = c.ok(&["runp", &pod_cfg]).trim().to_string();
    let pods = c.ok(&["pods"]);
    assert!(
        pods.contains(shown(&pod)) && pods.contains("Ready"),
        "{pods}"
    );
    let id = c
        .ok(&["create", shown(&pod), &ctr_cfg, &pod_cfg])
        .trim()
        .to_string();
    c.ok(&["start", shown(&id)]);
    let ps = c.ok(&["ps"]);
    assert!(ps.contains(shown(&id)) && ps.contains("Running"), "{ps}");
    let st = c.json(&["inspect", shown(&id)]);
    assert_eq!(st["status"]["state"], "CONTAINER_RUNNING", "{st}");
    let st = c.json(&["inspectp", shown(&pod)]);
    assert_eq!(st["status"]["state"], "SANDBOX_READY", "{st}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.ok(&["logs", shown(&id)]).contains("started") {
        assert!(Instant::now() < deadline, "no log line from the container");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = c.json(&["stats", "-o", "json", shown(&id)]);
    let memory = &stats["stats"][0]["memory"]["workingSetBytes"]["value"];
    assert!(memory.as_str().is_some_and(|m| m != "0"), "{stats}");
    assert_eq!(
        c.ok(&["exec", "-s", shown(&id), "echo", "sync"]).trim(),
        "sync"
    );
    assert_eq!(
        c.ok(&["exec", shown(&id), "echo", "streamed"]).trim(),
        "streamed"
    );
    let out = on_terminal(&c.command(&["exec", "-it", shown(&id), "tty"]), &c.dir);
    assert!(out.success() && out.stdout.contains("/dev/pts/"), "{out}");

    // crictl's default grace period is 0 (SIGKILL at once); with one, SIGTERM comes first.
    c.ok(&["stop", "--timeout", "30", shown(&id)]);
    let st = c.json(&["inspect", shown(&id)]);
    assert_eq!(st["status"]["state"], "CONTAINER_EXITED", "{st}");
    assert_eq!(st["status"]["exitCode"], 0, "{st}");
    assert!(c.ok(&["logs", shown(&id)]).contains("got-term"));
    c.ok(&["rm", shown(&id)]);
    assert_eq!(c.ok(&["ps", "-a", "-q"]), "");
    c.ok(&["stopp", shown(&pod)]);
    c.ok(&["rmp", shown(&pod)]);
    assert_eq!(c.ok(&["pods", "-q"]), "");
    c.ok(&["rmi", BUSYBOX]);
    assert_eq!(c.ok(&["images", "-q"]), "");
}
